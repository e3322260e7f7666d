"""Decode -> upscale -> encode one segment: THE code path of the worker Lambda and of `vsr upscale`.

Streaming with bounded memory: frames flow in small batches through two bounded queues (decoded input
frames, upscaled output frames), so at most a few batches of frames exist at any time, whatever the
segment length. Decoding and encoding run in background threads and overlap with inference (PyAV and ONNX
Runtime release the GIL while they work).

Context frames (`segment.context_before`) are decoded but not output. With temporal stabilisation
(`stabiliser`, settings `model.temporal` = "flow") they are upscaled too and run through the stabiliser first,
so the segment's first frame is blended with a state close to the one a single long run would have.
"""

from __future__ import annotations

import bisect
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any, BinaryIO, Protocol

import numpy as np

from vsr.errors import CorruptInputError
from vsr.guard import GuardStats
from vsr.logs import get_logger
from vsr.media import fieldrate, interlace
from vsr.media.decode import Frame, decode_window
from vsr.media.encode import Primer, SegmentEncoder
from vsr.media.geometry import SCALE, FrameConformer
from vsr.media.probe import VideoInfo
from vsr.media.safety import Source
from vsr.planning import Segment
from vsr.quality.stabilise import Stabiliser
from vsr.settings import EncodeSettings

log = get_logger(__name__)

# Frames per upscaler call. The engine works frame by frame anyway (batching does not pay on CPU), so a
# small batch only amortises Python overhead while keeping memory bounded.
BATCH_FRAMES = 2
# Batches buffered between the stages (each direction).
QUEUE_BATCHES = 2


class UpscalerLike(Protocol):
    scale: int

    def upscale(self, batch: np.ndarray) -> np.ndarray: ...


@dataclass
class SegmentResult:
    frames: int
    decode_s: float
    infer_s: float
    encode_s: float
    wall_s: float
    temporal_s: float = 0.0  # stabilisation (settings model.temporal), context frames included
    guard_px: int = 0  # input pixels a guarded int8 model upscaled (vsr.guard); 0 for any other model
    guard_recomputed_px: int = 0  # of those, recomputed in fp32 because activations clipped

    @property
    def recomputed_fraction(self) -> float:
        return self.guard_recomputed_px / self.guard_px if self.guard_px else 0.0

    def to_dict(self) -> dict[str, float | int]:
        return {**asdict(self), "recomputed_fraction": self.recomputed_fraction}


_DONE = object()


def _batches(frames: Iterable[Frame], size: int) -> Iterator[list[Frame]]:
    batch: list[Frame] = []
    for frame in frames:
        batch.append(frame)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class _Worker:
    """A background thread feeding or draining a bounded queue; its exception is re-raised in the caller."""

    def __init__(self, target: Callable[[], None], name: str) -> None:
        self.error: BaseException | None = None
        self._target = target
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self._target()
        except BaseException as exc:  # handed to the caller's thread
            self.error = exc

    def join(self) -> None:
        self.thread.join()
        if self.error is not None:
            raise self.error


def to_float(images: list[np.ndarray]) -> np.ndarray:
    """uint8 / uint16 RGB frames -> [N, H, W, 3] float32 in 0..1."""
    peak = 255.0 if images[0].dtype == np.uint8 else 65535.0
    batch = np.stack(images).astype(np.float32)
    batch *= 1.0 / peak
    return batch


def from_float(batch: np.ndarray, dtype: np.dtype[Any]) -> np.ndarray:
    """[N, H, W, 3] float 0..1 -> rounded, clipped uint8/uint16."""
    peak = 255.0 if dtype == np.uint8 else 65535.0
    scaled = batch * peak
    np.rint(scaled, out=scaled)
    np.clip(scaled, 0.0, peak, out=scaled)
    return scaled.astype(dtype)


def process_segment(
    source: Source,
    segment: Segment,
    upscaler: UpscalerLike,
    info: VideoInfo,
    output: str | os.PathLike[str] | BinaryIO,
    *,
    encode: EncodeSettings,
    crf: int | None = None,
    preset: str | None = None,
    codec: str | None = None,
    batch_frames: int = BATCH_FRAMES,
    overlap: bool = True,
    on_frames: Callable[[int], None] | None = None,
    stabiliser: Stabiliser | None = None,
    geometry_changes: str = SCALE,
    encoder_options: Mapping[str, str] | None = None,
    primer: Primer | None = None,
) -> SegmentResult:
    """Upscale `segment` of `source` into an encoded segment file at `output` (see vsr.media.encode);
    `encoder_options` are extra codec options and `primer` the frames encoded around the segment and dropped
    (both the fragmented path's, vsr.media.fragmented).

    Every frame enters the model in the job's first geometry (`info.first_geometry()`): a mid-stream change of
    size, pixel format or SAR is converted (`geometry_changes` "scale") or a GeometryChangeError ("fail")."""
    started = time.perf_counter()
    conform = FrameConformer(info.first_geometry(), geometry_changes)
    total = segment.context_before + segment.frame_count
    keep_context = stabiliser is not None  # the stabiliser warms up on the context frames
    context_left = segment.context_before if keep_context else 0
    timings = {"decode_s": 0.0, "infer_s": 0.0, "encode_s": 0.0, "temporal_s": 0.0}
    encoder = SegmentEncoder(
        output,
        info=info,
        scale=upscaler.scale,
        encode=encode,
        crf=crf,
        preset=preset,
        codec=codec,
        options=encoder_options,
        primer=primer,
    )
    inbox: queue.Queue[Any] = queue.Queue(maxsize=QUEUE_BATCHES)
    outbox: queue.Queue[Any] = queue.Queue(maxsize=QUEUE_BATCHES)
    stop = threading.Event()

    def put(q: queue.Queue[Any], item: Any, consumer: _Worker | None = None) -> bool:
        """Put unless the pipeline stopped or the consumer thread died (no deadlock on errors)."""
        while not stop.is_set() and (consumer is None or consumer.thread.is_alive()):
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def decode() -> None:
        frames = _window(source, segment, total, conform, info)
        clock = time.perf_counter()
        try:
            for batch in _batches(_skip_context(frames, segment, keep_context), batch_frames):
                item = ([f.pts for f in batch], [f.image for f in batch])
                timings["decode_s"] += time.perf_counter() - clock
                if not put(inbox, item):
                    return
                clock = time.perf_counter()
        finally:
            frames.close()
            put(inbox, _DONE)  # also after an error, which decoder.join() then raises

    def encode() -> None:
        while not stop.is_set():
            try:
                item = outbox.get(timeout=0.1)
            except queue.Empty:
                continue
            if item is _DONE:
                return
            clock = time.perf_counter()
            for pts, image in zip(*item, strict=True):
                encoder.write(image, pts)
            timings["encode_s"] += time.perf_counter() - clock

    # a guarded int8 model (vsr.guard) counts what it recomputed in fp32; any other upscaler is left alone
    guard = GuardStats() if getattr(upscaler, "guard", None) is not None else None
    written = 0
    decoder: _Worker | None = None
    writer: _Worker | None = None
    try:
        if overlap:
            decoder, writer = _Worker(decode, "vsr-decode"), _Worker(encode, "vsr-encode")
            batches: Iterator[Any] = iter(inbox.get, _DONE)
        else:
            batches = _serial_batches(source, segment, total, batch_frames, timings, keep_context, conform, info)
        for pts_list, images in batches:
            clock = time.perf_counter()
            batch = to_float(images)
            result_batch = upscaler.upscale(batch, guard) if guard is not None else upscaler.upscale(batch)
            upscaled = list(from_float(result_batch, images[0].dtype))
            timings["infer_s"] += time.perf_counter() - clock
            if stabiliser is not None:
                clock = time.perf_counter()
                upscaled = [stabiliser.step(low, high) for low, high in zip(images, upscaled, strict=True)]
                timings["temporal_s"] += time.perf_counter() - clock
                if context_left:
                    dropped = min(context_left, len(pts_list))
                    context_left -= dropped
                    pts_list, upscaled = pts_list[dropped:], upscaled[dropped:]
                    if not pts_list:
                        continue
            if writer is not None:
                if not put(outbox, (pts_list, upscaled), writer):
                    writer.join()  # the encoder thread died: raise its error
            else:
                clock = time.perf_counter()
                for pts, image in zip(pts_list, upscaled, strict=True):
                    encoder.write(image, pts)
                timings["encode_s"] += time.perf_counter() - clock
            written += len(pts_list)
            if on_frames is not None:
                on_frames(len(pts_list))
        if decoder is not None and writer is not None:
            decoder.join()
            put(outbox, _DONE, writer)
            writer.join()
        if written != segment.frame_count:
            raise CorruptInputError(
                f"the video ended early: segment {segment.index} expected {segment.frame_count} frames, got {written}"
            )
        clock = time.perf_counter()
        encoder.close()
        timings["encode_s"] += time.perf_counter() - clock
    except BaseException:
        stop.set()
        for worker in (decoder, writer) if overlap else ():
            if worker is not None:
                worker.thread.join()
        encoder.abort()
        raise
    finally:
        stop.set()
    result = SegmentResult(frames=written, wall_s=time.perf_counter() - started, **timings)
    if guard is not None:
        result.guard_px, result.guard_recomputed_px = guard.pixels, guard.recomputed
    log.info(
        "segment.done",
        segment=segment.index,
        frames_converted=conform.converted,
        **{k: round(v, 3) for k, v in result.to_dict().items()},
    )
    return result


def _skip_context(frames: Iterable[Frame], segment: Segment, keep: bool = False) -> Iterator[Frame]:
    """Drop the context frames (unless `keep`); the first output frame must be the segment's first frame."""
    for index, frame in enumerate(frames):
        if index == segment.context_before and frame.pts != segment.start_pts:
            raise CorruptInputError(f"segment {segment.index} does not start at pts {segment.start_pts}")
        if keep or index >= segment.context_before:
            yield frame


def input_frames(
    source: Source, info: VideoInfo, start_frame: int, count: int, conform: FrameConformer
) -> Iterator[Frame]:
    """Output frames [start_frame, start_frame + count) as the model sees them, before upscaling: decoded,
    deinterlaced when the job says so (at its rate), in the job's first geometry. The job's quality check
    reads its input pairs through this, so its bicubic baseline is of the same pictures as the model's."""
    span = Segment(
        index=0,
        start_frame=start_frame,
        frame_count=count,
        start_pts=int(info.pts[start_frame]),
        end_pts=None,
        context_before=0,
        context_start_pts=int(info.pts[start_frame]),
    )
    return _window(source, span, count, conform, info)


def _window(source: Source, segment: Segment, total: int, conform: FrameConformer, info: VideoInfo) -> Iterator[Frame]:
    """The segment's decoded frames (context included); deinterlaced by bwdif when the job says so, reading
    the neighbouring frame before the window too (vsr.media.decode)."""
    parity = info.deinterlace_parity
    if parity and info.field_rate:
        return _field_window(source, segment, total, conform, info, parity)
    previous = None
    if parity:
        at = bisect.bisect_left(info.pts, segment.context_start_pts)
        previous = info.pts[at - 1] if at > 0 else None
    return decode_window(source, segment.context_start_pts, total, conform, deinterlace=parity, previous_pts=previous)


def _field_window(
    source: Source, segment: Segment, total: int, conform: FrameConformer, info: VideoInfo, parity: str
) -> Iterator[Frame]:
    """A field-rate job's window: `info` is the output's timeline (vsr.media.fieldrate), so the segment's
    `total` output frames (context included) come from the source frames holding their fields, deinterlaced
    two frames each; a window may start at a second field. Frames are stamped from the output's table (the
    first field's pts must agree with bwdif's, which checks that the window lines up)."""
    first_out = segment.start_frame - segment.context_before
    first, count, skip = fieldrate.source_span(first_out, total)
    src = fieldrate.source_pts(info)
    previous = src[first - 1] if first > 0 else None
    frames = decode_window(
        source, src[first], count, conform, deinterlace=parity, previous_pts=previous, rate=interlace.FIELD
    )
    try:
        for offset, frame in enumerate(frames):
            index = first * fieldrate.FIELDS_PER_FRAME + offset
            if index % fieldrate.FIELDS_PER_FRAME == 0 and frame.pts != info.pts[index]:
                raise CorruptInputError(
                    f"segment {segment.index}: the deinterlaced frame at pts {frame.pts} is not output frame {index}"
                )
            if offset >= skip:
                if index >= first_out + total:
                    return
                yield Frame(pts=info.pts[index], image=frame.image)
    finally:
        frames.close()


def _serial_batches(
    source: Source,
    segment: Segment,
    total: int,
    batch_frames: int,
    timings: dict[str, float],
    keep_context: bool,
    conform: FrameConformer,
    info: VideoInfo,
) -> Iterator[tuple[list[int], list[np.ndarray]]]:
    frames = _window(source, segment, total, conform, info)
    batches = _batches(_skip_context(frames, segment, keep_context), batch_frames)
    while True:
        clock = time.perf_counter()
        batch = next(batches, None)
        timings["decode_s"] += time.perf_counter() - clock
        if batch is None:
            return
        yield [f.pts for f in batch], [f.image for f in batch]
