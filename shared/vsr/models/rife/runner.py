"""Run `rife-hdv3.onnx` on a pair of frames (runtime side: onnxruntime and numpy only).

Frames are padded (zeros, right and bottom, as the authors' inference scripts do) to the multiple the network
needs at its scale list, and the result is cropped back and rounded to 8 bits (the authors truncate; rounding
is closer). The scale list is chosen by frame size (settings `interpolation.scale_lists`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class ScaleRule:
    """Frames of up to `max_pixels` (0: any size) use `scale_list`."""

    max_pixels: int
    scale_list: tuple[float, float, float]


DEFAULT_RULES = (ScaleRule(4_000_000, (4.0, 2.0, 1.0)), ScaleRule(0, (8.0, 4.0, 2.0)))


def choose_scale_list(width: int, height: int, rules: Sequence[ScaleRule] = DEFAULT_RULES) -> tuple[float, ...]:
    """The first rule whose size bound holds (the authors halve the flow resolution for 4K)."""
    for rule in rules:
        if rule.max_pixels == 0 or width * height <= rule.max_pixels:
            return rule.scale_list
    return rules[-1].scale_list


def pad_multiple(scale_list: Sequence[float]) -> int:
    """Inputs must be a multiple of this: the coarsest block downsizes by max(scale) and then by 4 in its
    convolutions, and the authors round up to 32 (64 for [8, 4, 2])."""
    return max(32, int(8 * max(scale_list)))


def padded_size(width: int, height: int, scale_list: Sequence[float]) -> tuple[int, int]:
    m = pad_multiple(scale_list)
    return -(-width // m) * m, -(-height // m) * m


UINT8 = np.dtype(np.uint8)


def _peak(dtype: np.dtype) -> float:
    return 255.0 if dtype == np.uint8 else 65535.0


def to_input(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    """HxWx3 uint8/uint16 -> 1x3xHpxWp float32 in 0..1, zero-padded right and bottom."""
    h, w = frame.shape[:2]
    out = np.zeros((1, 3, height, width), dtype=np.float32)
    out[0, :, :h, :w] = frame.transpose(2, 0, 1).astype(np.float32) * (1.0 / _peak(frame.dtype))
    return out


def from_output(output: np.ndarray, width: int, height: int, dtype: np.dtype = UINT8) -> np.ndarray:
    """1x3xHpxWp float -> HxWx3 of the original size and dtype, rounded."""
    peak = _peak(dtype)
    crop = output[0, :, :height, :width].transpose(1, 2, 0)
    return np.clip(np.rint(crop * peak), 0, peak).astype(dtype)


class Interpolator:
    """The midpoint frame of two frames, on an ONNX Runtime session of rife-hdv3.onnx."""

    def __init__(self, session: object, rules: Sequence[ScaleRule] = DEFAULT_RULES) -> None:
        self.session = session
        self.rules = tuple(rules)

    def midpoint(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        if a.shape != b.shape:
            raise ValueError(f"frames differ in shape: {a.shape} vs {b.shape}")
        height, width = a.shape[:2]
        scale_list = choose_scale_list(width, height, self.rules)
        pw, ph = padded_size(width, height, scale_list)
        feeds = {
            "img0": to_input(a, pw, ph),
            "img1": to_input(b, pw, ph),
            "scale_list": np.asarray(scale_list, dtype=np.float32),
        }
        output = self.session.run(["output"], feeds)[0]  # type: ignore[attr-defined]
        return from_output(output, width, height, a.dtype)


def rules_from_settings(scale_lists: Sequence[tuple[int, tuple[float, float, float]]]) -> tuple[ScaleRule, ...]:
    return tuple(ScaleRule(max_pixels, scale_list) for max_pixels, scale_list in scale_lists)


def get_interpolator(
    model_path: str,
    scale_lists: Sequence[tuple[int, tuple[float, float, float]]],
    threads: int | None = None,
    providers: tuple[str, ...] = ("CPUExecutionProvider",),
) -> Interpolator:
    """An Interpolator on the process-wide ONNX Runtime session of `model_path` (vsr.engine's session cache)."""
    from vsr.cpus import available_cpus
    from vsr.engine import _session

    session = _session(Path(model_path), threads or available_cpus(), providers)
    return Interpolator(session, rules_from_settings(scale_lists))
