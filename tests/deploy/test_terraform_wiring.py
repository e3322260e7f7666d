"""The Terraform configuration is wired to the code it deploys and to the one settings file.

Static checks read the HCL (python-hcl2); the evaluated checks ask `terraform console` for the derived values.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Callable
from typing import Any

import pytest

from tests.deploy import tfconfig
from tests.deploy.tfconfig import as_list, expression, unwrap
from vsr.aws import deployment
from vsr.pipeline import artifacts, jobs
from vsr.settings import ASSEMBLY_FILTER_FILE, SETTINGS_FILE, get_settings, load_assembly_filter

FUNCTIONS = ("ingest", "worker", "assemble")
AL2023_PYTHON_RUNTIMES = ("python3.12", "python3.13", "python3.14")  # Lambda's Python runtimes on Amazon Linux 2023
EXPECTED_FILES = {
    "versions.tf",
    "variables.tf",
    "locals.tf",
    "storage.tf",
    "queues.tf",
    "table.tf",
    "lambda.tf",
    "iam.tf",
    "kms.tf",
    "observability.tf",
    "outputs.tf",
    # the opt-in GPU worker tier (tests/deploy/test_terraform_gpu_wiring.py)
    "gpu.tf",
    "gpu_iam.tf",
    "gpu_network.tf",
    "gpu_scaling.tf",
}


def test_every_file_parses_and_is_split_by_concern(tf: tfconfig.TerraformConfig) -> None:
    assert set(tf.files) >= EXPECTED_FILES, sorted(EXPECTED_FILES - set(tf.files))
    assert (tfconfig.TERRAFORM / "terraform.tfvars.example").is_file()
    for name, parsed in tf.files.items():
        assert parsed, f"{name} parsed to nothing"


def test_provider_is_pinned(tf: tfconfig.TerraformConfig) -> None:
    terraform_block = tf.files["versions.tf"]["terraform"][0]
    aws = terraform_block["required_providers"][0]["aws"]
    aws = aws[0] if isinstance(aws, list) else aws
    assert aws["source"] == "hashicorp/aws"
    assert re.fullmatch(r"~> [56]\.\d+", aws["version"]), aws["version"]
    assert unwrap(terraform_block["required_version"]).startswith(">= 1.")


def test_settings_and_filter_are_the_files_the_code_reads(tf: tfconfig.TerraformConfig) -> None:
    base = tfconfig.TERRAFORM
    settings_path = expression(tf.locals["settings_file"]).replace("${path.module}", str(base))
    filter_path = expression(tf.locals["filter_file"]).replace("${path.module}", str(base))
    assert (base / settings_path.removeprefix(str(base) + "/")).resolve() == SETTINGS_FILE.resolve()
    assert (base / filter_path.removeprefix(str(base) + "/")).resolve() == ASSEMBLY_FILTER_FILE.resolve()
    assert expression(tf.locals["settings"]) == "jsondecode(file(local.settings_file))"
    assert expression(tf.locals["assembly_filter_pattern"]) == "jsonencode(jsondecode(file(local.filter_file)))"


def test_handlers_exist_with_lambda_signature(tf: tfconfig.TerraformConfig) -> None:
    function = tf.resource("aws_lambda_function", "this")
    assert expression(function["handler"]) == "local.handler"
    assert expression(function["runtime"]) == "local.runtime"
    # one place for both: settings "lambda", which tools/package.py builds the layer for
    assert expression(tf.locals["runtime"]) == "local.settings.lambda.runtime"
    assert expression(tf.locals["handler"]) == "local.settings.lambda.handler"
    # onnxruntime ships manylinux_2_28 wheels only: Amazon Linux 2 runtimes (glibc 2.26, python3.11 and older)
    # cannot load them; the Amazon Linux 2023 ones (glibc 2.34) can
    assert get_settings().lambda_runtime in AL2023_PYTHON_RUNTIMES
    assert get_settings().lambda_handler == "handler.handler"  # handler.py's `handler`, checked below
    names = re.findall(r"'(\w+)'|\"(\w+)\"", str(tf.locals["function_names"]))
    assert {a or b for a, b in names} == set(FUNCTIONS)
    for name in FUNCTIONS:
        path = tfconfig.ROOT / "services" / name / "handler.py"
        assert path.is_file(), path
        tree = ast.parse(path.read_text())
        handlers = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "handler"]
        assert handlers and [a.arg for a in handlers[0].args.args] == ["event", "context"], path


def test_architecture_defaults_to_arm64_and_allows_x86(tf: tfconfig.TerraformConfig) -> None:
    variable = tf.variables["architecture"]
    assert unwrap(variable["default"]) == "arm64"
    condition = expression(variable["validation"][0]["condition"])
    assert "arm64" in condition and "x86_64" in condition
    function = tf.resource("aws_lambda_function", "this")
    layer = tf.resource("aws_lambda_layer_version", "vsr")
    assert as_list(function["architectures"]) == ["${var.architecture}"]
    assert as_list(layer["compatible_architectures"]) == ["${var.architecture}"]


def test_function_sizes_come_from_settings(tf: tfconfig.TerraformConfig) -> None:
    function = tf.resource("aws_lambda_function", "this")
    assert expression(function["timeout"]) == "local.functions[each.key].timeout_s"
    assert expression(function["memory_size"]) == "local.functions[each.key].memory_mb"
    assert expression(function["ephemeral_storage"][0]["size"]) == "local.functions[each.key].ephemeral_storage_mb"
    assert "local.worker_reserved_concurrency" in expression(function["reserved_concurrent_executions"])
    functions_local = tfconfig.compact(tf.locals["functions"])
    for field in ("timeout_s", "memory_mb", "ephemeral_storage_mb"):
        # variable override first, the settings value otherwise
        assert (
            f"coalesce(try(var.functions[name].{field},null),local.settings.functions[name].{field})" in functions_local
        )
    for variable in ("worker_reserved_concurrency", "worker_max_concurrency", "model_name", "log_retention_days"):
        assert unwrap(tf.variables[variable]["default"]) is None, f"{variable} must default to the settings value"


def test_queues_derive_from_settings(tf: tfconfig.TerraformConfig) -> None:
    ingest = tf.resource("aws_sqs_queue", "ingest")
    segments = tf.resource("aws_sqs_queue", "segments")
    assert expression(ingest["visibility_timeout_seconds"]) == "local.ingest_visibility_s"
    assert expression(segments["visibility_timeout_seconds"]) == "local.segment_visibility_s"
    assert tf.locals["ingest_visibility_s"] == "${local.visibility_timeout_factor * local.functions.ingest.timeout_s}"
    assert tf.locals["segment_visibility_s"] == "${local.visibility_timeout_factor * local.functions.worker.timeout_s}"
    assert tf.locals["visibility_timeout_factor"] == "${local.settings.queues.visibility_timeout_factor}"
    assert "local.settings.queues.ingest_max_receive_count" in expression(ingest["redrive_policy"])
    assert "local.settings.queues.segment_max_receive_count" in expression(segments["redrive_policy"])
    for name in ("ingest", "segments", "ingest_dlq", "segments_dlq", "assembly_failures"):
        queue = tf.resource("aws_sqs_queue", name)
        assert expression(queue["kms_master_key_id"]) == "aws_kms_key.main.arn", name
        assert expression(queue["message_retention_seconds"]) == "local.message_retention_s", name


def test_settings_satisfy_aws_rules() -> None:
    """The settings file itself: visibility >= 6x the consumer's timeout, max concurrency <= reserved."""
    s = get_settings()
    for consumer in ("ingest", "worker"):
        assert s.visibility_timeout_s(consumer) >= 6 * s.function(consumer).timeout_s
    assert 2 <= s.worker_max_concurrency <= s.worker_reserved_concurrency
    assert s.ingest_max_receive_count >= 5 and s.segment_max_receive_count >= 5  # throttled receives count too
    for name in FUNCTIONS:
        f = s.function(name)
        assert 1 <= f.timeout_s <= 900 and 128 <= f.memory_mb <= 10240 and 512 <= f.ephemeral_storage_mb <= 10240


def test_worker_mapping(tf: tfconfig.TerraformConfig) -> None:
    mapping = tf.resource("aws_lambda_event_source_mapping", "worker")
    assert expression(mapping["event_source_arn"]) == "aws_sqs_queue.segments.arn"
    # One segment per invocation: a segment is minutes of work and its failure must not redeliver others.
    assert get_settings().event_source("worker")["batch_size"] == 1
    assert as_list(mapping["function_response_types"]) == ["ReportBatchItemFailures"]
    assert expression(mapping["scaling_config"][0]["maximum_concurrency"]) == "local.worker_max_concurrency"
    precondition = mapping["lifecycle"][0]["precondition"][0]
    assert expression(precondition["condition"]) == "local.worker_max_concurrency <= local.worker_reserved_concurrency"


def test_ingest_mapping(tf: tfconfig.TerraformConfig) -> None:
    mapping = tf.resource("aws_lambda_event_source_mapping", "ingest")
    assert expression(mapping["event_source_arn"]) == "aws_sqs_queue.ingest.arn"
    assert as_list(mapping["function_response_types"]) == ["ReportBatchItemFailures"]


def test_assembly_mapping(tf: tfconfig.TerraformConfig) -> None:
    mapping = tf.resource("aws_lambda_event_source_mapping", "assemble")
    assert expression(mapping["event_source_arn"]) == "aws_dynamodb_table.jobs.stream_arn"
    assert expression(mapping["filter_criteria"][0]["filter"][0]["pattern"]) == "local.assembly_filter_pattern"
    assert unwrap(mapping["bisect_batch_on_function_error"]) is True
    assert expression(mapping["maximum_retry_attempts"]) == "local.assembly_max_retry_attempts"
    destination = mapping["destination_config"][0]["on_failure"][0]["destination_arn"]
    assert expression(destination) == "aws_sqs_queue.assembly_failures.arn"


def test_event_sources_come_from_settings(tf: tfconfig.TerraformConfig) -> None:
    """Batch sizes and stream retries are read from settings.json by Terraform and the local dispatchers alike."""
    assert expression(tf.locals["event_sources"]) == "local.settings.event_sources"
    assert unwrap(tf.variables["assembly_max_retry_attempts"]["default"]) is None
    for name in ("ingest", "worker", "assemble"):
        mapping = tf.resource("aws_lambda_event_source_mapping", name)
        assert expression(mapping["batch_size"]) == f"local.event_sources.{name}.batch_size"


def test_table_matches_the_job_store(tf: tfconfig.TerraformConfig) -> None:
    table = tf.resource("aws_dynamodb_table", "jobs")
    spec = jobs.table_spec()
    assert unwrap(table["hash_key"]) == jobs.KEY == spec["KeySchema"][0]["AttributeName"]
    assert unwrap(table["billing_mode"]) == spec["BillingMode"] == "PAY_PER_REQUEST"
    assert unwrap(table["stream_enabled"]) is True
    assert unwrap(table["stream_view_type"]) == spec["StreamSpecification"]["StreamViewType"] == "NEW_AND_OLD_IMAGES"
    assert unwrap(table["ttl"][0]["attribute_name"]) == jobs.TTL_ATTRIBUTE
    assert unwrap(table["point_in_time_recovery"][0]["enabled"]) is True
    assert expression(table["server_side_encryption"][0]["kms_key_arn"]) == "aws_kms_key.main.arn"


def test_terraform_mirrors_the_deployment_contract(tf: tfconfig.TerraformConfig) -> None:
    """terraform/locals.tf states vsr.aws.deployment: names, function environment, model layout, work prefix."""
    s = get_settings()
    expected = deployment.resource_names(s.name_prefix, s.model_name, "ACCOUNT", "REGION")
    substitutions = {
        "${local.prefix}": s.name_prefix,
        "${local.account_id}": "ACCOUNT",
        "${local.region}": "REGION",
        "${local.model_name}": s.model_name,
    }

    def render(template: str) -> str:
        for placeholder, value in substitutions.items():
            template = template.replace(placeholder, value)
        return template

    names = tf.locals["names"]
    contract_names = {f for f in vars(expected) if not f.endswith("_function") and f != "model_key"}
    assert contract_names <= set(names), sorted(contract_names - set(names))
    for field in contract_names:
        assert render(names[field]) == getattr(expected, field), field
    assert "${local.prefix}-${name}" in str(tf.locals["function_full_names"])
    assert expected.worker_function == f"{s.name_prefix}-worker"
    assert tuple(tf.locals["function_names"]) == deployment.FUNCTIONS
    # the model object and its sidecar, and the metadata ingest reads
    assert render(tf.locals["model_key"]) == expected.model_key == deployment.model_key(s.model_name)
    assert render(tf.locals["model_meta_key"]) == deployment.model_sidecar_key(s.model_name)
    metadata = unwrap(tf.resource("aws_s3_object", "model")["metadata"])
    metadata = metadata[0] if isinstance(metadata, list) else metadata
    assert {k for k in metadata if not k.startswith("__")} == set(deployment.MODEL_METADATA_KEYS)
    assert "source_hash" in tf.resource("aws_s3_object", "model")  # SSE-KMS etags are not MD5s
    # the work bucket's job files
    assert tf.locals["work_prefix"] == deployment.WORK_PREFIX
    # one model-directory rule: Terraform's default is the registry's (what `make models` and the CLI use)
    from vsr.models.registry import DEFAULT_MODEL_DIR

    assert f'pathexpand("{DEFAULT_MODEL_DIR}")' in str(tf.locals["model_dir"])
    assert artifacts.segment_key("abc", 0).startswith(deployment.WORK_PREFIX)
    # the functions' environment: every variable the code reads, the fixed ones, and nothing stale
    env = tf.locals["function_env"]
    assert set(deployment.ENV_VARS.values()) <= set(env), sorted(set(deployment.ENV_VARS.values()) - set(env))
    assert {k: env[k] for k in deployment.FIXED_ENV} == deployment.FIXED_ENV
    source = "\n".join(p.read_text() for p in (tfconfig.ROOT / "shared" / "vsr").rglob("*.py"))
    for name in env:
        assert name in source, f"{name} is set by Terraform but read nowhere in shared/vsr"
    # the local runtime gives the handlers the same variables (it may leave out the optional ones)
    local_env_keys = set(
        re.findall(
            r'"(VSR_[A-Z_]+)"', _function_source(tfconfig.ROOT / "shared/vsr/local/provision.py", "function_env")
        )
    )
    assert local_env_keys and local_env_keys <= set(env), sorted(local_env_keys - set(env))


def _function_source(path: Any, name: str) -> str:
    source = path.read_text()
    node = next(n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.FunctionDef) and n.name == name)
    return ast.get_source_segment(source, node) or ""


def test_buckets_are_private_encrypted_tls_only(tf: tfconfig.TerraformConfig) -> None:
    pab = tf.resource("aws_s3_bucket_public_access_block", "this")
    for flag in ("block_public_acls", "block_public_policy", "ignore_public_acls", "restrict_public_buckets"):
        assert unwrap(pab[flag]) is True
    sse = tf.resource("aws_s3_bucket_server_side_encryption_configuration", "this")
    default = sse["rule"][0]["apply_server_side_encryption_by_default"][0]
    assert unwrap(default["sse_algorithm"]) == "aws:kms"
    policy = tfconfig.statements(tf.data("aws_iam_policy_document")["bucket"])
    tls = [s for s in policy if s["effect"] == "Deny"]
    assert any("aws:SecureTransport" in str(s["condition"]) for s in tls)
    versioning = tf.resource("aws_s3_bucket_versioning", "this")
    assert unwrap(versioning["versioning_configuration"][0]["status"]) == "Enabled"
    lifecycle = str(tf.resource("aws_s3_bucket_lifecycle_configuration", "this"))
    assert "expire-work-segments" in lifecycle and "local.work_prefix" in lifecycle
    notification = tf.resource("aws_s3_bucket_notification", "input")
    assert expression(notification["queue"][0]["queue_arn"]) == "aws_sqs_queue.ingest.arn"


def test_only_the_input_bucket_may_send_to_ingest(tf: tfconfig.TerraformConfig) -> None:
    (statement,) = tfconfig.statements(tf.data("aws_iam_policy_document")["ingest_queue"])
    assert statement["actions"] == ["sqs:SendMessage"]
    assert statement["resources"] == ["${aws_sqs_queue.ingest.arn}"]
    conditions = {unwrap(c["variable"]): as_list(c["values"]) for c in statement["condition"]}
    assert conditions["aws:SourceArn"] == ['${aws_s3_bucket.this["input"].arn}']
    assert conditions["aws:SourceAccount"] == ["${local.account_id}"]


def test_alarms_cover_dlqs_errors_throttles_and_age(tf: tfconfig.TerraformConfig) -> None:
    alarms = tf.resources("aws_cloudwatch_metric_alarm")
    assert unwrap(alarms["dlq_depth"]["metric_name"]) == "ApproximateNumberOfMessagesVisible"
    assert unwrap(alarms["dlq_depth"]["threshold"]) == 0
    assert unwrap(alarms["oldest_message"]["metric_name"]) == "ApproximateAgeOfOldestMessage"
    assert expression(alarms["oldest_message"]["threshold"]) == "local.oldest_message_s"
    assert "Throttles" in str(tf.locals["function_metric_alarms"]) and "Errors" in str(
        tf.locals["function_metric_alarms"]
    )
    # the GPU service's scaling alarms act on its scaling policies (gpu_scaling.tf); every other alarm pages
    scaling = {"gpu_backlog_deficit", "gpu_idle"}
    assert scaling <= set(alarms)
    for name, alarm in alarms.items():
        if name not in scaling:
            assert expression(alarm["alarm_actions"]) == "local.alarm_actions", name
    log_group = tf.resource("aws_cloudwatch_log_group", "function")
    assert expression(log_group["retention_in_days"]) == "local.log_retention_days"
    logging_config = tf.resource("aws_lambda_function", "this")["logging_config"][0]
    assert unwrap(logging_config["log_format"]) == "JSON"
    assert "aws_cloudwatch_dashboard" in str(tf.files["observability.tf"]["resource"])


def test_outputs(tf: tfconfig.TerraformConfig) -> None:
    required = {
        "input_bucket",
        "output_bucket",
        "work_bucket",
        "models_bucket",
        "ingest_queue_url",
        "segment_queue_url",
        "table_name",
        "upload_command",
        "redrive_command",
        "env",
        "env_exports",
        "dashboard_url",
    }
    assert required <= set(tf.outputs), sorted(required - set(tf.outputs))
    assert "vsr redrive" in str(tf.outputs["redrive_command"])
    assert "aws s3 cp" in str(tf.outputs["upload_command"])


def test_no_settings_number_is_typed_in_the_wiring(tf: tfconfig.TerraformConfig) -> None:
    """Attributes that carry a setting are expressions, never literals (the number lives in settings.json)."""
    checked: dict[str, Any] = {
        "lambda timeout": tf.resource("aws_lambda_function", "this")["timeout"],
        "lambda memory": tf.resource("aws_lambda_function", "this")["memory_size"],
        "ingest visibility": tf.resource("aws_sqs_queue", "ingest")["visibility_timeout_seconds"],
        "segment visibility": tf.resource("aws_sqs_queue", "segments")["visibility_timeout_seconds"],
        "retention": tf.resource("aws_sqs_queue", "ingest_dlq")["message_retention_seconds"],
        "log retention": tf.resource("aws_cloudwatch_log_group", "function")["retention_in_days"],
        "max concurrency": tf.resource("aws_lambda_event_source_mapping", "worker")["scaling_config"][0][
            "maximum_concurrency"
        ],
        "work expiry": tf.locals["work_expiry_days"],
        "oldest message": tf.locals["oldest_message_s"],
    }
    for what, value in checked.items():
        assert isinstance(unwrap(value), str) and "${" in str(unwrap(value)), f"{what} is a literal: {value!r}"


# --- evaluated by Terraform itself -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def evaluated(tf_eval: Callable[[dict[str, str]], dict[str, Any]]) -> dict[str, Any]:
    return tf_eval(
        {
            "functions": "local.functions",
            "ingest_visibility": "local.ingest_visibility_s",
            "segment_visibility": "local.segment_visibility_s",
            "reserved": "local.worker_reserved_concurrency",
            "max_concurrency": "local.worker_max_concurrency",
            "filter": "local.assembly_filter_pattern",
            "retention": "local.message_retention_s",
            "log_retention": "local.log_retention_days",
            "overrides": "local.settings_overrides",
            "model_key": "local.model_key",
            "prefix": "local.prefix",
        }
    )


def test_evaluated_settings_match_python(evaluated: dict[str, Any]) -> None:
    s = get_settings()
    for name in FUNCTIONS:
        f = s.function(name)
        assert evaluated["functions"][name] == {
            "timeout_s": f.timeout_s,
            "memory_mb": f.memory_mb,
            "ephemeral_storage_mb": f.ephemeral_storage_mb,
        }
    assert evaluated["ingest_visibility"] == s.visibility_timeout_s("ingest")
    assert evaluated["segment_visibility"] == s.visibility_timeout_s("worker")
    assert evaluated["reserved"] == s.worker_reserved_concurrency
    assert evaluated["max_concurrency"] == s.worker_max_concurrency
    assert evaluated["retention"] == s.raw["queues"]["message_retention_s"]
    assert evaluated["log_retention"] == s.raw["observability"]["log_retention_days"]
    assert evaluated["prefix"] == s.name_prefix
    from vsr.models.registry import deployed_model_name  # the int8 variant where precision is int8 and it passed

    assert evaluated["model_key"] == f"models/{deployed_model_name(s.model_name, s.precision)}.onnx"


def test_evaluated_aws_rules(evaluated: dict[str, Any]) -> None:
    functions = evaluated["functions"]
    assert evaluated["ingest_visibility"] >= 6 * functions["ingest"]["timeout_s"]
    assert evaluated["segment_visibility"] >= 6 * functions["worker"]["timeout_s"]
    assert evaluated["max_concurrency"] <= evaluated["reserved"]


def test_evaluated_filter_is_the_local_runtime_filter(evaluated: dict[str, Any]) -> None:
    assert json.loads(evaluated["filter"]) == load_assembly_filter()


def test_settings_overrides_round_trip(evaluated: dict[str, Any]) -> None:
    """The VSR_SETTINGS_OVERRIDES Terraform sets deep-merges into the same settings the code already has."""
    from vsr.settings import deep_merge

    overrides = json.loads(evaluated["overrides"])
    merged = deep_merge(get_settings().raw, overrides)
    assert merged == get_settings().raw
