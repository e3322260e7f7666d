"""Whether a probed upload becomes a job, and with which plan: the checks ingest and `vsr plan` share.

Reads settings at this edge and hands typed values to the pure planner (vsr.planning), so `vsr plan` agrees
exactly with what ingest then does for the same file and settings.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, cast

from vsr.assembly_path import FRAGMENTED, AssemblyChoice, NoAssemblyPath, choose_path, predict_output_bytes
from vsr.errors import BadRequestError, CostLimitError, GeometryChangeError, LimitExceededError
from vsr.fleet import FleetSample, GpuFleet, simulate_fleet, task_timeline
from vsr.media.encode import REENCODE, join_mode
from vsr.media.fragmented import FRAGMENT_AUDIO_CODECS
from vsr.media.geometry import FAIL, change_reason
from vsr.media.probe import VideoInfo
from vsr.media.profiles import AUTO, DeliveryProfile, Hdr10, choose_profile
from vsr.media.safety import ALLOWED_FORMATS
from vsr.planning import STRATEGIES, JobPlan, PlanChoice, Strategy, plan_job, seconds_per_frame
from vsr.settings import TIERS, Int8Guard, Limits, Settings

# S3 user metadata a user may set on an upload (`aws s3 cp --metadata vsr-plan=cost`); S3 lower-cases names.
PLAN_METADATA_KEY = "vsr-plan"
# What a user may ask for: the two extremes of the default cost bound.
REQUESTABLE_STRATEGIES: tuple[Strategy, ...] = ("latency", "cost")
# `--metadata vsr-tier=gpu` forces the worker tier (else the planner chooses among the deployment's tiers).
TIER_METADATA_KEY = "vsr-tier"
MAX_LISTED_CHANGES = 50  # geometry change points kept in the job record and its report (the count is exact)


@dataclass(frozen=True)
class ModelCost:
    """What planning needs to know of a model: its scale and multiply-adds per input pixel."""

    name: str
    scale: int
    macs_per_input_pixel: float


def model_cost(name: str, scale: int, macs_per_input_pixel: float, precision: str, guard: Int8Guard) -> ModelCost:
    """What the planner assumes a model costs: an int8 variant's multiply-adds count `guard.cost_factor` of
    fp32's (its measured relative speed plus the expected share the saturation guard recomputes in fp32,
    settings `model.int8_guard`); an fp32 model's count in full."""
    factor = guard.cost_factor if precision == "int8" else 1.0
    return ModelCost(name=name, scale=scale, macs_per_input_pixel=float(macs_per_input_pixel) * factor)


def requested_strategy(metadata: Mapping[str, str] | None) -> Strategy:
    """The plan strategy an upload asks for through its user metadata; `default` when it asks for none."""
    value = {k.lower(): v for k, v in (metadata or {}).items()}.get(PLAN_METADATA_KEY)
    if value is None or value.strip() == "":
        return "default"
    wanted = value.strip().lower()
    if wanted not in REQUESTABLE_STRATEGIES:
        raise BadRequestError(
            f"the upload's metadata {PLAN_METADATA_KEY}={value!r} is not understood; use "
            f"{' or '.join(REQUESTABLE_STRATEGIES)} (or leave it out for the default plan)"
        )
    return cast(Strategy, wanted)


def requested_tier(metadata: Mapping[str, str] | None, enabled: tuple[str, ...]) -> str | None:
    """The worker tier an upload forces through its user metadata; None lets the planner choose."""
    value = {k.lower(): v for k, v in (metadata or {}).items()}.get(TIER_METADATA_KEY)
    if value is None or value.strip() == "":
        return None
    wanted = value.strip().lower()
    if wanted not in TIERS:
        raise BadRequestError(
            f"the upload's metadata {TIER_METADATA_KEY}={value!r} is not understood; use {' or '.join(TIERS)} "
            "(or leave it out to let the planner choose)"
        )
    if wanted not in enabled:
        raise BadRequestError(
            f"the upload asks for the {wanted} tier ({TIER_METADATA_KEY}={value}), which this deployment does not "
            "have; enable the GPU fleet (Terraform gpu_fleet_enabled = true, settings gpu.enabled) or leave it out"
        )
    return wanted


def delivery_for(info: VideoInfo, scale: int, requested: str, settings: Settings) -> DeliveryProfile:
    """The job's delivery profile: `requested` (a codec or auto; settings delivery.default_codec when auto is
    the settings' default too) for this source, at its output size."""
    if requested == AUTO:
        requested = settings.delivery_default_codec
    return choose_profile(
        requested,
        bit_depth=info.bit_depth,
        color_trc=info.color_trc,
        hdr10=Hdr10.from_dict(info.hdr10),
        width=info.width * scale,
        height=info.height * scale,
        codecs=settings.delivery_codecs,
    )


def check_delivery(info: VideoInfo, scale: int, profile: DeliveryProfile, settings: Settings) -> None:
    """Refuse (LimitExceededError, a user-facing reason) a delivery the assembler cannot write: an encode that
    does not fit its time (only H.264 has the remux path for outputs beyond it), or an output that does not fit
    its /tmp (estimated from the codec's measured bytes per output megapixel; H.264 keeps its behaviour from
    before delivery profiles)."""
    megapixels = info.frame_count * info.width * info.height * scale * scale / 1e6
    limit = settings.reencode_max_megapixels(profile.codec)
    if profile.codec != "h264" and settings.encode_settings.join != "reencode":
        raise LimitExceededError(
            f"this deployment joins segments by remux (settings encode.join), which delivers H.264 only; "
            f"a {profile.codec} delivery needs encode.join = reencode: use vsr-codec=h264 or leave it out"
        )
    if profile.codec != "h264" and megapixels > limit:
        raise LimitExceededError(
            f"a {profile.codec} delivery of {megapixels:,.0f} output megapixels does not fit the assembler's one "
            f"encode (up to {limit:,.0f} at its measured speed); use vsr-codec=h264, or a shorter or smaller video"
        )
    if profile.codec == "h264":
        return  # as before profiles; outputs beyond the assembler's disk are the fragmented path's (films issue)
    predicted = megapixels * settings.delivery_codec(profile.codec).bytes_per_output_mpix
    disk = settings.function("assemble").ephemeral_storage_mb * 1024 * 1024
    budget = disk * 0.9 / 2  # the output and the downloaded segments (about its size) share /tmp
    if predicted > budget:
        raise LimitExceededError(
            f"a {profile.codec} output of about {predicted / 1e9:.1f} GB does not fit the assembler's /tmp "
            f"({disk / 1e9:.1f} GB); ask for a smaller codec (vsr-codec=hevc or av1), or a shorter video"
        )


def duration_s(info: VideoInfo) -> float:
    """The video's duration: container duration, or the pts span when the container does not say."""
    if info.duration_s:
        return float(info.duration_s)
    if len(info.pts) >= 2:
        step = info.pts[-1] - info.pts[-2]
        return float(Fraction(info.pts[-1] - info.pts[0] + step) * info.time_base)
    return 0.0


def limit_reason(info: VideoInfo, scale: int, limits: Limits) -> str | None:
    """None when the video is within `limits`, else the user-facing reason."""
    if info.size_bytes > limits.max_input_bytes:
        return f"the file is {info.size_bytes / 1e9:.2f} GB; the limit is {limits.max_input_bytes / 1e9:.2f} GB"
    if info.format_name not in ALLOWED_FORMATS:
        return f"container format {info.format_name!r} is not accepted"
    duration = duration_s(info)
    if duration > limits.max_duration_s:
        return f"the video lasts {duration:.0f} s; the limit is {limits.max_duration_s:.0f} s"
    if info.frame_count > limits.max_frames:
        return f"the video has {info.frame_count} frames; the limit is {limits.max_frames}"
    pixels = info.width * info.height
    if pixels > limits.max_input_pixels:
        return f"frames of {info.width}x{info.height} exceed the input limit of {limits.max_input_pixels} pixels"
    for change in info.changes():  # a later, larger picture is decoded at its own size before it is scaled
        size = change.geometry.width * change.geometry.height
        if size > limits.max_input_pixels:
            return (
                f"from {change.time_s:.3f} s the frames are {change.geometry.width}x{change.geometry.height}, "
                f"beyond the input limit of {limits.max_input_pixels} pixels"
            )
    if pixels * scale * scale > limits.max_output_pixels:
        return (
            f"x{scale} output of {info.width * scale}x{info.height * scale} exceeds the output limit of "
            f"{limits.max_output_pixels} pixels"
        )
    return None


def check_limits(info: VideoInfo, scale: int, limits: Limits) -> None:
    """Raise LimitExceededError (a user-facing reason) if the video is outside the service's limits."""
    reason = limit_reason(info, scale, limits)
    if reason:
        raise LimitExceededError(reason)


TIER_NAMES = {"lambda": "Lambda", "gpu": "the GPU fleet"}
ENABLE_GPU = "deploy it with Terraform gpu_fleet_enabled = true (settings gpu.enabled)"


def admissible_tiers(info: VideoInfo, scale: int, settings: Settings, tier: str | None = None) -> tuple[str, ...]:
    """The deployment's tiers (or the forced `tier`) whose limits (settings `limits`, `gpu.limits`) admit the
    video. None does: LimitExceededError with each tier's reason, and, where only the GPU tier that this
    deployment lacks would take it, a reason that names it as the way to run it."""
    tiers = (tier,) if tier else settings.enabled_tiers()
    reasons = {t: limit_reason(info, scale, settings.limits_for(t)) for t in tiers}
    admitted = tuple(t for t in tiers if reasons[t] is None)
    if admitted:
        return admitted
    if len(tiers) == 1:
        reason = str(reasons[tiers[0]])
    else:
        reason = "; ".join(f"on {TIER_NAMES[t]}, {reasons[t]}" for t in tiers)
    if "gpu" not in settings.enabled_tiers() and limit_reason(info, scale, settings.limits_for("gpu")) is None:
        gpu = settings.limits_for("gpu")
        reason += (
            f" on Lambda; the GPU tier takes videos up to {gpu.max_duration_s:.0f} s and {gpu.max_frames} frames: "
            f"{ENABLE_GPU}"
        )
    raise LimitExceededError(reason)


def check_geometry_changes(info: VideoInfo, mode: str) -> None:
    """With settings input.geometry_changes "fail", a stream that changes size, pixel format or SAR is refused
    at ingest with the first change in the reason; "scale" converts such frames (vsr.media.geometry)."""
    changes = info.changes()
    if mode == FAIL and changes:
        raise GeometryChangeError(change_reason(info.first_geometry(), changes[0]))


def cost_verdict(plan: PlanChoice, limits: Limits) -> str | None:
    """None when the plan's predicted cost is within the limit (of the plan's tier), else the user-facing reason."""
    if plan.predicted_cost_usd <= limits.max_job_cost_usd:
        return None
    where = f"{plan.instance_type} GPU fleet" if plan.tier == "gpu" else f"Lambda {plan.arch}"
    hint = "" if plan.tier == "gpu" else "; the GPU tier (Terraform gpu_fleet_enabled) costs far less for long videos"
    setting = "gpu.limits.max_job_cost_usd" if plan.tier == "gpu" else "limits.max_job_cost_usd"
    return (
        f"the job's predicted cost is ${plan.predicted_cost_usd:.2f} ({plan.segments} segments, "
        f"{where}), above the limit of ${limits.max_job_cost_usd:.2f}; raise {setting} in "
        f"settings.json (or VSR_SETTINGS_OVERRIDES) to accept it, or upload a shorter or smaller video{hint}"
    )


def check_cost(plan: PlanChoice, limits: Limits) -> None:
    reason = cost_verdict(plan, limits)
    if reason:
        raise CostLimitError(reason)


@dataclass(frozen=True)
class Admission:
    """What admission decided for one video: the plan (over the tiers whose limits admit it) and, when the
    chosen plan is over its tier's cost limit, the reason (ingest refuses it; `vsr plan` prints it)."""

    plan: JobPlan
    refusal: str | None

    @property
    def accepted(self) -> bool:
        return self.refusal is None


def admit(
    info: VideoInfo,
    model: ModelCost,
    settings: Settings,
    strategy: Strategy = "default",
    *,
    tier: str | None = None,
    concurrency: int | None = None,
    architecture: str | None = None,
    codec: str = "h264",
) -> Admission:
    """THE admission of ingest and `vsr plan`: each tier's limits, the plan over the tiers that admit the video,
    and the chosen tier's cost limit. When the pooled choice is over its tier's cost limit but another tier's
    plan of the same strategy is within its own, that tier is planned alone (a film goes to the fleet whose
    limit is made for it, not refused for Lambda's). Raises LimitExceededError when no tier admits it."""
    tiers = admissible_tiers(info, model.scale, settings, tier)

    def planned(over: Sequence[str]) -> JobPlan:
        return plan_for(
            info,
            model,
            settings,
            strategy,
            concurrency=concurrency,
            architecture=architecture,
            tiers=over,
            codec=codec,
        )

    job_plan = planned(tiers)
    refusal = cost_verdict(job_plan.chosen, settings.limits_for(job_plan.chosen.tier))
    if refusal:
        for other, by_strategy in job_plan.tier_options.items():
            if (
                other != job_plan.chosen.tier
                and cost_verdict(by_strategy[strategy], settings.limits_for(other)) is None
            ):
                job_plan = planned((other,))
                refusal = None
                break
    return Admission(
        plan=with_assembly(job_plan, assembly_for(info, model, settings, len(job_plan.segments))), refusal=refusal
    )


def assembly_for(info: VideoInfo, model: ModelCost, settings: Settings, segments: int) -> AssemblyChoice:
    """The assembly path of a job (vsr.assembly_path): its output size predicted from the delivery's measured
    rate, checked against each path's capacity. LimitExceededError when no path can assemble it."""
    output_mpix = info.width * info.height * model.scale**2 / 1e6
    predicted = predict_output_bytes(info.frame_count, output_mpix, settings.output_model)
    reencode = join_mode(info, model.scale, settings.encode_settings) == REENCODE
    try:
        choice = choose_path(predicted, segments, settings.assembly_capacity(reencode))
    except NoAssemblyPath as exc:
        raise LimitExceededError(str(exc)) from exc
    if choice.path == FRAGMENTED:
        recoded = sorted({a.codec for a in info.audio if a.codec not in FRAGMENT_AUDIO_CODECS})
        if recoded:
            raise LimitExceededError(
                f"the output is predicted at {predicted / 1e9:.2f} GB, so it is joined as fragmented MP4, which "
                f"copies the source's audio as it is; its {', '.join(recoded)} audio would have to be re-encoded: "
                "convert the audio to AAC first"
            )
    return choice


def with_assembly(job_plan: JobPlan, choice: AssemblyChoice) -> JobPlan:
    """The plan with the job's assembly path on its chosen plan and options (the job records the chosen one)."""
    fields = {"assembly": choice.path, "output_bytes": choice.predicted_bytes, "assembly_reason": choice.reason}
    return dataclasses.replace(
        job_plan,
        chosen=dataclasses.replace(job_plan.chosen, **fields),
        options={name: dataclasses.replace(option, **fields) for name, option in job_plan.options.items()},
    )


def plan_for(
    info: VideoInfo,
    model: ModelCost,
    settings: Settings,
    strategy: Strategy = "default",
    *,
    concurrency: int | None = None,
    architecture: str | None = None,
    tier: str | None = None,
    codec: str = "h264",
    tiers: Sequence[str] | None = None,
) -> JobPlan:
    """The job's plan from the settings (the worker's capacity, latency model and prices), over the deployment's
    tiers (settings gpu.enabled), or only `tier` when the job forces one, or over `tiers` (admission's)."""
    if strategy not in STRATEGIES:
        raise BadRequestError(f"unknown plan strategy {strategy!r}; use one of {', '.join(STRATEGIES)}")
    capacity = settings.worker_capacity
    if concurrency is not None:
        capacity = dataclasses.replace(capacity, concurrency=concurrency)
    sizes = settings.function_sizes
    if architecture is not None:
        sizes = dataclasses.replace(sizes, architecture=architecture)
    spf = seconds_per_frame(
        info.width,
        info.height,
        macs_per_input_pixel=model.macs_per_input_pixel,
        gflops_per_vcpu=capacity.gflops_per_vcpu,
        vcpus=capacity.vcpus,
    )
    # bwdif before the model, on every frame (vsr.media.interlace); at field rate `info` counts output frames,
    # one per field, so the model's work and bwdif's are both priced twice per source frame
    if info.deinterlace_parity:
        spf += settings.latency.deinterlace_s_per_input_mpix * info.width * info.height / 1e6
    output_mpix = info.width * info.height * model.scale**2 / 1e6
    if tiers is None:
        tiers = (tier,) if tier else settings.enabled_tiers()
    fleet = fleet_for(info, model, settings) if "gpu" in tiers else None
    return plan_job(
        info.pts,
        seconds_per_frame=spf,
        policy=settings.segment_policy,
        capacity=capacity,
        latency=settings.latency,
        pricing=settings.pricing,
        sizes=sizes,
        strategy=strategy,
        output_mpix_per_frame=output_mpix,
        assembly=settings.assembly_work_for(codec),  # the delivery encoder's measured speed
        temporal_s_per_frame=_temporal_s_per_frame(settings, output_mpix),
        gpu=fleet,
        tiers=tiers,
    )


def _temporal_s_per_frame(settings: Settings, output_mpix: float) -> float:
    return settings.latency.temporal_s_per_output_mpix * output_mpix if settings.temporal == "flow" else 0.0


def fleet_for(info: VideoInfo, model: ModelCost, settings: Settings) -> GpuFleet:
    """The GPU fleet as the planner sees it for this video (settings `gpu`)."""
    return GpuFleet.for_job(
        settings.gpu,
        width=info.width,
        height=info.height,
        scale=model.scale,
        macs_per_input_pixel=model.macs_per_input_pixel,
        min_frames=settings.segment_policy.min_frames,
    )


def fleet_timeline(info: VideoInfo, model: ModelCost, settings: Settings, plan: JobPlan) -> list[FleetSample]:
    """The fleet's task count over a GPU plan's run, from zero (the same simulation the planner priced)."""
    fleet = fleet_for(info, model, settings)
    output_mpix = info.width * info.height * model.scale**2 / 1e6
    run = simulate_fleet(
        [s.frame_count for s in plan.segments],
        fleet,
        settings.latency,
        output_mpix_per_frame=output_mpix,
        assembly=settings.assembly_work,
        context_frames=settings.segment_policy.context_frames if settings.temporal == "flow" else 0,
        temporal_s_per_frame=_temporal_s_per_frame(settings, output_mpix),
    )
    return task_timeline(run, fleet)


def probe_summary(info: VideoInfo) -> dict[str, Any]:
    """What people and the report need; the full probe (pts table) stays in S3."""
    rate = info.average_rate or info.base_rate
    return {
        "format": info.format_name,
        "codec": info.codec,
        "width": info.width,
        "height": info.height,
        "rotation": info.rotation,
        "pix_fmt": info.pix_fmt,
        "frames": info.frame_count,
        "duration_s": duration_s(info),
        "fps": f"{rate.numerator}/{rate.denominator}" if rate else None,
        "vfr": bool(info.is_vfr),
        "audio_streams": len(info.audio),
        "size_bytes": info.size_bytes,
        # where the picture changes mid-stream (converted to the first geometry); the report lists them
        "geometry_changes": info.geometry_changes[:MAX_LISTED_CHANGES],
        "geometry_change_count": len(info.geometry_changes),
        # deinterlaced at field rate, the job's frames (what progress counts) are the output's, twice the source's
        **_field_rate_summary(info),
    }


def _field_rate_summary(info: VideoInfo) -> dict[str, Any]:
    if not info.field_rate:
        return {}
    source = (info.interlace or {}).get("source") or {}
    return {"deinterlace_rate": "field", "source_frames": source.get("frames"), "source_fps": source.get("rate")}
