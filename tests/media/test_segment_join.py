"""Every good input through process_segment + join_segments (stand-in upscaler): the output has the source's
frames, timestamps, rotation, colour and audio, at scale x the source size."""

from __future__ import annotations

import itertools
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from tests import clips
from vsr.errors import CorruptInputError, GeometryChangeError, PermanentError
from vsr.media.concat import SegmentMismatchError, join_segments
from vsr.media.encode import SegmentEncoder, output_pix_fmt
from vsr.media.probe import VideoInfo, probe
from vsr.planning import Segment, plan_segments
from vsr.segment import process_segment
from vsr.settings import get_settings

ENCODE = get_settings().encode_settings


def frame_times(path: Path) -> list[Fraction]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return [frame.pts * stream.time_base for frame in container.decode(stream)]


def video_span(path: Path) -> Fraction | None:
    """First frame's start to last frame's end, when the file knows the last frame's duration."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        packets = [(p.pts, p.duration) for p in container.demux(stream) if p.size and p.pts is not None]
    (first, _), (last, last_duration) = min(packets), max(packets)
    return (last + last_duration - first) * stream.time_base if last_duration else None


def audio_packets(path: Path) -> list[list[tuple[bytes, Fraction | None]]]:
    with av.open(str(path)) as container:
        return [
            [(bytes(p), None if p.pts is None else p.pts * p.time_base) for p in container.demux(s) if p.size]
            for s in container.streams.audio
        ]


TRANSCODED_AUDIO = {"ts_mp2"}  # MP4 cannot carry MP2: re-encoded to AAC, not dropped


def assert_audio_transcoded(source: Path, output: Path) -> None:
    def spans(path: Path) -> list[tuple[str, float, float]]:
        with av.open(str(path)) as container:
            out = []
            for stream in container.streams.audio:
                times = [float(p.pts * p.time_base) for p in container.demux(stream) if p.size and p.pts is not None]
                container.seek(0)
                out.append((stream.codec_context.name, min(times), max(times)))
            return out

    src, out = spans(source), spans(output)
    assert [codec for codec, _, _ in out] == ["aac"] * len(src)
    for (_, src_start, src_end), (_, out_start, out_end) in zip(src, out, strict=True):
        assert abs(out_start - src_start) < 0.03 and abs(out_end - src_end) < 0.06


def effective_range(value: int) -> int:
    return value or 1  # unspecified YUV range means limited (tv); x264 omits the VUI flag when it is tv


def upscale_through_segments(path: Path, info: VideoInfo, out_dir: Path, scale: int, max_frames: int) -> Path:
    segments = plan_segments(info.pts, max_frames, context_frames=2)
    parts = []
    upscaler = clips.NearestUpscaler(scale)
    for segment in segments:
        part = out_dir / f"{segment.index:05d}.nut"
        result = process_segment(
            clips.as_file_object(path), segment, upscaler, info, part, preset="ultrafast", encode=ENCODE
        )
        assert result.frames == segment.frame_count
        parts.append(part)
    output = out_dir / "out.mp4"
    join_segments(parts, clips.as_file_object(path), info, output, ENCODE)
    return output


CASES = [(name, 2) for name in sorted(clips.GOOD_CLIPS)] + [("odd_mkv", 3), ("carphone", 2), ("bigbuckbunny", 2)]


@pytest.mark.parametrize(("name", "scale"), CASES)
def test_output_matches_source(name: str, scale: int, good_clips: dict[str, Path], tmp_path: Path) -> None:
    source = good_clips[name]
    if name == "bigbuckbunny":  # real AAC 5.1 audio; 30 frames of 720p keep it quick
        source = clips.trim(good_clips["bigbuckbunny"], tmp_path / "bbb30.mp4", 30, audio="copy")
    info = probe(source)
    output = upscale_through_segments(source, info, tmp_path, scale, max_frames=max(1, info.frame_count // 3))
    out = probe(output)

    assert out.frame_count == info.frame_count
    assert frame_times(output) == frame_times(source)  # every frame keeps its source timestamp (VFR too)
    # the last frame keeps its display time, so the duration and average frame rate players show match too
    source_span, output_span = video_span(source), video_span(output)
    if source_span is not None:
        assert output_span == source_span
    if not info.is_vfr and info.average_rate:
        assert out.average_rate == info.average_rate
    assert (out.width, out.height) == (info.width * scale, info.height * scale)
    assert out.rotation == info.rotation
    assert (out.sample_aspect_ratio or 1) == (info.sample_aspect_ratio or 1)  # anamorphic carphone: 128/117
    assert out.display_matrix == info.display_matrix
    assert (out.color_primaries, out.color_trc, out.colorspace) == (
        info.color_primaries,
        info.color_trc,
        info.colorspace,
    )
    assert effective_range(out.color_range) == effective_range(info.color_range)
    assert out.bit_depth == (10 if info.bit_depth > 8 else 8)
    assert out.pix_fmt == output_pix_fmt(out.width, out.height, info.bit_depth)
    if name in TRANSCODED_AUDIO:
        assert_audio_transcoded(source, output)
    else:
        assert audio_packets(output) == audio_packets(source)  # byte-identical, same timestamps
    assert len(out.subtitles) == len(info.subtitles)  # mov_text copied, SubRip converted
    with av.open(str(output)) as container:  # faststart: the index precedes the media data
        assert container.format.name.startswith("mov")
    head = output.read_bytes()[:4096]
    assert head.find(b"moov") != -1 and (head.find(b"mdat") == -1 or head.find(b"moov") < head.find(b"mdat"))


def test_pixels_survive_the_round_trip(good_clips: dict[str, Path], tmp_path: Path) -> None:
    """Nearest x2 then subsampled back equals the source within x264 CRF noise: no colour shift, no frame swap."""
    for name in ("mov_h264", "10bit_mp4", "vfr_mp4"):
        source = good_clips[name]
        info = probe(source)
        (tmp_path / name).mkdir()
        output = upscale_through_segments(source, info, tmp_path / name, 2, max_frames=5)
        with av.open(str(source)) as a, av.open(str(output)) as b:
            src = [f.to_ndarray(format="rgb24").astype(int) for f in a.decode(video=0)]
            out = [f.to_ndarray(format="rgb24")[::2, ::2].astype(int) for f in b.decode(video=0)]
        errors = [float(np.abs(x - y).mean()) for x, y in zip(src, out, strict=True)]
        bias = [float((y - x).mean()) for x, y in zip(src, out, strict=True)]
        assert max(errors) < 3.0, (name, errors)
        assert max(abs(b) for b in bias) < 0.6, (name, bias)


def test_context_frames_are_decoded_but_not_output(good_clips: dict[str, Path], tmp_path: Path) -> None:
    source = good_clips["mov_h264"]
    info = probe(source)
    segment = plan_segments(info.pts, 7, context_frames=2)[1]
    assert segment.context_before == 2
    upscaler = clips.NearestUpscaler(2)
    result = process_segment(source, segment, upscaler, info, tmp_path / "s.nut", batch_frames=3, encode=ENCODE)
    assert result.frames == 7 and upscaler.calls == 3  # 7 frames in batches of 3
    with av.open(str(tmp_path / "s.nut")) as container:
        stream = container.streams.video[0]
        times = [f.pts * stream.time_base for f in container.decode(stream)]
    assert times[0] > 0  # NUT shifted the segment's timestamps (B-frame delay); join_segments undoes it
    step = times[1] - times[0]
    assert step == Fraction(info.pts[8] - info.pts[7]) * info.time_base
    assert result.decode_s > 0 and result.encode_s > 0 and result.wall_s >= result.infer_s


def test_overlap_and_serial_give_identical_frames(good_clips: dict[str, Path], tmp_path: Path) -> None:
    source = good_clips["vfr_mp4"]
    info = probe(source)
    segment = plan_segments(info.pts, info.frame_count)[0]
    decoded = []
    for overlap in (True, False):
        out = tmp_path / f"{overlap}.nut"
        process_segment(source, segment, clips.NearestUpscaler(2), info, out, overlap=overlap, encode=ENCODE)
        with av.open(str(out)) as container:
            decoded.append([f.to_ndarray() for f in container.decode(video=0)])
    assert len(decoded[0]) == len(decoded[1]) == info.frame_count
    assert all(np.array_equal(a, b) for a, b in zip(*decoded, strict=True))


class _Exploding:
    scale = 2

    def __init__(self, after: int) -> None:
        self.after = after

    def upscale(self, batch: np.ndarray) -> np.ndarray:
        self.after -= 1
        if self.after < 0:
            raise RuntimeError("model failed")
        return np.repeat(np.repeat(batch, 2, axis=1), 2, axis=2)


@pytest.mark.timeout(60)
def test_upscaler_error_propagates_without_hanging(good_clips: dict[str, Path], tmp_path: Path) -> None:
    source = good_clips["mov_h264"]
    info = probe(source)
    segment = plan_segments(info.pts, info.frame_count)[0]
    with pytest.raises(RuntimeError, match="model failed"):
        process_segment(source, segment, _Exploding(after=2), info, tmp_path / "s.nut", batch_frames=1, encode=ENCODE)


@pytest.mark.timeout(60)
def test_truncated_source_fails_the_segment_as_corrupt(media_clips: dict[str, Path], tmp_path: Path) -> None:
    """Planned from the full file, processed against the truncated bytes (e.g. replaced upload)."""
    full = media_clips["truncated_mp4"].parent / "full_for_truncation.mp4"
    info = probe(full)
    segment = plan_segments(info.pts, info.frame_count)[0]
    with pytest.raises(CorruptInputError):
        process_segment(
            media_clips["truncated_mp4"], segment, clips.NearestUpscaler(2), info, tmp_path / "s.nut", encode=ENCODE
        )


def test_join_refuses_missing_or_reordered_segments(good_clips: dict[str, Path], tmp_path: Path) -> None:
    source = good_clips["mov_h264"]
    info = probe(source)
    parts = []
    for segment in plan_segments(info.pts, 7):
        parts.append(tmp_path / f"{segment.index}.nut")
        process_segment(source, segment, clips.NearestUpscaler(2), info, parts[-1], preset="ultrafast", encode=ENCODE)
    for bad in (parts[:-1], [parts[1], parts[0], parts[2]], [*parts, parts[0]]):
        with pytest.raises(SegmentMismatchError) as caught:
            join_segments(bad, source, info, tmp_path / "out.mp4", ENCODE)
        assert isinstance(caught.value, PermanentError)


def test_one_frame_segments_join(good_clips: dict[str, Path], tmp_path: Path) -> None:
    """Segments without B-frame delay next to ones with it: dts are rebuilt, strictly increasing."""
    source = good_clips["mov_h264"]
    info = probe(source)
    sizes = [1, 6, 1, 1, info.frame_count - 9]
    parts, start = [], 0
    for index, size in enumerate(sizes):
        segment = Segment(index, start, size, info.pts[start], None, 0, info.pts[start])
        parts.append(tmp_path / f"{index}.nut")
        process_segment(source, segment, clips.NearestUpscaler(2), info, parts[-1], encode=ENCODE)
        start += size
    output = tmp_path / "out.mp4"
    join_segments(parts, source, info, output, ENCODE)
    with av.open(str(output)) as container:
        dts = [p.dts for p in container.demux(video=0) if p.size]
    assert all(b > a for a, b in itertools.pairwise(dts))
    assert frame_times(output) == frame_times(source)


def test_encoder_formats_and_settings(tmp_path: Path) -> None:
    assert output_pix_fmt(322, 194, 8) == "yuv420p"
    assert output_pix_fmt(483, 291, 8) == "yuv444p"  # odd x3 output: exact size, 4:4:4
    assert output_pix_fmt(192, 128, 10) == "yuv420p10le"
    assert output_pix_fmt(483, 290, 10) == "yuv444p10le"


def test_encoder_rejects_wrong_frames(good_clips: dict[str, Path], tmp_path: Path) -> None:
    info = probe(good_clips["vfr_mp4"])
    with SegmentEncoder(tmp_path / "x.nut", info=info, scale=2, encode=ENCODE) as encoder:
        image = np.zeros((info.height * 2, info.width * 2, 3), np.uint8)
        encoder.write(image, info.pts[0])
        with pytest.raises(ValueError, match="pts must increase"):
            encoder.write(image, info.pts[0])
        # a frame of the wrong size is the same on every attempt: permanent at once, never retried
        with pytest.raises(GeometryChangeError, match="is 192x10, but this job's output is 192x128"):
            encoder.write(image[:10], info.pts[1])
    with av.open(str(tmp_path / "x.nut")) as container:
        packets = [p for p in container.demux(video=0) if p.size]
    assert len(packets) == 1 and packets[0].is_keyframe
