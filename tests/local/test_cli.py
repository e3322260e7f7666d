"""`vsr run` as a user runs it: a subprocess with the embedded moto server, one JSON line last on stdout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.local.conftest import SHORT_FRAMES, overrides

pytestmark = pytest.mark.timeout(300)


def _vsr_run(source: Path, out: Path, *extra: str) -> tuple[int, dict, str]:
    env = {k: v for k, v in os.environ.items() if k != "VSR_ENDPOINT_URL"}
    env["VSR_SETTINGS_OVERRIDES"] = json.dumps(overrides())
    process = subprocess.run(
        [sys.executable, "-m", "vsr.cli", "run", str(source), "-o", str(out), "--json", *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    lines = process.stdout.strip().splitlines()
    assert lines, process.stderr[-3000:]
    return process.returncode, json.loads(lines[-1]), process.stderr


def test_vsr_run_completes_and_prints_one_json_line(clips: dict[str, Path], tmp_path: Path) -> None:
    code, summary, stderr = _vsr_run(clips["short_audio"], tmp_path / "out", "--workers", "2")
    assert code == 0, stderr[-3000:]
    assert summary["status"] == "COMPLETE" and summary["error"] is None
    assert summary["segments"] == SHORT_FRAMES // 6 and summary["frames"] == SHORT_FRAMES
    output = Path(summary["output"])
    assert output.is_file() and output.parent == (tmp_path / "out").resolve()
    assert Path(summary["report"]).is_file()
    assert Path(summary["preview"]).is_file() and Path(summary["preview"]).name.endswith(".preview.png")
    assert summary["flicker_ratio"] > 0 and f"preview {summary['preview']}" in stderr
    timings = summary["timings"]
    assert timings["wall_s"] > 0 and timings["infer_s"] > 0 and timings["decode_s"] > 0 and timings["encode_s"] > 0
    assert 0 < timings["process_s"] <= timings["worker_wall_s"]
    assert timings["overhead_s"] == pytest.approx(
        timings["wall_s"] - timings["process_s"] / timings["parallelism"], abs=0.01
    )
    assert timings["overhead_s"] > 0  # the events, queues, polls, uploads and assembly are never free
    assert "segments" in stderr  # the progress display


def test_vsr_run_bad_input_fails_with_reason_before_any_segment(clips: dict[str, Path], tmp_path: Path) -> None:
    code, summary, stderr = _vsr_run(clips["not_a_video"], tmp_path / "out")
    assert code == 1, stderr[-3000:]
    assert summary["status"] == "FAILED" and summary["output"] is None
    assert "video" in summary["error"].lower()
    # failed at ingest, once: no segment was planned, so no worker ever ran (no retry: tests/local/test_failures)
    assert summary["segments"] == 0 and summary["frames"] == 0
    assert summary["timings"]["stages"]["ingest_s"] > 0
