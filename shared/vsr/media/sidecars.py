"""Text subtitles and chapters of the source as WebVTT files beside an output that cannot carry them.

The fragmented path (vsr.media.fragmented) writes one byte-identical init for every segment and joins their
fragments in S3; a sparse text track does not fit that (its samples do not follow the segments' spans, and
every segment's init would have to declare it). Rather than drop them, the assembler writes each text
subtitle track and the chapters as WebVTT (what browsers' `<track>` and every player read) next to the
output, named after it: `<output stem>.<n>.<language>.vtt` and `<output stem>.chapters.vtt`.

Reading a track means demuxing its packets only: the other streams are discarded, so an MP4 reader seeks
from one subtitle sample to the next (an S3 reader fetches just those ranges); Matroska and MPEG-TS are read
through. Cue times are the source's presentation times, the timeline the output keeps. Image subtitles
(DVD, Blu-ray PGS, DVB) have no text to write and are counted as dropped.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av

from vsr.errors import PermanentError
from vsr.media.safety import Source, corrupt_on_media_error, open_input

# text subtitle codecs as FFmpeg names them, and how a packet's payload holds the text
TEXT_CODECS = {"subrip", "srt", "text", "webvtt", "mov_text", "ass", "ssa"}
DEFAULT_CUE_S = Fraction(2)  # a cue without a duration lasts until the next one, or this long at the end
_ASS_OVERRIDE = re.compile(r"\{[^}]*\}")
_ALLOWED_TAG = re.compile(r"</?(?:b|i|u)>")


class SidecarBudgetError(PermanentError):
    code = "sidecar_budget"


@dataclass(frozen=True)
class Cue:
    start: Fraction  # seconds
    end: Fraction
    text: str


@dataclass(frozen=True)
class TextTrack:
    index: int  # the source stream's index
    codec: str
    language: str | None
    title: str | None
    cues: tuple[Cue, ...]


def cue_text(codec: str, payload: bytes) -> str:
    """A packet's subtitle text, as WebVTT cue text (only <b>, <i> and <u> kept as markup)."""
    raw = payload
    if codec == "mov_text" and len(raw) >= 2:  # 16-bit big-endian length, the text, then style boxes
        raw = raw[2 : 2 + int.from_bytes(raw[:2], "big")]
    text = raw.rstrip(b"\x00").decode("utf-8", errors="replace")
    if codec in ("ass", "ssa"):
        # FFmpeg's ASS packets: ReadOrder, Layer, Style, Name, MarginL, MarginR, MarginV, Effect, Text
        parts = text.split(",", 8)
        text = parts[8] if len(parts) == 9 else parts[-1]
        text = _ASS_OVERRIDE.sub("", text).replace("\\N", "\n").replace("\\n", "\n").replace("\\h", " ")
    return _escape(text.replace("\r\n", "\n").strip())


def _escape(text: str) -> str:
    """WebVTT's reserved characters escaped, the simple style tags kept; no line may be blank or hold '-->'."""
    kept: list[str] = []
    at = 0
    for tag in _ALLOWED_TAG.finditer(text):
        kept.append(_escape_plain(text[at : tag.start()]))
        kept.append(tag.group(0))
        at = tag.end()
    kept.append(_escape_plain(text[at:]))
    lines = [line for line in "".join(kept).split("\n") if line.strip()]
    return "\n".join(lines)


def _escape_plain(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def timestamp(seconds: Fraction) -> str:
    """WebVTT's hh:mm:ss.ttt (milliseconds rounded down, so a cue never starts late)."""
    millis = max(0, int(seconds * 1000))
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    return f"{hours:02d}:{minutes:02d}:{rest // 1000:02d}.{rest % 1000:03d}"


def webvtt(cues: tuple[Cue, ...] | list[Cue]) -> str:
    blocks = ["WEBVTT", ""]
    for number, cue in enumerate(cues, start=1):
        blocks += [str(number), f"{timestamp(cue.start)} --> {timestamp(cue.end)}", cue.text, ""]
    return "\n".join(blocks)


def _cues(timed: list[tuple[Fraction, Fraction | None, str]]) -> tuple[Cue, ...]:
    """Cues in time order; one without a duration ends where the next begins (or DEFAULT_CUE_S later)."""
    timed.sort(key=lambda item: item[0])
    out = []
    for position, (start, end, text) in enumerate(timed):
        if not text:
            continue
        if end is None or end <= start:
            following = next((s for s, _, _ in timed[position + 1 :] if s > start), None)
            end = following if following is not None else start + DEFAULT_CUE_S
        out.append(Cue(start, end, text))
    return tuple(out)


@corrupt_on_media_error("reading the source's subtitles")
def read_text_tracks(source: Source, budget_s: float | None = None) -> tuple[list[TextTrack], int]:
    """(every text subtitle track with its cues, how many image subtitle tracks have no text to write);
    SidecarBudgetError when reading takes longer than `budget_s` (a read-through of a huge Matroska)."""
    deadline = None if budget_s is None else time.monotonic() + budget_s
    with open_input(source) as container:
        text_streams = []
        images = 0
        for stream in container.streams.subtitles:
            name = stream.codec_context.name if stream.codec_context else ""
            if name in TEXT_CODECS:
                text_streams.append(stream)
            else:
                images += 1
        if not text_streams:
            return [], images
        for stream in container.streams:
            if stream not in text_streams:
                stream.discard = av.stream.Discard.all
        timed: dict[int, list[tuple[Fraction, Fraction | None, str]]] = {s.index: [] for s in text_streams}
        codecs = {s.index: s.codec_context.name for s in text_streams}
        for packet in container.demux(text_streams):
            if deadline is not None and time.monotonic() >= deadline:
                raise SidecarBudgetError(f"reading the subtitles took longer than {budget_s:g} s")
            if packet.pts is None or not packet.size:
                continue
            base = Fraction(packet.time_base.numerator, packet.time_base.denominator)
            start = packet.pts * base
            end = (packet.pts + packet.duration) * base if packet.duration else None
            timed[packet.stream.index].append((start, end, cue_text(codecs[packet.stream.index], bytes(packet))))
        tracks = [
            TextTrack(
                index=s.index,
                codec=codecs[s.index],
                language=_tag(s.metadata, "language"),
                title=_tag(s.metadata, "title") or _tag(s.metadata, "name"),  # MP4 keeps a title as `name`
                cues=_cues(timed[s.index]),
            )
            for s in text_streams
        ]
    return tracks, images


def _tag(metadata: Any, key: str) -> str | None:
    value = dict(metadata).get(key)
    return None if not value or value == "und" else str(value)


@corrupt_on_media_error("reading the source's chapters")
def read_chapters(source: Source) -> tuple[Cue, ...]:
    """The container's chapters as cues (the title is the cue's text; an untitled chapter is numbered)."""
    with open_input(source) as container:
        chapters = container.chapters()
    cues = []
    for number, chapter in enumerate(chapters, start=1):
        base = Fraction(chapter["time_base"].numerator, chapter["time_base"].denominator)
        title = dict(chapter.get("metadata") or {}).get("title") or f"Chapter {number}"
        cues.append(Cue(chapter["start"] * base, chapter["end"] * base, _escape(str(title))))
    return tuple(cues)
