"""Which output frames a time request makes, and exactly when: pure arithmetic on the source's pts table.

An output frame is (i, t): the point a fraction t in [0, 1) of the way from source frame i to frame i + 1
(t = 0 is source frame i itself), at an exact timestamp in `time_base`. t is always a dyadic fraction (k / 2^d)
because RIFE HDv3 makes midpoints only: 1/4 is the midpoint of frame i and the 1/2 frame, and so on. The last
source frame is always kept (t = 0 of the last interval index). Timestamps are exact midpoints of the two
source timestamps, so variable-frame-rate sources work.

Segments own source intervals: a segment of source frames [s, e) owns every output frame with s <= i < e
(and the last segment the final frame), so each source interval belongs to exactly one segment and a segment
reads one frame past its end.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from vsr.request import TimeRequest

MAX_DEPTH = 3  # eighths: the finest recursive midpoint


@dataclass(frozen=True)
class OutFrame:
    index: int  # source interval (the earlier source frame)
    t: Fraction  # 0 <= t < 1, dyadic
    pts: int  # in Timeline.time_base


@dataclass(frozen=True)
class Timeline:
    frames: tuple[OutFrame, ...]
    time_base: Fraction
    rate: Fraction | None  # nominal output rate
    last_frame_duration: int | None
    note: str = ""

    @property
    def pts(self) -> list[int]:
        return [f.pts for f in self.frames]

    def owned_by(self, start: int, end: int, source_frames: int) -> list[OutFrame]:
        """The output frames of the segment of source frames [start, end)."""
        last = source_frames - 1
        return [f for f in self.frames if start <= f.index < end and (f.index < last or end == source_frames)]


def _fraction_gcd(a: Fraction, b: Fraction) -> Fraction:
    return Fraction(math.gcd(a.numerator, b.numerator), math.lcm(a.denominator, b.denominator))


def _identity(pts: Sequence[int], time_base: Fraction, rate: Fraction | None, last: int | None, note: str) -> Timeline:
    frames = tuple(OutFrame(i, Fraction(0), p) for i, p in enumerate(pts))
    return Timeline(frames, time_base, rate, last, note)


def build(
    pts: Sequence[int],
    time_base: Fraction,
    request: TimeRequest,
    *,
    rate: Fraction | None = None,
    last_frame_duration: int | None = None,
) -> Timeline:
    """The output timeline of a source with sorted `pts` in `time_base` (rate: its nominal rate)."""
    if not request.active:
        return _identity(pts, time_base, rate, last_frame_duration, "")
    if len(pts) < 2:
        return _identity(pts, time_base, rate, last_frame_duration, "one-frame video: returned unchanged")
    if request.fps is not None:
        return _at_rate(pts, time_base, request.fps, last_frame_duration)
    n = request.factor
    steps = [Fraction(k, n) for k in range(n)]
    frames: list[OutFrame] = []
    if request.slowmo > 1:  # time stretched n times from the first frame: each made frame lasts a source interval
        for i in range(len(pts) - 1):
            d = pts[i + 1] - pts[i]
            frames += [OutFrame(i, t, n * pts[i] + k * d - (n - 1) * pts[0]) for k, t in enumerate(steps)]
        frames.append(OutFrame(len(pts) - 1, Fraction(0), n * pts[-1] - (n - 1) * pts[0]))
        return Timeline(tuple(frames), time_base, rate, last_frame_duration)
    for i in range(len(pts) - 1):
        d = pts[i + 1] - pts[i]
        frames += [OutFrame(i, t, n * pts[i] + k * d) for k, t in enumerate(steps)]
    frames.append(OutFrame(len(pts) - 1, Fraction(0), n * pts[-1]))
    last = None if last_frame_duration is None else last_frame_duration * n  # in time_base / n
    return _simplified(frames, time_base / n, rate * n if rate else None, last)


def _simplified(frames: list[OutFrame], time_base: Fraction, rate: Fraction | None, last: int | None) -> Timeline:
    """The same instants in the coarsest time base that holds them all exactly."""
    g = 0
    for f in frames:
        g = math.gcd(g, f.pts)
    if last:
        g = math.gcd(g, last)  # the last frame's duration, unchanged in seconds
    g = max(g, 1)
    scaled_last = None if last is None else last // g if last % g == 0 else None
    return Timeline(tuple(OutFrame(f.index, f.t, f.pts // g) for f in frames), time_base * g, rate, scaled_last)


def _at_rate(pts: Sequence[int], time_base: Fraction, fps: Fraction, last: int | None) -> Timeline:
    """Frames at exact multiples of 1/fps from the first frame, each the nearest recursive midpoint."""
    period = 1 / fps
    out_tb = _fraction_gcd(time_base, period)
    start, end = pts[0] * time_base, pts[-1] * time_base
    frames: list[OutFrame] = []
    i = 0
    k = 0
    depth = 2**MAX_DEPTH
    while start + k * period <= end:
        when = start + k * period
        while i + 1 < len(pts) - 1 and pts[i + 1] * time_base <= when:
            i += 1
        if pts[i + 1] * time_base <= when:  # at or past the last frame
            index, t = len(pts) - 1, Fraction(0)
        else:
            u = (when - pts[i] * time_base) / ((pts[i + 1] - pts[i]) * time_base)
            m = round(u * depth)
            index, t = (i + 1, Fraction(0)) if m == depth else (i, Fraction(m, depth))
        frames.append(OutFrame(index, t, int(when / out_tb)))
        k += 1
    last_out = int(period / out_tb)
    return Timeline(
        tuple(frames),
        out_tb,
        fps,
        last_out,
        f"frames at multiples of 1/{float(fps):g} s, each the nearest 1/{depth} midpoint",
    )
