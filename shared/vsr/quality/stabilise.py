"""Flow-guided temporal stabilisation (settings `model.temporal` = "flow"; off by default, see README).

The previous stabilised output is warped onto the current frame by the low-resolution flow (scaled up) and
blended in where that flow is trusted (forward-backward check) and the warped pixels agree with the current
output (an error mask, so moving or newly visible detail is not smeared): w = strength * trusted *
exp(-(|warped - current| / tolerance)^2), result = (1 - w) * current + w * warped.

It is recursive (each result carries the previous one forward), so a segment cannot start from the state a
long run would have reached. The worker upscales the segment's context frames too and runs them through the
`Stabiliser` first: each blend keeps at most `strength` of the past, so after k context frames what is missing
from the long run's state weighs at most strength^k (0.6^2 = 0.36 with the default 2 context frames, and
usually far less, since the weight is also masked by trust and agreement).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vsr.quality import temporal

STRENGTH = 0.6
TOLERANCE = 0.3


class Stabiliser:
    """Feed frames in order: `step(low, output)` returns the stabilised output frame (same dtype)."""

    def __init__(
        self,
        scale: int,
        *,
        strength: float = STRENGTH,
        tolerance: float = TOLERANCE,
        method: temporal.FlowMethod = "block",
    ) -> None:
        self.scale, self.strength, self.tolerance, self.method = scale, strength, tolerance, method
        self._low: np.ndarray | None = None
        self._previous: np.ndarray | None = None  # the last stabilised output, float 0..1

    def step(self, low: np.ndarray, output: np.ndarray) -> np.ndarray:
        peak = 255.0 if output.dtype == np.uint8 else 65535.0
        current = output.astype(np.float32) / np.float32(peak)
        if self._low is None or self._previous is None:
            blended, result = current, output
        else:
            motion = temporal.PairMotion.from_low_res(self._low, low, self.scale, self.method)
            warped = motion.pull_back(self._previous)
            disagreement = np.abs(warped - current).mean(axis=-1)
            weight = self.strength * motion.mask * np.exp(-((disagreement / self.tolerance) ** 2))
            blended = current + weight[..., None] * (warped - current)
            result = np.clip(np.rint(blended * peak), 0, peak).astype(output.dtype)
        self._low, self._previous = low, blended
        return result


def stabilise(
    low: Sequence[np.ndarray],
    output: Sequence[np.ndarray],
    scale: int,
    *,
    strength: float = STRENGTH,
    tolerance: float = TOLERANCE,
    method: temporal.FlowMethod = "dis",
) -> list[np.ndarray]:
    """Stabilised copies of `output` (uint8/uint16 RGB), `low` being the frames the output was upscaled from."""
    stabiliser = Stabiliser(scale, strength=strength, tolerance=tolerance, method=method)
    return [stabiliser.step(lo, out) for lo, out in zip(low, output, strict=True)]
