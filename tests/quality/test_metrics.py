"""Quality metrics against independent computations (scikit-image, hand-computed cases) on real frames."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from vsr.media.decode import decode_window
from vsr.media.probe import probe
from vsr.quality import metrics, temporal
from vsr.quality.evaluate import bicubic_upscale, box_downscale

skimage_metrics = pytest.importorskip("skimage.metrics")
skimage_color = pytest.importorskip("skimage.color")
pytest.importorskip("cv2")


@pytest.fixture(scope="module")
def carphone_frames(real_clips: dict[str, Path]) -> list[np.ndarray]:
    path = real_clips["carphone"]
    return [f.image for f in decode_window(path, probe(path).pts[0], 4)]


@pytest.fixture(scope="module")
def known_pair(carphone_frames: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """A real frame and its 2x box-downscaled, bicubic-upscaled version (a typical SR comparison)."""
    original = carphone_frames[0]
    return original, bicubic_upscale(box_downscale(original, 2), 2)


def test_psnr_matches_scikit_image(known_pair: tuple[np.ndarray, np.ndarray]) -> None:
    original, degraded = known_pair
    ours = metrics.psnr(degraded, original)
    assert 20 < ours < 40
    assert ours == pytest.approx(skimage_metrics.peak_signal_noise_ratio(original, degraded, data_range=255), abs=1e-9)


def test_psnr_y_and_ssim_match_scikit_image_on_bt601_luma(known_pair: tuple[np.ndarray, np.ndarray]) -> None:
    original, degraded = known_pair
    y_original = skimage_color.rgb2ycbcr(original)[..., 0]  # BT.601 studio range, 16..235
    y_degraded = skimage_color.rgb2ycbcr(degraded)[..., 0]
    assert metrics.luma(original) == pytest.approx(y_original, abs=1e-9)
    expected_psnr_y = skimage_metrics.peak_signal_noise_ratio(y_original, y_degraded, data_range=255)
    assert metrics.psnr_y(degraded, original) == pytest.approx(expected_psnr_y, abs=1e-9)
    expected_ssim = skimage_metrics.structural_similarity(
        y_original, y_degraded, data_range=255, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
    )
    ours = metrics.ssim_y(degraded, original)
    assert 0.5 < ours < 0.99
    assert ours == pytest.approx(expected_ssim, abs=1e-6)


def test_hand_computed_cases() -> None:
    a = np.full((16, 16, 3), 100, np.uint8)
    b = a + 1
    assert metrics.psnr(a, b) == pytest.approx(20 * math.log10(255), abs=1e-9)  # MSE 1 -> 48.13 dB
    assert metrics.psnr(a, a) == math.inf
    assert metrics.ssim_y(a, a) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="differ"):
        metrics.psnr(a, np.zeros((16, 16, 3), np.uint16))


def test_warping_error_is_zero_for_still_frames_and_follows_motion(carphone_frames: list[np.ndarray]) -> None:
    frame = carphone_frames[0]
    still = temporal.PairMotion.from_low_res(frame, frame, 1)
    assert temporal.pair_warping_error(frame, frame, still) == pytest.approx(0.0, abs=1e-9)
    shifted = np.roll(frame, 3, axis=1)  # the picture moves 3 pixels right
    motion = temporal.PairMotion.from_low_res(frame, shifted, 1)
    assert np.median(motion.backward[..., 0][motion.mask]) == pytest.approx(-3.0, abs=0.25)
    naive = float(np.mean((frame.astype(np.float32) / 255 - shifted.astype(np.float32) / 255) ** 2))
    assert temporal.pair_warping_error(frame, shifted, motion) < 0.1 * naive
    # at 2x, the low-resolution motion judges the high-resolution frames
    big, big_shifted = bicubic_upscale(frame, 2), bicubic_upscale(shifted, 2)
    motion2 = temporal.PairMotion.from_low_res(frame, shifted, 2)
    assert motion2.mask.shape == big.shape[:2]
    assert temporal.pair_warping_error(big, big_shifted, motion2) < 0.1 * naive


def test_tof_is_zero_against_itself_and_grows_with_wrong_motion(carphone_frames: list[np.ndarray]) -> None:
    assert temporal.tof(carphone_frames, carphone_frames) == pytest.approx(0.0, abs=1e-6)
    frozen = [carphone_frames[0]] * len(carphone_frames)
    assert temporal.tof(frozen, carphone_frames) > temporal.tof(carphone_frames, carphone_frames) + 0.05
