"""Optical flow (OpenCV DIS), warping, and the forward-backward occlusion check.

Flow fields are H x W x 2 float32 (dx, dy) in pixels: `flow[y, x]` says where pixel (x, y) of the first
frame moved to in the second. The occlusion check is the forward-backward consistency test of Sundaram et
al. (ECCV 2010), as used by Lai et al. (ECCV 2018) for the warping error: a pixel is trusted where following
the flow there and back again lands within a tolerance that grows with the motion.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from vsr.errors import PermanentError


class MissingDependencyError(PermanentError):
    code = "missing_dependency"


def _cv2() -> Any:
    try:
        import cv2
    except ImportError as exc:  # an optional extra: only quality measurement needs it
        raise MissingDependencyError(
            "quality measurement needs OpenCV: pip install 'vsr[tools]' (opencv-python-headless)"
        ) from exc
    return cv2


def gray(image: np.ndarray) -> np.ndarray:
    """uint8 grey plane of an RGB image (uint8 or uint16)."""
    cv2 = _cv2()
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)


def dis_flow(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Dense flow from `first` to `second` (grey uint8 planes, or RGB images)."""
    cv2 = _cv2()
    a = first if first.ndim == 2 else gray(first)
    b = second if second.ndim == 2 else gray(second)
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    return dis.calc(a, b, None)


def _sample_grid(flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    h, w = flow.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    return xs + flow[..., 0], ys + flow[..., 1]


def warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """`image` sampled at (x, y) + flow[y, x], bilinear: the frame the flow points into, pulled back."""
    cv2 = _cv2()
    map_x, map_y = _sample_grid(flow)
    return cv2.remap(image, map_x, map_y, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def sampler(flow: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """`warp` with `flow` fixed, its sampling grid computed once."""
    cv2 = _cv2()
    map_x, map_y = _sample_grid(flow)
    return lambda image: cv2.remap(image, map_x, map_y, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def valid_mask(
    backward: np.ndarray, forward: np.ndarray, warper: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None
) -> np.ndarray:
    """Pixels of frame t whose motion is trusted (bool H x W).

    `backward` is the flow t -> t-1, `forward` t-1 -> t. Following backward then forward must come back:
    |b + f(x + b)|^2 < 0.01 (|b|^2 + |f(x + b)|^2) + 0.5, and x + b must fall inside frame t-1.
    """
    map_x, map_y = _sample_grid(backward)
    h, w = backward.shape[:2]
    inside = (map_x >= 0) & (map_x <= w - 1) & (map_y >= 0) & (map_y <= h - 1)
    returned = (warper or warp)(forward, backward)
    round_trip = np.sum((backward + returned) ** 2, axis=-1)
    tolerance = 0.01 * (np.sum(backward**2, axis=-1) + np.sum(returned**2, axis=-1)) + 0.5
    return inside & (round_trip < tolerance)


def upscale_flow(flow: np.ndarray, scale: int, smooth: bool = True) -> np.ndarray:
    """A flow computed at low resolution, resampled to `scale` x the size (bilinearly, or by repeating
    pixels when not `smooth`: NumPy only), vectors scaled to match."""
    if scale == 1:
        return flow
    if not smooth:
        return upscale_mask(flow, scale) * np.float32(scale)
    cv2 = _cv2()
    h, w = flow.shape[:2]
    return cv2.resize(flow, (w * scale, h * scale), interpolation=cv2.INTER_LINEAR) * np.float32(scale)


def upscale_mask(mask: np.ndarray, scale: int) -> np.ndarray:
    return mask if scale == 1 else np.repeat(np.repeat(mask, scale, axis=0), scale, axis=1)
