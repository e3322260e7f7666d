"""Every job measures itself: flicker of the output against a bicubic upscale of its input, seams included.

No ground truth exists for a user's video, so the yardstick is a bicubic upscale of the same input frames:
it has no temporal artefacts of its own beyond the input's. For each measured pair of consecutive frames,
the warping error (vsr.quality.temporal, NumPy block-matching flow from the input, see blockflow.py) of the
final output and of the bicubic upscale; `flicker_ratio` = mean output / mean bicubic over all pairs.
Pairs: every pair straddling a segment join (the last frame of segment i-1 and the first of segment i), and
`sample_pairs` interior pairs spread over the video. Frames come from the final MP4 (after encoding and
joining), decoded from the keyframe before each pair, so a join costs at most one GOP of decoding; a time
budget stops the measurement early on huge jobs (the report says how many pairs were measured).

Also draws the preview: bicubic | output side by side, a detailed crop of the middle sampled frame.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vsr.cpus import available_cpus
from vsr.logs import get_logger
from vsr.media.decode import decode_window
from vsr.media.geometry import FrameConformer
from vsr.media.probe import VideoInfo
from vsr.media.safety import Source
from vsr.quality import preview, temporal
from vsr.segment import input_frames

log = get_logger(__name__)

PREVIEW_CROP = (270, 480)  # output pixels (h, w) of the preview's crop


def _cubic_weights(size_in: int, scale: int) -> np.ndarray:
    """(size_in * scale) x size_in matrix of bicubic (a = -0.75, half-pixel centres, edges clamped) taps."""
    a = -0.75
    out = np.arange(size_in * scale)
    centre = (out + 0.5) / scale - 0.5
    base = np.floor(centre).astype(np.int64)
    matrix = np.zeros((size_in * scale, size_in), np.float32)
    for tap in range(-1, 3):
        t = np.abs(centre - (base + tap))
        w = np.where(t <= 1, ((a + 2) * t - (a + 3)) * t * t + 1, ((a * t - 5 * a) * t + 8 * a) * t - 4 * a)
        np.add.at(matrix, (out, np.clip(base + tap, 0, size_in - 1)), w.astype(np.float32))
    return matrix


def bicubic(image: np.ndarray, scale: int) -> np.ndarray:
    """Bicubic upscale by an integer factor, NumPy only (OpenCV's INTER_CUBIC kernel), same dtype."""
    rows, cols = _cubic_weights(image.shape[0], scale), _cubic_weights(image.shape[1], scale)
    out = np.einsum("yh,hwc,xw->yxc", rows, image.astype(np.float32), cols, optimize=True)
    peak = 255.0 if image.dtype == np.uint8 else 65535.0
    return np.clip(np.rint(out), 0, peak).astype(image.dtype)


def pick_pairs(frame_count: int, segment_starts: list[int], samples: int) -> tuple[list[int], list[int]]:
    """(boundary pair indices, sampled interior pair indices); pair t is frames (t-1, t)."""
    boundaries = sorted(s for s in set(segment_starts) if 0 < s < frame_count)
    interior = [t for t in range(1, frame_count) if t not in set(boundaries)]
    if samples <= 0 or not interior:
        return boundaries, []
    picks = np.linspace(0, len(interior) - 1, min(samples, len(interior))).round().astype(int)
    return boundaries, sorted({interior[i] for i in picks})


@dataclass
class JobQuality:
    ewarp_output: list[float] = field(default_factory=list)
    ewarp_bicubic: list[float] = field(default_factory=list)
    boundary_pairs: list[dict[str, Any]] = field(default_factory=list)
    preview: np.ndarray | None = None
    skipped_pairs: int = 0
    seconds: float = 0.0

    def report(self, preview_key: str | None) -> dict[str, Any]:
        out, bic = float(np.mean(self.ewarp_output or [0])), float(np.mean(self.ewarp_bicubic or [0]))
        return {
            "flicker_ratio": out / bic if bic > 0 else None,
            "ewarp_output": out,
            "ewarp_bicubic": bic,
            "pairs": len(self.ewarp_output),
            "boundary_pairs": self.boundary_pairs,
            "preview": preview_key,
            "skipped_pairs": self.skipped_pairs,
            "seconds": self.seconds,
        }


def _pair(source: Source, pts: list[int], t: int, conform: FrameConformer | None = None) -> list[np.ndarray]:
    frames = [f.image for f in decode_window(source, pts[t - 1], 2, conform)]
    if len(frames) != 2:
        raise ValueError(f"could not decode frames {t - 1} and {t}")
    return frames


def _input_pair(source: Source, info: VideoInfo, t: int) -> list[np.ndarray]:
    """Input frames t-1 and t as the model saw them: in the job's first geometry, whatever the stream changed
    to mid-way, and deinterlaced as the workers did (at field rate, frame t is a field: vsr.media.fieldrate)."""
    frames = input_frames(source, info, t - 1, 2, FrameConformer(info.first_geometry()))
    try:
        images = [f.image for f in frames]
    finally:
        frames.close()
    if len(images) != 2:
        raise ValueError(f"could not decode input frames {t - 1} and {t}")
    return images


def measure(
    output: str | os.PathLike[str],
    output_pts: list[int],
    source: Source,
    info: VideoInfo,
    scale: int,
    segment_starts: list[int],
    *,
    samples: int,
    budget_s: float,
    workers: int | None = None,
) -> JobQuality:
    """Measure the pairs (boundaries first, then samples) until the budget runs out.

    The input pairs are read one after another (`source` may be a single S3 reader, whose position is
    shared); the rest of each pair (decoding the output, which is a local file, flow, bicubic, warping)
    runs on `workers` threads, by default one per CPU: NumPy and FFmpeg release the GIL for the heavy parts,
    and Lambda bills the assembler's every vCPU whether it is used or not.
    """
    started = time.monotonic()

    def over_budget() -> bool:
        return time.monotonic() - started > budget_s

    boundaries, sampled = pick_pairs(info.frame_count, segment_starts, samples)
    order = boundaries + sampled
    result = JobQuality()
    preview_at = sampled[len(sampled) // 2] if sampled else (boundaries[0] if boundaries else None)
    starts = {t: segment_starts.index(t) for t in boundaries}
    low_pairs: dict[int, list[np.ndarray]] = {}
    for t in order:
        if over_budget():
            break
        low_pairs[t] = _input_pair(source, info, t)

    def judge(t: int) -> tuple[float, float, np.ndarray | None] | None:
        if over_budget():
            return None
        low = low_pairs.pop(t)  # frees the input frames as the pairs are done
        high = _pair(output, output_pts, t)
        motion = temporal.PairMotion.from_low_res(low[0], low[1], scale, method="block")
        up = [bicubic(f, scale) for f in low]
        shown = preview_image(up[1], high[1]) if t == preview_at else None
        return (
            temporal.pair_warping_error(high[0], high[1], motion),
            temporal.pair_warping_error(up[0], up[1], motion),
            shown,
        )

    with ThreadPoolExecutor(max_workers=workers or available_cpus(), thread_name_prefix="jobcheck") as pool:
        to_judge = list(low_pairs)
        judged = list(pool.map(judge, to_judge))
    for t, outcome in zip(to_judge, judged, strict=True):
        if outcome is None:
            continue
        ewarp_output, ewarp_bicubic, shown = outcome
        result.ewarp_output.append(ewarp_output)
        result.ewarp_bicubic.append(ewarp_bicubic)
        if t in starts:
            result.boundary_pairs.append(
                {"segment": starts[t], "frame": t, "ewarp_output": ewarp_output, "ewarp_bicubic": ewarp_bicubic}
            )
        if shown is not None:
            result.preview = shown
    result.skipped_pairs = len(order) - len(result.ewarp_output)
    result.seconds = time.monotonic() - started
    log.info("quality.measured", pairs=len(result.ewarp_output), skipped=result.skipped_pairs, seconds=result.seconds)
    return result


def preview_image(bicubic_frame: np.ndarray, output_frame: np.ndarray) -> np.ndarray:
    """Input (bicubic) | output, the same detailed crop of both."""
    h = min(PREVIEW_CROP[0], output_frame.shape[0])
    w = min(PREVIEW_CROP[1], output_frame.shape[1])
    y, x = preview.detail_crop(output_frame, output_frame, (h, w))
    crops = [bicubic_frame[y : y + h, x : x + w], output_frame[y : y + h, x : x + w]]
    return preview.side_by_side(crops, ["input (bicubic)", "output"])
