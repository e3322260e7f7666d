"""Join encoded segments into the final MP4 without re-encoding, with the source's audio copied.

- Video: packets of every segment in order, pts converted exactly into the source time base (so every
  output frame has its source frame's timestamp), dts rebuilt for the whole stream: dts[i] = (i-th
  smallest pts) - (largest reorder lead). That is strictly increasing and never after the pts, however the
  segments' B-frame delays differ (a 1-frame segment has none; VFR changes x264's delay in time).
- Audio: each source audio stream is copied packet for packet when MP4 can carry its codec; otherwise it
  is re-encoded to AAC (logged) rather than dropped. Timestamps are kept, so the audio/video start
  offset (mkv/webm video often starts a few ms after the audio) survives.
- Subtitles: mov_text is copied; SubRip/WebVTT cues become mov_text (the text is kept, styling is not);
  others (ASS, bitmap subtitles) are dropped with a warning. Chapters and container metadata are kept.
- Rotation/flips: the source display matrix is set on the output stream (templates drop it).
- `movflags=+faststart`: the index is at the front, so players start before the download ends.
- Seamless joins: when `join_mode` says REENCODE (vsr.media.encode), the segments are lossless and are
  decoded in order and encoded once into a single segment at delivery quality, which is then joined as
  above: the output has no segment joins, so no pulse at them (measured in tests/media/test_seams.py).
"""

from __future__ import annotations

import heapq
import itertools
import math
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, BinaryIO

import av
import av.container

from vsr.errors import PermanentError
from vsr.logs import get_logger
from vsr.media.encode import FIRST_PTS_KEY, REENCODE, SEGMENT_FORMAT, SegmentEncoder, join_mode
from vsr.media.probe import VideoInfo
from vsr.media.safety import Source, corrupt_on_media_error, open_input
from vsr.settings import EncodeSettings

log = get_logger(__name__)

OUTPUT_FORMAT = "mp4"
_TEXT_SUBTITLES = {"subrip", "srt", "webvtt", "text"}
# Audio codecs the MP4 muxer writes without `-strict experimental` and common players decode. Everything
# else (MP2, Vorbis, PCM, ...) is re-encoded to AAC rather than dropped.
_MP4_AUDIO = {"aac", "mp3", "ac3", "eac3", "opus", "flac", "alac"}
_METADATA_DROP = {"encoder", "major_brand", "minor_version", "compatible_brands"}


class SegmentMismatchError(PermanentError):
    code = "segment_mismatch"


@dataclass(frozen=True)
class JoinResult:
    frames: int
    audio_streams_copied: int
    audio_streams_transcoded: int
    subtitle_streams: int
    subtitles_dropped: int
    bytes: int | None


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


class _Joiner:
    def __init__(self, source: Source, info: VideoInfo, output: Any) -> None:
        self.info = info
        self.source = open_input(source)
        self.out: av.container.OutputContainer = av.open(
            output,
            mode="w",
            format=OUTPUT_FORMAT,
            options={"movflags": "+faststart", "movie_timescale": str(_movie_timescale(info))},
        )
        self.copy: dict[int, Any] = {}  # source stream index -> output stream (packets copied)
        self.text_to_mov: dict[int, Any] = {}  # source subtitle index -> mov_text output stream
        self.transcode: dict[int, tuple[Any, Any]] = {}  # source audio index -> (output stream, resampled)
        self.dropped_subtitles = 0

    def close(self) -> None:
        try:
            self.out.close()
        finally:
            self.source.close()

    def add_video(self, template: Any) -> Any:
        stream = self.out.add_stream_from_template(template)
        stream.time_base = self.info.time_base
        if self.info.display_matrix:
            stream.set_display_matrix(self.info.display_matrix)
        elif self.info.rotation:
            stream.set_display_rotation(self.info.rotation)
        ctx = stream.codec_context
        if ctx is not None:
            ctx.color_range = self.info.color_range
            ctx.color_primaries = self.info.color_primaries
            ctx.color_trc = self.info.color_trc
            ctx.colorspace = self.info.colorspace
        return stream

    def add_audio_and_subtitles(self) -> None:
        for stream in self.source.streams.audio:
            name = stream.codec_context.name if stream.codec_context else None
            if name in _MP4_AUDIO:
                self.copy[stream.index] = self.out.add_stream_from_template(stream)
            elif name:
                ctx = stream.codec_context
                out = self.out.add_stream("aac", rate=ctx.sample_rate or 48000, layout=ctx.layout)
                self.transcode[stream.index] = (out, stream)
                log.warning("join.audio_transcoded", stream=stream.index, codec=name, reason="MP4 cannot carry it")
        for stream in self.source.streams.subtitles:
            name = stream.codec_context.name if stream.codec_context else None
            language = stream.metadata.get("language")
            if name == "mov_text":
                self.copy[stream.index] = self.out.add_stream_from_template(stream)
            elif name in _TEXT_SUBTITLES:
                out = self.out.add_mux_stream("mov_text")
                out.time_base = stream.time_base
                if language:
                    out.metadata["language"] = language
                self.text_to_mov[stream.index] = out
            else:
                self.dropped_subtitles += 1
                log.warning("join.subtitle_dropped", stream=stream.index, codec=name, reason="not storable in MP4")

    def copy_container_metadata(self) -> None:
        for key, value in self.source.metadata.items():
            if key not in _METADATA_DROP:
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
    """Decode `segments` in order and encode their frames once, at delivery quality, into one segment file
    (frames keep the source's pts); returns the frame count. The segments must already be validated."""
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


def join_segments(
    segments: Sequence[str | os.PathLike[str] | BinaryIO],
    source: Source,
    info: VideoInfo,
    output: str | os.PathLike[str] | BinaryIO,
    encode: EncodeSettings,
    *,
    audio: bool = True,
) -> JoinResult:
    """Join `segments` (in order) and the source's audio/subtitles into a faststart MP4 at `output`:
    re-encoded once when they are lossless mezzanines (seamless), else remuxed packet for packet.
    `audio=False` leaves the source's audio and subtitles out (slow motion: they would no longer be in sync)."""
    if not segments:
        raise SegmentMismatchError("no segments to join")
    _segment_clocks(segments, info)  # refuse missing, duplicated or reordered segments before any work
    scale = _segment_scale(segments[0], info)
    if join_mode(info, scale, encode) != REENCODE:
        return _remux(segments, source, info, output, audio)
    parent = os.path.dirname(os.fspath(output)) if isinstance(output, str | os.PathLike) else None
    with tempfile.TemporaryDirectory(prefix="vsr-reencode-", dir=parent or None) as work:
        single = os.path.join(work, f"video.{SEGMENT_FORMAT}")
        reencode_segments(segments, info, single, encode)
        result = _remux([single], source, info, output, audio)
    log.info("join.reencoded", frames=result.frames)
    return result


def _segment_scale(segment: str | os.PathLike[str] | BinaryIO, info: VideoInfo) -> int:
    with _open_segment(segment) as container:
        return max(1, int(container.streams.video[0].codec_context.width) // info.width)


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
            with corrupt_on_media_error("reading the source's audio"):
                # merge by decode time so the muxer's interleaving queue stays small (bounded memory)
                merged = heapq.merge(
                    (
                        (_seconds(p), 0, n, p)
                        for n, p in enumerate(_video_packets(segments, clocks, video_out, info, dts))
                    ),
                    ((_seconds(p), 1, n, p) for n, p in enumerate(joiner.side_packets())),
                    key=lambda item: item[:3],
                )
                for _, _, _, packet in merged:
                    joiner.out.mux(packet)
    finally:
        joiner.close()
    size = os.path.getsize(target) if isinstance(target, str) else None
    result = JoinResult(
        frames=len(order),
        audio_streams_copied=len({a.index for a in info.audio} & set(joiner.copy)),
        audio_streams_transcoded=len(joiner.transcode),
        subtitle_streams=len(info.subtitles) - joiner.dropped_subtitles,
        subtitles_dropped=joiner.dropped_subtitles,
        bytes=size,
    )
    log.info("join.done", **result.__dict__)
    return result
