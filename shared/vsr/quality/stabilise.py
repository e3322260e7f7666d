"""Flow-guided temporal stabilisation: `vsr eval --temporal flow` measures it; not in the pipeline (README).

The previous stabilised output is warped onto the current frame by the low-resolution flow (scaled up) and
blended in where that flow is trusted (forward-backward check) and the warped pixels agree with the current
output (an error mask, so moving or newly visible detail is not smeared): w = strength * trusted *
exp(-(|warped - current| / tolerance)^2), result = (1 - w) * current + w * warped.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vsr.quality import temporal


def stabilise(
    low: Sequence[np.ndarray],
    output: Sequence[np.ndarray],
    scale: int,
    *,
    strength: float = 0.6,
    tolerance: float = 0.3,
    method: temporal.FlowMethod = "dis",
) -> list[np.ndarray]:
    """Stabilised copies of `output` (uint8/uint16 RGB), `low` being the frames the output was upscaled from."""
    peak = 255.0 if output[0].dtype == np.uint8 else 65535.0
    result = [output[0]]
    previous = output[0].astype(np.float32) / np.float32(peak)
    for t in range(1, len(output)):
        current = output[t].astype(np.float32) / np.float32(peak)
        motion = temporal.PairMotion.from_low_res(low[t - 1], low[t], scale, method)
        warped = motion.pull_back(previous)
        disagreement = np.abs(warped - current).mean(axis=-1)
        weight = strength * motion.mask * np.exp(-((disagreement / tolerance) ** 2))
        blended = current + weight[..., None] * (warped - current)
        previous = blended
        result.append(np.clip(np.rint(blended * peak), 0, peak).astype(output[0].dtype))
    return result
