"""Every delivery codec through process_segment + join_segments (stand-in upscaler), as the assembler writes it:
frames, timestamps (VFR too), rotation, SAR, colour tags, HDR10 metadata, audio and subtitles per container."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import pytest

from tests import clips
from tests.media.test_segment_join import audio_packets, frame_times
from vsr.admission import delivery_for
from vsr.media.concat import JoinResult, join_segments
from vsr.media.probe import VideoInfo, probe
from vsr.media.profiles import CODECS, Delivery, Hdr10, choose_delivery
from vsr.planning import plan_segments
from vsr.segment import process_segment
from vsr.settings import get_settings

SCALE = 2
DECODER = {"h264": "h264", "hevc": "hevc", "av1": "libdav1d", "prores": "prores"}


@pytest.fixture(scope="module")
def format_clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("format-clips")
    return {name: build(folder) for name, build in clips.FORMAT_CLIPS.items()}


def deliver(
    source: Path, codec: str, out_dir: Path, scale: int = SCALE
) -> tuple[Path, JoinResult, Delivery, VideoInfo]:
    """The clip upscaled in 3 segments and assembled in `codec` (or auto) exactly as the assembler does."""
    settings = get_settings()
    info = probe(source)
    profile = delivery_for(info, scale, codec, settings)
    delivery = choose_delivery(
        profile,
        settings.delivery_codec(profile.codec),
        info.width * scale,
        info.height * scale,
        hdr10=Hdr10.from_dict(info.hdr10),
        prefer_nvenc=True,  # as the settings default: software here, where NVENC cannot open
    )
    encode = settings.encode_settings_for(profile.codec)
    parts = []
    for segment in plan_segments(info.pts, max(1, info.frame_count // 3), context_frames=2):
        part = out_dir / f"{segment.index:05d}.nut"
        process_segment(clips.as_file_object(source), segment, clips.NearestUpscaler(scale), info, part, encode=encode)
        parts.append(part)
    output = out_dir / f"out{profile.extension}"
    result = join_segments(parts, clips.as_file_object(source), info, output, encode, delivery)
    return output, result, delivery, info


def decoded(path: Path) -> list[av.VideoFrame]:
    with av.open(str(path)) as container:
        return list(container.decode(container.streams.video[0]))


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("name", ["vfr_mp4", "rotated_mp4", "mov_h264"])
def test_every_codec_keeps_frames_times_rotation_colour_and_streams(
    codec: str, name: str, media_clips: dict[str, Path], tmp_path: Path
) -> None:
    source = media_clips[name]
    output, result, delivery, info = deliver(source, codec, tmp_path)
    out = probe(output)
    frames = decoded(output)  # every frame decodes with PyAV
    assert len(frames) == out.frame_count == info.frame_count
    assert frame_times(output) == frame_times(source)  # exact source timestamps, VFR included
    assert (out.width, out.height) == (info.width * SCALE, info.height * SCALE)
    assert out.rotation == info.rotation
    assert (out.color_primaries, out.color_trc, out.colorspace) == (
        info.color_primaries,
        info.color_trc,
        info.colorspace,
    )
    with av.open(str(output)) as container:
        video = container.streams.video[0]
        assert video.codec_context.name == DECODER[codec]
        assert container.format.name == "mov,mp4,m4a,3gp,3g2,mj2"
        subtitles = len(container.streams.subtitles)
    assert output.suffix == (".mov" if codec == "prores" else ".mp4")
    assert result.container == ("mov" if codec == "prores" else "mp4")
    assert result.encoder == delivery.spec.name
    if not delivery.spec.hardware and codec != "prores":
        assert result.nvenc_fallback and "did not open" in result.nvenc_fallback  # the report says why
    assert subtitles == len(info.subtitles)  # mov_text stays, in MP4 and in MOV
    if info.audio and codec == "prores":
        with av.open(str(output)) as container:
            audio = container.streams.audio[0]
            assert audio.codec_context.name == "pcm_s16le"  # AAC source: 16-bit PCM for editors
            assert abs(float(audio.duration * audio.time_base) - float(out.duration_s or 0)) < 0.3
        assert result.audio == ({"index": info.audio[0].index, "codec": "aac", "action": "encoded to pcm_s16le"},)
    elif info.audio:
        assert audio_packets(output) == audio_packets(source)  # copied packet for packet
        assert result.audio[0]["action"] == "copied"


@pytest.mark.parametrize("codec", ["hevc", "auto"])
def test_hevc_is_main_10_tagged_hvc1_and_keeps_hdr10_metadata(
    codec: str, format_clips: dict[str, Path], tmp_path: Path
) -> None:
    source = format_clips["hdr10_hevc"]
    output, _result, delivery, info = deliver(source, codec, tmp_path)
    assert info.hdr10 is not None and delivery.profile.codec == "hevc"
    with av.open(str(output)) as container:
        video = container.streams.video[0]
        assert video.codec_context.codec_tag == "hvc1"  # Apple players open hvc1, not hev1
        assert video.codec_context.profile == "Main 10"
    out = probe(output)
    assert out.pix_fmt == "yuv420p10le" and out.bit_depth == 10
    assert (out.color_primaries, out.color_trc, out.colorspace) == (9, 16, 9)  # BT.2020 PQ tags kept
    assert Hdr10.from_dict(out.hdr10) == Hdr10.from_dict(info.hdr10)  # mastering display and light level
    assert audio_packets(output) == audio_packets(source)
    assert frame_times(output) == frame_times(source)


def test_av1_keeps_hdr10_metadata(format_clips: dict[str, Path], tmp_path: Path) -> None:
    output, _, delivery, info = deliver(format_clips["hdr10_hevc"], "av1", tmp_path)
    out = probe(output)
    assert delivery.profile.bit_depth == 10 and out.pix_fmt == "yuv420p10le"
    with av.open(str(output)) as container:
        assert container.streams.video[0].codec_context.codec_tag == "av01"
    assert Hdr10.from_dict(out.hdr10) is not None
    kept, source = Hdr10.from_dict(out.hdr10), Hdr10.from_dict(info.hdr10)
    assert kept is not None and source is not None
    assert (kept.max_cll, kept.max_fall) == (source.max_cll, source.max_fall)
    assert kept.max_luminance == source.max_luminance
    assert kept.primaries is not None and source.primaries is not None
    for (x, y), (sx, sy) in zip(kept.primaries, source.primaries, strict=True):  # AV1 codes them in 1/65536
        assert abs(x - sx) < Fraction(1, 10000) and abs(y - sy) < Fraction(1, 10000)


def test_prores_in_mov_gets_24_bit_pcm_the_timecode_and_the_sar(format_clips: dict[str, Path], tmp_path: Path) -> None:
    source = format_clips["mov_timecode_pcm24"]
    output, result, _, info = deliver(source, "prores", tmp_path)
    with av.open(str(output)) as container:
        video = container.streams.video[0]
        assert (video.codec_context.name, video.codec_context.codec_tag) == ("prores", "apch")  # 422 HQ
        assert video.codec_context.pix_fmt == "yuv422p10le"
        assert video.metadata.get("timecode") == "01:00:00:00"  # a tmcd track, as the source had
        assert [(a.codec_context.name, a.codec_context.format.name) for a in container.streams.audio] == [
            ("pcm_s24le", "s32")
        ]
    assert probe(output).sample_aspect_ratio == info.sample_aspect_ratio == Fraction(4, 3)
    assert result.dropped == ()
    assert len(decoded(output)) == info.frame_count


def test_mp4_keeps_the_timecode_and_encodes_pcm_to_aac(format_clips: dict[str, Path], tmp_path: Path) -> None:
    output, result, _, _info = deliver(format_clips["mov_timecode_pcm24"], "hevc", tmp_path)
    with av.open(str(output)) as container:  # MP4 carries a tmcd track too (issue 20)
        assert container.streams.video[0].metadata.get("timecode") == "01:00:00:00"
        assert [s.metadata.get("timecode") for s in container.streams.data] == ["01:00:00:00"]  # the tmcd track
    assert not any("timecode" in item for item in result.dropped)
    assert result.audio[0]["action"] == "encoded to aac"  # MP4 does not carry PCM
    assert probe(output).sample_aspect_ratio == Fraction(4, 3)
    assert frame_times(output) == frame_times(format_clips["mov_timecode_pcm24"])


@pytest.mark.parametrize(("name", "expected"), [("vfr_mp4", ("h264", 8)), ("10bit_mp4", ("hevc", 10))])
def test_auto_by_source_depth(
    name: str, expected: tuple[str, int], media_clips: dict[str, Path], tmp_path: Path
) -> None:
    output, _result, delivery, info = deliver(media_clips[name], "auto", tmp_path)
    assert (delivery.profile.codec, delivery.profile.bit_depth) == expected
    assert probe(output).bit_depth == expected[1]
    assert len(decoded(output)) == info.frame_count


@pytest.mark.parametrize(
    ("codec", "pix_fmt", "profile"),
    [
        ("h264", "yuv444p", "High 4:4:4 Predictive"),
        ("hevc", "yuv444p10le", "Rext"),
        ("prores", "yuv444p12le", "4444"),
    ],  # the ProRes decoder gives 4444 as 12-bit,
)
def test_odd_output_sizes_stay_exact_in_4_4_4(
    codec: str, pix_fmt: str, profile: str, media_clips: dict[str, Path], tmp_path: Path
) -> None:
    output, _, _, info = deliver(media_clips["odd_mkv"], codec, tmp_path, scale=3)  # 161x97 -> 483x291
    with av.open(str(output)) as container:
        video = container.streams.video[0].codec_context
        assert (video.width, video.height, video.pix_fmt, video.profile) == (483, 291, pix_fmt, profile)
    assert len(decoded(output)) == info.frame_count
