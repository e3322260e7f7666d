"""Estimate the AWS cost of upscaling one minute of video, from the settings and the model's cost.

    python tools/cost.py [--width 640 --height 360 --fps 25] [--arch arm64|x86_64] [--model NAME]
                         [--strategy cost|default|latency] [--precision fp32|int8] [--json]
                         [--tier lambda|gpu] [--minutes N]

The minute is planned by the same planner ingest uses (vsr.planning.plan_job) and played through the same
pipeline model (vsr.simulation), so every term comes from settings.json:
    inference FLOPs / minute = fps x 60 x width x height x 2 x macs_per_input_pixel
    seconds per frame        = FLOPs per frame / (gflops_per_vcpu x 1e9 x vcpus)   (segments.*)
                               x model.int8_guard cost factor for an int8 variant (int8 pass + expected
                               fp32 recompute of the saturation guard; an x86-64 measurement, stated below)
    worker billed seconds    = per segment: cold or warm start + setup + frames x s/frame x (1 + overhead)
                               + upload + bookkeeping                               (latency.*)
    Lambda GB-s x price      + ingest and assembly, requests (Lambda, SQS, DynamoDB, S3, KMS)   (pricing.*)
Prices are AWS list prices for us-east-1 (no free tier); they change: check https://aws.amazon.com/lambda/pricing/.

`--tier gpu` prices the same minutes on the GPU fleet (settings `gpu`, vsr.fleet): a fleet that starts at zero,
boots, runs the segments at the planned instance's throughput and is billed until it scales back to zero, plus
ingest and assembly on Lambda. The GPU throughput (`effective_tflops`) is an ASSUMPTION, stated in the output:
no GPU was measured here (docs/planning.md says where the figure comes from). `--minutes N` prices an N-minute
job and reports per minute: the fleet's boot and idle tail are paid once per job, so long jobs cost less a minute.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from dataclasses import asdict, dataclass
from typing import Any

from vsr.fleet import GpuFleet, fleet_cost_usd, simulate_fleet
from vsr.planning import STRATEGIES, balanced_sizes, job_cost_usd, plan_job, seconds_per_frame
from vsr.settings import DELIVERY_CODECS, Settings, get_settings
from vsr.simulation import simulate

# int8 variants do the same multiply-adds faster: the planner's assumption (vsr.admission.model_cost) is settings
# model.int8_guard: the int8 pass's time relative to fp32 (`make bench-int8`, x86-64 AVX-512 VNNI, 2 threads)
# plus the share the saturation guard is expected to recompute in fp32 (measured on the bundled clips).
# Graviton (Lambda arm64) speed is NOT measured here: that factor is an x86 measurement applied to it.


@dataclass(frozen=True)
class Estimate:
    arch: str
    width: int
    height: int
    fps: float
    model: str
    macs_per_input_pixel: int
    frames: int
    tflop: float
    vcpus: float
    precision: str
    speedup_assumed: float
    seconds_per_frame: float
    frames_per_segment: int
    segments: int
    worker_gb_s: float
    other_gb_s: float
    lambda_compute_usd: float
    requests_usd: float
    total_usd: float
    predicted_wall_s: float
    codec: str = "h264"
    delivery_encode_s: float = 0.0  # the assembler's one delivery encode (settings delivery.codecs, bench-encode)
    delivery_encode_usd: float = 0.0


def model_macs(name: str) -> int:
    from vsr.models.registry import list_models

    for info in list_models():
        if info.name == name:
            return int(info.macs_per_input_pixel)
    raise SystemExit(f"model {name} unknown; see `vsr models list`")


def estimate(
    width: int,
    height: int,
    fps: float,
    arch: str,
    macs: int,
    model: str,
    settings: Settings | None = None,
    strategy: str = "cost",
    scale: int = 2,
    precision: str = "fp32",
    codec: str = "h264",
) -> Estimate:
    s = settings or get_settings()
    assembly = s.assembly_work_for(codec)
    capacity = s.worker_capacity
    sizes = dataclasses.replace(s.function_sizes, architecture=arch)
    frames = round(fps * 60)
    speedup = 1.0 / s.int8_guard.cost_factor if precision == "int8" else 1.0
    per_frame = (
        seconds_per_frame(
            width, height, macs_per_input_pixel=macs, gflops_per_vcpu=capacity.gflops_per_vcpu, vcpus=capacity.vcpus
        )
        / speedup
    )
    plan = plan_job(
        range(frames),
        seconds_per_frame=per_frame,
        policy=s.segment_policy,
        capacity=capacity,
        latency=s.latency,
        pricing=s.pricing,
        sizes=sizes,
        strategy=strategy,  # type: ignore[arg-type]
        output_mpix_per_frame=width * height * scale**2 / 1e6,
        assembly=assembly,
    ).chosen
    sim = simulate(
        balanced_sizes(frames, plan.segments),
        seconds_per_frame=per_frame,
        concurrency=capacity.concurrency,
        latency=s.latency,
        output_mpix_per_frame=width * height * scale**2 / 1e6,
        assembly=assembly,
    )
    output_mpix = frames * width * height * scale**2 / 1e6
    encode_s = output_mpix * assembly.reencode_s_per_output_mpix if output_mpix <= assembly.reencode_max_mpix else 0.0
    encode_usd = encode_s * s.function("assemble").memory_mb / 1024 * s.pricing.lambda_gb_s[arch]
    worker_gb_s = sim.worker_billed_s * s.function("worker").memory_mb / 1024
    other_gb_s = (
        sim.ingest_billed_s * s.function("ingest").memory_mb + sim.assembly_billed_s * s.function("assemble").memory_mb
    ) / 1024
    compute = (worker_gb_s + other_gb_s) * s.pricing.lambda_gb_s[arch]
    total = job_cost_usd(sim, sizes, s.pricing)
    return Estimate(
        arch=arch,
        width=width,
        height=height,
        fps=fps,
        model=model,
        macs_per_input_pixel=macs,
        frames=frames,
        tflop=frames * width * height * 2 * macs / 1e12,
        vcpus=capacity.vcpus,
        precision=precision,
        speedup_assumed=speedup,
        seconds_per_frame=per_frame,
        frames_per_segment=plan.frames_per_segment,
        segments=plan.segments,
        worker_gb_s=worker_gb_s,
        other_gb_s=other_gb_s,
        lambda_compute_usd=compute,
        requests_usd=total - compute,
        total_usd=total,
        predicted_wall_s=plan.predicted_wall_s,
        codec=codec,
        delivery_encode_s=encode_s,
        delivery_encode_usd=encode_usd,
    )


@dataclass(frozen=True)
class GpuEstimate:
    width: int
    height: int
    fps: float
    minutes: float
    model: str
    instance_type: str
    gpu: str
    hourly_usd: float
    effective_tflops_assumed: float
    seconds_per_frame: float
    frames: int
    segments: int
    frames_per_segment: int
    instances: int
    instance_billed_s: float
    instance_usd: float
    lambda_and_requests_usd: float
    total_usd: float
    usd_per_minute: float
    predicted_wall_s: float


def estimate_gpu(
    width: int,
    height: int,
    fps: float,
    macs: int,
    model: str,
    settings: Settings | None = None,
    strategy: str = "cost",
    scale: int = 2,
    minutes: float = 1.0,
) -> GpuEstimate:
    """An N-minute job on the GPU fleet, planned by the planner ingest uses with only the GPU tier."""
    s = settings or get_settings()
    tier = s.gpu
    frames = round(fps * 60 * minutes)
    fleet = GpuFleet.for_job(
        tier, width=width, height=height, scale=scale, macs_per_input_pixel=macs, min_frames=s.segment_policy.min_frames
    )
    mpix = width * height * scale**2 / 1e6
    plan = plan_job(
        range(frames),
        seconds_per_frame=fleet.seconds_per_frame,
        policy=s.segment_policy,
        capacity=s.worker_capacity,
        latency=s.latency,
        pricing=s.pricing,
        sizes=s.function_sizes,
        strategy=strategy,  # type: ignore[arg-type]
        output_mpix_per_frame=mpix,
        assembly=s.assembly_work,
        gpu=fleet,
        tiers=("gpu",),
    ).chosen
    run = simulate_fleet(
        balanced_sizes(frames, plan.segments), fleet, s.latency, output_mpix_per_frame=mpix, assembly=s.assembly_work
    )
    instance_usd = fleet_cost_usd(run, fleet)
    return GpuEstimate(
        width=width,
        height=height,
        fps=fps,
        minutes=minutes,
        model=model,
        instance_type=tier.instance.name,
        gpu=tier.instance.gpu,
        hourly_usd=tier.instance.hourly_usd,
        effective_tflops_assumed=tier.instance.effective_tflops,
        seconds_per_frame=fleet.seconds_per_frame,
        frames=frames,
        segments=plan.segments,
        frames_per_segment=plan.frames_per_segment,
        instances=run.instances,
        instance_billed_s=run.instance_billed_s,
        instance_usd=instance_usd,
        lambda_and_requests_usd=plan.predicted_cost_usd - instance_usd,
        total_usd=plan.predicted_cost_usd,
        usd_per_minute=plan.predicted_cost_usd / minutes,
        predicted_wall_s=plan.predicted_wall_s,
    )


def describe_gpu(e: GpuEstimate) -> str:
    return "\n".join(
        [
            f"{e.width}x{e.height} @ {e.fps:g} fps, {e.minutes:g}-minute job, {e.model}, GPU fleet "
            f"{e.instance_type} ({e.gpu}, ${e.hourly_usd:.3f}/h on demand)",
            f"  ASSUMED throughput       {e.effective_tflops_assumed:g} TFLOP/s sustained -> "
            f"{e.seconds_per_frame:.3f} s/frame ({1 / e.seconds_per_frame:.1f} fps); not measured here",
            f"  frames                   {e.frames} in {e.segments} segments of up to {e.frames_per_segment}",
            f"  instances                {e.instances}, billed {e.instance_billed_s:,.0f} s in all "
            "(boot and the idle tail until scale-in included)",
            f"  EC2                      ${e.instance_usd:.3f}",
            f"  Lambda ingest/assembly + requests  ${e.lambda_and_requests_usd:.3f}",
            f"  total                    ${e.total_usd:.3f} = ${e.usd_per_minute:.3f} per minute of video",
            f"  predicted job wall time  {e.predicted_wall_s:,.0f} s (from a fleet at zero)",
        ]
    )


def describe(e: Estimate) -> str:
    return "\n".join(
        [
            f"{e.width}x{e.height} @ {e.fps:g} fps, {e.model} ({e.macs_per_input_pixel:,} MAC/px, {e.precision}), "
            f"Lambda {e.arch}",
            *(
                [
                    f"  int8 assumed {e.speedup_assumed:.3g}x fp32 speed (settings model.int8_guard: int8 pass + "
                    "expected fp32 recompute, measured on x86-64 AVX-512 VNNI by `make bench-int8`; Graviton "
                    "speed not measured)"
                ]
                if e.precision == "int8"
                else []
            ),
            f"  frames/minute            {e.frames}",
            f"  inference                {e.tflop:,.1f} TFLOP",
            f"  worker                   {e.vcpus:.2f} vCPUs -> {e.seconds_per_frame:.2f} s/frame, "
            f"{e.frames_per_segment} frames/segment, {e.segments} segments",
            f"  Lambda GB-s              worker {e.worker_gb_s:,.0f} + ingest/assembly {e.other_gb_s:,.0f}",
            f"  Lambda compute           ${e.lambda_compute_usd:.3f}",
            f"  of which delivery encode {e.codec}: {e.delivery_encode_s:,.1f} s on the assembler, "
            f"${e.delivery_encode_usd:.4f}",
            f"  requests (Lambda, SQS, DynamoDB, S3, KMS)  ${e.requests_usd:.4f}",
            f"  total per minute of video  ${e.total_usd:.2f}",
            f"  predicted job wall time    {e.predicted_wall_s:,.0f} s",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--fps", type=float, default=25.0)
    parser.add_argument("--arch", choices=sorted(get_settings().pricing.lambda_gb_s), default=None)
    parser.add_argument("--strategy", choices=STRATEGIES, default="cost", help="plan strategy (default: cost)")
    parser.add_argument("--model", help="model name (default: settings model.name)")
    parser.add_argument("--macs", type=int, help="multiply-adds per input pixel (default: from the model)")
    parser.add_argument("--precision", choices=("fp32", "int8"), default="fp32", help="int8: the model's int8 variant")
    parser.add_argument("--tier", choices=("lambda", "gpu"), default="lambda", help="worker tier to price")
    parser.add_argument("--minutes", type=float, default=1.0, help="GPU tier: job length in minutes (default 1)")
    parser.add_argument(
        "--codec", choices=DELIVERY_CODECS, default="h264", help="delivery codec the assembler encodes (default h264)"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.tier == "gpu":
        name = args.model or get_settings().model_name
        gpu = estimate_gpu(
            args.width,
            args.height,
            args.fps,
            args.macs or model_macs(name),
            name,
            strategy=args.strategy,
            minutes=args.minutes,
        )
        print(json.dumps(asdict(gpu)) if args.json else describe_gpu(gpu))
        return 0
    model = args.model or get_settings().model_name
    macs = args.macs or model_macs(model)
    arch = args.arch or get_settings().architecture
    precision = "int8" if model.endswith("-int8") else args.precision
    if precision == "int8" and not model.endswith("-int8"):
        model += "-int8"
    result = estimate(
        args.width,
        args.height,
        args.fps,
        arch,
        macs,
        model,
        strategy=args.strategy,
        precision=precision,
        codec=args.codec,
    )
    output: Any = json.dumps(asdict(result)) if args.json else describe(result)
    print(output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
