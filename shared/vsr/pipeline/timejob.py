"""Frame interpolation in the serverless pipeline: what ingest records, what a worker runs, what assembly joins.

The job's TimeRequest (vsr.request) is parsed once at ingest from the upload's S3 metadata and rides in the
job's `model` block (so in every segment message) as `time`, beside the key of the interpolation model in the
models bucket. Every worker rebuilds the same output timeline from the probe (vsr.timeline: pure, so all agree)
and makes the output frames its segment owns; assembly joins them against that timeline.
"""

from __future__ import annotations

import dataclasses
import posixpath
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vsr.chain import output_info, process_interpolated_segment
from vsr.media.probe import VideoInfo
from vsr.planning import Segment
from vsr.request import InterpolationLimits, TimeRequest, from_metadata
from vsr.settings import Settings
from vsr.timeline import build

SCALE_KEY = "vsr-scale"
CUT_PREFIX = "cut_"  # segment metadata key of a source pair (i, i+1) found to be a scene cut
MAX_CUTS_PER_SEGMENT = 40


def interpolation_key(model_key: str, name: str) -> str:
    """The interpolation model's key: beside the super-resolution model in the models bucket."""
    return posixpath.join(posixpath.dirname(model_key), f"{name}.onnx")


def request_from_upload(metadata: Mapping[str, str] | None, model_scale: int) -> TimeRequest:
    """The upload's TimeRequest; `vsr-scale: 1` asks for interpolation without super-resolution."""
    from vsr.errors import BadRequestError

    request = from_metadata(metadata)
    raw = {k.lower(): v for k, v in (metadata or {}).items()}.get(SCALE_KEY)
    if raw is None or raw.strip() == "":
        return request
    if raw.strip() not in ("1", str(model_scale)):
        raise BadRequestError(f"{SCALE_KEY}={raw!r} is not offered here; use 1 (no super-resolution) or {model_scale}")
    scale = int(raw.strip())
    if scale == 1 and not request.active:
        raise BadRequestError(f"{SCALE_KEY}=1 without vsr-interpolate, vsr-fps or vsr-slowmo would do nothing")
    return dataclasses.replace(request, scale=scale)


def check(request: TimeRequest, info: VideoInfo, model_scale: int, settings: Settings) -> None:
    if request.active and info.field_rate:  # the interpolation chain reads source frames, not fields
        from vsr.errors import BadRequestError

        raise BadRequestError(
            "frame interpolation cannot follow field-rate deinterlacing yet; ask for vsr-deinterlace=frame "
            "(or no interpolation)"
        )
    s = settings.interpolation
    scale = 1 if request.scale == 1 else model_scale
    limits = InterpolationLimits(s.max_output_fps, s.max_output_pixel_rate)
    request.check_against(info.average_rate or info.base_rate, info.width, info.height, scale, limits)


def job_fields(request: TimeRequest, model_key: str, settings: Settings) -> dict[str, Any]:
    """What the job's `model` block records for an interpolation job (nothing otherwise)."""
    if not request.active:
        return {}
    name = settings.interpolation.model
    return {
        "time": request.to_dict(),
        "interpolation_model": name,
        "interpolation_key": interpolation_key(model_key, name),
    }


def request_of(model: Mapping[str, Any]) -> TimeRequest:
    return TimeRequest.from_dict(model.get("time"))


def output_of(info: VideoInfo, request: TimeRequest) -> VideoInfo:
    """The output stream's VideoInfo (timestamps, time base, rate, audio) that assembly joins against."""
    line = build(
        info.pts,
        info.time_base,
        request,
        rate=info.average_rate or info.base_rate,
        last_frame_duration=info.last_frame_duration,
    )
    return output_info(info, line, request)


def run(
    reader: Any,
    segment: Segment,
    info: VideoInfo,
    request: TimeRequest,
    model_path: Path,
    upscaler: Any,
    output: Path,
    settings: Settings,
    providers: tuple[str, ...],
    on_frames: Any = None,
) -> tuple[Any, dict[str, float]]:
    """One worker segment of an interpolation job: a vsr.segment.SegmentResult counting source frames, and the
    counts the segment's metadata carries to the report (frames made, frames repeated at cuts)."""
    from vsr.models.rife.runner import get_interpolator
    from vsr.segment import SegmentResult

    s = settings.interpolation
    line = build(
        info.pts,
        info.time_base,
        request,
        rate=info.average_rate or info.base_rate,
        last_frame_duration=info.last_frame_duration,
    )
    interpolator = get_interpolator(str(model_path), s.scale_lists, providers=providers)
    result = process_interpolated_segment(
        reader,
        segment,
        info,
        line,
        request,
        interpolator,
        None if request.scale == 1 else upscaler,
        output,
        encode=settings.encode_settings,
        cut_threshold=s.cut_threshold,
        on_frames=on_frames,
    )
    counts = {"made": float(result.made), "repeated_at_cuts": float(result.repeated_at_cuts)}
    # the cuts ride in the segment object's metadata as numeric keys (S3 metadata is small: at most 40 per segment)
    counts.update({f"{CUT_PREFIX}{index}": 1.0 for index in result.cuts[:MAX_CUTS_PER_SEGMENT]})
    return SegmentResult(
        frames=segment.frame_count,  # source frames covered: what the job's progress counts
        decode_s=result.decode_s,
        infer_s=result.infer_s + result.interpolate_s,
        encode_s=result.encode_s,
        wall_s=result.wall_s,
    ), counts


def report_block(info: VideoInfo, request: TimeRequest, per_segment: list[dict[str, Any]]) -> dict[str, Any]:
    """The report's `interpolation` block: what was asked, what came out, what was made and repeated at cuts."""
    line = build(
        info.pts,
        info.time_base,
        request,
        rate=info.average_rate or info.base_rate,
        last_frame_duration=info.last_frame_duration,
    )
    return {
        "request": request.to_dict(),
        "frames_in": info.frame_count,
        "frames_out": len(line.frames),
        "made": int(sum(float(s.get("made", 0.0)) for s in per_segment)),
        "repeated_at_cuts": int(sum(float(s.get("repeated_at_cuts", 0.0)) for s in per_segment)),
        "cuts": sorted(int(k[len(CUT_PREFIX) :]) for s in per_segment for k in s if k.startswith(CUT_PREFIX)),
        "audio": request.audio if info.audio else "none in the source",
        "note": line.note,
    }


def planned_cost(cost: Any, request: TimeRequest, settings: Settings) -> Any:
    """The model cost the planner prices (vsr.chain.effective_cost with this deployment's measured settings)."""
    from vsr.chain import effective_cost

    return effective_cost(cost, request, settings.interpolation.made_frame_macs_per_pixel)
