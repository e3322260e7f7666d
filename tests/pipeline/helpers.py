"""Helpers for stage tests: upload like a user, build events like S3 -> SQS and the stream do, read queues."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.support.events import s3_notification
from vsr.aws import clients
from vsr.aws.resources import Resources
from vsr.pipeline import modelstore

ANIMEVIDEO_MACS = 619_200  # field notes: realesr-animevideov3 multiply-adds per input pixel


def upload_input(res: Resources, key: str, data: bytes, metadata: dict[str, str] | None = None) -> str:
    """Upload to the input bucket (with user metadata, as `aws s3 cp --metadata`); returns the SQS body S3 would
    send for it."""
    etag = clients.s3().put_object(Bucket=res.input_bucket, Key=key, Body=data, Metadata=metadata or {})["ETag"]
    return s3_notification(res.input_bucket, key, etag=etag, size=len(data))


def publish_fake_model(res: Resources, scale: int = 2) -> None:
    """A model object carrying only the metadata ingest reads (ingest never downloads the weights)."""
    clients.s3().put_object(
        Bucket=res.models_bucket,
        Key=res.model_key,
        Body=b"not read by ingest",
        Metadata=modelstore.object_metadata("realesr-animevideov3-x2", scale, ANIMEVIDEO_MACS, ""),
    )


def drain(queue_url: str) -> list[dict[str, Any]]:
    """Receive every visible message (as Lambda's poller would), deleting them; returns the SQS messages."""
    sqs = clients.sqs()
    got: list[dict[str, Any]] = []
    while True:
        batch = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, AttributeNames=["ApproximateReceiveCount"]
        ).get("Messages", [])
        if not batch:
            return got
        got.extend(batch)
        sqs.delete_message_batch(
            QueueUrl=queue_url,
            Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)],
        )


def bodies(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [json.loads(m["Body"]) for m in messages]


def read(path: Path) -> bytes:
    return path.read_bytes()


def publish_real_model(res: Resources, model_path: Path) -> None:
    """Upload the converted ONNX model as Terraform does (sha256 in the object's metadata)."""
    import hashlib

    clients.s3().upload_file(
        str(model_path),
        res.models_bucket,
        res.model_key,
        ExtraArgs={"Metadata": {"sha256": hashlib.sha256(model_path.read_bytes()).hexdigest()}},
    )
