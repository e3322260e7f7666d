"""Open untrusted uploads with PyAV safely and turn FFmpeg failures into user-facing `vsr.errors`.

FFmpeg's playlist and indirection demuxers (hls, dash, concat, image2, ...) follow references inside a
crafted upload to other local files or URLs. Uploads are therefore opened with `format_whitelist` set to the
allow-listed container formats from settings.json (FFmpeg refuses any other probed format before its
`read_header` runs) and `protocol_whitelist` so an allowed demuxer cannot open anything but the input itself.

`source` is a path or a seekable binary file object (the worker's ranged S3 reader); every opener seeks a
file object back to 0 first, so one object can serve probe and decode in turn.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import av
import av.container

from vsr.errors import (
    CorruptInputError,
    EmptyInputError,
    InputError,
    NotAVideoError,
    NoVideoStreamError,
    UnsafeInputError,
    UnsupportedCodecError,
)
from vsr.logs import get_logger

Source = str | os.PathLike[str] | BinaryIO

log = get_logger(__name__)

# A protocol name that matches no protocol: with custom I/O (a Python file object) FFmpeg never opens the
# input through a protocol, so this forbids every nested open.
_NO_PROTOCOL = "vsr-none"

# Harmless, self-contained demuxers that are not accepted as uploads; opened only to tell the user what the
# file is. None of them opens other resources (and the protocol whitelist would refuse it anyway).
_AUDIO_FORMATS = "wav,mp3,flac,aac,ac3,eac3,aiff,amr,caf,w64,au,dts,truehd,tta,wv,ape"
_IMAGE_FORMATS = "png_pipe,jpeg_pipe,webp_pipe,gif_pipe,bmp_pipe,tiff_pipe,jpegxl_pipe,svg_pipe,qoi_pipe"
_RAW_VIDEO_FORMATS = "h264,hevc,vvc,m4v,mjpeg,ivf,yuv4mpegpipe,obu,dirac,cavsvideo,vc1"

# Signatures of text formats that FFmpeg treats as playlists or lists of other inputs.
_INDIRECTION_SIGNATURES = (b"#EXTM3U", b"ffconcat", b"<MPD", b"CompositionPlaylist", b"<smil", b"[playlist]")
# Magic bytes of the allow-listed containers: such a file that FFmpeg cannot open is damaged, not foreign.
_CONTAINER_SIGNATURES: tuple[tuple[int, bytes], ...] = (
    (4, b"ftyp"),
    (4, b"moov"),
    (4, b"mdat"),
    (4, b"free"),
    (4, b"wide"),
    (4, b"skip"),
    (0, b"\x1a\x45\xdf\xa3"),  # EBML (matroska, webm)
    (8, b"AVI "),
    (0, b"FLV"),
    (0, b"\x00\x00\x01\xba"),  # MPEG program stream
    (0, b"OggS"),
    (0, b"\x30\x26\xb2\x75\x8e\x66\xcf\x11"),  # ASF header GUID
    (0, b"\x06\x0e\x2b\x34\x02\x05\x01\x01\x0d\x01\x02"),  # MXF partition pack key (SMPTE UL)
    (0, b"\x1f\x07\x00"),  # DV DIF header block
    (0, b"GIF8"),  # GIF87a / GIF89a
)
_HEAD_BYTES = 4096

# Errors PyAV raises on hostile or broken input besides av.error.FFmpegError (field notes: fuzzed metadata).
MEDIA_ERRORS: tuple[type[BaseException], ...] = (
    av.error.FFmpegError,
    UnicodeDecodeError,
    IndexError,
    KeyError,
    ValueError,
    OverflowError,
    EOFError,
)


# The demuxers an upload may use (FFmpeg names). Owned here, beside the signatures above that they must agree
# with: a security allow-list, not a tunable (no playlist or concat demuxer can read other files or URLs).
ALLOWED_FORMATS: tuple[str, ...] = (
    "mov,mp4,m4a,3gp,3g2,mj2",
    "matroska,webm",
    "avi",
    "mpegts",
    "flv",
    "mpeg",
    "ogg",
    "asf",
    "dv",  # raw DV as captured from tape (DIF blocks; no references to other files)
    "mxf",  # broadcast masters (XDCAM, D-10, OP1a); FFmpeg's MXF demuxer reads only essence inside the file
    "gif",  # animated GIF: its frame delays are the timestamps; a one-frame GIF is refused by the probe
)

# Formats that are also still images: one frame of them is a picture, not a video (vsr.media.probe).
STILL_IF_ONE_FRAME = frozenset({"gif"})

# What the refusals tell a user to upload instead (the allow list above in words).
ACCEPTED_IN_WORDS = "an MP4, MOV, MKV, WebM, AVI, MPEG-TS, FLV, MPEG, Ogg, MXF or DV file, or an animated GIF"


def allowed_formats() -> list[str]:
    return list(ALLOWED_FORMATS)


def input_size(source: Source) -> int:
    """Size in bytes of a path or a seekable file object (left positioned at 0)."""
    if isinstance(source, str | os.PathLike):
        return Path(source).stat().st_size
    source.seek(0, os.SEEK_END)
    size = source.tell()
    source.seek(0)
    return size


def _read_head(source: Source) -> bytes:
    if isinstance(source, str | os.PathLike):
        with open(source, "rb") as handle:
            return handle.read(_HEAD_BYTES)
    source.seek(0)
    head = source.read(_HEAD_BYTES)
    source.seek(0)
    return bytes(head)


def _looks_like_allowed_container(head: bytes) -> bool:
    if any(head[offset : offset + len(magic)] == magic for offset, magic in _CONTAINER_SIGNATURES):
        return True
    # MPEG-TS: a 0x47 sync byte every 188 bytes.
    return len(head) >= 188 * 3 and all(head[i * 188] == 0x47 for i in range(3))


def _av_open(source: Source, format_whitelist: str) -> av.container.InputContainer:
    is_path = isinstance(source, str | os.PathLike)
    if not is_path:
        source.seek(0)
    options = {
        "format_whitelist": format_whitelist,
        # A path is opened through FFmpeg's file protocol; a file object needs no protocol at all.
        "protocol_whitelist": "file" if is_path else _NO_PROTOCOL,
        "safe": "1",  # concat demuxer: refuse unsafe paths (defence in depth; concat is not allowed anyway)
    }
    name = os.fspath(source) if is_path else source
    return av.open(name, mode="r", container_options=options, metadata_errors="replace")


def _classify_open_failure(source: Source, error: BaseException) -> InputError:
    """Explain why FFmpeg could not open an allow-listed format."""
    head = _read_head(source)
    if any(signature in head for signature in _INDIRECTION_SIGNATURES):
        return UnsafeInputError(
            "the upload is a playlist or list of other files (such as HLS or an FFmpeg concat script); "
            "only self-contained video files are accepted"
        )
    if not isinstance(error, av.error.ArgumentError) and _looks_like_allowed_container(head):
        return CorruptInputError(
            "the video file is damaged or incomplete (its container could not be read; was the upload truncated?)"
        )
    for formats, make in (
        (_AUDIO_FORMATS, lambda name: NoVideoStreamError(f"the upload is an audio file ({name}) with no video")),
        (_IMAGE_FORMATS, lambda name: NotAVideoError(f"the upload is a still image ({name}), not a video")),
        (
            _RAW_VIDEO_FORMATS,
            lambda name: UnsupportedCodecError(
                f"raw '{name}' video streams without a container are not supported; upload {ACCEPTED_IN_WORDS}"
            ),
        ),
    ):
        try:
            with _av_open(source, formats) as container:
                return make(container.format.name)
        except MEDIA_ERRORS:
            continue
    if isinstance(error, av.error.ArgumentError):
        return UnsafeInputError(
            "the upload's format is not accepted (FFmpeg recognised it as a format that is not on the allow list); "
            f"upload {ACCEPTED_IN_WORDS}"
        )
    return NotAVideoError("the upload is not a video file (FFmpeg could not recognise its format)")


def video_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream:
    """The video stream to upscale: the first one that is not cover art / a still image."""
    if not container.streams.video:
        kinds = sorted({stream.type for stream in container.streams})
        found = f" (it contains only {', '.join(kinds)} streams)" if kinds else ""
        raise NoVideoStreamError(f"the file has no video stream{found}")
    still = av.stream.Disposition.attached_pic | av.stream.Disposition.still_image
    for stream in container.streams.video:
        if not stream.disposition & still:
            return stream
    raise NoVideoStreamError("the file has no video stream, only a cover image")


def _check_video_stream(container: av.container.InputContainer) -> None:
    stream = video_stream(container)
    codec = stream.codec_context.codec if stream.codec_context is not None else None
    if codec is None or codec.name in ("", "none"):
        raise UnsupportedCodecError("the video codec of this file is unknown to FFmpeg and cannot be decoded")
    try:
        av.codec.Codec(codec.name, "r")
    except av.error.FFmpegError as exc:
        raise UnsupportedCodecError(f"the video codec '{codec.name}' is not supported") from exc
    if stream.codec_context.width <= 0 or stream.codec_context.height <= 0:
        raise CorruptInputError("the video stream has no frame size (the file is damaged or incomplete)")


def open_input(source: Source) -> av.container.InputContainer:
    """Open an upload for reading with allow-listed demuxers only; raise an `InputError` if it is unusable.

    The caller closes the returned container (a context manager). Its `video_stream()` is decodable.
    """
    try:
        size = input_size(source)
    except FileNotFoundError as exc:
        raise NotAVideoError(f"the input file does not exist: {os.fspath(source)}") from exc  # type: ignore[arg-type]
    if size == 0:
        raise EmptyInputError("the upload is empty (0 bytes)")
    try:
        container = _av_open(source, ",".join(allowed_formats()))
    except MEDIA_ERRORS as exc:
        error = _classify_open_failure(source, exc)
        log.info("media.open_refused", code=error.code, reason=error.reason, ffmpeg=str(exc)[:200])
        raise error from exc
    try:
        _check_video_stream(container)
    except InputError:
        container.close()
        raise
    except MEDIA_ERRORS as exc:
        container.close()
        raise CorruptInputError("the video file is damaged (its video stream could not be read)") from exc
    return container


@contextlib.contextmanager
def corrupt_on_media_error(what: str) -> Iterator[None]:
    """Map FFmpeg failures while demuxing/decoding an opened input to `CorruptInputError`."""
    try:
        yield
    except InputError:
        raise
    except MEDIA_ERRORS as exc:
        raise CorruptInputError(f"the video file is damaged or incomplete ({what} failed)") from exc
