"""`vsr plan INPUT`: what a job would cost and how long it would take, before uploading it.

Probes a local file or `s3://bucket/key` (read in place through ranged GETs, as ingest does), applies the same
limit checks, and prints the cost, latency and default plans from the same planner ingest calls
(vsr.admission.admit: each tier's limits, the plan, the chosen tier's cost limit), so the segments shown are
the segments ingest then enqueues for the same settings. A GPU plan also shows the fleet's task count over time.
Exit codes: 0 when the default plan would be accepted, 1 for bad input or a job over the cost limit.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import botocore.exceptions

from vsr.admission import (
    Admission,
    ModelCost,
    admit,
    check_delivery,
    delivery_for,
    duration_s,
    fleet_timeline,
    probe_summary,
)
from vsr.admission import model_cost as admission_cost
from vsr.errors import InputError, PermanentError, TransientError
from vsr.fleet import FleetSample
from vsr.media.probe import VideoInfo, probe
from vsr.media.profiles import DeliveryProfile, requested_codec
from vsr.planning import STRATEGIES, JobPlan
from vsr.settings import Settings, deep_merge, get_settings


def model_cost(name: str | None, settings: Settings) -> ModelCost:
    """Scale and multiply-adds of a bundled or converted model, without converting or loading it."""
    from vsr.models.registry import list_models

    wanted = name or settings.model_name
    for info in list_models():
        if info.name == wanted:
            return admission_cost(info.name, info.scale, info.macs_per_input_pixel, info.precision, settings.int8_guard)
    available = ", ".join(m.name for m in list_models()) or "none"
    raise InputError(f"unknown model {wanted!r}; available: {available}")


def probe_input(location: str, settings: Settings | None = None) -> VideoInfo:
    """Probe a local path or s3://bucket/key (ranged reads, no download); with `settings`, judging
    interlacing as ingest does (the plan then includes deinterlacing)."""
    mode, frames, rate = (
        (settings.deinterlace, settings.idet_frames, settings.deinterlace_rate) if settings else ("off", 0, "frame")
    )
    if location.startswith("s3://"):
        from vsr.aws import clients
        from vsr.aws.s3io import S3RangeReader

        parsed = urlparse(location)
        if not parsed.netloc or not parsed.path.strip("/"):
            raise InputError(f"not an S3 object URL: {location} (expected s3://bucket/key)")
        return probe(S3RangeReader(clients.s3(), parsed.netloc, parsed.path.lstrip("/")), mode, frames, rate)
    if not Path(location).is_file():
        raise InputError(f"no such file: {location}")
    return probe(location, mode, frames, rate)


def build(
    location: str,
    *,
    settings: Settings,
    model: str | None = None,
    concurrency: int | None = None,
    architecture: str | None = None,
    tier: str | None = None,
    codec: str = "auto",
    request: Any = None,
) -> tuple[VideoInfo, ModelCost, dict[str, Admission]]:
    """Probe and admit the input under every strategy, exactly as ingest would (vsr.admission.admit), for the
    delivery codec the job would get (`codec`, as `vsr-codec` metadata asks)."""
    cost = model_cost(model, settings)
    info = probe_input(location, settings)
    delivery = delivery_for(info, cost.scale, requested_codec(codec), settings)
    if request is not None and request.active:  # frame interpolation: checked and priced as ingest does
        from vsr.pipeline import timejob

        timejob.check(request, info, cost.scale, settings)
        cost = timejob.planned_cost(cost, request, settings)
    admitted = admissions(
        info, cost, settings, concurrency=concurrency, architecture=architecture, tier=tier, codec=delivery.codec
    )
    check_delivery(info, cost.scale, delivery, settings)
    return info, cost, admitted


def admissions(
    info: VideoInfo,
    cost: ModelCost,
    settings: Settings,
    *,
    concurrency: int | None = None,
    architecture: str | None = None,
    tier: str | None = None,
    codec: str = "h264",
) -> dict[str, Admission]:
    return {
        strategy: admit(
            info, cost, settings, strategy, tier=tier, concurrency=concurrency, architecture=architecture, codec=codec
        )
        for strategy in STRATEGIES
    }


ROW_ORDER = ("cost", "latency", "default")


def tier_rows(plans: dict[str, JobPlan]) -> list[dict[str, Any]]:
    """Each planned tier's cost, latency and default plans (what ingest chooses among), tier by tier."""
    options = plans["default"].tier_options
    return [options[tier][strategy].to_dict() for tier in options for strategy in ROW_ORDER]


def _plans(admitted: dict[str, Admission]) -> dict[str, JobPlan]:
    return {strategy: admission.plan for strategy, admission in admitted.items()}


def timeline(info: VideoInfo, cost: ModelCost, admitted: dict[str, Admission], settings: Settings) -> list[FleetSample]:
    """The fleet's task count over the default plan's run when it is a GPU plan (empty otherwise)."""
    plan = admitted["default"].plan
    return fleet_timeline(info, cost, settings, plan) if plan.chosen.tier == "gpu" else []


def as_json(
    info: VideoInfo,
    cost: ModelCost,
    admitted: dict[str, Admission],
    settings: Settings,
    delivery: DeliveryProfile | None = None,
) -> dict[str, Any]:
    default = admitted["default"]
    chosen = default.plan.chosen
    return {
        "input": {**probe_summary(info), "model": cost.name, "scale": cost.scale},
        **({"delivery": delivery.to_dict()} if delivery else {}),
        "interlace": info.interlace,
        "plans": tier_rows(_plans(admitted)),
        "chosen": {"strategy": "default", "tier": chosen.tier, "plan": chosen.to_dict()},
        "assembly": {"path": chosen.assembly, "predicted_bytes": chosen.output_bytes, "reason": chosen.assembly_reason},
        "fleet_tasks": [dataclasses.asdict(sample) for sample in timeline(info, cost, admitted, settings)],
        "max_job_cost_usd": settings.limits_for(chosen.tier).max_job_cost_usd,
        "accepted": default.accepted,
        "reason": default.refusal,
    }


def _clock(seconds: float) -> str:
    minutes = round(seconds / 60.0)
    return f"{minutes // 60}:{minutes % 60:02d}"


def as_table(
    info: VideoInfo,
    cost: ModelCost,
    admitted: dict[str, Admission],
    settings: Settings,
    delivery: DeliveryProfile | None = None,
) -> str:
    default = admitted["default"].plan.chosen
    lines = [
        f"{info.width}x{info.height}, {info.frame_count} frames, {duration_s(info):.1f} s; {cost.name} (x{cost.scale})"
        + (f"; delivered as {delivery.codec} in {delivery.container.upper()} ({delivery.reason})" if delivery else "")
        + (f"; deinterlaced ({info.deinterlace_parity}, bwdif)" if info.deinterlace_parity else "")
        + (f" at field rate: {info.frame_count} frames, one per field" if info.field_rate else ""),
        f"{'tier':<6} {'plan':<8} {'segments':>8} {'frames/segment':>14} {'workers':>8} {'s/frame':>8} "
        f"{'wall':>10} {'cost':>10}",
    ]
    for row in tier_rows(_plans(admitted)):
        tier = "gpu" if row["tier"] == "gpu" else "lambda"
        mark = (
            "  <- chosen"
            if row == dataclasses.replace(default, strategy=row["strategy"]).to_dict()
            and (row["strategy"] == "default")
            else ""
        )
        lines.append(
            f"{tier:<6} {row['strategy']:<8} {row['segments']:>8} {row['frames_per_segment']:>14} "
            f"{row['concurrency']:>8} {row['seconds_per_frame']:>8.3f} {row['predicted_wall_s']:>9.1f}s "
            f"{'$' + format(row['predicted_cost_usd'], '.4f'):>10}{mark}"
        )
    where = f"GPU fleet ({default.instance_type})" if default.tier == "gpu" else f"Lambda {default.arch}"
    samples = timeline(info, cost, admitted, settings)
    if samples:
        lines.append(
            f"GPU fleet tasks over time (h:mm from the upload; running/working, at most {settings.gpu.max_tasks}):"
        )
        lines.append("  " + "  ".join(f"{_clock(s.at_s)} {s.tasks}/{s.busy}" for s in samples))
    lines.append(
        f"chosen: {where}, {default.segments} segments, {default.predicted_wall_s:.1f} s "
        f"({default.predicted_wall_s / 3600:.1f} h), ${default.predicted_cost_usd:.4f}"
    )
    lines.append(f"assembly: {default.assembly}, {default.assembly_reason}")
    verdict = admitted["default"].refusal
    limit = settings.limits_for(default.tier).max_job_cost_usd
    lines.append(f"refused: {verdict}" if verdict else f"accepted (cost limit ${limit:.2f} on {default.tier})")
    return "\n".join(lines)


def command(args: argparse.Namespace) -> int:
    settings = get_settings()
    if getattr(args, "gpu_fleet", False):  # plan as a deployment with the fleet would
        settings = Settings(raw=deep_merge(settings.raw, {"gpu": {"enabled": True}}))
    if getattr(args, "tier", None) and args.tier not in settings.enabled_tiers():
        print(f"vsr plan: the {args.tier} tier is not enabled (settings gpu.enabled, or --gpu-fleet)", file=sys.stderr)
        return 2
    if args.endpoint:
        from vsr.aws import clients

        clients.use_endpoint(args.endpoint)
    try:
        from vsr.request import from_args

        info, cost, admitted = build(
            args.input,
            request=from_args(args),
            settings=settings,
            model=args.model,
            concurrency=args.concurrency,
            architecture=args.arch,
            tier=getattr(args, "tier", None),
            codec=getattr(args, "codec", None) or "auto",
        )
    except PermanentError as exc:
        print(f"vsr plan: {exc.reason}", file=sys.stderr)
        return 1
    except (TransientError, botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        # not the video's fault: S3 unreachable, no credentials, no permission
        print(f"vsr plan: cannot read {args.input}: {exc}", file=sys.stderr)
        return 2
    delivery = delivery_for(info, cost.scale, requested_codec(getattr(args, "codec", None)), settings)
    if args.json:
        print(json.dumps(as_json(info, cost, admitted, settings, delivery)))
    else:
        print(as_table(info, cost, admitted, settings, delivery))
    return 0 if admitted["default"].accepted else 1
