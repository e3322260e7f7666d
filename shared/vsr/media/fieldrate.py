"""Field-rate deinterlacing (settings `input.deinterlace_rate` field): 25i -> 50p, one output frame per field.

A field-rate job's VideoInfo (what ingest stores as the job's probe) is the OUTPUT's timeline, so everything
that counts frames sees the doubled frames without knowing about fields: the segment plan, progress and
ETA, admission's limits and model cost (twice the frames, twice the model work), the encoder's time base,
the assembler's frame-exact checks and the report:
- the time base is halved (tb / 2) and each source frame's pts t gives two output frames: 2t (its first
  field) and t + t_next (its second field, half-way to the next frame, in tb / 2). The last frame's second
  field comes half its duration after it: `last_frame_duration`, else the spacing before it, else one
  nominal frame at the stream's rate. bwdif makes the same timestamps (its output time base is tb / 2);
  workers stamp frames from this table, so the last frame does not depend on the filter's guess;
- frame count, average and base rate double; the last frame's duration in tb / 2 units is half the
  source's, which is numerically the same value;
- `interlace["source"]` keeps what the source was (frames, time base, rate) for the report.

Output frame i is field i % 2 of source frame i // 2 (`source_span`), whose pts in the source's time base
is `pts[i - i % 2] // 2` (`source_pts`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from fractions import Fraction
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vsr.media.probe import VideoInfo

FIELDS_PER_FRAME = 2


def _last_field_offset(
    pts: Sequence[int], last_frame_duration: int | None, rate: Fraction | None, time_base: Fraction
) -> int:
    """How long the last source frame lasts (source ticks): its own duration, the spacing before it, or
    one frame at `rate`; at least one tick."""
    if last_frame_duration:
        return int(last_frame_duration)
    if len(pts) >= 2 and pts[-1] > pts[-2]:
        return int(pts[-1] - pts[-2])
    if rate:
        return max(1, round(1 / (rate * time_base)))
    return 1


def field_pts(
    pts: Sequence[int], time_base: Fraction, last_frame_duration: int | None = None, rate: Fraction | None = None
) -> tuple[list[int], int]:
    """(output pts in `time_base` / 2, the last output frame's duration in those units) of a source with
    sorted `pts` in `time_base`: two frames per source frame, the second half-way to the next one."""
    if not pts:
        return [], 0
    last = _last_field_offset(pts, last_frame_duration, rate, time_base)
    out: list[int] = []
    for t, after in zip(pts, [*pts[1:], pts[-1] + last], strict=True):
        out += [2 * int(t), int(t) + int(after)]
    return out, last


def source_span(start_frame: int, count: int) -> tuple[int, int, int]:
    """The source frames that output frames [start_frame, start_frame + count) come from: (first source
    frame, how many, how many output frames of the first source frame to skip: 1 when the span starts at
    a second field)."""
    if count <= 0:
        return start_frame // FIELDS_PER_FRAME, 0, 0
    first = start_frame // FIELDS_PER_FRAME
    last = (start_frame + count - 1) // FIELDS_PER_FRAME
    return first, last - first + 1, start_frame - first * FIELDS_PER_FRAME


def source_pts(info: VideoInfo) -> list[int]:
    """The source's own pts table (its time base is `info.time_base * 2`) of a field-rate VideoInfo."""
    return [p // FIELDS_PER_FRAME for p in info.pts[::FIELDS_PER_FRAME]]


def field_view(info: VideoInfo) -> VideoInfo:
    """The output timeline of a source deinterlaced at field rate (see the module docstring)."""
    out_pts, last = field_pts(info.pts, info.time_base, info.last_frame_duration, info.average_rate or info.base_rate)

    def doubled(rate: Fraction | None) -> Fraction | None:
        return None if rate is None else rate * FIELDS_PER_FRAME

    changes: list[dict[str, Any]] = [
        {**change, "pts": int(change["pts"]) * FIELDS_PER_FRAME} for change in info.geometry_changes
    ]
    source = {
        "frames": info.frame_count,
        "time_base": f"{info.time_base.numerator}/{info.time_base.denominator}",
        "rate": None if not info.average_rate else f"{info.average_rate.numerator}/{info.average_rate.denominator}",
    }
    return dataclasses.replace(
        info,
        time_base=info.time_base / FIELDS_PER_FRAME,
        pts=out_pts,
        frame_count=len(out_pts),
        average_rate=doubled(info.average_rate),
        base_rate=doubled(info.base_rate),
        last_frame_duration=last,
        geometry_changes=changes,
        interlace={**(info.interlace or {}), "source": source, "frames_per_source_frame": FIELDS_PER_FRAME},
    )
