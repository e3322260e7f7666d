"""Flow-guided stabilisation (vsr.quality.stabilise) on real frames: steadier, first frame untouched."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vsr.media.decode import decode_window
from vsr.media.probe import probe
from vsr.quality import temporal
from vsr.quality.evaluate import bicubic_upscale
from vsr.quality.stabilise import stabilise

pytest.importorskip("cv2")


def test_stabilise_removes_frame_to_frame_noise_on_real_footage(real_clips: dict[str, Path]) -> None:
    path = real_clips["carphone"]
    low = [f.image for f in decode_window(path, probe(path).pts[0], 8)]
    rng = np.random.default_rng(3)
    flickery = [
        np.clip(bicubic_upscale(f, 2).astype(np.int16) + rng.integers(-8, 9, (288, 352, 3)), 0, 255).astype(np.uint8)
        for f in low
    ]
    steady = stabilise(low, flickery, 2)
    assert np.array_equal(steady[0], flickery[0]) and all(s.dtype == np.uint8 for s in steady)
    motions = [temporal.PairMotion.from_low_res(low[t - 1], low[t], 2) for t in range(1, 8)]  # DIS: independent
    assert temporal.warping_error(steady, motions) < 0.8 * temporal.warping_error(flickery, motions)
