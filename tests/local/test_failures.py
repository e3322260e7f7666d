"""Failure handling end to end against a real moto server process, faults injected from outside the handlers
(vsr.local.faults: the worker *container* patches the engine, the handler code is the production code).

- a worker SIGKILLed mid-segment: the message reappears after its visibility timeout and the job completes;
- a segment that always fails: retried after a backoff (not the visibility timeout), its job FAILED with the
  reason on the last attempt, the message dead-lettered, and `vsr redrive` (fault removed) completes the job;
- transient faults: retried after a backoff, the job completes with nothing lost or duplicated;
- an assembler killed mid-join: the stream record is retried, the same lease owner finishes, one output;
- an upload that is not a video: FAILED with a clear reason at once, no retry, no DLQ, source untouched.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import time
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import pytest

from tests.local.conftest import SHORT_FRAMES, wait_for
from tests.local.media_checks import audio_packets, video_size, video_times
from vsr.aws import clients
from vsr.cli import main
from vsr.local.faults import FaultPlan
from vsr.local.runtime import LocalRuntime
from vsr.pipeline import jobs

pytestmark = pytest.mark.timeout(300)
WORKER_TIMEOUT_S = 12  # visibility timeout too (factor 1 in tests): how long a lost message stays hidden


def _depth(url: str) -> int:
    attrs = clients.sqs().get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])


def _peek(url: str) -> list[tuple[object, str]]:
    """(segment index, receive count) of the visible messages, left visible: for failure messages."""
    messages = (
        clients.sqs()
        .receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0, AttributeNames=["All"])
        .get("Messages", [])
    )
    return [
        (json.loads(m["Body"]).get("segment", {}).get("index"), m["Attributes"]["ApproximateReceiveCount"])
        for m in messages
    ]


def _cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with redirect_stdout(out):
        code = main(list(argv))
    return code, out.getvalue()


@pytest.mark.slow  # about 20-40 s: one visibility timeout after the kill
def test_worker_killed_mid_segment_message_reappears_and_job_completes(
    aws: Any, clips: dict[str, Path], tmp_path: Path
) -> None:
    endpoint = aws(worker_timeout_s=WORKER_TIMEOUT_S)
    markers = tmp_path / "markers"
    markers.mkdir()
    # Segment 1 hangs inside the engine on its first delivery only, so the test can kill that container mid-segment.
    plan = FaultPlan.from_dict(
        {"marker_dir": str(markers), "rules": [{"segment": 1, "action": "block", "attempts": [1], "block_s": 120}]}
    )
    with LocalRuntime(endpoint, workers=2, fault_plan=plan, log_dir=tmp_path / "logs") as runtime:
        started = time.time()
        job_id = runtime.submit(clips["short_audio"])
        marker = wait_for(
            lambda: next(markers.glob("blocked-worker-seg1-pid*"), None), 120, "segment 1 to be mid-upscale"
        )
        pid = int(marker.read_text())
        killed_at = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        outcome = runtime.wait(job_id, started=started, timeout_s=240)
        assert outcome.status == jobs.COMPLETE, outcome.error
        assert sum(loop.replaced for loop in runtime.worker_loops()) == 1  # the dead container was replaced
        assert _depth(runtime.resources.segment_dlq_url) == 0
    # The lost message could only come back when its visibility ran out: the queue's timeout, pushed forward by
    # the worker's heartbeat every third of it, so at least two thirds of it after the kill (nobody deleted it).
    assert time.monotonic() - killed_at >= WORKER_TIMEOUT_S * 2 / 3 - 0.5
    job = outcome.job
    assert job.done == set(range(job.segment_count)) and job.remaining == 0
    assert job.segment_totals["frames"] == SHORT_FRAMES
    runtime.download(outcome, tmp_path / "out")
    assert video_size(outcome.output)[2] == SHORT_FRAMES


# Retries paced by a backoff: visibility timeouts far longer than the whole test, so a retry that waited for one
# could not happen in it; the backoff brings failed messages back after 1 s, then 2 s.
PACED_TIMEOUT_S = 240
BACKOFF_S = [1, 2]


@pytest.mark.slow  # about 30-60 s: three failing attempts a few seconds apart, then a redrive
def test_deterministic_fault_fails_the_job_with_its_reason_then_redrive_completes_it(
    aws: Any, clips: dict[str, Path], tmp_path: Path
) -> None:
    endpoint = aws(worker_timeout_s=PACED_TIMEOUT_S, segment_max_receive_count=3, retry_backoff_s=BACKOFF_S)
    reason = "injected: the GPU fell off the bus"
    plan = FaultPlan.from_dict({"rules": [{"segment": 2, "action": "raise", "reason": reason}]})
    source = clips["short_audio"]
    with LocalRuntime(endpoint, workers=2, fault_plan=plan, log_dir=tmp_path / "logs") as runtime:
        r = runtime.resources
        started = time.time()
        job_id = runtime.submit(source)
        # the job record itself says FAILED (not the runtime's dead-letter watch), with the user-facing reason
        outcome = runtime.wait(job_id, started=started, timeout_s=PACED_TIMEOUT_S, stop_on_dead_letters=False)
        job = outcome.job
        assert outcome.status == jobs.FAILED and job is not None and job.status == jobs.FAILED
        assert job.error == {
            "code": "dead_lettered",
            "reason": f"segment 2 of 4 failed 3 times: {reason}; it is kept in the dead-letter queue; "
            "`vsr redrive` retries it",
            "segment": 2,
        }
        assert outcome.error == job.error["reason"]
        # three attempts before one visibility timeout could have passed: the backoff paced them
        assert job.completed_at is not None and job.completed_at - job.created_at < PACED_TIMEOUT_S
        assert job.segment_errors[2]["attempts"] == 3 and job.segment_errors[2]["max_attempts"] == 3
        # the last attempt made the message visible at once: SQS moves it to the DLQ on its next receive
        wait_for(lambda: _depth(r.segment_dlq_url) == 1, 60, "segment 2's message to reach the DLQ")
        # messages of the job still queued (a duplicate delivery, a successor) are dropped as stale once seen
        try:
            wait_for(lambda: _depth(r.segment_queue_url) == 0, 60, "the segment queue to drain")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: (segment, receive count) left {_peek(r.segment_queue_url)}") from exc
        assert 2 not in job.done

    # `vsr status JOB --json` tells which segment and why (the runtime is stopped; the moto state stays).
    code, text = _cli("status", job_id, "--json", "--endpoint", endpoint)
    assert code == 0
    status = json.loads(text)
    assert status["status"] == "FAILED" and status["error"]["reason"] == job.error["reason"]
    unfinished = {row["index"]: row for row in status["segments"] if row["state"] != "done"}
    assert unfinished.pop(2) == {
        "index": 2,
        "state": "dead-lettered",
        "frames_written": 0,
        "attempts": 3,
        "error": reason,
        "code": "transient",
    }
    # segment 3 may have been released, or still running, when the job failed: then it was dropped (or not
    # counted) as work of a FAILED job, and the redrive below must send it again
    assert set(unfinished) <= {3} and all(row["attempts"] == 0 for row in unfinished.values())
    code, text = _cli("status", "--endpoint", endpoint)
    assert code == 0 and job_id in text and "FAILED" in text and "segment 2 of 4 failed 3 times" in text

    # Fault removed (a fresh runtime without the plan), then the operator redrives: the job goes back to
    # PROCESSING (a guarded transition) and completes, frame-exact with its audio.
    with LocalRuntime(endpoint, workers=2, log_dir=tmp_path / "logs2") as runtime:
        code, text = _cli("redrive", "--endpoint", endpoint)
        assert code == 0
        assert "segments: moved 1 message(s)" in text and "ingest: moved 0 message(s)" in text
        assert f"job(s) back to PROCESSING: {job_id}" in text
        assert runtime.job(job_id).status in (jobs.PROCESSING, jobs.ASSEMBLING, jobs.COMPLETE)  # type: ignore[union-attr]
        assert _depth(runtime.resources.segment_dlq_url) == 0
        outcome = runtime.wait(job_id, started=time.time(), timeout_s=PACED_TIMEOUT_S)
        assert outcome.status == jobs.COMPLETE, outcome.error
        assert outcome.job.done == set(range(outcome.job.segment_count))
        assert outcome.job.segment_totals["frames"] == SHORT_FRAMES
        assert outcome.job.error is None
        runtime.download(outcome, tmp_path / "out")
    assert video_times(outcome.output) == video_times(source)
    assert audio_packets(outcome.output) == audio_packets(source)


@pytest.mark.slow  # about 20-40 s
def test_transient_faults_recover_after_a_backoff_with_nothing_lost_or_duplicated(
    aws: Any, clips: dict[str, Path], tmp_path: Path
) -> None:
    endpoint = aws(worker_timeout_s=PACED_TIMEOUT_S, segment_max_receive_count=3, retry_backoff_s=BACKOFF_S)
    # segment 1 fails its first two deliveries, segment 3 its first: both pass on a later attempt
    rules = [
        {"segment": 1, "action": "raise", "attempts": [1, 2], "reason": "injected: throttled"},
        {"segment": 3, "action": "raise", "attempts": [1], "reason": "injected: connection reset"},
    ]
    source = clips["short_audio"]
    with LocalRuntime(
        endpoint, workers=2, fault_plan=FaultPlan.from_dict({"rules": rules}), log_dir=tmp_path / "l"
    ) as runtime:
        r = runtime.resources
        started = time.time()
        job_id = runtime.submit(source)
        outcome = runtime.wait(job_id, started=started, timeout_s=PACED_TIMEOUT_S)
        assert outcome.status == jobs.COMPLETE, outcome.error
        job = outcome.job
        assert job.completed_at is not None and job.completed_at - job.created_at < PACED_TIMEOUT_S
        assert job.segment_errors[1]["attempts"] == 2 and job.segment_errors[3]["attempts"] == 1
        assert job.done == set(range(job.segment_count)) and job.remaining == 0
        assert job.segment_totals["frames"] == SHORT_FRAMES  # each segment counted once
        assert _depth(r.segment_dlq_url) == 0
        runtime.download(outcome, tmp_path / "out")
    assert video_times(outcome.output) == video_times(source)  # nothing lost, nothing twice
    assert audio_packets(outcome.output) == audio_packets(source)


def test_assembler_killed_mid_join_is_retried_and_assembles_once(
    aws: Any, clips: dict[str, Path], tmp_path: Path
) -> None:
    endpoint = aws()
    markers = tmp_path / "markers"
    markers.mkdir()
    # The first assembly attempt hangs inside the join (after taking the lease); its replacement passes.
    rule = {"function": "assemble", "target": "vsr.pipeline.assemble:join_segments", "action": "block", "once": True}
    plan = FaultPlan.from_dict({"marker_dir": str(markers), "rules": [{**rule, "block_s": 120}]})
    source = clips["short_audio"]
    with LocalRuntime(endpoint, fault_plan=plan, log_dir=tmp_path / "logs") as runtime:
        r = runtime.resources
        started = time.time()
        job_id = runtime.submit(source)
        marker = wait_for(lambda: next(markers.glob("blocked-assemble-*"), None), 120, "assembly to be mid-join")
        assert runtime.job(job_id).status == jobs.ASSEMBLING
        os.kill(int(marker.read_text()), signal.SIGKILL)
        outcome = runtime.wait(job_id, started=started, timeout_s=120)
        assert outcome.status == jobs.COMPLETE, outcome.error
        stream = next(loop for loop in runtime.loops if loop.name == "assemble")
        assert stream.replaced == 1 and stream.matched == 1  # one stream record, retried after the crash
        item = jobs.deserialize(
            clients.dynamodb().get_item(TableName=r.names.table, Key={"job_id": {"S": job_id}}, ConsistentRead=True)[
                "Item"
            ]
        )
        assert item["assembly_attempts"] == 2  # the crashed attempt and the one that finished
        outputs = [o["Key"] for o in clients.s3().list_objects_v2(Bucket=r.names.output_bucket).get("Contents", [])]
        assert len([k for k in outputs if k.endswith(".mp4")]) == 1
        runtime.download(outcome, tmp_path / "out")
    assert video_times(outcome.output) == video_times(source)
    assert audio_packets(outcome.output) == audio_packets(source)


def test_not_a_video_fails_once_with_reason_no_retry_no_dlq(aws: Any, clips: dict[str, Path], tmp_path: Path) -> None:
    source = clips["not_a_video"]
    with LocalRuntime(aws(), log_dir=tmp_path / "logs") as runtime:
        r = runtime.resources
        ingest = next(loop for loop in runtime.loops if loop.name == "ingest")
        wait_for(lambda: _depth(r.ingest_queue_url) == 0, 30, "the bucket's s3:TestEvent to be consumed")
        invocations_before = ingest.invocations
        started = time.time()
        job_id = runtime.submit(source)
        outcome = runtime.wait(job_id, started=started, timeout_s=30)
        assert outcome.status == jobs.FAILED
        assert outcome.job is not None and outcome.job.status == jobs.FAILED  # the record itself says FAILED
        assert "video" in outcome.error.lower(), outcome.error
        wait_for(lambda: _depth(r.ingest_queue_url) == 0, 30, "the ingest message to be deleted")
        assert ingest.invocations - invocations_before == 1  # no retry
        assert _depth(r.ingest_dlq_url) == 0 and _depth(r.segment_queue_url) == 0
        body = clients.s3().get_object(Bucket=r.names.input_bucket, Key=source.name)["Body"].read()
        assert hashlib.sha256(body).digest() == hashlib.sha256(source.read_bytes()).digest()  # source untouched
        assert outcome.job.segment_count == 0
