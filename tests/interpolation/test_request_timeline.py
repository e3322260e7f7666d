"""The typed time request (CLI flags and S3 metadata alike) and the exact output timeline it implies."""

from __future__ import annotations

import itertools
from fractions import Fraction

import pytest

from vsr import timeline
from vsr.errors import BadRequestError, LimitExceededError
from vsr.request import InterpolationLimits, TimeRequest, from_metadata, parse

LIMITS = InterpolationLimits(max_output_fps=120, max_output_pixel_rate=3840 * 2160 * 60)


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ({}, TimeRequest()),
        ({"vsr-interpolate": "2"}, TimeRequest(interpolate=2)),
        ({"VSR-Interpolate": " 8 "}, TimeRequest(interpolate=8)),
        ({"vsr-fps": "59.94"}, TimeRequest(fps=Fraction(60000, 1001))),
        ({"vsr-fps": "50"}, TimeRequest(fps=Fraction(50))),
        ({"vsr-slowmo": "4"}, TimeRequest(slowmo=4)),
    ],
)
def test_metadata_parses_to_one_typed_value(metadata: dict[str, str], expected: TimeRequest) -> None:
    request = from_metadata(metadata)
    assert request == expected
    assert TimeRequest.from_dict(request.to_dict()) == request  # rides in the segment message unchanged


@pytest.mark.parametrize(
    ("metadata", "reason"),
    [
        ({"vsr-interpolate": "3"}, "vsr-interpolate=3 is not supported; use one of 2, 4, 8"),
        ({"vsr-interpolate": "0"}, "vsr-interpolate=0 is not supported"),
        ({"vsr-interpolate": "fast"}, "vsr-interpolate='fast' is not a number"),
        ({"vsr-fps": "fast"}, "vsr-fps='fast' is not a frame rate"),
        ({"vsr-fps": "-5"}, "must be positive"),
        ({"vsr-slowmo": "16"}, "vsr-slowmo=16 is not supported"),
        ({"vsr-interpolate": "2", "vsr-slowmo": "2"}, "ask for one of them"),
    ],
)
def test_bad_values_are_refused_with_a_reason(metadata: dict[str, str], reason: str) -> None:
    with pytest.raises(BadRequestError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        from_metadata(metadata)


def test_source_dependent_checks() -> None:
    with pytest.raises(BadRequestError, match=r"fps 24 is below the source's 25\.000 fps"):
        parse(fps="24").check_against(Fraction(25), 640, 360, 1, LIMITS)
    with pytest.raises(LimitExceededError, match=r"200\.00 fps; the limit is 120 fps"):
        parse(interpolate="8").check_against(Fraction(25), 64, 36, 1, LIMITS)
    with pytest.raises(LimitExceededError, match="Mpixel/s"):
        parse(interpolate="2").check_against(Fraction(30), 1920, 1080, 4, LIMITS)
    parse(interpolate="2").check_against(Fraction(30), 1920, 1080, 1, LIMITS)  # 1080p60 is fine
    parse(slowmo="8").check_against(Fraction(30), 1920, 1080, 1, LIMITS)  # slow motion keeps the rate


def test_interpolate_two_puts_frames_at_exact_midpoints_of_a_vfr_source() -> None:
    pts = [0, 512, 1024, 1700, 2100]  # variable intervals
    line = timeline.build(pts, Fraction(1, 12800), parse(interpolate=2), rate=Fraction(25), last_frame_duration=400)
    seconds = [f.pts * line.time_base for f in line.frames]
    expected = []
    for a, b in itertools.pairwise(pts):
        expected += [Fraction(a, 12800), Fraction(a + b, 2 * 12800)]
    expected.append(Fraction(pts[-1], 12800))  # the last source frame is kept
    assert seconds == expected
    assert len(line.frames) == 2 * (len(pts) - 1) + 1
    assert line.last_frame_duration * line.time_base == Fraction(400, 12800)


def test_interpolate_four_makes_quarters_by_recursive_midpoints() -> None:
    line = timeline.build([0, 4, 8], Fraction(1, 100), parse(interpolate=4))
    assert [(f.index, f.t) for f in line.frames] == [
        (0, Fraction(0)),
        (0, Fraction(1, 4)),
        (0, Fraction(1, 2)),
        (0, Fraction(3, 4)),
        (1, Fraction(0)),
        (1, Fraction(1, 4)),
        (1, Fraction(1, 2)),
        (1, Fraction(3, 4)),
        (2, Fraction(0)),
    ]
    assert [f.pts * line.time_base for f in line.frames] == [Fraction(k, 100) for k in range(9)]


def test_slowmo_stretches_time_and_keeps_the_rate() -> None:
    line = timeline.build([100, 140, 180], Fraction(1, 1000), parse(slowmo=4), rate=Fraction(25))
    seconds = [f.pts * line.time_base for f in line.frames]
    assert seconds[0] == Fraction(100, 1000)  # starts where the source starts
    assert seconds[-1] - seconds[0] == 4 * Fraction(80, 1000)  # 4x the duration
    assert len(set(b - a for a, b in itertools.pairwise(seconds))) == 1  # the source's own interval
    assert line.rate == Fraction(25)


def test_fps_target_uses_exact_multiples_and_nearest_midpoints() -> None:
    pts = [0, 1001, 2002, 3003]  # 29.97 fps in 1/30000
    line = timeline.build(pts, Fraction(1, 30000), parse(fps="60"), rate=Fraction(30000, 1001))
    seconds = [f.pts * line.time_base for f in line.frames]
    assert seconds == [Fraction(k, 60) for k in range(len(seconds))]
    assert seconds[-1] <= Fraction(3003, 30000) < seconds[-1] + Fraction(1, 60)
    for f, when in zip(line.frames, seconds, strict=True):
        exact = (when - Fraction(pts[f.index], 30000)) / Fraction(1001, 30000)
        assert abs(exact - f.t) <= Fraction(1, 16)  # nearest eighth
        assert f.t.denominator in (1, 2, 4, 8)


def test_one_frame_video_is_unchanged_with_a_note() -> None:
    line = timeline.build([7], Fraction(1, 25), parse(interpolate=2))
    assert [(f.index, f.t, f.pts) for f in line.frames] == [(0, 0, 7)]
    assert "one-frame" in line.note


def test_every_source_interval_belongs_to_exactly_one_segment() -> None:
    pts = list(range(0, 13 * 10, 10))
    line = timeline.build(pts, Fraction(1, 250), parse(interpolate=4))
    bounds = [(0, 5), (5, 9), (9, 13)]
    owned = [line.owned_by(s, e, len(pts)) for s, e in bounds]
    assert [f for part in owned for f in part] == list(line.frames)  # disjoint, complete, in order
    for (s, e), part in zip(bounds, owned, strict=True):
        assert {f.index for f in part} <= set(range(s, e))


def test_upload_metadata_scale_one_means_no_super_resolution() -> None:
    from vsr.pipeline.timejob import request_from_upload

    assert request_from_upload({"vsr-interpolate": "2", "vsr-scale": "1"}, 2) == TimeRequest(interpolate=2, scale=1)
    assert request_from_upload({"vsr-interpolate": "2", "vsr-scale": "2"}, 2).scale == 2
    with pytest.raises(BadRequestError, match="vsr-scale='3' is not offered"):
        request_from_upload({"vsr-interpolate": "2", "vsr-scale": "3"}, 2)
    with pytest.raises(BadRequestError, match="would do nothing"):
        request_from_upload({"vsr-scale": "1"}, 2)


def test_planner_cost_adds_made_frames_and_super_resolves_every_output_frame() -> None:
    from vsr.admission import ModelCost
    from vsr.chain import effective_cost

    sr = ModelCost(name="x2", scale=2, macs_per_input_pixel=1000)
    assert effective_cost(sr, TimeRequest(), 400) is sr
    assert effective_cost(sr, parse(interpolate=4), 400).macs_per_input_pixel == 4 * 1000 + 3 * 400
    only = effective_cost(sr, parse(interpolate=2, scale=1), 400)
    assert only.macs_per_input_pixel == 400 and only.scale == 1
