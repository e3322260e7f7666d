"""Joins on the fragmented path meet issue 21's rule on real footage with the real model: no worse than the
keyframe boundaries of a one-pass encode of the same frames (bench/bench_fragment_seams.py, which prints the
numbers; here the same measurement is asserted). Unprimed segments, the path before priming, fail it."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("cv2")

from bench import bench_fragment_seams
from vsr.settings import get_settings


@pytest.mark.slow
def test_primed_joins_are_no_worse_than_a_one_pass_encodes_keyframes(tmp_path: Path) -> None:
    primer = get_settings().encode_settings.fragment_primer_frames
    result = bench_fragment_seams.bench("carphone", 120, 30, False, primer, tmp_path)
    primed = result["fragmented_joins_vs_interior"]
    one_pass = result["one_pass_keyframes_vs_interior"]
    unprimed = result["unprimed_fragmented_joins_vs_interior"]
    assert primed["boundaries"] == one_pass["boundaries"] == 3
    assert primed["worst"] <= one_pass["worst"] and primed["mean"] <= one_pass["mean"], result
    assert unprimed["mean"] > one_pass["mean"], result  # the measurement can tell the two apart
