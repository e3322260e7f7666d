"""tools/cost.py: the README's cost per minute of video follows from the settings and the model's cost."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from tests.deploy.tfconfig import ROOT
from vsr.settings import get_settings

spec = importlib.util.spec_from_file_location("vsr_cost_tool", ROOT / "tools" / "cost.py")
assert spec and spec.loader
cost = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = cost
spec.loader.exec_module(cost)

MACS = 619_200  # realesr-animevideov3 (field notes); any positive number exercises the formula


def test_formula_follows_the_settings() -> None:
    s = get_settings()
    e = cost.estimate(640, 360, 25, "arm64", MACS, "m")
    assert e.frames == 1500
    assert e.vcpus == pytest.approx(s.worker_vcpus())
    flops_per_frame = 640 * 360 * 2 * MACS
    assert e.seconds_per_frame == pytest.approx(flops_per_frame / (s.segments["gflops_per_vcpu"] * 1e9 * e.vcpus))
    worker_s = e.frames * e.seconds_per_frame * (1 + cost.WORKER_OVERHEAD_FRACTION)
    assert e.worker_gb_s == pytest.approx(worker_s * s.function("worker").memory_mb / 1024)
    assert e.lambda_compute_usd == pytest.approx((e.worker_gb_s + e.other_gb_s) * cost.LAMBDA_GB_S["arm64"])
    assert e.frames_per_segment * e.seconds_per_frame <= s.function("worker").timeout_s  # a segment fits
    assert e.requests_usd < 0.01 * e.total_usd  # compute dominates


def test_scaling() -> None:
    small = cost.estimate(640, 360, 25, "arm64", MACS, "m")
    large = cost.estimate(1280, 720, 25, "arm64", MACS, "m")
    x86 = cost.estimate(640, 360, 25, "x86_64", MACS, "m")
    assert large.worker_gb_s == pytest.approx(4 * small.worker_gb_s)
    assert x86.lambda_compute_usd > small.lambda_compute_usd
    assert x86.worker_gb_s == pytest.approx(small.worker_gb_s)


def test_int8_row_states_its_speed_assumption() -> None:
    fp32 = cost.estimate(640, 360, 25, "arm64", MACS, "m")
    int8 = cost.estimate(640, 360, 25, "arm64", MACS, "m-int8", precision="int8")
    assert int8.seconds_per_frame == pytest.approx(fp32.seconds_per_frame / cost.INT8_SPEEDUP)
    assert int8.worker_gb_s == pytest.approx(fp32.worker_gb_s / cost.INT8_SPEEDUP)
    assert "Graviton speed not measured" in cost.describe(int8)
    assert "int8" not in cost.describe(fp32).splitlines()[1]
