"""The whole pipeline on real footage against a real moto server process: exact frames, timestamps and audio;
duplicate S3 events and duplicate segment deliveries give one job, one output and an exact counter."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import av
import pytest

from tests.clips import make_geometry_changes
from tests.local.conftest import SHORT_FRAMES, wait_for
from tests.local.media_checks import audio_packets, video_size, video_times
from tests.support.events import s3_notification
from vsr.aws import clients
from vsr.local.runtime import LocalRuntime
from vsr.pipeline import jobs
from vsr.quality import jobcheck, preview
from vsr.settings import get_settings

pytestmark = pytest.mark.timeout(300)


def _run(runtime: LocalRuntime, path: Path, out: Path) -> Any:
    started = time.time()
    job_id = runtime.submit(path)
    outcome = runtime.wait(job_id, started=started, timeout_s=240)
    assert outcome.status == jobs.COMPLETE, outcome.error
    runtime.download(outcome, out)
    return outcome


def _raw_item(table: str, job_id: str) -> dict[str, Any]:
    item = clients.dynamodb().get_item(TableName=table, Key={"job_id": {"S": job_id}}, ConsistentRead=True)["Item"]
    return jobs.deserialize(item)


def _objects(bucket: str) -> list[str]:
    return [o["Key"] for o in clients.s3().list_objects_v2(Bucket=bucket).get("Contents", [])]


@pytest.mark.slow  # about 30-60 s on 2 cores: 120 frames of inference
def test_carphone_exact_frames_and_timestamps(aws: Any, clips: dict[str, Path], tmp_path: Path) -> None:
    endpoint = aws(max_frames=30)  # 120 frames -> 4 segments
    with LocalRuntime(endpoint, log_dir=tmp_path / "logs") as runtime:
        outcome = _run(runtime, clips["carphone"], tmp_path / "out")
    job = outcome.job
    assert job.segment_count == 4
    assert job.done == set(range(4)) and job.remaining == 0
    source_times = video_times(clips["carphone"])
    assert len(source_times) == 120
    assert video_times(outcome.output) == source_times  # every frame, at exactly its source time
    width, height, frames = video_size(outcome.output)
    assert (width, height, frames) == (176 * 2, 144 * 2, 120)
    report = json.loads(outcome.report.read_text())
    # the plan ingest chose, for the workers this runtime has, beside what was measured
    plan = report["plan"]
    assert plan["strategy"] == "default" and plan["segments"] == 4 and plan["frames_per_segment"] == 30
    assert plan["concurrency"] == runtime.workers
    assert plan["predicted_wall_s"] > 0 and plan["predicted_cost_usd"] > 0 and plan["measured_wall_s"] > 0
    assert job.plan == {k: v for k, v in plan.items() if not k.startswith("measured_")}
    # the job measured itself: every pair across a join (frames 29|30, 59|60, 89|90) plus sampled pairs
    quality = report["quality"]
    assert [(p["segment"], p["frame"]) for p in quality["boundary_pairs"]] == [(1, 30), (2, 60), (3, 90)]
    assert quality["pairs"] == 3 + get_settings().quality_sample_pairs and quality["skipped_pairs"] == 0
    for pair in quality["boundary_pairs"]:
        assert pair["ewarp_output"] > 0 and pair["ewarp_bicubic"] > 0
    assert 0.5 < quality["flicker_ratio"] < 3.0
    assert quality["flicker_ratio"] == pytest.approx(quality["ewarp_output"] / quality["ewarp_bicubic"])
    # the preview PNG sits beside the output, was downloaded, and shows bicubic | output at output scale
    assert (
        quality["preview"] == job.output["preview_key"] == report["output"]["key"].removesuffix(".mp4") + ".preview.png"
    )
    assert job.output["flicker_ratio"] == pytest.approx(quality["flicker_ratio"])
    assert outcome.preview is not None and outcome.preview.name == Path(quality["preview"]).name
    with av.open(str(outcome.preview)) as png:
        picture = next(png.decode(video=0))
    assert picture.height == min(jobcheck.PREVIEW_CROP[0], 288) + preview.LABEL_BAR
    assert picture.width == 2 * min(jobcheck.PREVIEW_CROP[1], 352) + preview.GAP


def test_audio_identical_and_duplicate_s3_event_gives_one_job(aws: Any, clips: dict[str, Path], tmp_path: Path) -> None:
    source = clips["short_audio"]
    with LocalRuntime(aws(), log_dir=tmp_path / "logs") as runtime:
        r = runtime.resources
        started = time.time()
        job_id = runtime.submit(source, key=source.name)
        # The same S3 notification again, as S3/SQS at-least-once delivery can do, while the first is in flight.
        head = clients.s3().head_object(Bucket=r.names.input_bucket, Key=source.name)
        clients.sqs().send_message(
            QueueUrl=r.ingest_queue_url,
            MessageBody=s3_notification(
                r.names.input_bucket, source.name, etag=head["ETag"].strip('"'), size=head["ContentLength"]
            ),
        )
        outcome = runtime.wait(job_id, started=started, timeout_s=240)
        assert outcome.status == jobs.COMPLETE, outcome.error
        runtime.download(outcome, tmp_path / "out")
        wait_for(lambda: _queue_empty(r.ingest_queue_url), 60, "the duplicate event to be consumed")
        assert [job.job_id for job in jobs.list_jobs(r.names.table)] == [job_id]
        assert _raw_item(r.names.table, job_id).get("assembly_attempts", 1) == 1
        assert len([k for k in _objects(r.names.output_bucket) if k.endswith(".mp4")]) == 1
    assert outcome.job.segment_count == SHORT_FRAMES // 6
    assert video_times(outcome.output) == video_times(source)
    source_audio = audio_packets(source)
    assert source_audio and audio_packets(outcome.output) == source_audio


def _queue_empty(url: str) -> bool:
    attrs = clients.sqs().get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return attrs["ApproximateNumberOfMessages"] == "0" and attrs["ApproximateNumberOfMessagesNotVisible"] == "0"


def test_every_segment_delivered_twice_gives_one_output_and_exact_counter(
    aws: Any, clips: dict[str, Path], tmp_path: Path
) -> None:
    source = clips["short_audio"]
    endpoint = aws(window_per_worker=0)  # every segment enqueued at once, so all of them can be taken off
    with LocalRuntime(endpoint, functions=("ingest",), log_dir=tmp_path / "logs") as ingest_only:
        started = time.time()
        job_id = ingest_only.submit(source)
        job = wait_for(lambda: _processing(ingest_only, job_id), 60, "ingest to plan and enqueue the segments")
        segment_url = ingest_only.resources.segment_queue_url
    # Take every segment message off the queue and put each back twice: two deliveries of every message.
    sqs = clients.sqs()
    bodies: list[str] = []
    while len(bodies) < job.segment_count:
        batch = sqs.receive_message(QueueUrl=segment_url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
        for message in batch:
            bodies.append(message["Body"])
            sqs.delete_message(QueueUrl=segment_url, ReceiptHandle=message["ReceiptHandle"])
    assert len({json.loads(b)["segment"]["index"] for b in bodies}) == job.segment_count
    for copy in range(2):
        sqs.send_message_batch(
            QueueUrl=segment_url, Entries=[{"Id": f"{copy}-{i}", "MessageBody": b} for i, b in enumerate(bodies)]
        )
    with LocalRuntime(endpoint, workers=2, functions=("worker", "assemble"), log_dir=tmp_path / "logs") as runtime:
        outcome = runtime.wait(job_id, started=started, timeout_s=240)
        assert outcome.status == jobs.COMPLETE, outcome.error
        wait_for(lambda: _queue_empty(segment_url), 120, "the duplicate deliveries to be consumed")
        runtime.download(outcome, tmp_path / "out")
        r = runtime.resources
        item = _raw_item(r.names.table, job_id)
        assert len([k for k in _objects(r.names.output_bucket) if k.endswith(".mp4")]) == 1
    assert item["remaining"] == 0
    assert {int(i) for i in item["done"]} == set(range(job.segment_count))
    assert item["seg_frames"] == SHORT_FRAMES  # each segment's frames counted exactly once
    assert item.get("assembly_attempts", 1) == 1
    assert video_size(outcome.output)[2] == SHORT_FRAMES


def _processing(runtime: LocalRuntime, job_id: str) -> jobs.Job | None:
    job = runtime.job(job_id)
    return job if job is not None and job.status == jobs.PROCESSING else None


@pytest.mark.slow  # about 20-40 s: 60 small frames of inference
def test_a_capture_that_changes_resolution_mid_stream_completes_whole(aws: Any, tmp_path: Path) -> None:
    # the capture: 176x144, then 160x128 after one second (the channel switched feeds), then 352x288
    source = make_geometry_changes(
        tmp_path / "capture.ts", [(176, 144, "yuv420p", 25), (160, 128, "yuv420p", 25), (352, 288, "yuv420p", 10)]
    )
    endpoint = aws(max_frames=25)
    with LocalRuntime(endpoint, log_dir=tmp_path / "logs") as runtime:
        outcome = _run(runtime, source, tmp_path / "out")
    assert video_times(outcome.output) == video_times(source)  # every frame, at its own time
    assert video_size(outcome.output) == (352, 288, 60)  # all of them at twice the first geometry
    report = json.loads(outcome.report.read_text())
    changes = report["input"]["geometry_changes"]
    assert [(c["time_s"], c["width"], c["height"]) for c in changes] == [(1.0, 160, 128), (2.0, 352, 288)]
    assert report["input"]["geometry_change_count"] == 2
    # the job's own quality check compares with the input as the model saw it (in the first geometry)
    assert "error" not in report["quality"], report["quality"]
    assert report["quality"]["pairs"] > 0 and report["quality"]["flicker_ratio"] is not None
