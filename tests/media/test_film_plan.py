"""`vsr plan` on a real 2-hour 1920x1080 60 fps film (issue 21): a real MP4 of 432,000 frames with AAC, built by
tools/make_film.py (one second of real footage looped by stream copy, about 1.7 GB), probed like any upload.
With the GPU fleet enabled it is accepted there within the tier's cost limit, with the fleet's task count over
time, wall time, cost and the fragmented assembly path; Lambda-only refuses it, naming the GPU tier."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tools.make_film import make_film
from vsr.settings import get_settings

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def film(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_film(tmp_path_factory.mktemp("film") / "film-2h.mp4", seconds=7200)


def _plan(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "vsr.cli", "plan", *args]
    return subprocess.run(command, capture_output=True, text=True, check=False, timeout=600)


def test_a_real_two_hour_1080p60_film_is_planned_on_the_gpu_fleet_and_refused_on_lambda(film: Path) -> None:
    fleet = _plan("--gpu-fleet", "--json", str(film))
    assert fleet.returncode == 0, fleet.stderr
    plan = json.loads(fleet.stdout)
    assert plan["input"]["frames"] == 432_000 and plan["input"]["audio_streams"] == 1
    assert plan["input"]["width"] == 1920 and plan["input"]["fps"] == "60/1"
    assert plan["accepted"] is True
    chosen = plan["chosen"]["plan"]
    assert chosen["tier"] == "gpu"
    assert 0 < chosen["predicted_cost_usd"] <= get_settings().limits_for("gpu").max_job_cost_usd
    assert chosen["predicted_wall_s"] > 0 and chosen["segments"] > 1
    assert plan["assembly"]["path"] == "fragmented"  # tens of GB of 4K output: nothing holds it whole
    busy = [point["tasks"] for point in plan["fleet_tasks"]]
    assert busy[0] == 0 and max(busy) == get_settings().gpu.max_tasks and busy[-1] == 0  # from zero and back

    text = _plan("--gpu-fleet", str(film))
    assert text.returncode == 0, text.stderr
    assert "GPU fleet tasks over time" in text.stdout and "accepted" in text.stdout

    lambda_only = _plan(str(film))
    assert lambda_only.returncode != 0
    assert "the video lasts 7200 s; the limit is 1800 s on Lambda" in lambda_only.stderr
    assert "gpu_fleet_enabled = true" in lambda_only.stderr
