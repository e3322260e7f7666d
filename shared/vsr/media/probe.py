"""Describe an upload: one demux-only pass for the exact pts table, one decoded frame for size and rotation.

`stream.frames` is 0 for webm/mkv and duration x rate is off by one on some files, so the frame count and
the timestamps always come from counting the video packets. Variable-frame-rate files keep their real
timestamps: the planner splits at pts values from `VideoInfo.pts`, never at `index / rate`.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from dataclasses import asdict, dataclass, field, fields
from fractions import Fraction
from typing import Any

import av
import av.container
import numpy as np

from vsr.errors import CorruptInputError, NotAVideoError
from vsr.logs import get_logger
from vsr.media import fieldrate, interlace
from vsr.media.geometry import Geometry, GeometryChange, frame_geometry
from vsr.media.profiles import hdr10_from_frame
from vsr.media.safety import (
    MEDIA_ERRORS,
    STILL_IF_ONE_FRAME,
    Source,
    corrupt_on_media_error,
    input_size,
    open_input,
    video_stream,
)

log = get_logger(__name__)

_DISPLAYMATRIX_BYTES = 36  # 3x3 int32 (FFmpeg AV_FRAME_DATA_DISPLAYMATRIX)


def fraction_to_str(value: Fraction | None) -> str | None:
    return None if value is None else f"{value.numerator}/{value.denominator}"


def fraction_from_str(value: str | None) -> Fraction | None:
    return None if value is None else Fraction(value)


def _fraction(value: Any) -> Fraction | None:
    """PyAV returns Fraction (av < 19) or AVRational (av >= 19); 0/x means unknown."""
    if value is None:
        return None
    result = Fraction(int(value.numerator), int(value.denominator)) if value.denominator else None
    return result if result else None


@dataclass(frozen=True)
class AudioStreamInfo:
    index: int
    codec: str
    sample_rate: int
    channels: int
    layout: str
    language: str | None
    bit_rate: int | None
    time_base: Fraction
    start_pts: int | None
    title: str | None = None


@dataclass(frozen=True)
class SubtitleStreamInfo:
    index: int
    codec: str
    language: str | None
    title: str | None
    time_base: Fraction


@dataclass(frozen=True)
class VideoInfo:
    format_name: str
    size_bytes: int
    duration_s: float | None
    start_time_s: float | None  # container start (earliest stream)
    video_index: int
    width: int  # decoded (coded, unrotated) frame size
    height: int
    rotation: int  # degrees counter-clockwise a player applies (frame.rotation)
    display_matrix: list[int] | None  # the 9 int32 values, flips included; None when absent
    codec: str
    profile: str | None
    pix_fmt: str
    bit_depth: int
    time_base: Fraction
    average_rate: Fraction | None
    base_rate: Fraction | None
    sample_aspect_ratio: Fraction | None
    frame_count: int
    pts: list[int]  # sorted presentation timestamps of every frame, in time_base
    is_vfr: bool
    color_range: int  # FFmpeg enum values (AVColorRange, AVColorPrimaries, ...); 0/2 = unspecified
    color_primaries: int
    color_trc: int
    colorspace: int
    audio: list[AudioStreamInfo] = field(default_factory=list)
    subtitles: list[SubtitleStreamInfo] = field(default_factory=list)
    # how long the last frame is shown (its packet duration, time_base); other frames last until the next pts
    last_frame_duration: int | None = None
    # the first frame's sample aspect ratio as the decoder reports it ("n/d"; None: square or unknown), the
    # reference every later frame's is compared with (vsr.media.geometry)
    frame_sar: str | None = None
    # mid-stream changes of size, pixel format or SAR found at keyframes (GeometryChange.to_dict), in pts order
    geometry_changes: list[dict[str, Any]] = field(default_factory=list)

    def first_geometry(self) -> Geometry:
        """The job's geometry: every frame is converted to it before the model (vsr.media.geometry)."""
        return Geometry(self.width, self.height, self.pix_fmt, fraction_from_str(self.frame_sar))

    def changes(self) -> list[GeometryChange]:
        return [GeometryChange.from_dict(item) for item in self.geometry_changes]

    # HDR10 static metadata of the first frame (vsr.media.profiles.Hdr10.to_dict()), None when absent
    hdr10: dict[str, Any] | None = None
    # what was detected about interlacing and what is done (vsr.media.interlace.decision); None: not judged
    interlace: dict[str, Any] | None = None

    @property
    def deinterlace_parity(self) -> str | None:
        """The field order bwdif deinterlaces with ("tff"/"bff"), None when frames are used as they are."""
        return self.interlace.get("parity") if self.interlace and self.interlace.get("deinterlace") else None

    @property
    def deinterlace_rate(self) -> str | None:
        """ "frame" (one output frame per source frame) or "field" (two: this VideoInfo is then the output's
        timeline, vsr.media.fieldrate); None when frames are used as they are."""
        if not self.deinterlace_parity:
            return None
        return str((self.interlace or {}).get("rate") or interlace.FRAME)

    @property
    def field_rate(self) -> bool:
        return self.deinterlace_rate == interlace.FIELD

    @property
    def start_pts(self) -> int:
        return self.pts[0]

    def pts_seconds(self, index: int) -> Fraction:
        return self.pts[index] * self.time_base

    @property
    def high_bit_depth(self) -> bool:
        return self.bit_depth > 8

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("time_base", "average_rate", "base_rate", "sample_aspect_ratio"):
            data[key] = fraction_to_str(data[key])
        for group in ("audio", "subtitles"):
            for item in data[group]:
                item["time_base"] = fraction_to_str(item["time_base"])
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VideoInfo:
        values = dict(data)
        for key in ("time_base", "average_rate", "base_rate", "sample_aspect_ratio"):
            values[key] = fraction_from_str(values.get(key))
        values["audio"] = [
            AudioStreamInfo(**{**item, "time_base": fraction_from_str(item["time_base"])})
            for item in values.get("audio", [])
        ]
        values["subtitles"] = [
            SubtitleStreamInfo(**{**item, "time_base": fraction_from_str(item["time_base"])})
            for item in values.get("subtitles", [])
        ]
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


def bit_depth_of(pix_fmt: str) -> int:
    try:
        return max(component.bits for component in av.VideoFormat(pix_fmt).components)
    except (ValueError, av.error.FFmpegError):
        return 8


def _display_matrix(frame: av.VideoFrame) -> list[int] | None:
    for side_data in frame.side_data:
        if "DISPLAYMATRIX" in str(side_data.type):
            raw = bytes(side_data)
            if len(raw) == _DISPLAYMATRIX_BYTES:
                return [int(v) for v in np.frombuffer(raw, dtype="<i4")]
    return None


def _hdr10(frame: av.VideoFrame) -> dict[str, Any] | None:
    found = hdr10_from_frame(frame)
    return found.to_dict() if found is not None else None


def _is_vfr(pts: list[int], time_base: Fraction) -> bool:
    """Irregular frame durations beyond timestamp rounding (1 tick, or 1 ms in a millisecond time base)."""
    if len(pts) < 3:
        return False
    durations = [b - a for a, b in itertools.pairwise(pts)]
    tolerance = max(1, math.ceil(Fraction(1, 1000) / time_base))
    return max(durations) - min(durations) > tolerance


def _plausible_rate(
    average: Fraction | None, base: Fraction | None, pts: list[int], time_base: Fraction
) -> Fraction | None:
    """The stream's average frame rate, checked against its timestamps. Some demuxers report the time base
    as the rate (raw DV: 60000 fps for 25 fps tape), which encoders and the MP4 timecode track then refuse;
    then the base rate is used when the timestamps agree with it, else the rate the timestamps give."""
    if len(pts) < 2 or pts[-1] == pts[0]:
        return average or base
    measured = Fraction(len(pts) - 1) / ((pts[-1] - pts[0]) * time_base)
    for rate in (average, base):
        if rate and abs(rate - measured) <= measured / 10:
            return rate
    return measured.limit_denominator(1001)


def _audio_info(container: av.container.InputContainer) -> list[AudioStreamInfo]:
    out = []
    for stream in container.streams.audio:
        ctx = stream.codec_context
        out.append(
            AudioStreamInfo(
                index=stream.index,
                codec=ctx.name if ctx is not None else "unknown",
                sample_rate=int(ctx.sample_rate or 0) if ctx is not None else 0,
                channels=int(ctx.channels or 0) if ctx is not None else 0,
                layout=str(ctx.layout.name) if ctx is not None and ctx.layout is not None else "",
                language=stream.metadata.get("language"),
                bit_rate=int(ctx.bit_rate) if ctx is not None and ctx.bit_rate else None,
                time_base=_fraction(stream.time_base) or Fraction(1, 1),
                start_pts=stream.start_time,
                title=stream.metadata.get("title"),
            )
        )
    return out


def _subtitle_info(container: av.container.InputContainer) -> list[SubtitleStreamInfo]:
    return [
        SubtitleStreamInfo(
            index=stream.index,
            codec=stream.codec_context.name if stream.codec_context is not None else "unknown",
            language=stream.metadata.get("language"),
            title=stream.metadata.get("title"),
            time_base=_fraction(stream.time_base) or Fraction(1, 1),
        )
        for stream in container.streams.subtitles
    ]


@dataclass
class _Demuxed:
    pts: list[int]
    first: av.VideoFrame | None
    first_sar: Fraction | None
    missing_pts: bool
    packets: int
    last_duration: int | None
    changes: list[GeometryChange]


def _demux_pass(container: av.container.InputContainer) -> _Demuxed:
    """Presentation timestamps of every video packet, the first decoded frame (for size and rotation) and its
    SAR, whether some packet had no pts, how many packets were read (discarded ones included), the duration
    of the last frame shown, and the geometry changes: only keyframes are decoded (skip_frame NONKEY), which
    is where a new size or format starts, so the pass stays cheap (about one frame in a GOP)."""
    video = video_stream(container)
    video.thread_type = "AUTO"
    ctx = video.codec_context
    # every frame until the first one shown: an edit list can hide the keyframe that it is predicted from
    # (a stream-copy trim inside a GOP), and the decoder drops hidden frames itself; keyframes only after
    ctx.skip_frame = "DEFAULT"
    for stream in container.streams:
        if stream.index != video.index:
            stream.discard = av.stream.Discard.all  # mov skips their bytes: less to read through a ranged S3 reader
    result = _Demuxed([], None, None, False, 0, None, [])
    time_base = _fraction(video.time_base) or Fraction(1)
    current: Geometry | None = None
    last_pts = None
    sampling = True

    def seen(frames: list[av.VideoFrame]) -> None:
        nonlocal current
        for frame in frames:
            geometry = frame_geometry(frame, ctx.sample_aspect_ratio)
            if result.first is None:
                result.first, result.first_sar, current = frame, geometry.sample_aspect_ratio, geometry
                ctx.skip_frame = "NONKEY"
            elif geometry != current and frame.pts is not None:
                since_start = (frame.pts - (result.first.pts or 0)) * time_base
                result.changes.append(GeometryChange(int(frame.pts), float(since_start), geometry))
                current = geometry

    for packet in container.demux(video):
        if packet.size == 0:
            continue  # PyAV's end-of-stream flush packet
        result.packets += 1
        # an edit list hides a discarded packet's frame, but the decoder still needs the packet (it can be
        # the keyframe of the frames shown): decoded below, never counted as a frame
        if packet.is_discard:
            pass
        elif packet.pts is None:
            result.missing_pts = True
        else:
            result.pts.append(int(packet.pts))
            if last_pts is None or packet.pts > last_pts:
                last_pts, result.last_duration = int(packet.pts), int(packet.duration or 0) or None
        if sampling:
            try:
                seen(packet.decode())
            except MEDIA_ERRORS:
                if result.first is None:
                    raise
                # a damaged later keyframe: stop looking for changes; counting packets finds truncation
                sampling = False
    if sampling:
        with contextlib.suppress(*MEDIA_ERRORS):
            seen(list(ctx.decode(None)))
    return result


def _reaches_end(video: Any, demuxed: _Demuxed) -> bool:
    """Whether the packets read run to the end of the stream's duration. An MP4 whose edit list starts at a
    later keyframe lists every sample in its index, but the demuxer drops those before that keyframe: fewer
    packets than the index says, yet nothing is missing at the end (a truncated upload ends early)."""
    if not video.duration or not demuxed.pts or demuxed.last_duration is None:
        return False
    return max(demuxed.pts) + demuxed.last_duration >= (video.start_time or 0) + video.duration


def _decoded_pts(source: Source) -> list[int]:
    """Fallback when packets carry no pts (raw-ish streams in AVI/MPEG): decode and use frame timestamps."""
    with open_input(source) as container, corrupt_on_media_error("decoding the video"):
        video = video_stream(container)
        video.thread_type = "AUTO"
        pts = [frame.pts for frame in container.decode(video)]
    if any(p is None for p in pts):
        raise CorruptInputError("the video has frames without timestamps, so their timing is unknown")
    return [int(p) for p in pts]


def _interlace(source: Source, mode: str, frames: int, rate: str = interlace.FRAME) -> dict[str, Any]:
    """Judge the first `frames` frames with idet (none when `mode` is off) and decide (vsr.media.interlace)."""
    if mode == "off":
        return interlace.decision(None, mode, rate)
    try:
        with open_input(source) as container:
            video = video_stream(container)
            video.thread_type = "AUTO"
            found = interlace.detect(video, itertools.islice(container.decode(video), frames))
    except MEDIA_ERRORS as exc:
        # the stream decoded in the main pass; a filter that cannot judge it must not fail the job
        log.warning("probe.idet_failed", error=f"{type(exc).__name__}: {exc}"[:200])
        return {**interlace.decision(None, mode, rate), "error": "interlace detection failed"}
    return interlace.decision(found, mode, rate)


def probe(source: Source, deinterlace: str = "off", idet_frames: int = 0, rate: str = interlace.FRAME) -> VideoInfo:
    """Everything the planner, the workers and the assembler need to know about an upload.

    `deinterlace` (auto | on | off), `idet_frames` and `rate` (frame | field) are settings
    `input.deinterlace`, `input.idet_frames` and `input.deinterlace_rate` (or the job's `vsr-deinterlace`),
    passed by the stages that admit a job (ingest, `vsr upscale`, `vsr plan`); "off" (re-probing an output,
    evaluation) skips the interlace detection. A source deinterlaced at field rate is described by its
    output's timeline: twice the frames at half the spacing (vsr.media.fieldrate)."""
    size = input_size(source)
    with open_input(source) as container:
        video = video_stream(container)
        expected_frames = int(video.frames or 0)
        with corrupt_on_media_error("reading the video stream"):
            demuxed = _demux_pass(container)
        pts, first, missing_pts, packets = demuxed.pts, demuxed.first, demuxed.missing_pts, demuxed.packets
        if first is None and packets == 0:
            raise CorruptInputError(
                "the video stream has no frames in this file (its pictures may be stored in other files, as in "
                "OP-Atom or external-essence MXF); upload a self-contained file"
            )
        if first is None:
            raise CorruptInputError("the video stream contains no decodable frame")
        if expected_frames and packets < expected_frames and not _reaches_end(video, demuxed):
            raise CorruptInputError(
                f"the video file is incomplete: its index lists {expected_frames} frames but only {packets} "
                "are present (was the upload truncated?)"
            )
        ctx = video.codec_context
        time_base = _fraction(video.time_base)
        if time_base is None:
            raise CorruptInputError("the video stream has no time base")
        try:
            info_fields: dict[str, Any] = {
                "format_name": container.format.name,
                "size_bytes": size,
                "duration_s": container.duration / av.time_base if container.duration else None,
                "start_time_s": container.start_time / av.time_base if container.start_time is not None else None,
                "video_index": video.index,
                "width": int(first.width),
                "height": int(first.height),
                "rotation": int(first.rotation or 0),
                "display_matrix": _display_matrix(first),
                "codec": ctx.name,
                "profile": ctx.profile,
                "pix_fmt": first.format.name,
                "bit_depth": bit_depth_of(first.format.name),
                "time_base": time_base,
                "average_rate": _fraction(video.average_rate),
                "base_rate": _fraction(video.base_rate),
                "sample_aspect_ratio": _fraction(video.sample_aspect_ratio),
                "color_range": int(first.color_range),
                "color_primaries": int(first.color_primaries),
                "color_trc": int(first.color_trc),
                "colorspace": int(first.colorspace),
                "hdr10": _hdr10(first),
                "audio": _audio_info(container),
                "subtitles": _subtitle_info(container),
            }
        except MEDIA_ERRORS as exc:
            raise CorruptInputError("the video file's stream parameters could not be read") from exc
    if missing_pts:
        log.info("probe.decoding_for_pts", reason="packets without pts")
        pts = _decoded_pts(source)
    pts.sort()
    if len(pts) == 1 and info_fields["format_name"] in STILL_IF_ONE_FRAME:
        raise NotAVideoError(f"the upload is a still image ({info_fields['format_name']}), not a video")
    if len(pts) != len(set(pts)):
        raise CorruptInputError("the video has several frames with the same timestamp, so their order is ambiguous")
    info_fields["average_rate"] = _plausible_rate(
        info_fields["average_rate"], info_fields["base_rate"], pts, info_fields["time_base"]
    )
    info = VideoInfo(
        **info_fields,
        frame_count=len(pts),
        pts=pts,
        is_vfr=_is_vfr(pts, time_base),
        last_frame_duration=None if missing_pts else demuxed.last_duration,
        frame_sar=fraction_to_str(demuxed.first_sar),
        geometry_changes=[change.to_dict() for change in demuxed.changes],
        interlace=_interlace(source, deinterlace, idet_frames, rate),
    )
    if info.field_rate:
        info = fieldrate.field_view(info)
    log.info(
        "probe.done",
        format=info.format_name,
        codec=info.codec,
        size=f"{info.width}x{info.height}",
        frames=info.frame_count,
        vfr=info.is_vfr,
        rotation=info.rotation,
        audio=len(info.audio),
        geometry_changes=len(info.geometry_changes),
        interlace=info.interlace.get("detected") if info.interlace else None,
        deinterlace=info.deinterlace_parity,
        deinterlace_rate=info.deinterlace_rate,
    )
    return info
