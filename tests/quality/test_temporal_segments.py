"""Temporal stabilisation inside the segment pipeline (settings model.temporal = "flow"), on real footage.

A segment's stabiliser warms up on the segment's context frames, so the frames after a join come out close to
what one long run gives; without context they restart from scratch. Also: exact frame counts and timestamps,
and `vsr upscale --temporal flow` end to end.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import av
import numpy as np
import pytest

from tests import clips
from vsr.media.probe import probe
from vsr.planning import split_segments
from vsr.quality.stabilise import Stabiliser
from vsr.segment import process_segment
from vsr.settings import get_settings

FRAMES = 16


class NoisyUpscaler:
    """Nearest-neighbour plus noise that depends only on the input frame: the same frame gets the same output in
    every run, and the stabiliser has flicker to remove."""

    scale = 2

    def upscale(self, batch: np.ndarray) -> np.ndarray:
        out = []
        for frame in batch:
            rng = np.random.default_rng(zlib.crc32(frame.tobytes()))
            big = np.repeat(np.repeat(frame, 2, axis=0), 2, axis=1)
            out.append(np.clip(big + rng.normal(0, 0.03, big.shape).astype(np.float32), 0, 1))
        return np.stack(out)


def _frames(path: Path) -> tuple[list[float], list[np.ndarray]]:
    """(timestamps in seconds, RGB frames as float) of a segment file or a video."""
    with av.open(str(path)) as container:
        decoded = [(round(float(f.time), 6), f.to_ndarray(format="rgb24")) for f in container.decode(video=0)]
    return [t for t, _ in decoded], [i.astype(np.float32) for _, i in decoded]


@pytest.fixture(scope="module")
def clip(real_clips: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return clips.trim(real_clips["carphone"], tmp_path_factory.mktemp("temporal") / "c16.mp4", FRAMES)


def _run(clip: Path, segments: int, context: int, out: Path) -> tuple[list[float], list[np.ndarray]]:
    info = probe(clip)
    pts, frames = [], []
    for segment in split_segments(info.pts, segments, context):
        path = out / f"{segments}-{context}-{segment.index}.nut"
        result = process_segment(
            clip, segment, NoisyUpscaler(), info, path, encode=get_settings().encode_settings, stabiliser=Stabiliser(2)
        )
        assert result.frames == segment.frame_count and result.temporal_s > 0
        seg_pts, seg_frames = _frames(path)
        pts += seg_pts
        frames += seg_frames
    return pts, frames


def test_context_frames_carry_the_stabiliser_state_across_a_join(clip: Path, tmp_path: Path) -> None:
    long_pts, long_run = _run(clip, 1, 0, tmp_path)
    assert long_pts == _frames(clip)[0]  # every frame once, with its own timestamp
    cold_pts, cold = _run(clip, 2, 0, tmp_path)
    warm_pts, warm = _run(clip, 2, 2, tmp_path)
    assert cold_pts == warm_pts == long_pts
    join = FRAMES // 2

    def gap(run: list[np.ndarray], t: int) -> float:
        return float(np.mean(np.abs(run[t] - long_run[t])))

    assert all(gap(warm, t) == gap(cold, t) == 0 for t in range(join))  # the first segment is the long run's
    # after the join: cold restarts from the raw noisy frame, warm from a state close to the long run's
    assert gap(cold, join) > 2.0  # in 8-bit levels: the flicker the stabiliser removes
    assert gap(warm, join) < 0.5 * gap(cold, join)


def test_vsr_upscale_temporal_flow_end_to_end(clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import vsr.engine
    from vsr.upscale import upscale_file

    monkeypatch.setattr(vsr.engine, "get_upscaler", lambda *a, **k: NoisyUpscaler())
    output = tmp_path / "out.mp4"
    report = upscale_file(clip, output, segment_frames=6, progress=False, temporal="flow")
    assert report["temporal"] == "flow" and report["segments"] == 3
    assert report["timings"]["temporal_s"] > 0
    assert probe(output).pts == probe(clip).pts
    off = upscale_file(clip, tmp_path / "off.mp4", segment_frames=6, progress=False)
    assert off["temporal"] == "off" and off["timings"]["temporal_s"] == 0


def test_a_bad_temporal_setting_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VSR_SETTINGS_OVERRIDES", '{"model": {"temporal": "magic"}}')
    with pytest.raises(ValueError, match=r"model\.temporal"):
        _ = get_settings().temporal
