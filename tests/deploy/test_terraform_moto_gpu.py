"""`terraform apply` with the GPU fleet on (`gpu_fleet_enabled=true`), against its own moto server process.

The fleet-off stack is tests/deploy/test_terraform_moto.py; this module applies the same configuration with the
fleet on and reads back what the GPU tier needs: the GPU queue and its DLQ redrive, the ECR repository, the ECS
cluster with its EC2 capacity provider, the task definition that reserves a GPU, the service, the Auto Scaling
group from 0, the launch template on the ECS GPU AMI (moto serves the SSM parameter), the scaling policies and
their alarms, the task role and the functions' environment. Test-only concessions (each with its reason) are
in GPU_OVERRIDE, added to the shared override file. Slow (a second full apply).
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.deploy import codescan
from tests.deploy.test_terraform_moto import ACCOUNT, REGION, _client, _terraform, apply_stack, moto_https
from vsr.aws.deployment import ENV_VARS, WORKER_TIER_ENV, resource_names
from vsr.settings import get_settings

pytestmark = pytest.mark.slow

__all__ = ["moto_https"]  # the module-scoped fixture: this module gets a moto server process of its own

IMAGE_TAG = "test-build"

# moto's ECS keeps no capacity provider strategy on a service (CreateService ignores it), so every plan would
# want to set it again and, in provider 5.x, replace the service. Real ECS stores it.
GPU_OVERRIDE = """
resource "aws_ecs_service" "gpu_worker" {
  lifecycle {
    ignore_changes = [desired_count, capacity_provider_strategy]
  }
}
"""


@pytest.fixture(scope="module")
def applied(
    terraform_bin: str, plugin_dir: Path, moto_https: tuple[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    return apply_stack(
        terraform_bin,
        plugin_dir,
        moto_https,
        tmp_path_factory.mktemp("gpu-stack"),
        extra_variables=("gpu_fleet_enabled=true", f"gpu_image_tag={IMAGE_TAG}"),
        extra_override=GPU_OVERRIDE,
    )


def _outputs(applied: dict[str, Any]) -> dict[str, Any]:
    return {name: value["value"] for name, value in applied["outputs"].items()}


def _names() -> Any:
    s = get_settings()
    return resource_names(s.name_prefix, s.model_name, ACCOUNT, REGION)


def test_a_second_plan_replaces_nothing(applied: dict[str, Any]) -> None:
    plan = applied["plan"]
    summary = next(line for line in plan.splitlines() if line.startswith(("Plan:", "No changes")))
    assert summary.startswith("No changes") or (" 0 to add" in summary and " 0 to destroy" in summary), summary


def test_outputs_name_the_gpu_tier(applied: dict[str, Any]) -> None:
    outputs, names = _outputs(applied), _names()
    assert outputs["gpu_segment_queue_url"].endswith("/" + names.gpu_segment_queue)
    assert outputs["gpu_repository_url"].endswith("/" + names.gpu_repository)
    assert outputs["gpu_cluster_name"] == names.gpu_cluster
    assert outputs["gpu_service_name"] == names.gpu_service
    assert outputs["dead_letter_queue_urls"]["segments_gpu"].endswith("/" + names.gpu_segment_dlq)
    assert outputs["env"][ENV_VARS["gpu_segment_queue_url"]] == outputs["gpu_segment_queue_url"]


def test_gpu_queue_redrives_to_its_dlq(applied: dict[str, Any]) -> None:
    gpu, names = get_settings().raw["gpu"], _names()
    sqs = _client(applied, "sqs")
    url = _outputs(applied)["gpu_segment_queue_url"]
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert int(attributes["VisibilityTimeout"]) == gpu["visibility_timeout_s"]
    assert int(attributes["ReceiveMessageWaitTimeSeconds"]) == gpu["poll_wait_s"]
    assert int(attributes["MessageRetentionPeriod"]) == get_settings().raw["queues"]["message_retention_s"]
    redrive = json.loads(attributes["RedrivePolicy"])
    assert redrive["maxReceiveCount"] == gpu["max_receive_count"]
    assert redrive["deadLetterTargetArn"] == f"arn:aws:sqs:{REGION}:{ACCOUNT}:{names.gpu_segment_dlq}"
    assert attributes["KmsMasterKeyId"].startswith(f"arn:aws:kms:{REGION}:{ACCOUNT}:key/")
    dlq = sqs.get_queue_attributes(
        QueueUrl=_outputs(applied)["dead_letter_queue_urls"]["segments_gpu"], AttributeNames=["All"]
    )
    assert dlq["Attributes"]["KmsMasterKeyId"] == attributes["KmsMasterKeyId"]
    # a message received max_receive_count times without being deleted moves to the DLQ (moto applies redrive)
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"probe": True}))
    for _ in range(gpu["max_receive_count"]):
        (message,) = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1)["Messages"]
        sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0)
    assert sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0).get("Messages", []) == []
    moved = sqs.receive_message(QueueUrl=_outputs(applied)["dead_letter_queue_urls"]["segments_gpu"], WaitTimeSeconds=1)
    assert [json.loads(m["Body"]) for m in moved["Messages"]] == [{"probe": True}]


def test_repository_is_private_immutable_scanned_and_encrypted(applied: dict[str, Any]) -> None:
    (repository,) = _client(applied, "ecr").describe_repositories(repositoryNames=[_names().gpu_repository])[
        "repositories"
    ]
    assert repository["repositoryUri"] == _outputs(applied)["gpu_repository_url"]
    assert repository["imageTagMutability"] == "IMMUTABLE"
    assert repository["imageScanningConfiguration"]["scanOnPush"] is True
    assert repository["encryptionConfiguration"]["encryptionType"] == "KMS"
    assert repository["encryptionConfiguration"]["kmsKey"].startswith(f"arn:aws:kms:{REGION}:{ACCOUNT}:key/")


def test_cluster_capacity_provider_and_auto_scaling_group(applied: dict[str, Any]) -> None:
    gpu, names = get_settings().raw["gpu"], _names()
    ecs, autoscaling = _client(applied, "ecs"), _client(applied, "autoscaling")
    (cluster,) = ecs.describe_clusters(clusters=[names.gpu_cluster], include=["SETTINGS"])["clusters"]
    assert {"name": "containerInsights", "value": "enabled"} in cluster["settings"]
    assert cluster["capacityProviders"] == [names.gpu_cluster]
    (provider,) = ecs.describe_capacity_providers(capacityProviders=[names.gpu_cluster])["capacityProviders"]
    group_provider = provider["autoScalingGroupProvider"]
    assert group_provider["managedTerminationProtection"] == "ENABLED"
    assert group_provider["managedScaling"]["status"] == "ENABLED"
    assert group_provider["managedScaling"]["maximumScalingStepSize"] == gpu["max_tasks"]

    (group,) = autoscaling.describe_auto_scaling_groups(
        AutoScalingGroupNames=[group_provider["autoScalingGroupArn"].rsplit("/", 1)[-1]]
    )["AutoScalingGroups"]
    assert group["AutoScalingGroupARN"] == group_provider["autoScalingGroupArn"]
    assert (group["MinSize"], group["MaxSize"], group["DesiredCapacity"]) == (0, gpu["max_tasks"], 0)
    assert group["NewInstancesProtectedFromScaleIn"] is True
    assert len(group["VPCZoneIdentifier"].split(",")) == 2  # the minimal VPC's two subnets
    mixed = group["MixedInstancesPolicy"]
    distribution = mixed["InstancesDistribution"]
    assert distribution["OnDemandPercentageAboveBaseCapacity"] == gpu["on_demand_percentage"]
    assert distribution["SpotAllocationStrategy"] == "capacity-optimized"
    types = [o["InstanceType"] for o in mixed["LaunchTemplate"]["Overrides"]]
    assert types[0] == gpu["planned_instance_type"] and sorted(types) == sorted(gpu["instance_types"])

    template_id = mixed["LaunchTemplate"]["LaunchTemplateSpecification"]["LaunchTemplateId"]
    ec2, ssm = _client(applied, "ec2"), _client(applied, "ssm")
    (version,) = ec2.describe_launch_template_versions(LaunchTemplateId=template_id, Versions=["$Latest"])[
        "LaunchTemplateVersions"
    ]
    data = version["LaunchTemplateData"]
    recommended = ssm.get_parameter(Name="/aws/service/ecs/optimized-ami/amazon-linux-2/gpu/recommended/image_id")
    assert data["ImageId"] == recommended["Parameter"]["Value"]  # the ECS GPU-optimised AMI, looked up
    assert data["MetadataOptions"]["HttpTokens"] == "required"
    assert data["MetadataOptions"]["HttpPutResponseHopLimit"] == 1
    (disk,) = data["BlockDeviceMappings"]
    assert disk["Ebs"]["VolumeSize"] == gpu["disk_gb"] and disk["Ebs"]["Encrypted"] is True
    user_data = base64.b64decode(data["UserData"]).decode()
    assert f"ECS_CLUSTER={names.gpu_cluster}\n" in user_data and "ECS_ENABLE_GPU_SUPPORT=true" in user_data
    (interface,) = data["NetworkInterfaces"]
    (group_id,) = interface["Groups"]
    (security_group,) = ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"]
    assert security_group["IpPermissions"] == []  # nothing in
    assert [(p["FromPort"], p["ToPort"], p["IpProtocol"]) for p in security_group["IpPermissionsEgress"]] == [
        (443, 443, "tcp")
    ]


def test_task_definition_reserves_a_gpu_and_runs_the_worker_environment(applied: dict[str, Any]) -> None:
    gpu, names, outputs = get_settings().raw["gpu"], _names(), _outputs(applied)
    ecs, lam = _client(applied, "ecs"), _client(applied, "lambda")
    (service,) = ecs.describe_services(cluster=names.gpu_cluster, services=[names.gpu_service])["services"]
    assert service["desiredCount"] == 0  # from zero
    definition = ecs.describe_task_definition(taskDefinition=service["taskDefinition"])["taskDefinition"]
    assert definition["requiresCompatibilities"] == ["EC2"] and definition["networkMode"] == "bridge"
    assert (int(definition["cpu"]), int(definition["memory"])) == (gpu["task_vcpus"] * 1024, gpu["task_memory_mb"])
    (container,) = definition["containerDefinitions"]
    assert container["resourceRequirements"] == [{"type": "GPU", "value": "1"}]
    assert container["stopTimeout"] == gpu["stop_timeout_s"] > gpu["drain_s"]
    assert container["image"] == f"{outputs['gpu_repository_url']}:{IMAGE_TAG}"
    assert container["readonlyRootFilesystem"] is True and container["mountPoints"][0]["containerPath"] == "/tmp"
    (volume,) = definition["volumes"]  # a task-scoped Docker volume: writable by the image's non-root user
    assert volume["name"] == container["mountPoints"][0]["sourceVolume"]
    assert volume["dockerVolumeConfiguration"]["scope"] == "task"
    assert container["logConfiguration"]["logDriver"] == "awslogs"
    (log_group,) = _client(applied, "logs").describe_log_groups(
        logGroupNamePrefix=container["logConfiguration"]["options"]["awslogs-group"]
    )["logGroups"]
    assert log_group["kmsKeyId"].startswith(f"arn:aws:kms:{REGION}:{ACCOUNT}:key/")

    # the worker Lambda's environment, except the queue (the GPU one), the tier and the region
    environment = {e["name"]: e["value"] for e in container["environment"]}
    worker = lam.get_function_configuration(FunctionName=f"{get_settings().name_prefix}-worker")
    lambda_env = worker["Environment"]["Variables"]
    assert (
        environment["VSR_SEGMENT_QUEUE_URL"] == outputs["gpu_segment_queue_url"] != lambda_env["VSR_SEGMENT_QUEUE_URL"]
    )
    assert environment[WORKER_TIER_ENV] == "gpu" and environment["AWS_REGION"] == REGION
    assert environment["VSR_MODEL_DIR"] == "/tmp/vsr-models"
    same = {k: v for k, v in environment.items() if k not in ("VSR_SEGMENT_QUEUE_URL", WORKER_TIER_ENV, "AWS_REGION")}
    assert same == {k: v for k, v in lambda_env.items() if k != "VSR_SEGMENT_QUEUE_URL"}
    assert set(ENV_VARS.values()) <= set(environment)

    iam = _client(applied, "iam")
    assert definition["taskRoleArn"].endswith(f"role/{names.gpu_service}-task-role")
    assert definition["executionRoleArn"] != definition["taskRoleArn"]
    trust = iam.get_role(RoleName=f"{names.gpu_service}-task-role")["Role"]["AssumeRolePolicyDocument"]
    trust = json.loads(trust) if isinstance(trust, str) else trust
    assert trust["Statement"][0]["Principal"] == {"Service": "ecs-tasks.amazonaws.com"}


def _role_statements(applied: dict[str, Any], role: str, policy: str) -> list[dict[str, Any]]:
    document = _client(applied, "iam").get_role_policy(RoleName=role, PolicyName=policy)["PolicyDocument"]
    document = json.loads(document) if isinstance(document, str) else document
    return [
        {
            **statement,
            "Action": statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]],
            "Resource": statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]],
        }
        for statement in document["Statement"]
    ]


def test_task_role_is_the_worker_lambdas_least_privilege_on_the_gpu_queue(applied: dict[str, Any]) -> None:
    names = _names()
    gpu_queue = f"arn:aws:sqs:{REGION}:{ACCOUNT}:{names.gpu_segment_queue}"
    statements = _role_statements(applied, f"{names.gpu_service}-task-role", f"{names.gpu_service}-least-privilege")
    allowed = codescan.justified_actions("worker")  # the same process_segment path
    granted: dict[str, set[str]] = {}
    for statement in statements:
        assert set(statement["Action"]) <= set(allowed), (statement["Sid"], statement["Action"])
        for action in statement["Action"]:
            granted.setdefault(action, set()).update(statement["Resource"])
        for resource in statement["Resource"]:
            assert resource != "*" and (ACCOUNT in resource or resource.startswith("arn:aws:s3:::")), resource
    for action in ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility", "sqs:SendMessage"):
        assert granted[action] == {gpu_queue}, action
    assert not any(action.startswith("logs:") for action in granted)  # awslogs writes with the execution role
    # the worker's own calls, all granted (the same set test_iam.py holds the worker Lambda to)
    lambda_statements = _role_statements(
        applied, f"{get_settings().name_prefix}-worker-role", f"{get_settings().name_prefix}-worker-least-privilege"
    )
    lambda_actions = {a for s in lambda_statements for a in s["Action"] if not a.startswith("logs:")}
    assert set(granted) == lambda_actions

    execution = _role_statements(applied, f"{names.gpu_service}-execution-role", f"{names.gpu_service}-pull-and-log")
    by_sid = {s["Sid"]: s for s in execution}
    assert by_sid["RegistryLogin"]["Action"] == ["ecr:GetAuthorizationToken"]  # the only "*": it has no resource
    assert [s for s in execution if "*" in s["Resource"]] == [by_sid["RegistryLogin"]]
    assert by_sid["PullWorkerImage"]["Resource"] == [
        f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/{names.gpu_repository}"
    ]


def test_ingest_may_enqueue_on_the_gpu_queue_and_the_functions_know_the_tier(applied: dict[str, Any]) -> None:
    s, names, outputs = get_settings(), _names(), _outputs(applied)
    gpu_queue = f"arn:aws:sqs:{REGION}:{ACCOUNT}:{names.gpu_segment_queue}"
    ingest = _role_statements(applied, f"{s.name_prefix}-ingest-role", f"{s.name_prefix}-ingest-least-privilege")
    sends = {r for st in ingest if "sqs:SendMessage" in st["Action"] for r in st["Resource"]}
    assert sends == {f"arn:aws:sqs:{REGION}:{ACCOUNT}:{names.segment_queue}", gpu_queue}
    worker = _role_statements(applied, f"{s.name_prefix}-worker-role", f"{s.name_prefix}-worker-least-privilege")
    assert gpu_queue not in {r for st in worker for r in st["Resource"]}  # the Lambda tier never touches it
    lam = _client(applied, "lambda")
    for function in ("ingest", "worker", "assemble"):
        env = lam.get_function_configuration(FunctionName=f"{s.name_prefix}-{function}")["Environment"]["Variables"]
        assert env[ENV_VARS["gpu_segment_queue_url"]] == outputs["gpu_segment_queue_url"]
        assert json.loads(env["VSR_SETTINGS_OVERRIDES"])["gpu"] == {
            "enabled": True,
            "max_tasks": s.raw["gpu"]["max_tasks"],
        }


def test_desired_count_follows_the_queue_with_a_rule_to_zero(applied: dict[str, Any]) -> None:
    gpu, names = get_settings().raw["gpu"], _names()
    scaling = _client(applied, "application-autoscaling")
    resource = f"service/{names.gpu_cluster}/{names.gpu_service}"
    (target,) = scaling.describe_scalable_targets(ServiceNamespace="ecs", ResourceIds=[resource])["ScalableTargets"]
    assert (target["MinCapacity"], target["MaxCapacity"]) == (0, gpu["max_tasks"])
    assert target["ScalableDimension"] == "ecs:service:DesiredCount"
    policies = {
        p["PolicyName"]: p
        for p in scaling.describe_scaling_policies(ServiceNamespace="ecs", ResourceId=resource)["ScalingPolicies"]
    }
    out = policies[f"{names.gpu_service}-scale-out"]["StepScalingPolicyConfiguration"]
    to_zero = policies[f"{names.gpu_service}-scale-to-zero"]["StepScalingPolicyConfiguration"]
    assert out["AdjustmentType"] == "ChangeInCapacity" and out["Cooldown"] == gpu["scale_out_s"]
    assert [step["ScalingAdjustment"] for step in out["StepAdjustments"]] == list(range(1, gpu["max_tasks"] + 1))
    assert "MetricIntervalUpperBound" not in out["StepAdjustments"][-1]  # the largest deficit adds max_tasks
    assert to_zero["AdjustmentType"] == "ExactCapacity"
    assert [step["ScalingAdjustment"] for step in to_zero["StepAdjustments"]] == [0]

    cloudwatch = _client(applied, "cloudwatch")
    alarms = {
        a["AlarmName"]: a for a in cloudwatch.describe_alarms(AlarmNamePrefix=f"{names.gpu_service}-")["MetricAlarms"]
    }
    deficit, idle = alarms[f"{names.gpu_service}-backlog-deficit"], alarms[f"{names.gpu_service}-idle"]
    assert deficit["AlarmActions"] == [policies[f"{names.gpu_service}-scale-out"]["PolicyARN"]]
    assert idle["AlarmActions"] == [policies[f"{names.gpu_service}-scale-to-zero"]["PolicyARN"]]
    for alarm in (deficit, idle):
        queries = {q["Id"]: q for q in alarm["Metrics"]}
        for query_id, metric in (
            ("visible", "ApproximateNumberOfMessagesVisible"),
            ("inflight", "ApproximateNumberOfMessagesNotVisible"),
        ):
            stat = queries[query_id]["MetricStat"]
            assert stat["Metric"]["MetricName"] == metric and stat["Period"] == gpu["scale_out_s"]
            assert stat["Metric"]["Dimensions"] == [{"Name": "QueueName", "Value": names.gpu_segment_queue}]
    assert "desired" in {q["Id"] for q in deficit["Metrics"]}
    assert deficit["ComparisonOperator"] == "GreaterThanOrEqualToThreshold" and deficit["Threshold"] == 1
    assert idle["ComparisonOperator"] == "LessThanOrEqualToThreshold" and idle["Threshold"] == 0
    idle_period = {q["Id"]: q for q in idle["Metrics"]}["visible"]["MetricStat"]["Period"]
    assert idle["EvaluationPeriods"] * idle_period == gpu["scale_in_idle_s"]


def test_dlq_alarm_and_dashboard_cover_the_gpu_tier(applied: dict[str, Any]) -> None:
    names = _names()
    cloudwatch = _client(applied, "cloudwatch")
    (alarm,) = cloudwatch.describe_alarms(AlarmNames=[f"{get_settings().name_prefix}-segments-gpu-dlq-not-empty"])[
        "MetricAlarms"
    ]
    assert alarm["Dimensions"] == [{"Name": "QueueName", "Value": names.gpu_segment_dlq}]
    assert alarm["AlarmActions"][0].endswith(f":{get_settings().name_prefix}-alarms")
    body = json.loads(cloudwatch.get_dashboard(DashboardName=f"{get_settings().name_prefix}-pipeline")["DashboardBody"])
    metrics = [m for widget in body["widgets"] for m in widget["properties"].get("metrics", [])]
    assert ["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", names.gpu_segment_queue] in metrics
    assert [
        "ECS/ContainerInsights",
        "RunningTaskCount",
        "ClusterName",
        names.gpu_cluster,
        "ServiceName",
        names.gpu_service,
    ] in metrics


def test_given_subnets_replace_the_minimal_vpc(applied: dict[str, Any]) -> None:
    """The other network path: the operator's own subnets. A plan with them (a VPC made here with boto3, as the
    operator's) looks their VPC up for a security group of its own and drops the minimal VPC; the queues, the
    cluster and the service stay."""
    ec2 = _client(applied, "ec2")
    vpc = ec2.create_vpc(CidrBlock="10.99.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.99.{i}.0/24", AvailabilityZone=f"{REGION}{zone}")["Subnet"][
            "SubnetId"
        ]
        for i, zone in enumerate("ab")
    ]
    binary, workdir, data_dir, variables = applied["terraform"]
    plan = _terraform(
        binary,
        workdir,
        data_dir,
        "plan",
        "-input=false",
        "-no-color",
        *variables,
        "-var",
        f"gpu_subnet_ids={json.dumps(subnets)}",
    )
    destroyed = set(re.findall(r"# (\S+) will be destroyed", plan))
    assert {"aws_vpc.gpu[0]", "aws_internet_gateway.gpu[0]", "aws_subnet.gpu[0]", "aws_subnet.gpu[1]"} <= destroyed
    assert "# aws_security_group.gpu[0] must be replaced" in plan
    assert re.search(rf'vpc_id\s+= "vpc-\w+" -> "{vpc}"', plan), "the new security group is not in the given VPC"
    replaced = set(re.findall(r"# (\S+) must be replaced", plan))
    assert not any(r.startswith(("aws_sqs_queue", "aws_ecs_service", "aws_ecs_cluster")) for r in destroyed | replaced)
