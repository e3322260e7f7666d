"""Segment planning: pure functions of plain values, no AWS and no FFmpeg.

A segment is a run of consecutive frames (in presentation order) that one worker invocation upscales.
Segments are addressed by presentation timestamps taken from an exact demux pass, never by
`index / frame_rate`, so variable-frame-rate sources split at the right frames.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Segment:
    index: int
    start_frame: int  # index of the first frame this segment outputs
    frame_count: int  # frames this segment outputs
    start_pts: int  # pts of its first output frame (stream time base)
    end_pts: int | None  # pts of the next segment's first frame; None for the last segment
    context_before: int  # frames before start_frame to decode for temporal context (not output)
    context_start_pts: int  # pts where decoding starts (== start_pts when context_before == 0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Segment:
        return cls(
            index=int(data["index"]),
            start_frame=int(data["start_frame"]),
            frame_count=int(data["frame_count"]),
            start_pts=int(data["start_pts"]),
            end_pts=None if data.get("end_pts") is None else int(data["end_pts"]),
            context_before=int(data.get("context_before", 0)),
            context_start_pts=int(data.get("context_start_pts", data["start_pts"])),
        )


def seconds_per_frame(
    width: int, height: int, *, macs_per_input_pixel: float, gflops_per_vcpu: float, vcpus: float
) -> float:
    """Inference seconds for one frame: 2 FLOPs per multiply-add over the measured sustained rate."""
    if width <= 0 or height <= 0:
        raise ValueError("frame size must be positive")
    flops = 2.0 * macs_per_input_pixel * width * height
    return flops / (gflops_per_vcpu * 1e9 * vcpus)


def frames_per_segment(
    *,
    seconds_per_frame: float,
    timeout_s: float,
    work_budget_fraction: float,
    context_frames: int,
    min_frames: int,
    max_frames: int,
) -> int:
    """How many output frames fit in one invocation, leaving headroom and room for context frames.

    The budget is a fraction of the function timeout so a slow container, a cold start (model download,
    session creation) or a retry of an upload still finishes well inside the limit.
    """
    if seconds_per_frame <= 0:
        raise ValueError("seconds_per_frame must be positive")
    budget = timeout_s * work_budget_fraction
    fit = math.floor(budget / seconds_per_frame) - context_frames
    return max(min_frames, min(max_frames, fit))


def plan_segments(pts: Sequence[int], max_frames_per_segment: int, context_frames: int = 0) -> list[Segment]:
    """Split frames (their sorted presentation timestamps) into balanced segments.

    Segment sizes differ by at most one frame, so no segment is a tiny tail that costs a whole
    invocation (cold start included) for a handful of frames.
    """
    total = len(pts)
    if total == 0:
        return []
    if max_frames_per_segment <= 0:
        raise ValueError("max_frames_per_segment must be positive")
    if any(b <= a for a, b in itertools.pairwise(pts)):
        raise ValueError("pts must be strictly increasing (presentation order, no duplicates)")
    count = math.ceil(total / max_frames_per_segment)
    base, extra = divmod(total, count)
    segments: list[Segment] = []
    start = 0
    for index in range(count):
        size = base + (1 if index < extra else 0)
        end = start + size
        context = min(context_frames, start)
        segments.append(
            Segment(
                index=index,
                start_frame=start,
                frame_count=size,
                start_pts=int(pts[start]),
                end_pts=int(pts[end]) if end < total else None,
                context_before=context,
                context_start_pts=int(pts[start - context]),
            )
        )
        start = end
    return segments
