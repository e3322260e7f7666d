"""Scene cuts between two neighbouring frames, detected cheaply: never interpolate across one.

The score is the mean absolute difference of the two frames' normalised luma histograms (32 bins) on a
small thumbnail: 0 for the same picture, up to 2 for pictures with no tone in common. Motion moves pixels but
keeps the histogram, so a fast pan scores low and a hard cut high. The threshold is settings
`interpolation.cut_threshold`, measured on clips with real cuts (bench/bench_interpolate.py prints every
pair's score and the cuts found).
"""

from __future__ import annotations

import numpy as np

BINS = 32
THUMB = 64  # thumbnail side bound: the score needs tones, not detail


def _luma_histogram(frame: np.ndarray) -> np.ndarray:
    h, w = frame.shape[:2]
    step = max(1, max(h, w) // THUMB)
    small = frame[::step, ::step].astype(np.float32)
    if frame.dtype != np.uint8:
        small *= 255.0 / 65535.0
    luma = 0.299 * small[..., 0] + 0.587 * small[..., 1] + 0.114 * small[..., 2]
    hist, _ = np.histogram(luma, bins=BINS, range=(0.0, 256.0))
    return hist.astype(np.float64) / max(1, luma.size)


def cut_score(a: np.ndarray, b: np.ndarray) -> float:
    """0 (same tones) .. 2 (disjoint tones)."""
    return float(np.abs(_luma_histogram(a) - _luma_histogram(b)).sum())


def is_cut(a: np.ndarray, b: np.ndarray, threshold: float) -> bool:
    return cut_score(a, b) > threshold
