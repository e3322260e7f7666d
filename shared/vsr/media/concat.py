"""Join encoded segments into the final output (MP4, or MOV for ProRes), with the source's audio.

- Video: packets of every segment in order, pts converted exactly into the source time base (so every
  output frame has its source frame's timestamp), dts rebuilt for the whole stream: dts[i] = (i-th
  smallest pts) - (largest reorder lead). That is strictly increasing and never after the pts, however the
  segments' B-frame delays differ (a 1-frame segment has none; VFR changes x264's delay in time).
- Audio: each source audio stream is copied packet for packet when MP4 can carry its codec; otherwise it
  is re-encoded to AAC (logged) rather than dropped; a MOV (ProRes) output gets PCM
  (vsr.media.profiles.audio_choice). Timestamps are kept, so the audio/video start offset (mkv/webm video
  often starts a few ms after the audio) survives.
- Subtitles: mov_text is copied; SubRip/WebVTT cues become mov_text (the text is kept, styling is not);
  others (ASS, bitmap subtitles) are dropped with a warning. Chapters and container metadata are kept.
- Rotation/flips: the source display matrix is set on the output stream (templates drop it).
- `movflags=+faststart`: the index is at the front, so players start before the download ends.
- Seamless joins: when `join_mode` says REENCODE (vsr.media.encode), the segments are lossless and are
  decoded in order and encoded once, by the job's delivery encoder (`Delivery`: codec, container, settings,
  NVENC or software), straight into the output beside the audio: the output has no segment joins, so no
  pulse at them (measured in tests/media/test_seams.py), and /tmp holds no second copy of the video.
- What the output could not carry (subtitle kinds, a timecode in MP4, data streams) is listed in
  `JoinResult.dropped`, which the report shows.
"""

from __future__ import annotations

import heapq
import itertools
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, BinaryIO

import av
import av.container

from vsr.errors import PermanentError
from vsr.logs import get_logger
from vsr.media.encode import FIRST_PTS_KEY, REENCODE, SEGMENT_FORMAT, SegmentEncoder, join_mode, source_colour
from vsr.media.probe import VideoInfo
from vsr.media.profiles import (
    MP4_AUDIO,
    Delivery,
    DeliveryProfile,
    EncoderSpec,
    add_video_stream,
    audio_choice,
    encoder_layout,
    encoder_spec,
)
from vsr.media.safety import Source, corrupt_on_media_error, open_input
from vsr.settings import CodecSettings, EncodeSettings

log = get_logger(__name__)

OUTPUT_FORMAT = "mp4"
_TEXT_SUBTITLES = {"subrip", "srt", "webvtt", "text"}
# Audio codecs the MP4 muxer writes without `-strict experimental` and common players decode. Everything
# else (MP2, Vorbis, PCM, ...) is re-encoded to AAC rather than dropped (MOV: PCM, vsr.media.profiles).
_MP4_AUDIO = MP4_AUDIO
_LOSSY_AUDIO = {"aac", "mp3", "mp2", "ac3", "eac3", "opus", "vorbis", "dts", "wmav2"}
_METADATA_DROP = {"encoder", "major_brand", "minor_version", "compatible_brands"}


class SegmentMismatchError(PermanentError):
    code = "segment_mismatch"


def default_delivery(info: VideoInfo, scale: int, encode: EncodeSettings) -> Delivery:
    """Today's delivery for callers that do not choose one: H.264 in MP4 at `encode`'s CRF and preset."""
    depth = 10 if info.bit_depth > 8 else 8
    profile = DeliveryProfile("h264", "mp4", depth, encode.crf, encode.preset, "h264", "default")
    h264 = CodecSettings(
        codec="h264",
        encoder="libx264",
        nvenc=None,
        container="mp4",
        crf=encode.crf,
        preset=encode.preset,
        profile=None,
        bit_depth=None,
        nvenc_cq=None,
        nvenc_preset="p5",
        encode_mpix_per_vcpu_s=0.0,  # not used to encode
        bytes_per_output_mpix=0.0,
    )
    return Delivery(profile, encoder_spec(profile, h264, info.width * scale, info.height * scale))


@dataclass(frozen=True)
class JoinResult:
    frames: int
    audio_streams_copied: int
    audio_streams_transcoded: int
    subtitle_streams: int
    subtitles_dropped: int
    bytes: int | None
    container: str = "mp4"
    encoder: str | None = None  # the delivery encoder (None: segments remuxed as encoded by the workers)
    audio: tuple[dict[str, Any], ...] = ()  # per source audio stream: what was done with it
    dropped: tuple[str, ...] = ()  # what the source had that the output does not carry, in words
    nvenc_fallback: str | None = None

    def report(self) -> dict[str, Any]:
        return {
            "container": self.container,
            "encoder": self.encoder,
            "audio": list(self.audio),
            "dropped": list(self.dropped),
            "subtitle_streams": self.subtitle_streams,
            **({"nvenc_fallback": self.nvenc_fallback} if self.nvenc_fallback else {}),
        }


def _open_segment(segment: str | os.PathLike[str] | BinaryIO) -> av.container.InputContainer:
    if isinstance(segment, str | os.PathLike):
        return av.open(os.fspath(segment), format=SEGMENT_FORMAT)
    segment.seek(0)
    return av.open(segment, format=SEGMENT_FORMAT)


def _exact_pts(pts: int, from_tb: Fraction, to_tb: Fraction) -> int:
    value = pts * from_tb / to_tb
    if value.denominator != 1:
        raise SegmentMismatchError(f"segment timestamp {pts}*{from_tb} is not representable in {to_tb}")
    return int(value)


@dataclass(frozen=True)
class _SegmentClock:
    """How one segment's packet timestamps map back to source pts.

    NUT cannot store a negative dts, so the muxer shifts a segment that starts with B-frame delay by a
    constant. The encoder records the first frame's source pts in the segment's metadata; the shift is
    the difference, and every mapped pts must then be the source's pts of the frames at this position
    (so a missing, duplicated or reordered segment is refused, never joined with wrong timing).
    """

    time_base: Fraction
    shift: int  # in the segment's time base

    def source_pts(self, pts: int, info: VideoInfo) -> int:
        return _exact_pts(pts - self.shift, self.time_base, info.time_base)


def _segment_clocks(segments: Sequence[Any], info: VideoInfo) -> tuple[list[_SegmentClock], list[int]]:
    """Each segment's clock, and the source pts of every video packet in decode (file) order."""
    clocks: list[_SegmentClock] = []
    order: list[int] = []
    offset = 0
    for number, segment in enumerate(segments):
        with _open_segment(segment) as container:
            stream = container.streams.video[0]
            tb = Fraction(stream.time_base.numerator, stream.time_base.denominator)
            first_pts = container.metadata.get(FIRST_PTS_KEY)
            raw = [int(p.pts) for p in container.demux(stream) if p.size]
        if first_pts is None:
            raise SegmentMismatchError(f"segment {number} was not written by vsr.media.encode (no {FIRST_PTS_KEY})")
        if not raw or offset + len(raw) > info.frame_count:
            raise SegmentMismatchError(f"segment {number} holds {len(raw)} frames beyond the source's frames")
        clock = _SegmentClock(tb, min(raw) - _exact_pts(int(first_pts), info.time_base, tb))
        mapped = [clock.source_pts(p, info) for p in raw]
        if sorted(mapped) != info.pts[offset : offset + len(raw)]:
            raise SegmentMismatchError(
                f"segment {number}'s frame timestamps do not match source frames {offset}..{offset + len(raw) - 1}"
            )
        clocks.append(clock)
        order.extend(mapped)
        offset += len(raw)
    if offset != info.frame_count:
        raise SegmentMismatchError(
            f"the segments hold {offset} frames but the source has {info.frame_count} (a segment is missing)"
        )
    return clocks, order


def _rebuilt_dts(decode_order_pts: list[int], info: VideoInfo) -> list[int]:
    lead = max(s - p for s, p in zip(info.pts, decode_order_pts, strict=True))
    return [s - lead for s in info.pts]


def frame_durations(info: VideoInfo) -> dict[int, int]:
    """Each source frame's display duration by pts: until the next frame, the last one as the source says.

    The encoder's packet durations are not the source's (x264's flushed last packet spans its whole
    B-frame delay), and MP4 derives the stream duration, so the average frame rate players show, from them.
    """
    pts = info.pts
    fallback = pts[-1] - pts[-2] if len(pts) > 1 else 1
    durations = {a: b - a for a, b in itertools.pairwise(pts)}
    durations[pts[-1]] = info.last_frame_duration or fallback or 1
    return durations


def _video_packets(
    segments: Sequence[Any], clocks: list[_SegmentClock], out_stream: Any, info: VideoInfo, dts: list[int]
) -> Iterator[Any]:
    durations = frame_durations(info)
    index = 0
    for segment, clock in zip(segments, clocks, strict=True):
        with _open_segment(segment) as container:
            stream = container.streams.video[0]
            for packet in container.demux(stream):
                if not packet.size:
                    continue
                pts = clock.source_pts(int(packet.pts), info)
                packet.stream = out_stream
                packet.time_base = info.time_base
                packet.pts, packet.dts, packet.duration = pts, dts[index], durations[pts]
                index += 1
                yield packet


def _mov_text(payload: bytes) -> bytes:
    text = payload.rstrip(b"\x00")
    return len(text).to_bytes(2, "big") + text


def _movie_timescale(info: VideoInfo) -> int:
    """mvhd timescale in which edit lists are written. MP4's default (1000) rounds a stream's start offset
    (MPEG-TS video typically starts 1.4 s in) to whole milliseconds, shifting every frame; a timescale in
    which all source start times are exact keeps them."""
    timescale = info.time_base.denominator
    for audio in info.audio:
        candidate = math.lcm(timescale, audio.time_base.denominator)
        if candidate < 2**31:
            timescale = candidate
    return timescale


def track_tags(metadata: dict[str, str]) -> dict[str, str]:
    """The tags of a source audio or subtitle track that the output keeps: its language (the MP4/MOV
    muxer writes it into the track header) and its title. The muxer stores a title as the track's udta
    `name`; it is also written as the handler name, which is what players list tracks by."""
    tags = {}
    language = metadata.get("language")
    if language and language != "und":
        tags["language"] = language
    title = metadata.get("title") or metadata.get("name")
    if title:
        tags["title"] = title
        tags["handler_name"] = title
    return tags


def source_timecode(container: Any, video_index: int) -> str | None:
    """The source's start timecode: the video stream's `timecode` tag (MOV/MP4 tmcd track, MXF), a
    timecode data stream's, or the container's (raw DV's subcode, MXF material package)."""
    candidates = [container.streams[video_index].metadata.get("timecode")]
    candidates += [s.metadata.get("timecode") for s in container.streams if s.type == "data"]
    candidates.append(container.metadata.get("timecode"))
    return next((value for value in candidates if value), None)


def _audio_bits(ctx: Any) -> int:
    """Bits per sample of a source audio stream as decoded; 0 for lossy codecs (no native depth)."""
    if ctx is None or ctx.name in _LOSSY_AUDIO or ctx.format is None:
        return 0
    return int(ctx.format.bytes) * 8


class _Joiner:
    def __init__(self, source: Source, info: VideoInfo, output: Any, container: str = OUTPUT_FORMAT) -> None:
        self.info = info
        self.container = container
        self.source = open_input(source)
        self.out: av.container.OutputContainer = av.open(
            output,
            mode="w",
            format=container,
            options={"movflags": "+faststart", "movie_timescale": str(_movie_timescale(info))},
        )
        self.copy: dict[int, Any] = {}  # source stream index -> output stream (packets copied)
        self.text_to_mov: dict[int, Any] = {}  # source subtitle index -> mov_text output stream
        self.transcode: dict[int, tuple[Any, Any]] = {}  # source audio index -> (output stream, resampled)
        self.dropped_subtitles = 0
        self.audio: list[dict[str, Any]] = []
        self.dropped: list[str] = []

    def close(self) -> None:
        try:
            self.out.close()
        finally:
            self.source.close()

    def _tag_video(self, stream: Any) -> None:
        if self.info.display_matrix:
            stream.set_display_matrix(self.info.display_matrix)
        elif self.info.rotation:
            stream.set_display_rotation(self.info.rotation)
        timecode = source_timecode(self.source, self.info.video_index)
        if timecode:
            stream.metadata["timecode"] = timecode  # the MP4 and MOV muxers write it as a tmcd track

    def add_video(self, template: Any) -> Any:
        stream = self.out.add_stream_from_template(template)
        stream.time_base = self.info.time_base
        self._tag_video(stream)
        ctx = stream.codec_context
        if ctx is not None:
            ctx.color_range = self.info.color_range
            ctx.color_primaries = self.info.color_primaries
            ctx.color_trc = self.info.color_trc
            ctx.colorspace = self.info.colorspace
        return stream

    def add_encoded_video(self, spec: EncoderSpec, width: int, height: int) -> Any:
        """An encoding video stream: the delivery encode writes straight into the output (no second file)."""
        info = self.info
        stream = add_video_stream(
            self.out,
            spec,
            width=width,
            height=height,
            time_base=info.time_base,
            rate=info.average_rate or info.base_rate,
            sample_aspect_ratio=info.sample_aspect_ratio,
            colour=source_colour(info),
        )
        self._tag_video(stream)
        return stream

    def add_audio_and_subtitles(self) -> None:
        for stream in self.source.streams.audio:
            ctx = stream.codec_context
            name = ctx.name if ctx else None
            if not name:
                self.dropped.append(f"audio stream {stream.index} (codec unknown)")
                continue
            choice = audio_choice(self.container, name, _audio_bits(ctx))
            tags = track_tags(dict(stream.metadata))
            if choice.copy:
                self.copy[stream.index] = self.out.add_stream_from_template(stream)
                self.copy[stream.index].metadata.update(tags)
                self.audio.append({"index": stream.index, "codec": name, "action": "copied", **tags})
                continue
            assert choice.encoder is not None
            layout = encoder_layout(ctx.layout, int(ctx.channels or 0))
            out = self.out.add_stream(choice.encoder, rate=ctx.sample_rate or 48000, layout=layout)
            if choice.sample_format:
                out.codec_context.format = choice.sample_format
            out.metadata.update(tags)
            self.transcode[stream.index] = (out, stream)
            self.audio.append({"index": stream.index, "codec": name, "action": f"encoded to {choice.encoder}", **tags})
            log.info("join.audio_transcoded", stream=stream.index, codec=name, to=choice.encoder, reason=choice.reason)
        for stream in self.source.streams.subtitles:
            name = stream.codec_context.name if stream.codec_context else None
            tags = track_tags(dict(stream.metadata))
            if name == "mov_text":
                self.copy[stream.index] = self.out.add_stream_from_template(stream)
                self.copy[stream.index].metadata.update(tags)
            elif name in _TEXT_SUBTITLES:
                out = self.out.add_mux_stream("mov_text")
                out.time_base = stream.time_base
                out.metadata.update(tags)
                self.text_to_mov[stream.index] = out
            else:
                self.dropped_subtitles += 1
                self.dropped.append(
                    f"subtitle stream {stream.index} ({name}: not storable in {self.container.upper()})"
                )
                log.warning(
                    "join.subtitle_dropped", stream=stream.index, codec=name, reason=f"not storable in {self.container}"
                )
        timecode = source_timecode(self.source, self.info.video_index)
        for stream in self.source.streams:
            if stream.type not in ("video", "audio", "subtitle") and not timecode:  # a tmcd track: said above
                kind = stream.codec_context.name if stream.codec_context else stream.type
                self.dropped.append(f"{stream.type} stream {stream.index} ({kind})")
        for stream in self.source.streams.video:
            if stream.index != self.info.video_index:
                self.dropped.append(f"video stream {stream.index} (only the main video stream is upscaled)")

    def copy_container_metadata(self) -> None:
        for key, value in self.source.metadata.items():
            if key not in _METADATA_DROP and key != "timecode":  # the timecode is the video stream's (above)
                self.out.metadata[key] = value
        chapters = self.source.chapters()
        if chapters:
            self.out.set_chapters(chapters)

    def side_packets(self) -> Iterator[Any]:
        """Source audio/subtitle packets ready to mux, in file order."""
        wanted = [self.source.streams[i] for i in (*self.copy, *self.text_to_mov, *self.transcode)]
        if not wanted:
            return
        for stream in self.source.streams:
            if stream not in wanted:
                stream.discard = av.stream.Discard.all
        for packet in self.source.demux(wanted):
            index = packet.stream.index
            if index in self.transcode:
                out, _ = self.transcode[index]
                for frame in packet.decode():
                    yield from out.encode(frame)
                if not packet.size:
                    yield from out.encode(None)
                continue
            if not packet.size or (packet.dts is None and packet.pts is None):
                continue
            if index in self.copy:
                packet.stream = self.copy[index]
                yield packet
            else:
                mov = av.Packet(_mov_text(bytes(packet)))
                mov.stream = self.text_to_mov[index]
                mov.time_base = packet.time_base
                mov.pts, mov.dts, mov.duration = packet.pts, packet.pts, packet.duration
                yield mov


def _seconds(packet: Any) -> Fraction:
    ts = packet.dts if packet.dts is not None else packet.pts
    return (ts or 0) * Fraction(packet.time_base.numerator, packet.time_base.denominator)


def reencode_segments(
    segments: Sequence[str | os.PathLike[str] | BinaryIO],
    info: VideoInfo,
    output: str | os.PathLike[str],
    encode: EncodeSettings,
) -> int:
    """Decode `segments` in order and encode their frames once, at delivery quality (H.264), into one segment
    file (frames keep the source's pts); returns the frame count. The segments must already be validated.
    (The assembler encodes straight into the output instead: `join_segments`.)"""
    encoder: SegmentEncoder | None = None
    index = 0
    try:
        for segment in segments:
            with _open_segment(segment) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                for frame in container.decode(stream):
                    if index >= info.frame_count:
                        raise SegmentMismatchError(
                            f"the segments hold more than the source's {info.frame_count} frames"
                        )
                    if encoder is None:
                        scale = frame.width // info.width
                        encoder = SegmentEncoder(output, info=info, scale=scale, encode=encode, crf=encode.crf)
                    encoder.write_frame(frame, info.pts[index])
                    index += 1
        if encoder is None:
            raise SegmentMismatchError("the segments hold no frames")
        encoder.close()
    except BaseException:
        if encoder is not None:
            encoder.abort()
        raise
    return index


def _encoded_packets(segments: Sequence[Any], info: VideoInfo, stream: Any) -> Iterator[Any]:
    """The delivery encode: every frame of the lossless segments, in order, at its source pts, encoded by
    `stream`'s encoder; packets carry the source frame's display duration (MP4 derives the rate from them)."""
    durations = frame_durations(info)
    pix_fmt = stream.codec_context.pix_fmt
    index = 0
    for segment in segments:
        with _open_segment(segment) as container:
            video = container.streams.video[0]
            video.thread_type = "AUTO"
            for frame in container.decode(video):
                if index >= info.frame_count:
                    raise SegmentMismatchError(f"the segments hold more than the source's {info.frame_count} frames")
                if frame.format.name != pix_fmt:
                    frame = frame.reformat(format=pix_fmt)
                frame.pict_type = 0  # AV_PICTURE_TYPE_NONE: a decoded IDR must not force a keyframe (a seam)
                frame.pts, frame.time_base = info.pts[index], info.time_base
                index += 1
                for packet in stream.encode(frame):
                    yield _with_duration(packet, durations)
    if index != info.frame_count:
        raise SegmentMismatchError(f"the segments hold {index} frames but the source has {info.frame_count}")
    for packet in stream.encode(None):
        yield _with_duration(packet, durations)


def _with_duration(packet: Any, durations: dict[int, int]) -> Any:
    if packet.pts is not None and int(packet.pts) in durations:
        packet.duration = durations[int(packet.pts)]
    return packet


def join_segments(
    segments: Sequence[str | os.PathLike[str] | BinaryIO],
    source: Source,
    info: VideoInfo,
    output: str | os.PathLike[str] | BinaryIO,
    encode: EncodeSettings,
    delivery: Delivery | None = None,
    *,
    audio: bool = True,
) -> JoinResult:
    """Join `segments` (in order) and the source's audio/subtitles into the delivery's container at `output`
    (faststart): encoded once by the delivery's encoder when the segments are lossless mezzanines (seamless),
    else remuxed packet for packet (H.264 only: those segments are already delivery-quality H.264).
    `audio=False` leaves the source's audio and subtitles out (slow motion: they would no longer be in sync)."""
    if not segments:
        raise SegmentMismatchError("no segments to join")
    _segment_clocks(segments, info)  # refuse missing, duplicated or reordered segments before any work
    scale = _segment_scale(segments[0], info)
    delivery = delivery or default_delivery(info, scale, encode)
    if join_mode(info, scale, encode) != REENCODE:
        if delivery.profile.codec != "h264":
            raise PermanentError(
                f"the output is too large for one {delivery.profile.codec} encode in the assembler, and its "
                "segments were encoded as H.264; upload it with vsr-codec=h264 or a shorter video"
            )
        return _remux(segments, source, info, output, audio)
    result = _encode_join(segments, source, info, output, delivery, scale, audio)
    log.info("join.reencoded", frames=result.frames, encoder=result.encoder, container=result.container)
    return result


def _segment_scale(segment: str | os.PathLike[str] | BinaryIO, info: VideoInfo) -> int:
    with _open_segment(segment) as container:
        return max(1, int(container.streams.video[0].codec_context.width) // info.width)


def _mux_all(joiner: _Joiner, video: Iterator[Any]) -> None:
    with corrupt_on_media_error("reading the source's audio"):
        # merge by decode time so the muxer's interleaving queue stays small (bounded memory)
        merged = heapq.merge(
            ((_seconds(p), 0, n, p) for n, p in enumerate(video)),
            ((_seconds(p), 1, n, p) for n, p in enumerate(joiner.side_packets())),
            key=lambda item: item[:3],
        )
        for _, _, _, packet in merged:
            joiner.out.mux(packet)


def _result(joiner: _Joiner, info: VideoInfo, frames: int, target: Any, delivery: Delivery | None) -> JoinResult:
    size = os.path.getsize(target) if isinstance(target, str) else None
    result = JoinResult(
        frames=frames,
        audio_streams_copied=len({a.index for a in info.audio} & set(joiner.copy)),
        audio_streams_transcoded=len(joiner.transcode),
        subtitle_streams=len(info.subtitles) - joiner.dropped_subtitles,
        subtitles_dropped=joiner.dropped_subtitles,
        bytes=size,
        container=joiner.container,
        encoder=delivery.spec.name if delivery else None,
        audio=tuple(joiner.audio),
        dropped=tuple(joiner.dropped),
        nvenc_fallback=delivery.nvenc_fallback if delivery else None,
    )
    log.info("join.done", **{k: v for k, v in result.__dict__.items() if k not in ("audio", "dropped")})
    return result


def _encode_join(
    segments: Sequence[str | os.PathLike[str] | BinaryIO],
    source: Source,
    info: VideoInfo,
    output: str | os.PathLike[str] | BinaryIO,
    delivery: Delivery,
    scale: int,
    audio: bool = True,
) -> JoinResult:
    target = os.fspath(output) if isinstance(output, str | os.PathLike) else output
    joiner = _Joiner(source, info, target, container=delivery.profile.muxer)
    try:
        video_out = joiner.add_encoded_video(delivery.spec, info.width * scale, info.height * scale)
        if audio:
            joiner.add_audio_and_subtitles()
        joiner.copy_container_metadata()
        _mux_all(joiner, _encoded_packets(segments, info, video_out))
    finally:
        joiner.close()
    return _result(joiner, info, info.frame_count, target, delivery)


def _remux(
    segments: Sequence[str | os.PathLike[str] | BinaryIO],
    source: Source,
    info: VideoInfo,
    output: str | os.PathLike[str] | BinaryIO,
    audio: bool = True,
) -> JoinResult:
    clocks, order = _segment_clocks(segments, info)
    dts = _rebuilt_dts(order, info)
    target = os.fspath(output) if isinstance(output, str | os.PathLike) else output
    joiner = _Joiner(source, info, target)
    try:
        with _open_segment(segments[0]) as first:
            video_out = joiner.add_video(first.streams.video[0])
            if audio:
                joiner.add_audio_and_subtitles()
            joiner.copy_container_metadata()
            _mux_all(joiner, _video_packets(segments, clocks, video_out, info, dts))
    finally:
        joiner.close()
    return _result(joiner, info, len(order), target, None)
