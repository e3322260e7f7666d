"""The frame chain of an interpolation job: decode a segment's source frames (plus the first frame of the next
segment), make the output frames it owns (vsr.timeline), super-resolve them if asked, encode them.

Order: interpolate first, at the source size, then super-resolve every output frame. RIFE then works at the
resolution it was trained for and costs the least (its cost grows with the pixels it sees), and every output
frame, made or not, passes through the same super-resolution.

Across a scene cut (vsr.cuts) no frame is made: the nearer source frame is repeated (t <= 1/2: the earlier).
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, BinaryIO, Protocol

import numpy as np

from vsr.cuts import is_cut
from vsr.errors import CorruptInputError
from vsr.logs import get_logger
from vsr.media.decode import decode_window
from vsr.media.encode import SegmentEncoder
from vsr.media.probe import VideoInfo
from vsr.media.safety import Source
from vsr.planning import Segment
from vsr.request import TimeRequest
from vsr.settings import EncodeSettings
from vsr.timeline import OutFrame, Timeline

log = get_logger(__name__)


class MidpointMaker(Protocol):
    def midpoint(self, a: np.ndarray, b: np.ndarray) -> np.ndarray: ...


class UpscalerLike(Protocol):
    scale: int

    def upscale(self, batch: np.ndarray) -> np.ndarray: ...


@dataclass
class ChainResult:
    frames: int
    made: int  # frames made by the interpolation model
    repeated_at_cuts: int
    cuts: list[int] = field(default_factory=list)  # source interval indices (frame i to i+1) that are cuts
    decode_s: float = 0.0
    interpolate_s: float = 0.0
    infer_s: float = 0.0
    encode_s: float = 0.0
    wall_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def output_info(info: VideoInfo, timeline: Timeline, request: TimeRequest) -> VideoInfo:
    """The VideoInfo of the output video stream: what the encoder and the join check the segments against."""
    return dataclasses.replace(
        info,
        time_base=timeline.time_base,
        pts=timeline.pts,
        frame_count=len(timeline.frames),
        average_rate=timeline.rate,
        base_rate=timeline.rate,
        is_vfr=info.is_vfr,
        last_frame_duration=timeline.last_frame_duration,
        audio=[] if request.audio == "dropped" else info.audio,
    )


def make_frames(
    sources: list[np.ndarray],
    first_index: int,
    wanted: list[OutFrame],
    interpolator: MidpointMaker,
    cut_threshold: float,
) -> tuple[list[np.ndarray], int, int, list[int]]:
    """The images of `wanted` from source frames first_index.. (sources[0] is frame first_index): (images, made,
    repeated, cut intervals). Each interval's midpoints are made once, recursively, and reused."""
    cache: dict[tuple[int, Fraction], np.ndarray] = {}
    cuts: dict[int, bool] = {}
    made = repeated = 0

    def at(i: int, t: Fraction) -> np.ndarray:
        nonlocal made
        if t == 0:
            return sources[i - first_index]
        if t == 1:
            return sources[i + 1 - first_index]
        key = (i, t)
        if key not in cache:
            half = Fraction(1, t.denominator)
            cache[key] = interpolator.midpoint(at(i, t - half), at(i, t + half))
            made += 1
        return cache[key]

    images = []
    for frame in wanted:
        if frame.t == 0:
            images.append(at(frame.index, frame.t))
            continue
        if frame.index not in cuts:
            a, b = sources[frame.index - first_index], sources[frame.index + 1 - first_index]
            cuts[frame.index] = is_cut(a, b, cut_threshold)
        if cuts[frame.index]:
            repeated += 1
            images.append(at(frame.index, Fraction(0) if frame.t <= Fraction(1, 2) else Fraction(1)))
        else:
            images.append(at(frame.index, frame.t))
    return images, made, repeated, sorted(i for i, c in cuts.items() if c)


def process_interpolated_segment(
    source: Source,
    segment: Segment,
    info: VideoInfo,
    timeline: Timeline,
    request: TimeRequest,
    interpolator: MidpointMaker,
    upscaler: UpscalerLike | None,
    output: str | os.PathLike[str] | BinaryIO,
    *,
    encode: EncodeSettings,
    cut_threshold: float,
    on_frames: Callable[[int], None] | None = None,
) -> ChainResult:
    """Make and encode the output frames `segment` owns (its source intervals; the last segment also the final
    frame). Reads the segment's frames and the first frame of the next segment, interval by interval: at most two
    source frames and one interval's made frames are held at a time, whatever the segment's length."""
    from vsr.segment import from_float, to_float

    started = time.perf_counter()
    out_info = output_info(info, timeline, request)
    start, end = segment.start_frame, segment.start_frame + segment.frame_count
    wanted = timeline.owned_by(start, end, info.frame_count)
    count = min(segment.frame_count + 1, info.frame_count - start)
    result = ChainResult(frames=0, made=0, repeated_at_cuts=0)
    decoded = decode_window(source, segment.start_pts, count)
    window: dict[int, np.ndarray] = {}
    next_index = start

    def source_frame(i: int) -> np.ndarray:
        """Source frame i, decoding forward; frames before i are let go."""
        nonlocal next_index
        clock = time.perf_counter()
        while next_index <= i:
            frame = next(decoded, None)
            if frame is None or (next_index == start and frame.pts != segment.start_pts):
                raise CorruptInputError(
                    f"segment {segment.index}: expected {count} frames from pts {segment.start_pts}"
                )
            window[next_index] = frame.image
            next_index += 1
        for old in [k for k in window if k < i]:
            del window[old]
        result.decode_s += time.perf_counter() - clock
        return window[i]

    scale = upscaler.scale if upscaler is not None else 1
    encoder = SegmentEncoder(output, info=out_info, scale=scale, encode=encode)
    try:
        for index, members in itertools.groupby(wanted, key=lambda f: f.index):
            group = list(members)
            sources = [source_frame(index)]
            if any(f.t != 0 for f in group):
                sources.append(source_frame(index + 1))
            clock = time.perf_counter()
            images, made, repeated, cuts = make_frames(sources, index, group, interpolator, cut_threshold)
            result.interpolate_s += time.perf_counter() - clock
            result.made += made
            result.repeated_at_cuts += repeated
            result.cuts += cuts
            for frame, image in zip(group, images, strict=True):
                if upscaler is not None:
                    clock = time.perf_counter()
                    image = from_float(upscaler.upscale(to_float([image])), image.dtype)[0]
                    result.infer_s += time.perf_counter() - clock
                clock = time.perf_counter()
                encoder.write(image, frame.pts)
                result.encode_s += time.perf_counter() - clock
                result.frames += 1
            if on_frames is not None:
                on_frames(1)  # progress counts source frames (intervals), as the job's frame count does
        clock = time.perf_counter()
        encoder.close()
        result.encode_s += time.perf_counter() - clock
    except BaseException:
        encoder.abort()
        raise
    finally:
        close = getattr(decoded, "close", None)
        if close is not None:
            close()
    result.wall_s = time.perf_counter() - started
    log.info("chain.segment_done", segment=segment.index, **{k: v for k, v in result.to_dict().items() if k != "cuts"})
    return result


# --- planning and the single-machine path ----------------------------------------------------------------
def effective_cost(cost: Any, request: TimeRequest, made_frame_macs_per_pixel: float) -> Any:
    """The job's model cost per SOURCE frame pixel, for the one planner (vsr.planning): per source frame, `factor`
    output frames are super-resolved (none with --scale 1) and factor - 1 are made by the interpolation model,
    whose measured cost (settings interpolation.made_frame_macs_per_pixel: equivalent multiply-adds, measured
    against the x2 SR model on the same engine) is priced like the SR model's on both tiers."""
    from vsr.admission import ModelCost

    if not request.active:
        return cost
    n = request.factor if request.fps is None else 2  # fps targets: about two outputs per source frame
    sr = 0.0 if request.scale == 1 else float(cost.macs_per_input_pixel) * n
    return ModelCost(
        name=f"{cost.name}+rife" if request.scale != 1 else "rife",
        scale=1 if request.scale == 1 else cost.scale,
        macs_per_input_pixel=sr + (n - 1) * made_frame_macs_per_pixel,
    )


def interpolate_file(
    input: str | os.PathLike[str],
    output: str | os.PathLike[str],
    request: TimeRequest,
    *,
    model: str | None = None,
    precision: str | None = None,
    segment_frames: int | None = None,
    tile: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """`vsr upscale --interpolate/--fps/--slowmo`: the same chain a worker runs, segment by segment, joined."""
    import shutil
    import tempfile
    from pathlib import Path

    from vsr.admission import ModelCost, model_cost, plan_for
    from vsr.errors import InputError, PermanentError
    from vsr.media.concat import join_segments
    from vsr.media.encode import SEGMENT_FORMAT
    from vsr.media.probe import probe
    from vsr.models.registry import resolve_interpolation
    from vsr.models.rife.runner import get_interpolator
    from vsr.planning import plan_segments
    from vsr.request import InterpolationLimits
    from vsr.settings import get_settings
    from vsr.timeline import build

    started = time.perf_counter()
    settings = get_settings()
    isettings = settings.interpolation
    source, target = Path(input), Path(output)
    if not source.is_file():
        raise InputError(f"no such file: {source}")
    if target.exists() and target.resolve() == source.resolve():
        raise PermanentError("the output file would overwrite the input; choose another output name")
    info = probe(source)
    upscaler = None
    scale = 1
    model_name = "none"
    sr_macs = 0
    if request.scale != 1:
        from vsr.engine import get_upscaler
        from vsr.models.registry import resolve_model

        sr_model = resolve_model(
            model or (None if request.scale else settings.model_name),
            request.scale,
            precision or settings.precision,
            strict=precision is not None,
            gflops_per_vcpu=settings.worker_capacity.gflops_per_vcpu,
        )
        upscaler = get_upscaler(
            sr_model,
            tile=settings.tile if tile is None else tile,
            tile_overlap=settings.tile_overlap,
            guard_max_clipped=settings.int8_guard.max_clipped_channels,
        )
        scale, model_name = sr_model.scale, sr_model.name
        sr_macs = model_cost(
            sr_model.name, sr_model.scale, sr_model.macs_per_input_pixel, sr_model.precision, settings.int8_guard
        ).macs_per_input_pixel
    limits = InterpolationLimits(isettings.max_output_fps, isettings.max_output_pixel_rate)
    request.check_against(info.average_rate or info.base_rate, info.width, info.height, scale, limits)
    interp_model = resolve_interpolation(isettings.model)
    interpolator = get_interpolator(str(interp_model.path), isettings.scale_lists)
    line = build(
        info.pts,
        info.time_base,
        request,
        rate=info.average_rate or info.base_rate,
        last_frame_duration=info.last_frame_duration,
    )
    out_info = output_info(info, line, request)
    if segment_frames:
        segments = plan_segments(info.pts, segment_frames, 0)
    else:
        cost = effective_cost(
            ModelCost(name=model_name, scale=scale, macs_per_input_pixel=sr_macs),
            request,
            isettings.made_frame_macs_per_pixel,
        )
        segments = plan_for(info, cost, settings, "cost", concurrency=1, tier="lambda").segments
    bar = None
    if progress:
        try:
            from tqdm import tqdm

            bar = tqdm(total=info.frame_count, unit="frame", desc="interpolating", dynamic_ncols=True)
        except ImportError:
            bar = None
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="vsr-interpolate-", dir=target.parent))
    results: list[ChainResult] = []
    try:
        parts = []
        for segment in segments:
            part = work / f"{segment.index:05d}.{SEGMENT_FORMAT}"
            results.append(
                process_interpolated_segment(
                    source,
                    segment,
                    info,
                    line,
                    request,
                    interpolator,
                    upscaler,
                    part,
                    encode=settings.encode_settings,
                    cut_threshold=isettings.cut_threshold,
                    on_frames=bar.update if bar else None,
                )
            )
            parts.append(part)
        partial = work / "output.mp4"
        join_segments(parts, source, out_info, partial, settings.encode_settings, audio=request.audio == "kept")
        os.replace(partial, target)
    finally:
        if bar is not None:
            bar.close()
        shutil.rmtree(work, ignore_errors=True)
    report = {
        "input": str(source),
        "output": str(target),
        "request": request.to_dict(),
        "model": model_name,
        "interpolation_model": interp_model.name,
        "scale": scale,
        "frames_in": info.frame_count,
        "frames": out_info.frame_count,
        "made": sum(r.made for r in results),
        "cuts": sorted({c for r in results for c in r.cuts}),
        "repeated_at_cuts": sum(r.repeated_at_cuts for r in results),
        "segments": len(segments),
        "audio": request.audio if info.audio else "none in the source",
        "note": line.note,
        "size_in": f"{info.width}x{info.height}",
        "size_out": f"{info.width * scale}x{info.height * scale}",
        "wall_s": time.perf_counter() - started,
    }
    log.info("interpolate.done", **{k: v for k, v in report.items() if k not in ("request", "cuts")})
    return report


def summary_line(report: dict[str, Any]) -> str:
    request = {k: v for k, v in report["request"].items() if v not in (None, 1)}
    cuts = f", cuts at source pairs {report['cuts']} (nearer frame repeated)" if report["cuts"] else ""
    note = f"; note: {report['note']}" if report["note"] else ""
    return (
        f"{report['output']}: {report['frames_in']} -> {report['frames']} frames ({report['made']} made by "
        f"{report['interpolation_model']}{cuts}), {report['size_in']} -> {report['size_out']} "
        f"(super-resolution: {report['model']}), {report['segments']} segments, audio {report['audio']}, "
        f"request {request}, in {report['wall_s']:.1f} s{note}"
    )
