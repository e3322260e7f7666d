"""The in-job quality check (vsr.quality.jobcheck): NumPy-only pieces against OpenCV, pair selection, and a
measurement of a real upscaled video with segment joins."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests import clips
from vsr.media.decode import decode_window
from vsr.media.probe import probe
from vsr.quality import jobcheck, preview, temporal
from vsr.quality.evaluate import bicubic_upscale

cv2 = pytest.importorskip("cv2")


@pytest.fixture(scope="module")
def carphone(real_clips: dict[str, Path]) -> list[np.ndarray]:
    path = real_clips["carphone"]
    return [f.image for f in decode_window(path, probe(path).pts[0], 12)]


def test_numpy_bicubic_is_opencvs(carphone: list[np.ndarray]) -> None:
    for scale in (2, 3, 4):  # OpenCV rounds its fixed-point taps: at most 1 level apart
        ours, theirs = jobcheck.bicubic(carphone[0], scale).astype(int), bicubic_upscale(carphone[0], scale)
        assert ours.shape == theirs.shape and np.abs(ours - theirs).max() <= 1


def test_pairs_are_every_join_plus_spread_interior_samples() -> None:
    boundaries, sampled = jobcheck.pick_pairs(100, [0, 30, 60, 90], samples=8)
    assert boundaries == [30, 60, 90]
    assert len(sampled) == 8 and not set(sampled) & set(boundaries)
    assert sampled[0] == 1 and sampled[-1] == 99 and sampled == sorted(sampled)
    assert jobcheck.pick_pairs(3, [0, 2], samples=8) == ([2], [1])


def test_block_flow_flicker_ratio_agrees_with_dis(carphone: list[np.ndarray]) -> None:
    """The Lambda-side flow must rank flicker as OpenCV's DIS does: a bicubic upscale with fresh noise in
    every frame flickers more than one with the same noise pattern, by about the same ratio either way."""
    rng = np.random.default_rng(0)
    up = [bicubic_upscale(f, 2).astype(np.int16) for f in carphone]
    pattern = rng.integers(-6, 7, up[0].shape, dtype=np.int16)
    steady = [np.clip(f + pattern, 0, 255).astype(np.uint8) for f in up]
    noisy = [np.clip(f + rng.integers(-6, 7, f.shape, dtype=np.int16), 0, 255).astype(np.uint8) for f in up]
    ratios = {}
    for method in ("dis", "block"):
        motions = [temporal.PairMotion.from_low_res(carphone[i - 1], carphone[i], 2, method) for i in range(1, 12)]
        assert np.mean([m.mask.mean() for m in motions]) > 0.6  # most pixels are trusted
        ratios[method] = temporal.warping_error(noisy, motions) / temporal.warping_error(steady, motions)
    assert ratios["dis"] > 1.05 and ratios["block"] > 1.05, ratios
    assert ratios["block"] == pytest.approx(ratios["dis"], rel=0.15), ratios


def test_measure_a_joined_output(real_clips: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """30 real frames upscaled (nearest stand-in) in 3 segments: both joins measured, samples, preview."""
    import vsr.engine
    from vsr.upscale import upscale_file

    source = clips.trim(real_clips["carphone"], tmp_path / "c30.mp4", 30)
    monkeypatch.setattr(vsr.engine, "get_upscaler", lambda *a, **k: clips.NearestUpscaler(2))
    output = tmp_path / "out.mp4"
    upscale_file(source, output, model="realesr-animevideov3-x2", segment_frames=10, progress=False)
    info = probe(source)
    result = jobcheck.measure(output, probe(output).pts, source, info, 2, [0, 10, 20], samples=4, budget_s=600)
    report = result.report("out.preview.png")
    # the pairs run on threads; one thread gives the same numbers, in the same order
    alone = jobcheck.measure(
        output, probe(output).pts, source, info, 2, [0, 10, 20], samples=4, budget_s=600, workers=1
    ).report("out.preview.png")
    assert {k: v for k, v in alone.items() if k != "seconds"} == {k: v for k, v in report.items() if k != "seconds"}
    assert [(p["segment"], p["frame"]) for p in report["boundary_pairs"]] == [(1, 10), (2, 20)]
    assert report["pairs"] == 6 and report["skipped_pairs"] == 0
    # nearest-neighbour aliases: its blocks jump where bicubic glides, so it flickers more than bicubic
    assert 1.2 < report["flicker_ratio"] < 2.5
    assert result.preview is not None
    assert result.preview.shape == (270 + preview.LABEL_BAR, 2 * 352 + preview.GAP, 3)  # min(crop, 288x352)
    png = preview.png_bytes(result.preview)
    assert png.startswith(b"\x89PNG")
    # out of time: nothing measured, everything counted as skipped, no preview
    late = jobcheck.measure(output, probe(output).pts, source, info, 2, [0, 10, 20], samples=4, budget_s=-1)
    assert late.report(None)["pairs"] == 0 and late.skipped_pairs == 6
