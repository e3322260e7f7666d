"""Encode one segment of upscaled frames, keeping every frame's source timestamp.

Decisions (tested in tests/media):
- Container: NUT. It stores the stream's own time base exactly (Matroska rounds to milliseconds), so each
  packet carries the source pts in the source time base and the assembler remuxes without rescaling.
- Codec and quality from settings.json `encode` (libx264, CRF, preset), overridable per call.
- Pixel format: yuv420p, or yuv420p10le for sources deeper than 8 bits (the bundled libx264 supports both).
  4:2:0 H.264 cannot code an odd width or height (chroma is cropped in 2-pixel units), and the output must
  be exactly scale x source, so odd output sizes (e.g. x3 of 161x97 = 483x291) use 4:4:4 (yuv444p /
  yuv444p10le, High 4:4:4 profile) instead of padding or cropping. Browsers and some hardware players do
  not play 4:4:4 H.264; sizes stay exact.
- Closed GOPs (`+cgop`) and the first frame of every segment is an IDR frame, so segments join anywhere.
  B-frames stay on (smaller files); the assembler rewrites dts across segment joins.
- Colour: the source's matrix/range convert RGB -> YUV; range, primaries, transfer and matrix are tagged.
- Seamless joins (`join_mode`): every segment starts with a fresh IDR frame whose coding noise is new, while
  the frames before it carry the previous segment's noise forward through P-frames. Joined by packet remux,
  each join is a visible pulse (carphone, 30-frame segments: the warping error of the pair across a join
  1.3-1.6x the unencoded model's, other pairs ~1.0x; bench/bench_seams.py). So by default segments are
  encoded losslessly (`segment_crf` 0: x264 qp 0, a mezzanine) and the assembler encodes the whole output
  once (vsr.media.concat), which has no joins at all; above what the assembler can re-encode in its time
  (settings `reencode_max_megapixels()`) segments are delivery-quality and remuxed, joins and all.
- Primed segments (`Primer`, the fragmented path, which has no B-frames and cannot re-encode the whole output):
  the encoder first sees `frames_before` copies of the segment's first frame and, after its last,
  `frames_after` copies of the last frame; their packets are dropped and the segment's first frame is forced
  to an IDR. Without them x264 treats the segment's end as the stream's end (its lookahead and macroblock tree
  see nothing after it) and its start as the stream's start, and the pair across a join pulses more than at a
  keyframe of a one-pass encode. Measured with bench/bench_fragment_seams.py: what the primer frames show
  does not matter before the segment (copies = real neighbours, byte for byte), and copies after it do better
  than the real next frames, so the model never runs on frames the segment does not output.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from types import TracebackType
from typing import Any, BinaryIO

import av
import av.container
import numpy as np

from vsr.errors import GeometryChangeError
from vsr.media.colour import from_rgb_array
from vsr.media.probe import VideoInfo
from vsr.media.profiles import EncoderSpec, add_video_stream
from vsr.settings import EncodeSettings

SEGMENT_FORMAT = "nut"
FIRST_PTS_KEY = "vsr_first_pts"  # container metadata: the first frame's pts in the source time base
TIME_BASE_KEY = "vsr_time_base"


@dataclasses.dataclass(frozen=True)
class Primer:
    """Frames the encoder sees around a segment but never writes (see the module's docstring)."""

    frames_before: int
    frames_after: int

    def __post_init__(self) -> None:
        if self.frames_before < 0 or self.frames_after < 0:
            raise ValueError("primer frame counts cannot be negative")


REENCODE = "reencode"
REMUX = "remux"


def join_mode(info: VideoInfo, scale: int, encode: EncodeSettings) -> str:
    """How this video's segments will be joined: REENCODE (seamless; lossless segments) or REMUX."""
    mode = encode.join
    if mode not in (REENCODE, REMUX):
        raise ValueError(f"settings encode.join must be {REENCODE!r} or {REMUX!r}, got {mode!r}")
    megapixels = info.frame_count * info.width * info.height * scale * scale / 1e6
    if mode == REENCODE and megapixels > encode.reencode_max_mpix:
        return REMUX
    return mode


def output_pix_fmt(width: int, height: int, bit_depth: int) -> str:
    chroma = "444" if width % 2 or height % 2 else "420"
    return f"yuv{chroma}p" + ("10le" if bit_depth > 8 else "")


def segment_spec(
    info: VideoInfo,
    scale: int,
    encode: EncodeSettings,
    *,
    crf: int | None = None,
    preset: str | None = None,
    codec: str | None = None,
) -> EncoderSpec:
    """The encoder of a worker's segment: lossless H.264 mezzanine when the assembler re-encodes the whole
    output once (REENCODE), else delivery quality with closed GOPs (segments remuxed)."""
    width, height = info.width * scale, info.height * scale
    name = codec or encode.codec
    if crf is None and join_mode(info, scale, encode) == REENCODE:
        crf = encode.segment_crf  # a mezzanine: the assembler encodes the delivery once
    crf = encode.crf if crf is None else int(crf)
    options = {"crf": str(crf), "preset": preset or encode.preset}
    if name == "libx264" and crf == 0:
        options = {"qp": "0", "preset": preset or encode.preset}  # lossless, at any bit depth (crf 0 is not for 10-bit)
    if name == "libx264":
        options["flags"] = "+cgop"  # closed GOPs: no frame refers across a keyframe
    return EncoderSpec(name=name, options=options, pix_fmt=output_pix_fmt(width, height, info.bit_depth))


def source_colour(info: VideoInfo) -> dict[str, int]:
    return {
        "color_range": info.color_range,
        "color_primaries": info.color_primaries,
        "color_trc": info.color_trc,
        "colorspace": info.colorspace,
    }


class SegmentEncoder:
    """`write(image, pts)` upscaled RGB frames (pts in the source time base), then `close()`."""

    def __init__(
        self,
        output: str | os.PathLike[str] | BinaryIO,
        *,
        info: VideoInfo,
        scale: int,
        encode: EncodeSettings,
        crf: int | None = None,
        preset: str | None = None,
        codec: str | None = None,
        threads: int | None = None,
        spec: EncoderSpec | None = None,
        options: Mapping[str, str] | None = None,
        primer: Primer | None = None,
    ) -> None:
        self.info = info
        self.width = info.width * scale
        self.height = info.height * scale
        self.spec = spec or segment_spec(info, scale, encode, crf=crf, preset=preset, codec=codec)
        if options:  # e.g. no B-frames for fragmented MP4 (vsr.media.fragmented)
            self.spec = dataclasses.replace(self.spec, options={**self.spec.options, **options})
        if primer is not None:
            if self.spec.options.get("bf") != "0":
                # with B-frames a kept frame could reference a dropped one after it
                raise ValueError("a primed segment needs an encoder without B-frames (option bf=0)")
            self.spec = dataclasses.replace(self.spec, options={**self.spec.options, "forced-idr": "1"})
        self.primer = primer
        self.pix_fmt = self.spec.pix_fmt
        self.codec = self.spec.name
        target = os.fspath(output) if isinstance(output, str | os.PathLike) else output
        self._container: av.container.OutputContainer = av.open(target, mode="w", format=SEGMENT_FORMAT)
        try:
            self._stream = self._add_stream(threads=threads)
        except Exception:
            self._container.close()
            raise
        self.frames = 0
        self._first_pts: int | None = None
        self._last_pts: int | None = None
        self._last_frame: av.VideoFrame | None = None
        self._keep_until: int | None = None  # the last frame's pts once the primer's frames after it are sent
        self._closed = False

    def _add_stream(self, *, threads: int | None) -> Any:
        info = self.info
        return add_video_stream(
            self._container,
            self.spec,
            width=self.width,
            height=self.height,
            time_base=info.time_base,
            rate=info.average_rate or info.base_rate,
            sample_aspect_ratio=info.sample_aspect_ratio,
            colour=source_colour(info),
            threads=threads,
        )

    def write(self, image: np.ndarray, pts: int) -> None:
        if image.shape != (self.height, self.width, 3):
            # the same frame has the same shape on every attempt: a permanent error, not a retry
            raise GeometryChangeError(
                f"an upscaled frame is {image.shape[1]}x{image.shape[0]}, but this job's output is "
                f"{self.width}x{self.height}"
            )
        if self._last_pts is not None and pts <= self._last_pts:
            raise ValueError(f"pts must increase: {pts} after {self._last_pts}")
        frame = from_rgb_array(
            image,
            self.pix_fmt,
            colorspace=self.info.colorspace,
            color_range=self.info.color_range,
            color_primaries=self.info.color_primaries,
            color_trc=self.info.color_trc,
        )
        self._encode(frame, pts)

    def write_frame(self, frame: av.VideoFrame, pts: int) -> None:
        """Encode an already decoded frame (the assembler's re-encode: no RGB round trip)."""
        if (frame.width, frame.height) != (self.width, self.height):
            raise GeometryChangeError(
                f"a segment frame is {frame.width}x{frame.height}, but this job's output is {self.width}x{self.height}"
            )
        if frame.format.name != self.pix_fmt:
            frame = frame.reformat(format=self.pix_fmt)
        frame.pict_type = 0  # AV_PICTURE_TYPE_NONE: a decoded IDR must not force a keyframe (a seam) here
        self._encode(frame, pts)

    def _encode(self, frame: av.VideoFrame, pts: int) -> None:
        if self._last_pts is not None and pts <= self._last_pts:
            raise ValueError(f"pts must increase: {pts} after {self._last_pts}")
        frame.time_base = self.info.time_base
        if self._last_pts is None:
            # NUT cannot store negative dts and shifts a segment with B-frame delay by a constant; the
            # assembler recovers that shift from the first frame's source pts (header not written yet).
            self._container.metadata[FIRST_PTS_KEY] = str(pts)
            self._container.metadata[TIME_BASE_KEY] = (
                f"{self.info.time_base.numerator}/{self.info.time_base.denominator}"
            )
            self._first_pts = pts
            if self.primer is not None:
                step = self._frame_ticks()
                for back in range(self.primer.frames_before, 0, -1):
                    frame.pts = pts - back * step
                    self._mux(self._stream.encode(frame))
                frame.pict_type = av.video.frame.PictureType.I  # the segment starts on an IDR
        frame.pts = pts
        self._mux(self._stream.encode(frame))
        frame.pict_type = av.video.frame.PictureType.NONE
        self._last_pts = pts
        self._last_frame = frame if self.primer is not None else None
        self.frames += 1

    def _frame_ticks(self) -> int:
        """One frame's duration in the time base (the primer frames' spacing; at least one tick)."""
        rate = self.info.average_rate or self.info.base_rate
        if not rate:
            return 1
        return max(1, round(1 / (rate * self.info.time_base)))

    def _mux(self, packets: list[av.Packet]) -> None:
        """Write the packets of the segment's own frames; a primer frame's packet is dropped."""
        for packet in packets:
            if self.primer is not None and packet.pts is not None:
                if packet.pts < self._first_pts or (self._keep_until is not None and packet.pts > self._keep_until):
                    continue
                if packet.pts == self._first_pts and not packet.is_keyframe:
                    raise RuntimeError("the encoder did not start a primed segment on a keyframe")
            self._container.mux(packet)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if self.primer is not None and self._last_frame is not None and self._last_pts is not None:
                step = self._frame_ticks()
                last = self._keep_until = self._last_pts
                for ahead in range(1, self.primer.frames_after + 1):
                    self._last_frame.pts = last + ahead * step
                    self._mux(self._stream.encode(self._last_frame))
            self._mux(self._stream.encode(None))
        finally:
            self._container.close()

    def abort(self) -> None:
        """Close without flushing (after an error); the partial output is garbage."""
        if not self._closed:
            self._closed = True
            self._container.close()

    def __enter__(self) -> SegmentEncoder:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
