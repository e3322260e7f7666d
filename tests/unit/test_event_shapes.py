"""The documented AWS event shapes (tests/events/) parse, and the local runtime builds the same shapes."""

from __future__ import annotations

import json

from tests.support import events as fixtures
from vsr.local.dispatch import sqs_record
from vsr.pipeline import events


def test_documented_s3_notification_parses() -> None:
    body = json.dumps(fixtures.fixture("s3_object_created"))
    (obj,) = events.s3_objects(body)
    assert (obj.bucket, obj.key, obj.size) == ("example-bucket", "test/key", 1024)  # the key is URL-decoded
    assert obj.version_id == "096fKKXTRTtl3on89fVO.nfljtsv6qko" and obj.etag == "0123456789abcdef0123456789abcdef"


def test_documented_sqs_and_stream_events_parse() -> None:
    (record,) = events.sqs_records(fixtures.fixture("sqs_event"))
    assert (record.message_id, record.body, record.receive_count) == (
        "059f36b4-87a3-44ab-83d2-661975830a7d",
        "Test message.",
        1,
    )
    (change,) = events.stream_records(fixtures.fixture("dynamodb_stream_modify"))
    assert change.event_name == "MODIFY" and change.keys == {"job_id": "JOB"}
    assert change.new_image == {"job_id": "JOB", "remaining": 0} and change.old_image["remaining"] == 1


def test_the_local_dispatcher_builds_lambdas_sqs_record_shape() -> None:
    message = {
        "MessageId": "m-1",
        "ReceiptHandle": "rh",
        "Body": "{}",
        "MD5OfBody": "99914b932bd37a50b983c5e7c90ae93b",
        "Attributes": {"ApproximateReceiveCount": "2", "SentTimestamp": "1"},
    }
    built = sqs_record(message, "arn:aws:sqs:us-east-1:123456789012:q")
    documented = fixtures.fixture("sqs_event")["Records"][0]
    assert set(built) == set(documented)
    assert built["attributes"]["ApproximateReceiveCount"] == "2"
    (parsed,) = events.sqs_records({"Records": [built]})
    assert parsed.receive_count == 2


def test_filled_fixtures_keep_the_documented_fields() -> None:
    body = json.loads(fixtures.s3_notification("b", "a b+é.mp4", etag='"e"', size=3))
    record = body["Records"][0]
    assert set(record) == set(fixtures.fixture("s3_object_created")["Records"][0])
    assert record["s3"]["object"]["key"] == "a+b%2B%C3%A9.mp4"
    (obj,) = events.s3_objects(json.dumps(body))
    assert obj.key == "a b+é.mp4" and obj.version_id is None
    stream = fixtures.stream_event("j", remaining_before=3)["Records"][0]
    assert set(stream) == set(fixtures.fixture("dynamodb_stream_modify")["Records"][0])
