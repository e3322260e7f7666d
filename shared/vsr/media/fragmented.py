"""Fragmented MP4 for outputs too big for the faststart join: segments as media fragments, joined in S3.

One output file = an init segment (ftyp + moov with mvex: one track layout for the whole film) followed by
every segment's fragments (moof + mdat) in order. A worker writes its segment as a complete little fMP4
(`write_media_segment`): its own init, then its fragments, whose decode times (tfdt) are the film's global ones
and whose sequence numbers (mfhd) grow across the whole film. Its init is the same bytes in every segment (same
encoder settings, same streams: its sha256 travels with the segment and the assembler checks it), so the
assembler takes segment 0's as the film's and joins the byte ranges after each init in S3
(vsr.pipeline.multipart): no video byte has to be written on its disk.

Decisions:
- FFmpeg's mp4 muxer writes the boxes (`frag_keyframe+empty_moov+default_base_moof`: one fragment per video
  keyframe, data offsets relative to each moof, so fragments move between files unchanged). It shifts the
  timestamps of each file to start at zero; the decode time of every fragment is therefore rewritten here from
  the source's own timestamps (video: the frame's pts; audio: the packet's), so every frame of the output keeps
  its source timestamp, exactly as on the faststart path.
- Joins: segments are encoded apart (no one-pass re-encode: that is what lets the path scale), each primed
  (`encoder_primer`): its encoder sees copies of its first frame before it and of its last frame after it,
  dropped from the output, so a join is coded like a keyframe inside one encode (bench/bench_fragment_seams.py).
- No B-frames on this path (`FRAGMENT_ENCODER_OPTIONS`): decode time = presentation time, so there are no
  composition offsets and no edit list for a join to disagree about. Closed GOPs and an IDR at every
  segment's start as on every path.
- Audio is the source's, copied packet for packet into the same fragments as the video of the same time: each
  audio packet belongs to the segment whose time span holds its timestamp (the first and last segments take
  what lies before and after the video). Codecs MP4 cannot carry as they are would need a re-encode, which
  splits badly at segment joins; admission refuses them for this path (`FRAGMENT_AUDIO_CODECS`).
- Text subtitles and chapters go beside the output as WebVTT (vsr.media.sidecars); container metadata is not
  carried on this path.
"""

from __future__ import annotations

import hashlib
import heapq
import math
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, BinaryIO

import av
import av.container

from vsr.errors import PermanentError
from vsr.logs import get_logger
from vsr.media.encode import FIRST_PTS_KEY, SEGMENT_FORMAT, Primer
from vsr.media.probe import VideoInfo
from vsr.media.safety import Source, corrupt_on_media_error, open_input
from vsr.planning import Segment
from vsr.settings import EncodeSettings

log = get_logger(__name__)

# Audio codecs copied as they are into MP4 (what the faststart join copies too)
FRAGMENT_AUDIO_CODECS = frozenset({"aac", "mp3", "ac3", "eac3", "opus", "flac", "alac"})
# libx264 options of segments on this path, besides the delivery CRF and preset: no B-frames (see above)
FRAGMENT_ENCODER_OPTIONS = {"bf": "0"}


def encoder_primer(encode: EncodeSettings) -> Primer:
    """The frames each segment's encoder sees around it and drops, so a join looks like a keyframe inside one
    encode rather than the end of one stream and the start of another (vsr.media.encode.Primer)."""
    return Primer(frames_before=encode.fragment_primer_frames, frames_after=encode.fragment_primer_frames)


MOVFLAGS = "+frag_keyframe+empty_moov+default_base_moof"
_CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"moof", b"traf", b"mvex", b"edts"}
_COPY_CHUNK = 1 << 20


class FragmentError(PermanentError):
    code = "fragment_mismatch"


@dataclass(frozen=True)
class MediaSegment:
    """What a worker wrote: the file's init length and hash (checked alike across segments) and its fragments."""

    init_bytes: int
    init_sha256: str
    size: int
    fragments: int
    video_samples: int
    audio_samples: int


@dataclass(frozen=True)
class Box:
    type: bytes
    offset: int
    size: int
    header: int  # 8, or 16 with a 64-bit size


def iter_boxes(data: bytes | memoryview, start: int = 0, end: int | None = None) -> Iterator[Box]:
    """The boxes in data[start:end] at one level."""
    end = len(data) if end is None else end
    offset = start
    while offset + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, offset)
        header = 8
        if size == 1:
            (size,) = struct.unpack_from(">Q", data, offset + 8)
            header = 16
        elif size == 0:
            size = end - offset
        if size < header or offset + size > end:
            raise FragmentError(f"malformed MP4 box {kind!r} at {offset}")
        yield Box(kind, offset, size, header)
        offset += size


def _children(data: bytes | memoryview, box: Box) -> Iterator[Box]:
    return iter_boxes(data, box.offset + box.header, box.offset + box.size)


def _read_top_level(handle: BinaryIO) -> Iterator[tuple[bytes, int, int]]:
    """(type, offset, size) of every top-level box of a file, without reading the payloads."""
    handle.seek(0, os.SEEK_END)
    total = handle.tell()
    offset = 0
    while offset < total:
        handle.seek(offset)
        head = handle.read(16)
        size, kind = struct.unpack_from(">I4s", head)
        if size == 1:
            (size,) = struct.unpack_from(">Q", head, 8)
        elif size == 0:
            size = total - offset
        if size < 8:
            raise FragmentError(f"malformed MP4 box {kind!r} at {offset}")
        yield kind, offset, size
        offset += size


def track_timescales(init: bytes) -> dict[int, int]:
    """{track_id: mdhd timescale} of an init segment's tracks."""
    scales: dict[int, int] = {}
    for moov in (b for b in iter_boxes(init) if b.type == b"moov"):
        for trak in (b for b in _children(init, moov) if b.type == b"trak"):
            track_id = timescale = None
            for child in _children(init, trak):
                if child.type == b"tkhd":
                    body = child.offset + child.header
                    version = init[body]
                    track_id = struct.unpack_from(">I", init, body + (20 if version == 1 else 12))[0]
                elif child.type == b"mdia":
                    for mdhd in (b for b in _children(init, child) if b.type == b"mdhd"):
                        body = mdhd.offset + mdhd.header
                        version = init[body]
                        timescale = struct.unpack_from(">I", init, body + (20 if version == 1 else 12))[0]
            if track_id is not None and timescale:
                scales[int(track_id)] = int(timescale)
    return scales


def with_edits(init: bytes, media_times: dict[int, int]) -> bytes:
    """The init with an edit list on each track of `media_times` ({track_id: media time in the track's
    timescale}): the track's presentation starts that far into its decode timeline, as the source's own edit
    list said (AAC encoder priming: the first packet's pts is -1024). Decode times cannot be negative, so the
    fragments carry them from zero and the edit list moves them back; players apply it (FFmpeg does for
    fragmented files too)."""
    if not media_times:
        return init
    out = bytearray()
    for box in iter_boxes(init):
        if box.type != b"moov":
            out += init[box.offset : box.offset + box.size]
            continue
        body = bytearray()
        for child in _children(init, box):
            raw = init[child.offset : child.offset + child.size]
            if child.type == b"trak":
                raw = _trak_with_edit(init, child, media_times)
            body += raw
        out += struct.pack(">I4s", 8 + len(body), b"moov") + body
    return bytes(out)


def film_duration(info: VideoInfo) -> Fraction:
    """Seconds from the first frame to the end of the last one (the video track's length)."""
    if not info.pts:
        return Fraction(0)
    step = info.pts[-1] - info.pts[-2] if len(info.pts) > 1 else 1
    last = info.last_frame_duration or step or 1
    return Fraction(info.pts[-1] + last - min(0, info.pts[0])) * info.time_base


def with_duration(init: bytes, seconds: Fraction) -> bytes:
    """The film's init with its duration: in mvhd and in a movie extends header (mehd) at the head of mvex,
    in the movie timescale, so players know the length of a fragmented file without reading every fragment.
    The assembler writes it (only it knows the whole film); workers' inits, whose hashes it compares, have none."""
    out = bytearray()
    for box in iter_boxes(init):
        if box.type != b"moov":
            out += init[box.offset : box.offset + box.size]
            continue
        body = bytearray()
        timescale = 1000
        for child in _children(init, box):
            raw = bytearray(init[child.offset : child.offset + child.size])
            if child.type == b"mvhd":
                version = raw[8]
                timescale = struct.unpack_from(">I", raw, 28 if version == 1 else 20)[0]
                duration = math.ceil(seconds * timescale)
                if version == 1:
                    struct.pack_into(">Q", raw, 32, duration)
                else:
                    struct.pack_into(">I", raw, 24, min(duration, 2**32 - 1))
            elif child.type == b"mvex":
                inner = [b for b in _children(init, child) if b.type != b"mehd"]
                mehd = struct.pack(">I4sIQ", 20, b"mehd", 1 << 24, math.ceil(seconds * timescale))
                rest = b"".join(init[b.offset : b.offset + b.size] for b in inner)
                raw = bytearray(struct.pack(">I4s", 8 + len(mehd) + len(rest), b"mvex") + mehd + rest)
            body += raw
        out += struct.pack(">I4s", 8 + len(body), b"moov") + body
    return bytes(out)


def _trak_with_edit(init: bytes, trak: Box, media_times: dict[int, int]) -> bytes:
    children = list(_children(init, trak))
    tkhd = next(c for c in children if c.type == b"tkhd")
    body_at = tkhd.offset + tkhd.header
    track_id = struct.unpack_from(">I", init, body_at + (20 if init[body_at] == 1 else 12))[0]
    if track_id not in media_times or any(c.type == b"edts" for c in children):
        return init[trak.offset : trak.offset + trak.size]
    # elst version 0 (as FFmpeg writes it for fragments): one edit of duration 0 (the whole track: its length is
    # not known in a fragmented movie's init), media_time, rate 1.0
    elst = struct.pack(">I4sIIIihh", 28, b"elst", 0, 1, 0, media_times[track_id], 1, 0)
    edts = struct.pack(">I4s", 8 + len(elst), b"edts") + elst
    body = bytearray()
    for child in children:
        body += init[child.offset : child.offset + child.size]
        if child.type == b"tkhd":
            body += edts
    return struct.pack(">I4s", 8 + len(body), b"trak") + bytes(body)


def patch_moof(moof: bytearray, sequence: int, decode_times: dict[int, list[int]], used: dict[int, int]) -> None:
    """Set the fragment's sequence number and each track's decode time (tfdt) in place: `decode_times[track]`
    lists the global decode time of each of the track's samples in order, `used[track]` how many earlier
    fragments took (advanced here by this fragment's sample count)."""
    root = next(iter_boxes(moof))
    for child in _children(moof, root):
        if child.type == b"mfhd":
            struct.pack_into(">I", moof, child.offset + child.header + 4, sequence)
        elif child.type == b"traf":
            track = tfdt_at = None
            tfdt_version = 0
            samples = 0
            for part in _children(moof, child):
                body = part.offset + part.header
                if part.type == b"tfhd":
                    track = struct.unpack_from(">I", moof, body + 4)[0]
                elif part.type == b"tfdt":
                    tfdt_at, tfdt_version = body + 4, moof[body]
                elif part.type == b"trun":
                    samples += struct.unpack_from(">I", moof, body + 4)[0]
            if track is None or tfdt_at is None:
                raise FragmentError("a fragment's track has no tfhd or tfdt")
            times = decode_times.get(track, [])
            first = used.get(track, 0)
            if samples == 0 or first + samples > len(times):
                raise FragmentError(f"track {track}: fragment samples do not match the packets muxed")
            value = times[first]
            if tfdt_version == 1:
                struct.pack_into(">Q", moof, tfdt_at, value)
            elif value < 2**32:
                struct.pack_into(">I", moof, tfdt_at, value)
            else:
                raise FragmentError("a 32-bit tfdt cannot hold the film's decode time")
            used[track] = first + samples


def _copied(stream: Any) -> bool:
    return bool(stream.codec_context and stream.codec_context.name in FRAGMENT_AUDIO_CODECS)


def _first_pts(container: Any, streams: list[Any]) -> dict[int, int]:
    """The first packet's pts of each stream in `streams`, read from the start of a freshly opened file (an AAC
    track's is often -1024: the encoder's priming, which the source's edit list hides and a seek to 0 skips).
    Every worker reads the same."""
    firsts: dict[int, int] = {}
    if not streams:
        return firsts
    for packet in container.demux(streams):
        if packet.pts is not None and packet.stream.index not in firsts:
            firsts[packet.stream.index] = int(packet.pts)
            if len(firsts) == len(streams):
                break
    return firsts


def video_timescale(info: VideoInfo) -> int:
    """The video track's timescale: the source's time base denominator (every source pts stays exact), scaled
    up to at least 10,000 as FFmpeg's own choice would be."""
    return info.time_base.denominator * max(1, math.ceil(10000 / info.time_base.denominator))


def output_video_pts(info: VideoInfo) -> list[int]:
    """The output's video timestamps (in its track timescale): the source's, exactly."""
    timescale = video_timescale(info)
    return [_as_ticks(Fraction(p) * info.time_base, timescale) for p in info.pts]


def segment_span(segment: Segment, info: VideoInfo) -> tuple[Fraction | None, Fraction | None]:
    """Seconds of source time whose audio this segment carries: from its first frame (the first segment: from
    the start) to the next segment's first frame (the last one: to the end)."""
    start = None if segment.index == 0 else Fraction(segment.start_pts) * info.time_base
    end = None if segment.end_pts is None else Fraction(segment.end_pts) * info.time_base
    return start, end


def _audio_packets(source_container: Any, streams: list[Any], span: tuple[Fraction | None, Fraction | None]) -> Any:
    """The source's audio packets of `streams` whose timestamps lie in `span` (start inclusive), in file order."""
    start, end = span
    if not streams:
        return
    if start is not None:
        first = streams[0]
        target = max(Fraction(0), start - 1) / Fraction(first.time_base.numerator, first.time_base.denominator)
        source_container.seek(int(target), stream=first, backward=True, any_frame=False)
    done: set[int] = set()
    for packet in source_container.demux(streams):
        if packet.pts is None or not packet.size:
            continue
        at = Fraction(packet.pts) * Fraction(packet.time_base.numerator, packet.time_base.denominator)
        if end is not None and at >= end:
            done.add(packet.stream.index)
            if len(done) == len(streams):
                return
            continue
        if start is not None and at < start:
            continue
        yield packet


def write_media_segment(
    video_segment: str | os.PathLike[str],
    source: Source,
    info: VideoInfo,
    segment: Segment,
    output: str | os.PathLike[str],
) -> MediaSegment:
    """Write `segment` (its encoded video, a NUT from vsr.media.encode, plus the source's audio of its span) as
    a fragmented MP4 at `output`: init, then moof/mdat fragments with the film's decode times."""
    raw = Path(os.fspath(output) + ".mux")
    try:
        decode_times, edits, video_count, audio_count = _mux(video_segment, source, info, segment, raw)
        return _finish(raw, Path(output), segment, decode_times, edits, video_count, audio_count)
    finally:
        raw.unlink(missing_ok=True)


def _mux(
    video_segment: str | os.PathLike[str], source: Source, info: VideoInfo, segment: Segment, raw: Path
) -> tuple[dict[int, list[Fraction]], dict[int, Fraction], int, int]:
    """FFmpeg's fragmented mux of the segment; returns every track's decode times and edit (seconds, converted
    to ticks in `_finish`), keyed by track id (1: video, 2...: audio in source order), and the sample counts."""
    times: dict[int, list[Fraction]] = {}
    edits: dict[int, Fraction] = {}  # track -> seconds its presentation starts into its decode timeline
    expected = info.pts[segment.start_frame : segment.start_frame + segment.frame_count]
    with open_input(source) as first_pass:  # before the main pass: one container at a time on an S3 reader
        firsts = _first_pts(first_pass, [s for s in first_pass.streams.audio if _copied(s)])
    with av.open(os.fspath(video_segment), format=SEGMENT_FORMAT) as video_in, open_input(source) as source_in:
        stream_in = video_in.streams.video[0]
        first_pts = video_in.metadata.get(FIRST_PTS_KEY)
        if first_pts is None:
            raise FragmentError(f"segment {segment.index} was not written by vsr.media.encode")
        audio_in = [s for s in source_in.streams.audio if _copied(s)]
        for stream in source_in.streams:
            if stream not in audio_in:
                stream.discard = av.stream.Discard.all
        # decode times start at 0 on every track; a track whose first timestamp is negative gets an edit list
        video_base = min(0, info.pts[0])
        audio_indexes = [s.index for s in audio_in]  # plain ints: the streams are gone once it is closed
        audio_bases = {index: min(0, pts) for index, pts in firsts.items()}
        audio_bases.update({s.index: 0 for s in audio_in if s.index not in audio_bases})
        if video_base:
            edits[1] = Fraction(-video_base) * info.time_base
        for number, stream in enumerate(audio_in, start=2):
            if audio_bases[stream.index]:
                tb = Fraction(stream.time_base.numerator, stream.time_base.denominator)
                edits[number] = Fraction(-audio_bases[stream.index]) * tb
        timescale = video_timescale(info)
        out = av.open(
            os.fspath(raw),
            mode="w",
            format="mp4",
            options={"movflags": MOVFLAGS, "video_track_timescale": str(timescale), "fflags": "+bitexact"},
        )
        try:
            video_out = out.add_stream_from_template(stream_in)
            video_out.time_base = info.time_base
            audio_out = {s.index: out.add_stream_from_template(s) for s in audio_in}
            if info.display_matrix:
                video_out.set_display_matrix(info.display_matrix)
            elif info.rotation:
                video_out.set_display_rotation(info.rotation)
            durations = dict(zip(info.pts, [b - a for a, b in zip(info.pts, info.pts[1:], strict=False)], strict=False))
            durations.setdefault(info.pts[-1], info.last_frame_duration or 1)
            video_times: list[Fraction] = []
            audio_times: dict[int, list[Fraction]] = {s.index: [] for s in audio_in}
            # Every track starts at 0 in this file: FFmpeg stretches the first sample of a track that starts
            # after another (it cannot write an edit list into an empty moov). Decode times come from `times`.
            audio_base: dict[int, int] = {}

            def video_packets() -> Iterator[tuple[Fraction, int, Any]]:
                packets = [p for p in video_in.demux(stream_in) if p.size]
                nut_tb = Fraction(stream_in.time_base.numerator, stream_in.time_base.denominator)
                first = Fraction(int(first_pts)) * info.time_base / nut_tb  # the muxer may shift a segment
                shift_pts = min(int(p.pts) for p in packets) - first if packets else 0
                mapped = [_exact((int(p.pts) - shift_pts) * nut_tb / info.time_base) for p in packets]
                if mapped != expected:
                    raise FragmentError(
                        f"segment {segment.index}'s frames do not match source frames {segment.start_frame}.."
                        f"{segment.start_frame + segment.frame_count - 1} (decode order must be display order)"
                    )
                for packet, pts in zip(packets, mapped, strict=True):
                    packet.stream = video_out
                    packet.time_base = info.time_base
                    packet.pts = packet.dts = pts - expected[0]  # each track from 0: see `_local`
                    packet.duration = durations[pts]
                    video_times.append(Fraction(pts - video_base) * info.time_base)
                    yield Fraction(pts) * info.time_base, 0, packet

            def audio_packets() -> Iterator[tuple[Fraction, int, Any]]:
                for packet in _audio_packets(source_in, audio_in, segment_span(segment, info)):
                    tb = Fraction(packet.time_base.numerator, packet.time_base.denominator)
                    index = packet.stream.index
                    audio_times[index].append(Fraction(packet.pts - audio_bases[index]) * tb)
                    at = Fraction(packet.dts if packet.dts is not None else packet.pts) * tb
                    base = audio_base.setdefault(index, int(packet.dts if packet.dts is not None else packet.pts))
                    packet.pts -= base
                    if packet.dts is not None:
                        packet.dts -= base
                    packet.stream = audio_out[index]
                    yield at, 1, packet

            with corrupt_on_media_error("reading the source's audio"):
                merged = heapq.merge(video_packets(), audio_packets(), key=lambda item: item[:2])
                for _, _, packet in merged:
                    out.mux(packet)
        finally:
            out.close()
    times[1] = video_times
    for number, index in enumerate(audio_indexes, start=2):
        times[number] = audio_times[index]
    return times, edits, len(video_times), sum(len(t) for t in audio_times.values())


def _finish(
    raw: Path,
    output: Path,
    segment: Segment,
    times: dict[int, list[Fraction]],
    edits: dict[int, Fraction],
    video_count: int,
    audio_count: int,
) -> MediaSegment:
    """Copy the muxed file to `output`: its init as it is, every moof with the film's decode times and sequence
    numbers, every mdat as it is; nothing else (no mfra: a fragment index of one segment is wrong for the film)."""
    fragments = 0
    with open(raw, "rb") as src, open(output, "wb") as dst:
        boxes = list(_read_top_level(src))
        init_end = 0
        for kind, offset, size in boxes:
            if kind in (b"moof", b"mdat"):
                break
            init_end = offset + size
        src.seek(0)
        init = src.read(init_end)
        if b"moov" not in {kind for kind, _, _ in boxes}:
            raise FragmentError("the fragmented mux wrote no moov")
        scales = track_timescales(init)
        init = with_edits(init, {track: _as_ticks(at, scales[track]) for track, at in edits.items()})
        ticks = {track: [_as_ticks(t, scales[track]) for t in values] for track, values in times.items()}
        dst.write(init)
        used: dict[int, int] = {}
        for kind, offset, size in boxes:
            if kind == b"moof":
                src.seek(offset)
                moof = bytearray(src.read(size))
                patch_moof(moof, segment.start_frame + fragments + 1, ticks, used)
                dst.write(moof)
                fragments += 1
            elif kind == b"mdat":
                src.seek(offset)
                left = size
                while left:
                    chunk = src.read(min(left, _COPY_CHUNK))
                    if not chunk:
                        raise FragmentError("the fragmented mux ended inside an mdat")
                    dst.write(chunk)
                    left -= len(chunk)
        total = dst.tell()
    if used.get(1, 0) != video_count:
        raise FragmentError(
            f"segment {segment.index}: {used.get(1, 0)} video samples in fragments, {video_count} muxed"
        )
    result = MediaSegment(
        init_bytes=len(init),
        init_sha256=hashlib.sha256(init).hexdigest(),
        size=total,
        fragments=fragments,
        video_samples=video_count,
        audio_samples=audio_count,
    )
    log.info("fragmented.segment_written", segment=segment.index, **result.__dict__)
    return result


def _exact(value: Fraction) -> int:
    if value.denominator != 1:
        raise FragmentError(f"segment timestamp {value} is not a whole tick of the source's time base")
    return int(value)


def _as_ticks(seconds: Fraction, timescale: int) -> int:
    exact = seconds * timescale
    return int(exact) if exact.denominator == 1 else round(exact)
