"""Local provisioning creates what Terraform creates, from the same settings, and converges when run again."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vsr.aws import clients
from vsr.local.provision import local_names, provision
from vsr.settings import get_settings


def test_resources_follow_the_settings_and_provisioning_is_idempotent(aws: Any, tmp_path: Path) -> None:
    aws(worker_timeout_s=7, segment_max_receive_count=3)
    settings = get_settings()
    model = tmp_path / "model.onnx"
    model.write_bytes(b"onnx bytes")
    model.with_suffix(".json").write_text(json.dumps({"scale": 2, "macs_per_input_pixel": 619200}))
    first = provision(model_path=model)
    again = provision(model_path=model)  # converges, creates nothing twice
    assert again == first
    names = local_names(settings)
    sqs, s3, ddb = clients.sqs(), clients.s3(), clients.dynamodb()

    for url, dlq_url, consumer, max_receive in (
        (first.ingest_queue_url, first.ingest_dlq_url, "ingest", settings.ingest_max_receive_count),
        (first.segment_queue_url, first.segment_dlq_url, "worker", 3),
    ):
        attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        assert int(attrs["VisibilityTimeout"]) == settings.visibility_timeout_s(consumer)
        assert int(attrs["MessageRetentionPeriod"]) == settings.raw["queues"]["message_retention_s"]
        redrive = json.loads(attrs["RedrivePolicy"])
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        assert redrive == {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receive}
    assert settings.visibility_timeout_s("worker") == 7  # the test's factor 1 x timeout 7

    table = ddb.describe_table(TableName=names.table)["Table"]
    assert table["StreamSpecification"] == {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"}
    assert table["KeySchema"] == [{"AttributeName": "job_id", "KeyType": "HASH"}]
    ttl = ddb.describe_time_to_live(TableName=names.table)["TimeToLiveDescription"]
    assert ttl["TimeToLiveStatus"] == "ENABLED" and ttl["AttributeName"] == "expires_at"

    notification = s3.get_bucket_notification_configuration(Bucket=names.input_bucket)["QueueConfigurations"]
    ingest_arn = sqs.get_queue_attributes(QueueUrl=first.ingest_queue_url, AttributeNames=["QueueArn"])["Attributes"]
    assert [(n["QueueArn"], n["Events"]) for n in notification] == [(ingest_arn["QueueArn"], ["s3:ObjectCreated:*"])]

    head = s3.head_object(Bucket=names.models_bucket, Key=names.model_key)
    assert head["Metadata"]["scale"] == "2" and head["Metadata"]["macs-per-input-pixel"] == "619200"
    assert s3.get_object(Bucket=names.models_bucket, Key=names.model_key)["Body"].read() == b"onnx bytes"
    env = first.function_env()
    assert env["VSR_MODEL_SCALE"] == "2" and env["VSR_MODEL_MACS_PER_PIXEL"] == "619200"
    assert env["VSR_TABLE"] == names.table and env["VSR_SEGMENT_QUEUE_URL"] == first.segment_queue_url
