"""Fair sharing of the segment queue (vsr.pipeline.window) against a real moto server process.

- ingest enqueues only the job's window; the rest follow as segments finish, and the job completes exactly;
- a short job ingested after a long one finishes first (its segment queues behind the long job's window only);
- a worker killed after releasing the next segment but before counting its own loses nothing: the message
  reappears, sends a duplicate of the released segment, and the job still completes once, counted exactly.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests import clips as clip_builders
from tests.local.conftest import wait_for
from tests.local.media_checks import video_size, video_times
from vsr.aws import clients
from vsr.local.faults import FaultPlan
from vsr.local.runtime import LocalRuntime
from vsr.pipeline import jobs

pytestmark = pytest.mark.timeout(600)


def _depth(url: str) -> int:
    attrs = clients.sqs().get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])


def _processing(runtime: LocalRuntime, job_id: str) -> jobs.Job | None:
    job = runtime.job(job_id)
    return job if job is not None and job.status == jobs.PROCESSING else None


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("fairness")
    return {
        "long": clip_builders.make_mov_h264(folder),  # 20 frames of 128x72
        "short": clip_builders.trim(clip_builders.real_footage()["carphone"], folder / "short.mp4", 2),
    }


def test_window_enqueues_a_few_segments_and_the_rest_follow(aws: Any, media: dict[str, Path], tmp_path: Path) -> None:
    endpoint = aws(max_frames=4)  # 20 frames -> at least 5 segments (the planner fills the last wave: 6 for 2 workers)
    with LocalRuntime(endpoint, workers=2, functions=("ingest",), log_dir=tmp_path / "logs") as ingest_only:
        started = time.time()
        job_id = ingest_only.submit(media["long"])
        job = wait_for(lambda: _processing(ingest_only, job_id), 60, "ingest to enqueue the window")
        segment_url = ingest_only.resources.segment_queue_url
        count = job.segment_count
        assert count >= 5 and count == job.plan["segments"]
        assert _depth(segment_url) == 2  # window_per_worker (1) x the two worker pollers
        bodies = [
            m["Body"]
            for m in clients.sqs().receive_message(QueueUrl=segment_url, MaxNumberOfMessages=10, VisibilityTimeout=0)[
                "Messages"
            ]
        ]
        assert all(json.loads(body)["window"] == 2 for body in bodies)
    with LocalRuntime(endpoint, workers=2, functions=("worker", "assemble"), log_dir=tmp_path / "logs") as runtime:
        outcome = runtime.wait(job_id, started=started, timeout_s=240)
        assert outcome.status == jobs.COMPLETE, outcome.error
        runtime.download(outcome, tmp_path / "out")
        wait_for(lambda: _depth(segment_url) == 0, 60, "the segment queue to drain")
    assert outcome.job.done == set(range(count)) and outcome.job.remaining == 0
    assert outcome.job.segment_totals["frames"] == 20
    assert video_times(outcome.output) == video_times(media["long"])


def test_short_job_after_a_long_one_finishes_first(aws: Any, media: dict[str, Path], tmp_path: Path) -> None:
    endpoint = aws(max_frames=2)  # the long clip: 10 segments; the short one: 1
    # Both jobs are ingested before any worker runs, long first: without the window the short job's one
    # segment would sit behind all ten of the long job's.
    with LocalRuntime(endpoint, workers=1, functions=("ingest",), log_dir=tmp_path / "logs") as ingest_only:
        long_id = ingest_only.submit(media["long"], key="long.mov")
        wait_for(lambda: _processing(ingest_only, long_id), 60, "the long job's ingest")
        short_id = ingest_only.submit(media["short"], key="short.mp4")
        wait_for(lambda: _processing(ingest_only, short_id), 60, "the short job's ingest")
    started = time.time()
    with LocalRuntime(endpoint, workers=1, functions=("worker", "assemble"), log_dir=tmp_path / "logs") as runtime:
        short = runtime.wait(short_id, started=started, timeout_s=300)
        assert short.status == jobs.COMPLETE, short.error
        long = runtime.wait(long_id, started=started, timeout_s=300)
        assert long.status == jobs.COMPLETE, long.error
    assert long.job.segment_count == 10 and short.job.segment_count == 1
    # One worker runs segments one at a time, so its log is the order they ran in. (A snapshot of the long
    # job when the short one completes would race: the worker goes on while the short job is assembled.)
    order = _segments_done_in_order(tmp_path / "logs")
    assert sorted(order) == sorted([(long_id, i) for i in range(10)] + [(short_id, 0)])
    assert order.index((short_id, 0)) <= 1  # behind at most the long job's window (1), not all ten
    assert short.job.completed_at < long.job.completed_at


def _segments_done_in_order(log_dir: Path) -> list[tuple[str, int]]:
    events = []
    for path in log_dir.glob("worker-*.log"):
        for line in path.read_text().splitlines():
            if line.startswith("{"):
                event = json.loads(line)
                if event.get("event") == "worker.segment_done":
                    events.append((event["timestamp"], event["job_id"], int(event["segment"])))
    return [(job_id, segment) for _, job_id, segment in sorted(events)]


@pytest.mark.slow  # about 30-60 s: one visibility timeout after the kill
def test_worker_killed_between_release_and_count_loses_nothing(
    aws: Any, media: dict[str, Path], tmp_path: Path
) -> None:
    endpoint = aws(max_frames=4, worker_timeout_s=20)  # 5 segments, window 1: a strict chain 0 -> 1 -> ... -> 4
    markers = tmp_path / "markers"
    markers.mkdir()
    # Segment 1's first delivery hangs in the count (after it released segment 2), so the test can kill it there.
    rule = {"segment": 1, "attempts": [1], "action": "block", "target": "vsr.pipeline.jobs:mark_segment_done"}
    plan = FaultPlan.from_dict({"marker_dir": str(markers), "rules": [rule]})
    with LocalRuntime(endpoint, workers=1, fault_plan=plan, log_dir=tmp_path / "logs") as runtime:
        started = time.time()
        job_id = runtime.submit(media["long"])
        marker = wait_for(lambda: next(markers.glob("blocked-worker-seg1-*"), None), 180, "segment 1 to hang")
        os.kill(int(marker.read_text()), signal.SIGKILL)
        outcome = runtime.wait(job_id, started=started, timeout_s=300)
        assert outcome.status == jobs.COMPLETE, outcome.error
        runtime.download(outcome, tmp_path / "out")
        r = runtime.resources
        wait_for(lambda: _depth(r.segment_queue_url) == 0, 120, "the duplicate release to be consumed")
        assert _depth(r.segment_dlq_url) == 0
        outputs = clients.s3().list_objects_v2(Bucket=r.names.output_bucket).get("Contents", [])
    job = outcome.job
    assert job.done == set(range(5)) and job.remaining == 0
    assert job.segment_totals["frames"] == 20  # every segment counted once
    assert len([o for o in outputs if o["Key"].endswith(".mp4")]) == 1
    assert video_size(outcome.output)[2] == 20
