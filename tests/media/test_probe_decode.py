"""probe() describes files exactly; decode_window() equals a full sequential decode."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from tests import clips
from vsr.media.colour import rgb_format_for, to_rgb_array
from vsr.media.decode import decode_window
from vsr.media.probe import VideoInfo, probe

LONG = {"bikes", "bigbuckbunny"}  # sampled windows only, to keep the suite fast


def full_decode(path: Path, limit: int | None = None) -> list[tuple[int, np.ndarray]]:
    out = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            out.append((frame.pts, to_rgb_array(frame, rgb_format_for(frame.format.name))))
            if limit is not None and len(out) == limit:
                break
    return out


@pytest.fixture(scope="module")
def infos(good_clips: dict[str, Path]) -> dict[str, VideoInfo]:
    return {name: probe(path) for name, path in good_clips.items()}


def test_probe_matches_a_full_decode(good_clips: dict[str, Path], infos: dict[str, VideoInfo]) -> None:
    for name, path in good_clips.items():
        with av.open(str(path)) as container:
            decoded = [frame.pts for frame in container.decode(video=0)]
        info = infos[name]
        assert info.frame_count == len(decoded), name
        assert info.pts == decoded, name  # the exact presentation timestamps, in order


def test_probe_facts(infos: dict[str, VideoInfo], good_clips: dict[str, Path]) -> None:
    bikes = infos["bikes"]
    assert (bikes.width, bikes.height, bikes.frame_count, bikes.codec) == (640, 272, 250, "h264")
    assert bikes.average_rate == 25 and not bikes.is_vfr and bikes.audio == []
    bunny = infos["bigbuckbunny"]
    assert [(a.codec, a.channels, a.sample_rate) for a in bunny.audio] == [("aac", 6, 48000)]
    assert infos["carphone"].average_rate == Fraction(30000, 1001) and not infos["carphone"].is_vfr
    assert infos["vfr_mp4"].is_vfr
    assert infos["rotated_mp4"].rotation == 90 and infos["rotated_mp4"].display_matrix is not None
    assert (infos["rotated_mp4"].width, infos["rotated_mp4"].height) == (96, 64)  # coded size, unrotated
    ten = infos["10bit_mp4"]
    assert (ten.bit_depth, ten.pix_fmt, ten.colorspace, ten.color_trc) == (10, "yuv420p10le", 9, 16)
    assert (infos["odd_mkv"].width, infos["odd_mkv"].height) == (161, 97)
    assert infos["webm_vp9_opus"].frame_count == 12  # stream.frames is 0 for webm: counted by demuxing
    assert [a.codec for a in infos["webm_vp9_opus"].audio] == ["opus"]
    assert [s.codec for s in infos["mov_h264"].subtitles] == ["mov_text"]
    assert infos["mov_h264"].colorspace == 1 and infos["mov_h264"].color_range == 1
    assert infos["mkv_hevc"].codec == "hevc" and len(infos["mkv_hevc"].subtitles) == 1
    assert infos["bikes"].size_bytes == good_clips["bikes"].stat().st_size


def test_video_info_json_round_trip(infos: dict[str, VideoInfo]) -> None:
    for info in infos.values():
        data = json.loads(json.dumps(info.to_dict()))
        assert isinstance(data["time_base"], str) and "/" in data["time_base"]
        assert VideoInfo.from_dict(data) == info


def _windows(count: int) -> list[tuple[int, int]]:
    """(start index, length): from the start, across GOP boundaries, non-keyframe starts, past the end."""
    return [(0, 3), (0, 1), (1, 4), (2, 1), (count // 2, 5), (count - 3, 3), (count - 2, 10), (count - 1, 1)]


@pytest.mark.parametrize("name", [*sorted(clips.GOOD_CLIPS), "carphone", "bikes", "bigbuckbunny"])
def test_decode_window_is_frame_exact(
    name: str, good_clips: dict[str, Path], infos: dict[str, VideoInfo], tmp_path: Path
) -> None:
    path, info = good_clips[name], infos[name]
    if name in LONG:  # a trimmed copy keeps real GOP structure but decodes fast
        path = clips.trim(path, tmp_path / f"{name}.mp4", 40)
        info = probe(path)
    reference = full_decode(path)
    for start, length in _windows(info.frame_count):
        got = list(decode_window(clips.as_file_object(path), info.pts[start], length))
        want = reference[start : start + length]
        assert [f.pts for f in got] == [pts for pts, _ in want], (name, start)
        for frame, (_, image) in zip(got, want, strict=True):
            assert frame.image.dtype == image.dtype and frame.image.shape == image.shape
            assert np.array_equal(frame.image, image), (name, start, frame.pts)


def test_ten_bit_frames_are_not_crushed(good_clips: dict[str, Path], infos: dict[str, VideoInfo]) -> None:
    frame = next(decode_window(good_clips["10bit_mp4"], infos["10bit_mp4"].pts[0], 1))
    assert frame.image.dtype == np.uint16
    assert len(np.unique(frame.image[..., 1] & 0xFF)) > 16  # low bits carry information


def test_decode_window_from_a_real_long_clip_mid_gop(good_clips: dict[str, Path], infos: dict[str, VideoInfo]) -> None:
    """bikes.mp4 as shipped (B-frames, 250 frames): a window starting mid-GOP equals the sequential decode."""
    reference = full_decode(good_clips["bikes"], limit=140)
    start = 131
    got = list(decode_window(good_clips["bikes"], infos["bikes"].pts[start], 6))
    assert [f.pts for f in got] == [pts for pts, _ in reference[start : start + 6]]
    assert all(np.array_equal(f.image, img) for f, (_, img) in zip(got, reference[start : start + 6], strict=True))
