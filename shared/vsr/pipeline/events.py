"""Parse the AWS events the handlers receive: SQS batches, S3 notifications inside them, DynamoDB stream records.

Everything that is shaped by AWS (and imitated by the local runtime's dispatchers) is decoded here, so the
stage modules work on small typed values.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from boto3.dynamodb.types import TypeDeserializer

from vsr.errors import PermanentError

_deserializer = TypeDeserializer()


class MalformedEventError(PermanentError):
    """An event we cannot understand: retrying cannot help; log it and drop it."""

    code = "malformed_event"


@dataclass(frozen=True)
class SqsRecord:
    message_id: str
    body: str
    receipt_handle: str
    receive_count: int  # ApproximateReceiveCount: 1 on the first delivery
    source_arn: str


@dataclass(frozen=True)
class S3Object:
    """One object named by an S3 ObjectCreated notification (key already URL-decoded)."""

    bucket: str
    key: str
    version_id: str | None
    etag: str | None
    size: int | None
    event_name: str
    event_time: str

    def to_input_ref(self) -> dict[str, Any]:
        return {
            "bucket": self.bucket,
            "key": self.key,
            "version_id": self.version_id,
            "etag": self.etag,
            "size": self.size,
        }


@dataclass(frozen=True)
class StreamRecord:
    event_id: str
    event_name: str  # INSERT | MODIFY | REMOVE
    keys: dict[str, Any]
    new_image: dict[str, Any] | None
    old_image: dict[str, Any] | None


def sqs_records(event: Mapping[str, Any]) -> Iterator[SqsRecord]:
    for record in event.get("Records", []):
        attributes = record.get("attributes") or {}
        yield SqsRecord(
            message_id=str(record.get("messageId", "")),
            body=str(record.get("body", "")),
            receipt_handle=str(record.get("receiptHandle", "")),
            receive_count=int(attributes.get("ApproximateReceiveCount", 1) or 1),
            source_arn=str(record.get("eventSourceARN", "")),
        )


def batch_response(failed_message_ids: list[str]) -> dict[str, Any]:
    """SQS partial batch response (ReportBatchItemFailures): only these messages are redelivered."""
    return {"batchItemFailures": [{"itemIdentifier": message_id} for message_id in failed_message_ids]}


def s3_objects(body: str) -> list[S3Object]:
    """ObjectCreated objects in an S3 notification body; [] for s3:TestEvent and other event types."""
    try:
        notification = json.loads(body)
    except ValueError as exc:
        raise MalformedEventError(f"S3 notification is not JSON: {body[:200]!r}") from exc
    if not isinstance(notification, dict):
        raise MalformedEventError(f"S3 notification is not an object: {body[:200]!r}")
    if notification.get("Event") == "s3:TestEvent":
        return []
    objects = []
    for record in notification.get("Records", []) or []:
        name = str(record.get("eventName", ""))
        if not name.startswith("ObjectCreated:"):
            continue
        try:
            s3 = record["s3"]
            obj = s3["object"]
            objects.append(
                S3Object(
                    bucket=str(s3["bucket"]["name"]),
                    key=urllib.parse.unquote_plus(str(obj["key"])),
                    version_id=obj.get("versionId") or None,
                    etag=(str(obj["eTag"]).strip('"') if obj.get("eTag") else None),
                    size=int(obj["size"]) if obj.get("size") is not None else None,
                    event_name=name,
                    event_time=str(record.get("eventTime", "")),
                )
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise MalformedEventError(f"S3 record without bucket/key: {json.dumps(record)[:300]}") from exc
    return objects


def _image(image: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if image is None:
        return None
    return {name: _deserializer.deserialize(value) for name, value in image.items()}


def stream_records(event: Mapping[str, Any]) -> Iterator[StreamRecord]:
    for record in event.get("Records", []):
        data = record.get("dynamodb") or {}
        yield StreamRecord(
            event_id=str(record.get("eventID", "")),
            event_name=str(record.get("eventName", "")),
            keys=_image(data.get("Keys")) or {},
            new_image=_image(data.get("NewImage")),
            old_image=_image(data.get("OldImage")),
        )
