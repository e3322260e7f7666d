"""Interlaced sources: detect them, deinterlace with `bwdif` before the model, measure combing.

- `detect(container, video, frames)`: the stream's own flags (`frame.interlaced_frame`) are wrong in both
  directions in real files, so FFmpeg's `idet` filter judges the first `frames` decoded frames; the source
  is interlaced when idet finds more interlaced (tff + bff) than progressive frames, with the field order
  idet saw most.
- `decision(found, mode, rate)`: settings `input.deinterlace` auto (follow detection), on (always, field
  order as detected or top first), off (never); `input.deinterlace_rate` frame (25i -> 25p) or field
  (25i -> 50p). The decision rides in `VideoInfo.interlace`, so every worker and the report see the same
  one; a field-rate job's VideoInfo is its output's timeline (vsr.media.fieldrate).
- `requested_deinterlace(metadata, mode, rate)`: the upload's `vsr-deinterlace` metadata, a mode, a rate
  or both (`on:field`); a bad value is the job's BadRequestError.
- `Deinterlacer`: PyAV filter graph buffer -> bwdif -> buffersink. Rate frame: send_frame, one output frame
  per input frame at the same pts. Rate field: send_field, two frames per input frame, in half the input's
  time base (the first at 2 x pts, the second half-way to the next frame). bwdif reads the previous and next
  frame: a decode window reads one frame more on each side (vsr.media.decode), so a segment's frames equal
  those of one long run.
- `comb_score(gray)`: vertical against horizontal second-difference energy; combs (alternate lines from
  different instants) make it large, a progressive picture has about the same energy both ways.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Any

import av
import av.filter
import numpy as np

from vsr.errors import BadRequestError
from vsr.logs import get_logger
from vsr.settings import DEINTERLACE_MODES, DEINTERLACE_RATES

log = get_logger(__name__)

MODES = DEINTERLACE_MODES
RATES = DEINTERLACE_RATES
FRAME, FIELD = "frame", "field"
METADATA_KEY = "vsr-deinterlace"  # S3 user metadata of an upload (S3 lower-cases names)
PARITY = {"tff": "tff", "bff": "bff"}


@dataclass(frozen=True)
class Detection:
    flagged: int  # frames the stream flags as interlaced, of `sampled`
    sampled: int
    tff: int  # idet's multi-frame verdicts
    bff: int
    progressive: int
    undetermined: int

    @property
    def interlaced(self) -> bool:
        return self.tff + self.bff > self.progressive

    @property
    def field_order(self) -> str | None:
        if not self.interlaced:
            return None
        return "tff" if self.tff >= self.bff else "bff"


def _drain(graph: av.filter.Graph, time_base: Fraction) -> Iterator[av.VideoFrame]:
    """The frames the graph has ready, with pts in `time_base` (bwdif halves the time base of its input;
    in send_frame mode every pts maps back to the input's exactly, in send_field mode `time_base` is the
    halved one)."""
    while True:
        try:
            frame = graph.pull()
        except (av.error.BlockingIOError, av.error.EOFError):
            return
        if frame.pts is not None and frame.time_base is not None and Fraction(frame.time_base) != time_base:
            frame.pts = int(Fraction(frame.pts) * Fraction(frame.time_base) / time_base)
            frame.time_base = time_base
        yield frame


def _graph(first: av.VideoFrame, time_base: Any, name: str, args: str) -> av.filter.Graph:
    """buffer (shaped like `first`) -> `name`=`args` -> buffersink."""
    graph = av.filter.Graph()
    source = graph.add_buffer(
        width=first.width, height=first.height, format=first.format.name, time_base=Fraction(time_base)
    )
    node = graph.add(name, args)
    sink = graph.add("buffersink")
    source.link_to(node)
    node.link_to(sink)
    graph.configure()
    return graph


class _Filter:
    """A one-filter graph over decoded frames, built from the first frame it sees; output pts in
    `out_time_base` (default: the input's)."""

    def __init__(self, time_base: Any, name: str, args: str, out_time_base: Fraction | None = None) -> None:
        self.time_base, self.name, self.args = Fraction(time_base), name, args
        self.out_time_base = out_time_base or self.time_base
        self.graph: av.filter.Graph | None = None

    def process(self, frames: Iterable[av.VideoFrame]) -> Iterator[av.VideoFrame]:
        for frame in frames:
            if self.graph is None:
                self.graph = _graph(frame, self.time_base, self.name, self.args)
            self.graph.push(frame)
            yield from _drain(self.graph, self.out_time_base)
        if self.graph is not None:
            self.graph.push(None)
            yield from _drain(self.graph, self.out_time_base)


def detect(video: Any, frames: Iterable[av.VideoFrame]) -> Detection:
    """idet's verdict on `frames` (decoded from `video`, in order) and how many the stream flags."""
    counted = {"flagged": 0, "sampled": 0}

    def counting() -> Iterator[av.VideoFrame]:
        for frame in frames:
            counted["sampled"] += 1
            counted["flagged"] += bool(frame.interlaced_frame)
            yield frame

    last: dict[str, str] = {}
    for out in _Filter(video.time_base, "idet", "").process(counting()):
        last = dict(out.metadata)

    def count(key: str) -> int:
        return int(float(last.get(f"lavfi.idet.multiple.{key}", "0")))

    return Detection(
        counted["flagged"], counted["sampled"], count("tff"), count("bff"), count("progressive"), count("undetermined")
    )


def parse_request(value: str) -> tuple[str | None, str | None]:
    """(mode, rate) of a `vsr-deinterlace` value or `--deinterlace` flag: a mode (auto, on, off), a rate
    (frame, field) or both joined by ':' (`on:field`, `auto:field`); None for the part not given. A bad
    value is a ValueError that names what is accepted."""
    mode: str | None = None
    rate: str | None = None
    parts = [part.strip() for part in value.strip().lower().split(":")]
    for part in parts:
        if part in MODES and mode is None:
            mode = part
        elif part in RATES and rate is None:
            rate = part
        else:
            raise ValueError(
                f"{value!r} is not a deinterlace request; use a mode ({', '.join(MODES)}), a rate "
                f"({', '.join(RATES)}) or both as mode:rate (e.g. on:field)"
            )
    if mode == "off" and rate is not None:
        raise ValueError(f"{value!r} asks for no deinterlacing and a deinterlace rate; use off alone")
    return mode, rate


def resolve_request(value: str | None, default: str, default_rate: str = FRAME) -> tuple[str, str]:
    """(mode, rate) of a request (parse_request; None or blank: nothing asked), the part not given from
    the defaults (settings input.deinterlace, input.deinterlace_rate). A bad value is a ValueError."""
    if value is None or not value.strip():
        return default, default_rate
    mode, rate = parse_request(value)
    return mode or default, rate or default_rate


def requested_deinterlace(
    metadata: Mapping[str, str] | None, default: str, default_rate: str = FRAME
) -> tuple[str, str]:
    """(mode, rate) an upload asks for through its S3 user metadata `vsr-deinterlace` (resolve_request); a
    bad value is a BadRequestError (the job FAILS at ingest with the accepted values)."""
    value = {k.lower(): v for k, v in (metadata or {}).items()}.get(METADATA_KEY)
    try:
        return resolve_request(value, default, default_rate)
    except ValueError as exc:
        raise BadRequestError(f"the upload's metadata {METADATA_KEY}: {exc}") from exc


def decision(found: Detection | None, mode: str, rate: str = FRAME) -> dict[str, Any]:
    """What is done with the source, for `VideoInfo.interlace` and the report."""
    if mode not in MODES:
        raise ValueError(f'settings input.deinterlace is "{mode}"; expected one of {", ".join(MODES)}')
    if rate not in RATES:
        raise ValueError(f'settings input.deinterlace_rate is "{rate}"; expected one of {", ".join(RATES)}')
    detected = found.field_order if found else None
    apply = mode == "on" or (mode == "auto" and detected is not None)
    return {
        "mode": mode,
        "detected": detected or "progressive",
        "detection": asdict(found) if found else None,
        "deinterlace": apply,
        "parity": (detected or "tff") if apply else None,
        "rate": rate if apply else None,
        "filter": f"bwdif (send_{rate})" if apply else None,
    }


class Deinterlacer(_Filter):
    """bwdif over decoded frames of `video`: `process(frames)` yields progressive frames in order (the
    filter holds one frame back; the end of `frames` flushes it). Rate frame: one per input frame, with
    its pts. Rate field: two per input frame, pts in half the input's time base (`out_time_base`)."""

    def __init__(self, video: Any, parity: str, rate: str = FRAME) -> None:
        if rate not in RATES:
            raise ValueError(f"deinterlace rate {rate!r}; expected one of {', '.join(RATES)}")
        time_base = Fraction(video.time_base)
        super().__init__(
            time_base,
            "bwdif",
            f"mode=send_{rate}:parity={PARITY[parity]}:deint=all",
            time_base / 2 if rate == FIELD else time_base,
        )


def comb_score(gray: np.ndarray, scale: int = 1) -> float:
    """Vertical over horizontal second-difference energy of a gray picture after an area downscale by
    `scale` (so an upscaled output compares with its source): about 1 for progressive pictures, several
    times that for combed ones."""
    g = gray.astype(np.float64)
    if scale > 1:
        h, w = (g.shape[0] // scale) * scale, (g.shape[1] // scale) * scale
        g = g[:h, :w].reshape(h // scale, scale, w // scale, scale).mean(axis=(1, 3))
    vertical = np.abs(g[2:] - 2 * g[1:-1] + g[:-2]).mean()
    horizontal = np.abs(g[:, 2:] - 2 * g[:, 1:-1] + g[:, :-2]).mean()
    return float(vertical / horizontal) if horizontal else 0.0
