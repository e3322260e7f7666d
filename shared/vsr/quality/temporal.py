"""Temporal metrics of a frame sequence: warping error (flicker) and tOF.

Warping error (Lai et al., "Learning Blind Video Temporal Consistency", ECCV 2018): frame t-1 warped onto
frame t by the optical flow, mean squared difference (RGB in 0..1) over the pixels the forward-backward check
trusts, averaged over the pairs. Flow comes from the low-resolution input and is scaled up, so the output, a
bicubic upscale and the original are all judged with the same motion; what differs is only how much their
pixels change beyond that motion. Lower is steadier. `flicker ratio` = output / bicubic.

tOF (Chu et al., TecoGAN, 2020): the flow of the output pair and of the original pair, mean Euclidean
distance per pixel (in high-resolution pixels), averaged over the pairs. Lower means the output moves as
the original does.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from vsr.quality import blockflow
from vsr.quality import flow as fl

FlowMethod = Literal["dis", "block"]  # OpenCV DIS (vsr eval) or NumPy block matching (inside Lambda)


@dataclass(frozen=True)
class PairMotion:
    """Low-resolution motion between frames t-1 and t, ready to judge any upscale of that pair."""

    backward: np.ndarray  # flow t -> t-1 at the judged resolution
    mask: np.ndarray  # trusted pixels of frame t at the judged resolution
    sampler: Callable[[np.ndarray], Callable[[np.ndarray], np.ndarray]] = fl.sampler

    @functools.cached_property
    def pull_back(self) -> Callable[[np.ndarray], np.ndarray]:
        """Frame t-1 (any upscale of it, as float) warped onto frame t; prepared once, applied to many."""
        return self.sampler(self.backward)

    @classmethod
    def from_low_res(
        cls, previous: np.ndarray, current: np.ndarray, scale: int, method: FlowMethod = "dis"
    ) -> PairMotion:
        if method == "dis":
            a, b = fl.gray(previous), fl.gray(current)
            backward, forward = fl.dis_flow(b, a), fl.dis_flow(a, b)
            mask = fl.valid_mask(backward, forward)
            return cls(fl.upscale_flow(backward, scale), fl.upscale_mask(mask, scale))
        a, b = blockflow.gray(previous), blockflow.gray(current)
        backward, forward = blockflow.block_flow(b, a), blockflow.block_flow(a, b)
        mask = fl.valid_mask(backward, forward, blockflow.warp)
        return cls(fl.upscale_flow(backward, scale, smooth=False), fl.upscale_mask(mask, scale), blockflow.Sampler)


def _unit(image: np.ndarray) -> np.ndarray:
    peak = 255.0 if image.dtype == np.uint8 else 65535.0 if image.dtype == np.uint16 else 1.0
    return image.astype(np.float32) / np.float32(peak)


def pair_warping_error(previous: np.ndarray, current: np.ndarray, motion: PairMotion) -> float:
    """Mean squared difference between `current` and `previous` warped onto it, over trusted pixels."""
    if previous.shape[:2] != motion.mask.shape:
        raise ValueError(f"frames are {previous.shape[:2]}, the motion is for {motion.mask.shape}")
    difference = _unit(current) - motion.pull_back(_unit(previous))
    squared = np.einsum("ijk,ijk->ij", difference, difference) / np.float32(3.0)  # mean over RGB
    trusted = motion.mask
    count = int(np.count_nonzero(trusted))
    return float(np.sum(squared, where=trusted, dtype=np.float64) / count) if count else 0.0


def warping_error(frames: Sequence[np.ndarray], motions: Sequence[PairMotion]) -> float:
    """Mean pair warping error of a sequence; motions[i] is the motion between frames i and i+1."""
    if len(motions) != len(frames) - 1 or not motions:
        raise ValueError(f"{len(frames)} frames need {len(frames) - 1} pair motions, got {len(motions)}")
    return float(np.mean([pair_warping_error(frames[i], frames[i + 1], m) for i, m in enumerate(motions)]))


def tof(frames: Sequence[np.ndarray], reference: Sequence[np.ndarray]) -> float:
    """Mean end-point distance between the flows of `frames` and of `reference`, pair by pair."""
    if len(frames) != len(reference) or len(frames) < 2:
        raise ValueError("tOF needs two sequences of the same length, at least 2 frames")
    distances = []
    for i in range(1, len(frames)):
        ours = fl.dis_flow(frames[i - 1], frames[i])
        theirs = fl.dis_flow(reference[i - 1], reference[i])
        distances.append(float(np.mean(np.sqrt(np.sum((ours - theirs) ** 2, axis=-1)))))
    return float(np.mean(distances))
