"""AWS-shaped events for tests, from the documented fixtures in tests/events/ with a test's own values filled in."""

from __future__ import annotations

import copy
import json
import urllib.parse
from functools import cache
from pathlib import Path
from typing import Any

EVENTS = Path(__file__).resolve().parents[1] / "events"


@cache
def _fixture(name: str) -> dict[str, Any]:
    return json.loads((EVENTS / f"{name}.json").read_text())


def fixture(name: str) -> dict[str, Any]:
    """A fresh copy of tests/events/<name>.json."""
    return copy.deepcopy(_fixture(name))


def s3_event_key(key: str, *, keep_slash: bool = True) -> str:
    """A key as S3 writes it into an event notification: form-urlencoded ("red flower.jpg" -> "red+flower.jpg",
    S3 user guide, "Event message structure"), UTF-8 percent-encoded, `+` as `%2B`. Seen from real S3: `/` is
    left as it is (minio/minio#11665) or encoded as `%2F` (aws/aws-sdk-js#837, and AWS's own sample event,
    tests/events/s3_object_created.json); moto encodes it. Ingest must read both."""
    return urllib.parse.quote_plus(key, safe="/" if keep_slash else "")


def s3_notification(
    bucket: str, key: str, *, etag: str, size: int, version_id: str | None = None, keep_slash: bool = True
) -> str:
    """The SQS message body S3 sends for an ObjectCreated event (key URL-encoded, as S3 encodes it)."""
    event = fixture("s3_object_created")
    record = event["Records"][0]
    record["s3"]["bucket"]["name"] = bucket
    record["s3"]["bucket"]["arn"] = f"arn:aws:s3:::{bucket}"
    obj = record["s3"]["object"]
    obj.update({"key": s3_event_key(key, keep_slash=keep_slash), "size": size, "eTag": etag.strip('"')})
    if version_id:
        obj["versionId"] = version_id
    else:
        obj.pop("versionId")
    return json.dumps(event)


def sqs_event(bodies: list[tuple[str, str]], source_arn: str = "", receive_count: int = 1) -> dict[str, Any]:
    """Lambda's SQS event for (message id, body) pairs."""
    template = fixture("sqs_event")["Records"][0]
    records = []
    for message_id, body in bodies:
        record = copy.deepcopy(template)
        record.update({"messageId": message_id, "receiptHandle": f"rh-{message_id}", "body": body})
        record["attributes"]["ApproximateReceiveCount"] = str(receive_count)
        if source_arn:
            record["eventSourceARN"] = source_arn
        records.append(record)
    return {"Records": records}


def sqs_event_from_messages(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """Lambda's SQS event for messages received from a queue (real receipt handles and receive counts)."""
    event = sqs_event([(m["MessageId"], m["Body"]) for m in messages])
    for record, message in zip(event["Records"], messages, strict=True):
        record["receiptHandle"] = message["ReceiptHandle"]
        count = message.get("Attributes", {}).get("ApproximateReceiveCount", "1")
        record["attributes"]["ApproximateReceiveCount"] = str(count)
    return event


def stream_event(job_id: str, remaining_before: int = 1, event_id: str = "ev-1") -> dict[str, Any]:
    """The DynamoDB stream record the assembly filter lets through: `remaining` went from N to 0."""
    event = fixture("dynamodb_stream_modify")
    record = event["Records"][0]
    record["eventID"] = event_id
    data = record["dynamodb"]
    data["Keys"] = {"job_id": {"S": job_id}}
    data["NewImage"] = {"job_id": {"S": job_id}, "remaining": {"N": "0"}}
    data["OldImage"] = {"job_id": {"S": job_id}, "remaining": {"N": str(remaining_before)}}
    return event
