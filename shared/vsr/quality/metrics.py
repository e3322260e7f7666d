"""Image metrics against a reference: PSNR (RGB and BT.601 luma) and SSIM on luma. NumPy only.

Conventions (those of the SR literature and of scikit-image, which tests/quality checks against):
- Images are H x W x 3 RGB, uint8 (peak 255) or uint16 (peak 65535), or float in 0..1 (peak 1).
- PSNR = 10 log10(peak^2 / MSE) over all pixels and channels; identical images give infinity.
- Y is BT.601 luma in studio range from RGB (16..235 for 8 bits), as MATLAB's rgb2ycbcr and most SR papers.
- SSIM (Wang et al. 2004): Gaussian window sigma 1.5 (11 taps), K1 0.01, K2 0.03, population covariances,
  mean over the pixels whose window lies inside the image.
"""

from __future__ import annotations

import math

import numpy as np

_BT601_LUMA = np.array([65.481, 128.553, 24.966], dtype=np.float64) / 255.0  # 0..1 RGB -> 0..219 range


def peak_of(image: np.ndarray) -> float:
    if image.dtype == np.uint8:
        return 255.0
    if image.dtype == np.uint16:
        return 65535.0
    return 1.0


def _unit(image: np.ndarray) -> np.ndarray:
    """Float64 in 0..1."""
    return image.astype(np.float64) / peak_of(image)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB between two images of the same shape (and dtype: the peak comes from it)."""
    _check_pair(a, b)
    mse = float(np.mean((_unit(a) - _unit(b)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)


def luma(image: np.ndarray) -> np.ndarray:
    """BT.601 studio-range luma of an RGB image, as float64 on the 0..255 scale (16..235)."""
    return 16.0 + _unit(image) @ _BT601_LUMA * 255.0


def psnr_y(a: np.ndarray, b: np.ndarray) -> float:
    _check_pair(a, b)
    mse = float(np.mean((luma(a) - luma(b)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def _gaussian_taps(sigma: float = 1.5, radius: int = 5) -> np.ndarray:
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    taps = np.exp(-(x**2) / (2 * sigma**2))
    return taps / taps.sum()


def _filter_valid(plane: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """Separable correlation keeping only positions where the window lies inside the plane."""
    n = len(taps)
    rows = sum(taps[i] * plane[i : plane.shape[0] - n + 1 + i, :] for i in range(n))
    return sum(taps[i] * rows[:, i : plane.shape[1] - n + 1 + i] for i in range(n))


def ssim_plane(x: np.ndarray, y: np.ndarray, data_range: float) -> float:
    taps = _gaussian_taps()
    if min(x.shape) < len(taps):
        raise ValueError(f"SSIM needs planes of at least {len(taps)}x{len(taps)} pixels, got {x.shape}")
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = _filter_valid(x, taps), _filter_valid(y, taps)
    sxx = _filter_valid(x * x, taps) - mx * mx
    syy = _filter_valid(y * y, taps) - my * my
    sxy = _filter_valid(x * y, taps) - mx * my
    ssim_map = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return float(ssim_map.mean())


def ssim_y(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM between the BT.601 luma planes of two RGB images."""
    _check_pair(a, b)
    return ssim_plane(luma(a), luma(b), data_range=255.0)


def _check_pair(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape or a.dtype != b.dtype:
        raise ValueError(f"images differ: {a.shape} {a.dtype} vs {b.shape} {b.dtype}")
