"""A stream whose picture changes mid-way (size, pixel format) comes out whole, in its first geometry.

The clips are MPEG-TS captures built here from real footage: parts encoded separately and their bytes
concatenated, as a broadcast recording looks when the channel switches feeds.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from tests.clips import NearestUpscaler, make_geometry_changes
from vsr.errors import GeometryChangeError
from vsr.media.decode import decode_window
from vsr.media.geometry import FAIL, SCALE, FrameConformer, Geometry, fit
from vsr.media.probe import probe
from vsr.planning import Segment, split_segments
from vsr.segment import process_segment
from vsr.settings import get_settings

PART = 25  # frames per part: one second at 25 fps, so the changes are at 1 s and 2 s


@pytest.fixture(scope="module")
def switching_ts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("geometry")
    parts = [(176, 144, "yuv420p", PART), (160, 128, "yuv420p", PART), (352, 288, "yuv420p", 10)]
    return make_geometry_changes(folder / "switching.ts", parts)


@pytest.fixture(scope="module")
def deepening_ts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("geometry10")
    return make_geometry_changes(
        folder / "8bit_then_10bit.ts", [(176, 144, "yuv420p", PART), (176, 144, "yuv420p10le", PART)]
    )


# --- the arithmetic of keeping the aspect ----------------------------------------------------------
@pytest.mark.parametrize(
    ("source", "target", "expected"),
    [
        # 160x128 (5:4) into 176x144 (11:9): wider, so full width and bars top and bottom (letterbox)
        ((160, 128, None), (176, 144, None), (176, 141, 0, 1)),
        # the same aspect at twice the size: exactly the target
        ((352, 288, None), (176, 144, None), (176, 144, 0, 0)),
        # 4:3 into 16:9: narrower, so full height and bars left and right (pillarbox)
        ((640, 480, None), (1280, 720, None), (960, 720, 160, 0)),
        # anamorphic 720x576 at SAR 16:11 is 20:11 on screen: into square-pixel 1280x720 (16:9), letterboxed
        ((720, 576, Fraction(16, 11)), (1280, 720, None), (1280, 704, 0, 8)),
        # a square-pixel 16:9 frame into anamorphic 720x576 SAR 64:45 (16:9 on screen): fills it
        ((1024, 576, None), (720, 576, Fraction(64, 45)), (720, 576, 0, 0)),
    ],
)
def test_fit_keeps_display_aspect(
    source: tuple[int, int, Fraction | None], target: tuple[int, int, Fraction | None], expected: tuple[int, ...]
) -> None:
    place = fit(
        Geometry(source[0], source[1], "yuv420p", source[2]), Geometry(target[0], target[1], "yuv420p", target[2])
    )
    assert (place.width, place.height, place.x, place.y) == expected


# --- the probe finds the change points -------------------------------------------------------------
def test_probe_lists_each_change_at_its_first_frame(switching_ts: Path) -> None:
    info = probe(switching_ts)
    assert (info.width, info.height, info.pix_fmt, info.frame_count) == (176, 144, "yuv420p", 2 * PART + 10)
    changes = [(c.pts, c.time_s, c.geometry.width, c.geometry.height) for c in info.changes()]
    assert changes == [
        (info.pts[PART], 1.0, 160, 128),
        (info.pts[2 * PART], 2.0, 352, 288),
    ]
    assert info.first_geometry() == Geometry(176, 144, "yuv420p", None)


def test_probe_finds_a_pixel_format_change(deepening_ts: Path) -> None:
    info = probe(deepening_ts)
    assert [(c.pts, c.geometry.pix_fmt, c.geometry.width) for c in info.changes()] == [
        (info.pts[PART], "yuv420p10le", 176)
    ]


# --- every frame comes out in the first geometry ---------------------------------------------------
def test_frames_after_a_change_are_scaled_and_letterboxed(switching_ts: Path) -> None:
    info = probe(switching_ts)
    conform = FrameConformer(info.first_geometry(), SCALE)
    frames = list(decode_window(switching_ts, info.pts[0], info.frame_count, conform))
    assert [f.pts for f in frames] == info.pts
    assert {f.image.shape for f in frames} == {(144, 176, 3)}
    assert {f.image.dtype for f in frames} == {np.dtype(np.uint8)}
    letterboxed = frames[PART].image  # 160x128 shown at 176x141, one black row above and two below
    assert not letterboxed[0].any() and not letterboxed[-2:].any()
    assert letterboxed[1:-2].mean() > 20  # the picture itself
    first = frames[0].image
    assert first[0].any() and first[-1].any()  # the first geometry is untouched: no bars
    # the 352x288 part has the same aspect: scaled to the full frame, no bars
    assert frames[2 * PART].image[0].any() and frames[2 * PART].image[-1].any()
    assert conform.converted == PART + 10


def test_a_segment_starting_exactly_at_a_change_agrees_with_one_long_decode(switching_ts: Path) -> None:
    info = probe(switching_ts)
    target = info.first_geometry()
    whole = [f.image for f in decode_window(switching_ts, info.pts[0], info.frame_count, FrameConformer(target))]
    # boundaries at the change points themselves (frames 25 and 50) and one inside a part (frame 40)
    for start, count in ((PART, PART), (2 * PART, 10), (40, 15)):
        window = [f.image for f in decode_window(switching_ts, info.pts[start], count, FrameConformer(target))]
        assert len(window) == count
        for offset, image in enumerate(window):
            assert np.array_equal(image, whole[start + offset]), (start, offset)


def test_eight_bit_then_ten_bit_is_converted_to_the_first_depth(deepening_ts: Path) -> None:
    info = probe(deepening_ts)
    frames = list(decode_window(deepening_ts, info.pts[0], info.frame_count, FrameConformer(info.first_geometry())))
    assert len(frames) == 2 * PART
    assert {(f.image.shape, f.image.dtype) for f in frames} == {((144, 176, 3), np.dtype(np.uint8))}
    # the 10-bit part's picture survives the conversion: it matches a plain 8-bit decode of the same frame
    with av.open(str(deepening_ts)) as container:
        ten_bit = [frame for frame in container.decode(video=0)][PART]
        assert ten_bit.format.name == "yuv420p10le"
        reference = ten_bit.to_ndarray(format="rgb24")
    assert np.abs(frames[PART].image.astype(int) - reference.astype(int)).mean() < 2.0


def test_a_sar_change_alone_is_letterboxed_to_keep_the_picture_shape(tmp_path: Path) -> None:
    # same 176x144 pixels, but from frame 10 on they are 16:11 wide (anamorphic): shown 99 rows high
    path = make_geometry_changes(
        tmp_path / "sar.ts", [(176, 144, "yuv420p", 10), (176, 144, "yuv420p", 10)], sars=[None, Fraction(16, 11)]
    )
    info = probe(path)
    assert [(c.time_s, c.geometry.sample_aspect_ratio) for c in info.changes()] == [(0.4, Fraction(16, 11))]
    frames = [f.image for f in decode_window(path, info.pts[0], 20, FrameConformer(info.first_geometry()))]
    assert frames[0][0].any() and frames[0][-1].any()  # square pixels: untouched
    wide = frames[15]
    assert not wide[:22].any() and not wide[22 + 99 :].any()  # bars above and below
    assert wide[22].any() and wide[22 + 98].any()  # the picture: 176x99


def test_fail_mode_stops_at_the_first_changed_frame_with_a_clear_reason(switching_ts: Path) -> None:
    info = probe(switching_ts)
    frames = decode_window(switching_ts, info.pts[0], info.frame_count, FrameConformer(info.first_geometry(), FAIL))
    with pytest.raises(GeometryChangeError, match=r"176x144 yuv420p to 160x128 yuv420p at 1\.000 s"):
        for _ in frames:
            pass


@pytest.mark.parametrize("segments", [1, 3])
def test_process_segment_outputs_every_frame_at_the_first_geometry(
    switching_ts: Path, tmp_path: Path, segments: int
) -> None:
    info = probe(switching_ts)
    plan = split_segments(info.pts, segments)
    if segments == 3:  # cut exactly at the two change points, as a planner may
        plan = _cut_at(info.pts, [0, PART, 2 * PART])
    written = []
    for segment in plan:
        out = tmp_path / f"{segments}-{segment.index}.nut"
        result = process_segment(
            switching_ts, segment, NearestUpscaler(2), info, out, encode=get_settings().encode_settings
        )
        assert result.frames == segment.frame_count
        with av.open(str(out)) as container:
            decoded = list(container.decode(video=0))
        assert {(f.width, f.height) for f in decoded} == {(352, 288)}
        written += [int(f.pts) for f in decoded]
    assert written == info.pts  # every frame, once, with its own timestamp


def _cut_at(pts: list[int], starts: list[int]) -> list[Segment]:
    ends = [*starts[1:], len(pts)]
    return [
        Segment(
            index=i,
            start_frame=start,
            frame_count=end - start,
            start_pts=pts[start],
            end_pts=pts[end] if end < len(pts) else None,
            context_before=0,
            context_start_pts=pts[start],
        )
        for i, (start, end) in enumerate(zip(starts, ends, strict=True))
    ]
