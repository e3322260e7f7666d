"""The GPU tier end to end: real `vsr worker` processes (what the ECS task runs) on the GPU segment queue,
beside the Lambda-style containers, against a real moto server process and a real clip.

Here the worker has no GPU provider, so it runs on the CPU provider and says so (once in its log, and in the job
report's `execution` block). Faults are installed around the real command by vsr.local.fleet (tests only).
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.local.conftest import SHORT_FRAMES, overrides, wait_for
from tests.local.media_checks import audio_packets, video_times
from vsr.admission import ModelCost, plan_for
from vsr.aws import clients
from vsr.local.faults import FaultPlan
from vsr.local.runtime import LocalRuntime
from vsr.media.probe import probe
from vsr.pipeline import jobs
from vsr.settings import Settings, deep_merge, get_settings

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]
MODEL = ModelCost(name="realesr-animevideov3-x2", scale=2, macs_per_input_pixel=619_200)

# 176x144 frames take ~0.011 s each on the planned GPU: 0.07 s of work per segment cuts the clip into 6-frame
# segments, so a job has several segments and the window and the count are exercised on this tier too.
GPU_TEST_SETTINGS: dict[str, Any] = {
    "gpu": {"segment_work_s": 0.07, "visibility_timeout_s": 12, "drain_s": 60, "max_receive_count": 5},
}


def configure(monkeypatch: pytest.MonkeyPatch, endpoint: str, extra: dict[str, Any] | None = None) -> str:
    settings = deep_merge(deep_merge(overrides(worker_timeout_s=12), GPU_TEST_SETTINGS), extra or {})
    monkeypatch.setenv("VSR_SETTINGS_OVERRIDES", json.dumps(settings))
    return endpoint


def _depth(url: str) -> int:
    attrs = clients.sqs().get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])


def _assert_frame_exact(runtime: LocalRuntime, outcome: Any, source: Path, out: Path) -> dict[str, Any]:
    assert outcome.status == jobs.COMPLETE, outcome.error
    job = outcome.job
    assert job.done == set(range(job.segment_count)) and job.remaining == 0
    assert job.segment_totals["frames"] == SHORT_FRAMES  # every frame counted once: nothing lost or duplicated
    runtime.download(outcome, out)
    assert video_times(outcome.output) == video_times(source)
    assert audio_packets(outcome.output) == audio_packets(source)
    return json.loads(outcome.report.read_text())


def test_a_job_forced_to_the_gpu_tier_runs_on_vsr_worker_processes_and_completes_frame_exact(
    aws: Any, monkeypatch: pytest.MonkeyPatch, clips: dict[str, Path], tmp_path: Path
) -> None:
    endpoint = configure(monkeypatch, aws())
    with LocalRuntime(endpoint, workers=1, gpu_workers=1, log_dir=tmp_path / "logs") as runtime:
        started = time.time()
        job_id = runtime.submit(clips["short_audio"], metadata={"vsr-tier": "gpu"})
        outcome = runtime.wait(job_id, started=started, timeout_s=300)
        report = _assert_frame_exact(runtime, outcome, clips["short_audio"], tmp_path / "out")
        assert sum(loop.invocations for loop in runtime.worker_loops()) == 0  # no segment went to Lambda
        assert _depth(runtime.resources.gpu_segment_dlq_url) == 0
        gpu_logs = "".join(p.read_text() for p in runtime.gpu_fleet.log_paths())
    job = outcome.job
    assert job.plan["tier"] == "gpu" and job.segment_count > 1
    # no GPU provider here: the fallback is logged once by the worker and named in the report, never silent
    assert job.executions == {"gpu:CPUExecutionProvider"}
    assert report["execution"]["planned_tier"] == "gpu"
    assert "CPU provider" in report["execution"]["warning"]
    assert gpu_logs.count('"engine.provider_missing"') == 1
    assert '"worker.started"' in gpu_logs


def test_a_job_over_lambdas_cost_limit_is_accepted_on_the_gpu_tier(
    aws: Any, monkeypatch: pytest.MonkeyPatch, clips: dict[str, Path], tmp_path: Path
) -> None:
    # A fleet that is cheap for this clip (short boot, no idle tail), and a cost limit between its plan and the
    # cheapest Lambda plan of the same clip, both predicted by the planner ingest uses
    cheap_fleet: dict[str, Any] = {
        "gpu": {
            "boot_s": 1,
            "scale_in_idle_s": 0,
            "min_billed_s": 1,
            "instance_types": {"g4dn.xlarge": {"hourly_usd": 0.01}},
        }
    }
    configure(monkeypatch, aws(), cheap_fleet)
    settings = Settings(raw=deep_merge(get_settings().raw, {"gpu": {"enabled": True, "max_tasks": 1}}))
    info = probe(clips["short_audio"])
    lambda_cost = plan_for(info, MODEL, settings, "cost", concurrency=1, tier="lambda").chosen.predicted_cost_usd
    gpu_cost = plan_for(info, MODEL, settings, tier="gpu").chosen.predicted_cost_usd
    assert gpu_cost < lambda_cost
    limit = (gpu_cost + lambda_cost) / 2
    endpoint = configure(monkeypatch, aws(), deep_merge(cheap_fleet, {"limits": {"max_job_cost_usd": limit}}))
    with LocalRuntime(endpoint, workers=1, gpu_workers=1, log_dir=tmp_path / "logs") as runtime:
        started = time.time()
        job_id = runtime.submit(clips["short_audio"])
        outcome = runtime.wait(job_id, started=started, timeout_s=300)
        _assert_frame_exact(runtime, outcome, clips["short_audio"], tmp_path / "out")
    assert outcome.job.plan["tier"] == "gpu"
    assert outcome.job.plan["predicted_cost_usd"] <= limit


def _blocking_segment_one(tmp_path: Path, block_s: float) -> tuple[Path, FaultPlan]:
    """A fault plan that hangs segment 1's first delivery on a GPU task for `block_s`, and its marker folder."""
    markers = tmp_path / "markers"
    markers.mkdir()
    rule = {"function": "gpu-worker", "segment": 1, "action": "block", "attempts": [1], "block_s": block_s}
    return markers, FaultPlan.from_dict({"marker_dir": str(markers), "rules": [rule]})


def _blocked_task(markers: Path) -> int:
    marker = wait_for(
        lambda: next(markers.glob("blocked-gpu-worker-seg1-pid*"), None), 180, "segment 1 to be mid-upscale"
    )
    return int(marker.read_text())


def test_sigterm_mid_segment_drains_the_task_finishing_its_segment(
    aws: Any, monkeypatch: pytest.MonkeyPatch, clips: dict[str, Path], tmp_path: Path
) -> None:
    endpoint = configure(monkeypatch, aws())
    markers, plan = _blocking_segment_one(tmp_path, block_s=3)
    with LocalRuntime(endpoint, workers=1, gpu_workers=1, fault_plan=plan, log_dir=tmp_path / "logs") as runtime:
        started = time.time()
        job_id = runtime.submit(clips["short_audio"], metadata={"vsr-tier": "gpu"})
        pid = _blocked_task(markers)
        os.kill(pid, signal.SIGTERM)  # what ECS sends on a stop or a spot interruption
        outcome = runtime.wait(job_id, started=started, timeout_s=300)
        _assert_frame_exact(runtime, outcome, clips["short_audio"], tmp_path / "out")
        assert runtime.gpu_fleet.exits[:1] == [0]  # the drained task exited cleanly, and was replaced
        drained = next(p for p in runtime.gpu_fleet.log_paths() if f'"pid": {pid}' in p.read_text())
    log_lines = [json.loads(line) for line in drained.read_text().splitlines() if line.startswith("{")]
    events = [line.get("event") for line in log_lines]
    assert "worker.drain_requested" in events and "worker.released" not in events
    # the segment it was running when the signal came was finished and counted by that task
    assert any(line.get("event") == "segment_counted" and line.get("segment") == 1 for line in log_lines)
    stopped = next(line for line in log_lines if line.get("event") == "worker.stopped")
    assert stopped["released"] == 0


def test_sigterm_past_the_drain_time_releases_the_segment_to_another_task(
    aws: Any, monkeypatch: pytest.MonkeyPatch, clips: dict[str, Path], tmp_path: Path
) -> None:
    # visibility 600 s: only the release (visibility 0) lets another task take segment 1 before the test ends
    endpoint = configure(monkeypatch, aws(), {"gpu": {"drain_s": 1, "visibility_timeout_s": 600}})
    monkeypatch.setenv(
        "VSR_SETTINGS_OVERRIDES",
        json.dumps(
            deep_merge(json.loads(os.environ["VSR_SETTINGS_OVERRIDES"]), {"queues": {"visibility_extension_s": 600}})
        ),
    )
    markers, plan = _blocking_segment_one(tmp_path, block_s=300)
    with LocalRuntime(endpoint, workers=1, gpu_workers=1, fault_plan=plan, log_dir=tmp_path / "logs") as runtime:
        started = time.time()
        job_id = runtime.submit(clips["short_audio"], metadata={"vsr-tier": "gpu"})
        pid = _blocked_task(markers)
        os.kill(pid, signal.SIGTERM)
        outcome = runtime.wait(job_id, started=started, timeout_s=300)
        _assert_frame_exact(runtime, outcome, clips["short_audio"], tmp_path / "out")
        assert runtime.gpu_fleet.exits[:1] == [0]
        drained = next(p for p in runtime.gpu_fleet.log_paths() if f'"pid": {pid}' in p.read_text())
    events = [json.loads(line).get("event") for line in drained.read_text().splitlines() if line.startswith("{")]
    assert "worker.released" in events


def test_sigkill_mid_segment_the_message_reappears_and_the_job_completes_once(
    aws: Any, monkeypatch: pytest.MonkeyPatch, clips: dict[str, Path], tmp_path: Path
) -> None:
    endpoint = configure(monkeypatch, aws())
    markers, plan = _blocking_segment_one(tmp_path, block_s=300)
    with LocalRuntime(endpoint, workers=1, gpu_workers=1, fault_plan=plan, log_dir=tmp_path / "logs") as runtime:
        started = time.time()
        job_id = runtime.submit(clips["short_audio"], metadata={"vsr-tier": "gpu"})
        pid = _blocked_task(markers)
        os.kill(pid, signal.SIGKILL)
        outcome = runtime.wait(job_id, started=started, timeout_s=300)
        _assert_frame_exact(runtime, outcome, clips["short_audio"], tmp_path / "out")
        assert runtime.gpu_fleet.replaced >= 1
        assert runtime.gpu_fleet.exits[:1] == [-signal.SIGKILL]
        assert _depth(runtime.resources.gpu_segment_dlq_url) == 0
