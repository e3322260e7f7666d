"""The GPU worker tier's Terraform (gpu*.tf and its entries elsewhere) is opt-in, takes its numbers from settings
gpu, mirrors the worker Lambda's least privilege and is wired to the deployment contract.

Static checks read the HCL; the evaluated ones ask `terraform console` with the fleet on and off. The applied
stack with the fleet on is tests/deploy/test_terraform_moto_gpu.py.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest

from tests.deploy import codescan, tfconfig
from tests.deploy.tfconfig import as_list, expression, unwrap
from vsr.aws import deployment
from vsr.settings import get_settings

GPU_FILES = ("gpu.tf", "gpu_iam.tf", "gpu_network.tf", "gpu_scaling.tf")


def _blocks(tf: tfconfig.TerraformConfig, kind: str, files: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """`type.name` -> body of every resource or data block in the given files."""
    found = {}
    for name in files:
        for block in tf.files[name].get(kind, []):
            for rtype, bodies in block.items():
                for label, body in bodies.items():
                    found[f"{rtype}.{label}"] = body
    return found


def test_the_fleet_is_off_unless_asked_for(tf: tfconfig.TerraformConfig) -> None:
    assert get_settings().raw["gpu"]["enabled"] is False  # new accounts have no GPU quota
    assert unwrap(tf.variables["gpu_fleet_enabled"]["default"]) is None
    assert tfconfig.compact(tf.locals["gpu_enabled"]) == (
        "${var.gpu_fleet_enabled!=null?var.gpu_fleet_enabled:local.settings.gpu.enabled}"
    )
    assert tf.locals["gpu_count"] == "${local.gpu_enabled ? 1 : 0}"
    # every resource and data source of the tier exists only with the fleet
    gpu_queues = {f"aws_sqs_queue.{q}" for q in ("segments_gpu", "segments_gpu_dlq")}
    blocks = {
        **_blocks(tf, "resource", GPU_FILES),
        **_blocks(tf, "data", GPU_FILES),
        **{k: v for k, v in _blocks(tf, "resource", ("queues.tf",)).items() if "gpu" in k},
    }
    assert gpu_queues <= set(blocks)
    for name, body in blocks.items():
        if name.startswith("data.aws_iam_policy_document.assume_") or name.startswith(
            "aws_iam_policy_document.assume_"
        ):
            continue  # trust policies: documents only, nothing is created
        assert "count" in body, f"{name} has no count: it would exist with the fleet off"
        count = expression(body["count"])
        assert "gpu" in count, f"{name}: count {count!r} does not follow the fleet switch"


def test_gpu_numbers_come_from_settings(tf: tfconfig.TerraformConfig) -> None:
    """Attributes that carry a gpu setting are expressions of local.gpu*, never literals."""
    queue = tf.resource("aws_sqs_queue", "segments_gpu")
    assert expression(queue["visibility_timeout_seconds"]) == "local.gpu_visibility_s"
    assert tf.locals["gpu_visibility_s"] == "${local.gpu.visibility_timeout_s}"
    assert expression(queue["receive_wait_time_seconds"]) == "local.gpu.poll_wait_s"
    assert "maxReceiveCount = local.gpu.max_receive_count" in expression(queue["redrive_policy"])
    assert "aws_sqs_queue.segments_gpu_dlq[0].arn" in expression(queue["redrive_policy"])
    for name in ("segments_gpu", "segments_gpu_dlq"):
        body = tf.resource("aws_sqs_queue", name)
        assert expression(body["kms_master_key_id"]) == "aws_kms_key.main.arn"
        assert expression(body["message_retention_seconds"]) == "local.message_retention_s"

    group = tf.resource("aws_autoscaling_group", "gpu")
    assert unwrap(group["min_size"]) == 0  # from zero: not a setting, the point of the design
    assert expression(group["max_size"]) == "local.gpu_max_tasks"
    assert tfconfig.compact(tf.locals["gpu_max_tasks"]) == "${coalesce(var.gpu_max_tasks,local.gpu.max_tasks)}"
    distribution = group["mixed_instances_policy"][0]["instances_distribution"][0]
    assert expression(distribution["on_demand_percentage_above_base_capacity"]) == "local.gpu.on_demand_percentage"
    assert unwrap(distribution["spot_allocation_strategy"]) == "capacity-optimized"
    overrides = group["mixed_instances_policy"][0]["launch_template"][0]["dynamic"][0]["override"]
    assert expression(overrides["for_each"]) == "local.gpu_instance_types"
    assert "keys(local.gpu.instance_types)" in str(tf.locals["gpu_instance_types"])

    template = tf.resource("aws_launch_template", "gpu")
    assert expression(template["block_device_mappings"][0]["ebs"][0]["volume_size"]) == "local.gpu.disk_gb"
    definition = tf.resource("aws_ecs_task_definition", "gpu_worker")
    assert expression(definition["cpu"]) == "local.gpu_task_cpu"
    assert expression(definition["memory"]) == "local.gpu_task_memory"
    assert tf.locals["gpu_task_cpu"] == "${local.gpu.task_vcpus * 1024}"
    containers = expression(definition["container_definitions"])
    assert "stopTimeout = local.gpu.stop_timeout_s" in containers
    assert 'resourceRequirements = [{type = "GPU", value = "1"}]' in containers  # one GPU per task

    target = tf.resource("aws_appautoscaling_target", "gpu_worker")
    assert unwrap(target["min_capacity"]) == 0 and expression(target["max_capacity"]) == "local.gpu_max_tasks"
    idle = tf.resource("aws_cloudwatch_metric_alarm", "gpu_idle")
    assert expression(idle["evaluation_periods"]) == "local.gpu_idle_periods"
    assert tf.locals["gpu_idle_periods"] == "${ceil(local.gpu.scale_in_idle_s / local.gpu.scale_out_s)}"
    assert tf.locals["gpu_scaling_period_s"] == "${local.gpu.scale_out_s}"
    for alarm in ("gpu_idle", "gpu_backlog_deficit"):
        periods = re.findall(r"period\W+([^,}\]\s]+)", str(tf.resource("aws_cloudwatch_metric_alarm", alarm)))
        assert periods and {p.removeprefix("${").removesuffix("}") for p in periods} == {"local.gpu_scaling_period_s"}


def test_service_starts_at_zero_and_leaves_the_count_to_scaling(tf: tfconfig.TerraformConfig) -> None:
    service = tf.resource("aws_ecs_service", "gpu_worker")
    assert unwrap(service["desired_count"]) == 0
    assert as_list(service["lifecycle"][0]["ignore_changes"]) == ["desired_count"]
    strategy = service["capacity_provider_strategy"][0]
    assert expression(strategy["capacity_provider"]) == "aws_ecs_capacity_provider.gpu[0].name"
    provider = tf.resource("aws_ecs_capacity_provider", "gpu")["auto_scaling_group_provider"][0]
    assert unwrap(provider["managed_termination_protection"]) == "ENABLED"
    assert unwrap(tf.resource("aws_autoscaling_group", "gpu")["protect_from_scale_in"]) is True
    out = tf.resource("aws_appautoscaling_policy", "gpu_scale_out")["step_scaling_policy_configuration"][0]
    assert unwrap(out["adjustment_type"]) == "ChangeInCapacity"
    zero = tf.resource("aws_appautoscaling_policy", "gpu_scale_to_zero")["step_scaling_policy_configuration"][0]
    assert unwrap(zero["adjustment_type"]) == "ExactCapacity"
    assert unwrap(zero["step_adjustment"][0]["scaling_adjustment"]) == 0


def test_instances_are_locked_down(tf: tfconfig.TerraformConfig) -> None:
    template = tf.resource("aws_launch_template", "gpu")
    metadata = template["metadata_options"][0]
    assert unwrap(metadata["http_tokens"]) == "required" and unwrap(metadata["http_put_response_hop_limit"]) == 1
    assert unwrap(template["block_device_mappings"][0]["ebs"][0]["encrypted"]) is True
    assert "/aws/service/ecs/optimized-ami/amazon-linux-2/gpu/recommended/image_id" in str(
        tf.data("aws_ssm_parameter")["gpu_ami"]
    )
    group = tf.resource("aws_security_group", "gpu")
    assert "ingress" not in group
    (egress,) = group["egress"]
    assert (unwrap(egress["from_port"]), unwrap(egress["to_port"]), unwrap(egress["protocol"])) == (443, 443, "tcp")
    definition = tf.resource("aws_ecs_task_definition", "gpu_worker")
    containers = expression(definition["container_definitions"])
    assert "readonlyRootFilesystem = true" in containers and "privileged = false" in containers
    ecr = tf.resource("aws_ecr_repository", "gpu_worker")
    assert unwrap(ecr["image_tag_mutability"]) == "IMMUTABLE"
    assert unwrap(ecr["image_scanning_configuration"][0]["scan_on_push"]) is True
    assert expression(ecr["encryption_configuration"][0]["kms_key"]) == "aws_kms_key.main.arn"
    assert expression(tf.resource("aws_cloudwatch_log_group", "gpu_worker")["kms_key_id"]) == "aws_kms_key.main.arn"
    # the project key lets CloudWatch Logs encrypt the GPU worker's log group
    kms = str(tf.data("aws_iam_policy_document")["kms"])
    assert "log-group:${local.gpu_log_group}" in kms


def test_task_environment_is_the_worker_lambdas_on_the_gpu_queue(tf: tfconfig.TerraformConfig) -> None:
    env = tfconfig.compact(tf.locals["gpu_task_env"])
    assert env.startswith("${merge(local.function_env,")
    assert "VSR_SEGMENT_QUEUE_URL=local.gpu_enabled?aws_sqs_queue.segments_gpu[0].url" in env
    assert f'{deployment.WORKER_TIER_ENV}="gpu"' in env
    assert f'VSR_MODEL_DIR="{deployment.FIXED_ENV["VSR_MODEL_DIR"]}"' in env
    assert "AWS_REGION=local.region" in env
    function_env = tf.locals["function_env"]
    variable = deployment.ENV_VARS["gpu_segment_queue_url"]
    assert tfconfig.compact(function_env[variable]) == '${local.gpu_enabled?aws_sqs_queue.segments_gpu[0].url:""}'
    assert "gpu={enabled=local.gpu_enabled" in tfconfig.compact(tf.locals["settings_overrides"])


def _statements(tf: tfconfig.TerraformConfig, name: str) -> list[dict[str, Any]]:
    return tfconfig.statements(tf.data("aws_iam_policy_document")[name])


def test_task_role_mirrors_the_worker_lambda_on_the_gpu_queue(tf: tfconfig.TerraformConfig) -> None:
    """The GPU worker runs the worker Lambda's process_segment path: the same actions on the same resources, but
    the GPU queue instead of the Lambda tier's, and no log writes (the awslogs driver uses the execution role)."""
    allowed = codescan.justified_actions("worker")
    task = _statements(tf, "gpu_task")
    worker = _statements(tf, "worker")
    for statement in task:
        assert statement["effect"] == "Allow"
        assert set(statement["actions"]) <= set(allowed), (statement["sid"], statement["actions"])
        assert all(r != "*" and "${" in r for r in statement["resources"]), statement
    lambda_tier = "${aws_sqs_queue.segments.arn}"
    gpu_tier = "${aws_sqs_queue.segments_gpu[0].arn}"
    expected = [
        {**s, "sid": None, "resources": [gpu_tier if r == lambda_tier else r for r in s["resources"]]}
        for s in worker
        if s["sid"] != "LogsOwnGroup"
    ]
    assert [{**s, "sid": None} for s in task] == expected
    execution = {s["sid"]: s for s in _statements(tf, "gpu_execution")}
    assert execution["RegistryLogin"]["actions"] == ["ecr:GetAuthorizationToken"]
    assert execution["PullWorkerImage"]["resources"] == ["${aws_ecr_repository.gpu_worker[0].arn}"]
    assert execution["LogsOwnGroup"]["resources"] == ["${aws_cloudwatch_log_group.gpu_worker[0].arn}:*"]
    assert [s["sid"] for s in execution.values() if "*" in s["resources"]] == ["RegistryLogin"]


def test_ingest_may_send_to_the_gpu_queue_only_with_the_fleet(tf: tfconfig.TerraformConfig) -> None:
    documents = tf.data("aws_iam_policy_document")
    (gpu,) = [d for d in tfconfig.dynamic_statements(documents["ingest"]) if "segments_gpu" in str(d["for_each"])]
    assert expression(gpu["for_each"]) == "aws_sqs_queue.segments_gpu"  # empty with the fleet off
    content = gpu["content"]
    assert as_list(content["actions"]) == ["sqs:SendMessage"]
    assert as_list(content["resources"]) == ["${statement.value.arn}"]
    # the Lambda tier never sends there (its only optional grant is the job events')
    worker_optional = tfconfig.dynamic_statements(documents["worker"])
    assert [as_list(d["content"]["actions"]) for d in worker_optional] == [["events:PutEvents"]]


def test_outputs_and_contract_names(tf: tfconfig.TerraformConfig) -> None:
    for output in ("gpu_segment_queue_url", "gpu_repository_url", "gpu_cluster_name", "gpu_service_name"):
        assert tfconfig.compact(tf.outputs[output]["value"]).startswith("${local.gpu_enabled?"), output
        assert tfconfig.compact(tf.outputs[output]["value"]).endswith(":null}"), output
    names = tf.locals["names"]
    for field, resource in (
        ("gpu_segment_queue", tf.resource("aws_sqs_queue", "segments_gpu")),
        ("gpu_segment_dlq", tf.resource("aws_sqs_queue", "segments_gpu_dlq")),
        ("gpu_cluster", tf.resource("aws_ecs_cluster", "gpu")),
        ("gpu_service", tf.resource("aws_ecs_service", "gpu_worker")),
        ("gpu_repository", tf.resource("aws_ecr_repository", "gpu_worker")),
    ):
        assert field in names and expression(resource["name"]) == f"local.names.{field}", field


# --- evaluated by Terraform itself, with the fleet on and off ---------------------------------------------------
EXPRESSIONS = {
    "enabled": "local.gpu_enabled",
    "count": "local.gpu_count",
    "types": "local.gpu_instance_types",
    "max_tasks": "local.gpu_max_tasks",
    "cpu": "local.gpu_task_cpu",
    "memory": "local.gpu_task_memory",
    "visibility": "local.gpu_visibility_s",
    "period": "local.gpu_scaling_period_s",
    "idle_periods": "local.gpu_idle_periods",
    "overrides": "local.settings_overrides",
}


@pytest.mark.parametrize("enabled", [None, True, False])
def test_evaluated_gpu_locals(tf_eval: Callable[..., dict[str, Any]], enabled: bool | None) -> None:
    variables = [] if enabled is None else [f"gpu_fleet_enabled={str(enabled).lower()}"]
    evaluated = tf_eval(EXPRESSIONS, variables)
    gpu = get_settings().raw["gpu"]
    expected_enabled = gpu["enabled"] if enabled is None else enabled
    assert evaluated["enabled"] is expected_enabled and evaluated["count"] == int(expected_enabled)
    assert evaluated["types"][0] == gpu["planned_instance_type"] and sorted(evaluated["types"]) == sorted(
        gpu["instance_types"]
    )
    assert evaluated["max_tasks"] == gpu["max_tasks"]
    assert (evaluated["cpu"], evaluated["memory"]) == (gpu["task_vcpus"] * 1024, gpu["task_memory_mb"])
    assert evaluated["visibility"] == gpu["visibility_timeout_s"]
    assert evaluated["period"] * evaluated["idle_periods"] == gpu["scale_in_idle_s"]
    assert json.loads(evaluated["overrides"])["gpu"] == {"enabled": expected_enabled, "max_tasks": gpu["max_tasks"]}


def test_task_fits_every_instance_type_and_drains_before_the_kill() -> None:
    gpu = get_settings().gpu
    raw = get_settings().raw["gpu"]
    for instance in gpu.instance_types:
        assert instance.vcpus * 1024 >= raw["task_vcpus"] * 1024 and instance.memory_mb > raw["task_memory_mb"]
    assert raw["drain_s"] < raw["stop_timeout_s"] <= 120  # ECS's stopTimeout maximum
    assert raw["scale_in_idle_s"] % raw["scale_out_s"] == 0 and raw["scale_out_s"] % 60 == 0  # alarm periods
    assert gpu.max_receive_count >= 5
