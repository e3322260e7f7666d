from __future__ import annotations

import itertools

import pytest

from vsr.planning import Segment, frames_per_segment, plan_segments, seconds_per_frame


def test_segments_cover_every_frame_once_and_are_balanced() -> None:
    pts = list(range(0, 250 * 512, 512))
    segments = plan_segments(pts, max_frames_per_segment=60)
    assert [s.frame_count for s in segments] == [50, 50, 50, 50, 50]
    assert sum(s.frame_count for s in segments) == 250
    assert [s.start_frame for s in segments] == [0, 50, 100, 150, 200]
    assert segments[-1].end_pts is None
    assert all(a.end_pts == b.start_pts for a, b in itertools.pairwise(segments))


def test_variable_frame_rate_uses_real_timestamps() -> None:
    pts = [0, 10, 35, 36, 90, 200, 201]
    segments = plan_segments(pts, max_frames_per_segment=3)
    assert [(s.start_pts, s.end_pts) for s in segments] == [(0, 36), (36, 200), (200, None)]


def test_context_frames_never_reach_before_the_first_frame() -> None:
    pts = list(range(10))
    segments = plan_segments(pts, max_frames_per_segment=4, context_frames=2)
    assert [s.context_before for s in segments] == [0, 2, 2]
    assert [s.context_start_pts for s in segments] == [0, 2, 5]


def test_round_trip_through_dict() -> None:
    seg = plan_segments([0, 3, 6], 2, context_frames=1)[1]
    assert Segment.from_dict(seg.to_dict()) == seg


def test_rejects_unsorted_or_duplicate_pts() -> None:
    with pytest.raises(ValueError):
        plan_segments([0, 5, 5], 2)
    assert plan_segments([], 10) == []


def test_frames_per_segment_leaves_headroom_and_context() -> None:
    spf = seconds_per_frame(640, 360, macs_per_input_pixel=619_200, gflops_per_vcpu=25, vcpus=5.79)
    n = frames_per_segment(
        seconds_per_frame=spf,
        timeout_s=900,
        work_budget_fraction=0.5,
        context_frames=2,
        min_frames=4,
        max_frames=1200,
    )
    assert n * spf + 2 * spf <= 450 + 1e-6
    assert n > 100
    tiny = frames_per_segment(
        seconds_per_frame=1000.0,
        timeout_s=900,
        work_budget_fraction=0.5,
        context_frames=2,
        min_frames=4,
        max_frames=1200,
    )
    assert tiny == 4
