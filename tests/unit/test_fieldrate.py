"""Field-rate deinterlacing's arithmetic (vsr.media.fieldrate): output timestamps, which source frames a
run of output frames needs, and the output timeline the planner splits. Pure: no FFmpeg."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import pytest

from vsr.media.fieldrate import field_pts, field_view, source_pts, source_span
from vsr.media.probe import VideoInfo
from vsr.planning import split_segments


def _info(pts: list[int], time_base: Fraction, rate: Fraction | None, last: int | None, **extra: Any) -> VideoInfo:
    return VideoInfo(
        format_name="mov,mp4,m4a,3gp,3g2,mj2",
        size_bytes=1,
        duration_s=None,
        start_time_s=0.0,
        video_index=0,
        width=720,
        height=576,
        rotation=0,
        display_matrix=None,
        codec="h264",
        profile=None,
        pix_fmt="yuv420p",
        bit_depth=8,
        time_base=time_base,
        average_rate=rate,
        base_rate=rate,
        sample_aspect_ratio=None,
        frame_count=len(pts),
        pts=pts,
        is_vfr=False,
        color_range=0,
        color_primaries=2,
        color_trc=2,
        colorspace=2,
        last_frame_duration=last,
        interlace={"mode": "on", "detected": "tff", "deinterlace": True, "parity": "tff", "rate": "field"},
        **extra,
    )


@pytest.mark.parametrize(
    ("pts", "last", "rate", "expected", "expected_last"),
    [
        # 25i in 1/25: frame durations of one tick become two ticks of 1/50, fields one tick apart
        ([0, 1, 2], 1, Fraction(25), [0, 1, 2, 3, 4, 5], 1),
        # a start offset and mp4's 1/12800: 512 ticks a frame -> 512 ticks of 1/25600 a field
        ([1024, 1536, 2048], 512, Fraction(25), [2048, 2560, 3072, 3584, 4096, 4608], 512),
        # variable frame rate: each second field half-way to the next frame
        ([0, 2, 8], 4, None, [0, 2, 4, 10, 16, 20], 4),
        # no duration for the last frame: the spacing before it
        ([0, 3, 6], None, None, [0, 3, 6, 9, 12, 15], 3),
        # one frame without a duration: one frame at the stream's rate (1/25 s in 1/1000)
        ([0], None, Fraction(25), [0, 40], 40),
        ([], 1, None, [], 0),
    ],
)
def test_field_pts(
    pts: list[int], last: int | None, rate: Fraction | None, expected: list[int], expected_last: int
) -> None:
    time_base = Fraction(1, 1000) if pts == [0] else Fraction(1, 25)
    assert field_pts(pts, time_base, last, rate) == (expected, expected_last)


def test_each_source_time_keeps_its_first_field_and_the_second_is_half_way() -> None:
    """In seconds: field 0 at the source frame's time, field 1 half-way to the next (the last: half its
    duration), so the output is exactly twice the rate over the same span."""
    pts, time_base = [3, 5, 9, 10], Fraction(1, 30)
    out, last = field_pts(pts, time_base, 2)
    seconds = [p * time_base / 2 for p in out]
    after = [*pts[1:], pts[-1] + 2]
    assert seconds[0::2] == [p * time_base for p in pts]
    assert seconds[1::2] == [(a + b) * time_base / 2 for a, b in zip(pts, after, strict=True)]
    assert (out[-1] + last) * time_base / 2 == (pts[-1] + 2) * time_base  # the output ends where the source does


@pytest.mark.parametrize(
    ("start", "count", "expected"),
    [
        (0, 4, (0, 2, 0)),  # two whole source frames
        (1, 4, (0, 3, 1)),  # starts at a second field: frame 0's second field .. frame 2's first
        (3, 1, (1, 1, 1)),  # one second field
        (4, 1, (2, 1, 0)),  # one first field
        (5, 0, (2, 0, 0)),
    ],
)
def test_source_span(start: int, count: int, expected: tuple[int, int, int]) -> None:
    assert source_span(start, count) == expected


def test_every_output_frame_comes_from_exactly_one_source_field() -> None:
    """Segments of any sizes over the output frames read source spans whose fields, skipped ones
    dropped, cover the output once, in order."""
    covered = []
    for segment in split_segments(list(range(0, 22, 2)), 4):  # 11 output frames: 3/3/3/2
        first, count, skip = source_span(segment.start_frame, segment.frame_count)
        fields = [(frame, f) for frame in range(first, first + count) for f in (0, 1)][skip:]
        covered += fields[: segment.frame_count]
    assert covered == [(i // 2, i % 2) for i in range(11)]


def test_field_view_is_the_output_timeline() -> None:
    pts, time_base = [512 * i for i in range(5)], Fraction(1, 12800)
    info = _info(
        pts,
        time_base,
        Fraction(25),
        512,
        geometry_changes=[
            {
                "pts": 1024,
                "time_s": 0.08,
                "width": 360,
                "height": 288,
                "pix_fmt": "yuv420p",
                "sample_aspect_ratio": None,
            }
        ],
    )
    view = field_view(info)
    assert view.time_base == Fraction(1, 25600)
    assert view.frame_count == 10 and view.pts == [512 * i for i in range(10)]  # 1/50 s apart
    assert view.average_rate == view.base_rate == 50
    assert view.last_frame_duration == 512  # half of 1/25 s, in 1/25600
    assert view.geometry_changes[0]["pts"] == 2048 and view.geometry_changes[0]["time_s"] == 0.08  # same instant
    assert view.pts_seconds(0) == info.pts_seconds(0) and view.pts_seconds(8) == info.pts_seconds(4)
    assert view.interlace is not None
    assert view.interlace["source"] == {"frames": 5, "time_base": "1/12800", "rate": "25/1"}
    assert view.field_rate and view.deinterlace_rate == "field" and view.deinterlace_parity == "tff"
    assert source_pts(view) == pts  # the workers' way back to the source's frames
    assert VideoInfo.from_dict(view.to_dict()) == view  # the probe artifact round-trips through JSON


def test_a_frame_rate_job_is_not_field_rate() -> None:
    info = _info([0, 1], Fraction(1, 25), Fraction(25), 1)
    frame = VideoInfo.from_dict({**info.to_dict(), "interlace": {**(info.interlace or {}), "rate": "frame"}})
    assert frame.deinterlace_rate == "frame" and not frame.field_rate
    older = VideoInfo.from_dict({**info.to_dict(), "interlace": {"deinterlace": True, "parity": "tff"}})
    assert older.deinterlace_rate == "frame"  # probes written before the rate setting
    progressive = VideoInfo.from_dict({**info.to_dict(), "interlace": {"deinterlace": False, "rate": None}})
    assert progressive.deinterlace_rate is None and not progressive.field_rate


def test_segments_of_the_field_view_count_output_frames() -> None:
    """The plan splits the output's frames: a 5-frame source at field rate is 10 frames to segment, and
    the segments' timestamps are the output's."""
    view = field_view(_info([0, 1, 2, 3, 4], Fraction(1, 25), Fraction(25), 1))
    segments = split_segments(view.pts, 3)
    assert [s.frame_count for s in segments] == [4, 3, 3]
    assert [s.start_pts for s in segments] == [0, 4, 7]  # in 1/50: the second segment starts at a field 1
    assert sum(s.frame_count for s in segments) == 2 * 5
