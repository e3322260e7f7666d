"""Segment planning: pure functions of plain values, no AWS and no FFmpeg.

A segment is a run of consecutive frames (in presentation order) that one worker invocation upscales.
Segments are addressed by presentation timestamps taken from an exact demux pass, never by
`index / frame_rate`, so variable-frame-rate sources split at the right frames.

`plan_job` is the one planning entry point (ingest, `vsr plan`, `vsr upscale`, tools/cost.py): it predicts
wall time and cost of every candidate segment count with `vsr.simulation` and picks one by strategy:
- `cost`: the cheapest plan (fewest invocations, so fewest cold starts and segment overheads);
- `latency`: the fastest plan, using up to the worker concurrency, whatever it costs;
- `default`: the fastest plan whose cost is at most (1 + segments.max_cost_overhead) x the cheapest.

Over every worker tier the deployment has (Lambda always, the GPU fleet when enabled, vsr.fleet): the
candidates of both tiers are pooled before the strategy picks, so the same rule chooses the tier too. A job
may force a tier; then only that tier's candidates are pooled.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from vsr.fleet import GpuFleet, fleet_cost_usd, simulate_fleet
from vsr.settings import AssemblyWork, FunctionSizes, LatencyModel, Pricing, SegmentPolicy, WorkerCapacity
from vsr.simulation import Simulation, simulate

Strategy = Literal["cost", "latency", "default"]
STRATEGIES: tuple[Strategy, ...] = ("cost", "latency", "default")
# Above this many candidate segment counts, an evenly spread subset (ends included) is simulated.
MAX_CANDIDATES = 96


@dataclass(frozen=True)
class Segment:
    index: int
    start_frame: int  # index of the first frame this segment outputs
    frame_count: int  # frames this segment outputs
    start_pts: int  # pts of its first output frame (stream time base)
    end_pts: int | None  # pts of the next segment's first frame; None for the last segment
    context_before: int  # frames before start_frame to decode for temporal context (not output)
    context_start_pts: int  # pts where decoding starts (== start_pts when context_before == 0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Segment:
        return cls(
            index=int(data["index"]),
            start_frame=int(data["start_frame"]),
            frame_count=int(data["frame_count"]),
            start_pts=int(data["start_pts"]),
            end_pts=None if data.get("end_pts") is None else int(data["end_pts"]),
            context_before=int(data.get("context_before", 0)),
            context_start_pts=int(data.get("context_start_pts", data["start_pts"])),
        )


def seconds_per_frame(
    width: int, height: int, *, macs_per_input_pixel: float, gflops_per_vcpu: float, vcpus: float
) -> float:
    """Inference seconds for one frame: 2 FLOPs per multiply-add over the measured sustained rate."""
    if width <= 0 or height <= 0:
        raise ValueError("frame size must be positive")
    flops = 2.0 * macs_per_input_pixel * width * height
    return flops / (gflops_per_vcpu * 1e9 * vcpus)


def frames_per_segment(
    *,
    seconds_per_frame: float,
    timeout_s: float,
    work_budget_fraction: float,
    context_frames: int,
    min_frames: int,
    max_frames: int,
) -> int:
    """How many output frames fit in one invocation, leaving headroom and room for context frames.

    The budget is a fraction of the function timeout so a slow container, a cold start (model download,
    session creation) or a retry of an upload still finishes well inside the limit.
    """
    if seconds_per_frame <= 0:
        raise ValueError("seconds_per_frame must be positive")
    budget = timeout_s * work_budget_fraction
    fit = math.floor(budget / seconds_per_frame) - context_frames
    return max(min_frames, min(max_frames, fit))


def plan_segments(pts: Sequence[int], max_frames_per_segment: int, context_frames: int = 0) -> list[Segment]:
    """Split frames (their sorted presentation timestamps) into balanced segments.

    Segment sizes differ by at most one frame, so no segment is a tiny tail that costs a whole
    invocation (cold start included) for a handful of frames.
    """
    total = len(pts)
    if total == 0:
        return []
    if max_frames_per_segment <= 0:
        raise ValueError("max_frames_per_segment must be positive")
    return split_segments(pts, math.ceil(total / max_frames_per_segment), context_frames)


def balanced_sizes(total: int, count: int) -> list[int]:
    """`count` sizes summing to `total` that differ by at most one, larger first."""
    base, extra = divmod(total, count)
    return [base + (1 if index < extra else 0) for index in range(count)]


def split_segments(pts: Sequence[int], count: int, context_frames: int = 0) -> list[Segment]:
    """Split frames (their sorted presentation timestamps) into `count` balanced segments."""
    total = len(pts)
    if total == 0:
        return []
    if not 0 < count <= total:
        raise ValueError(f"cannot split {total} frames into {count} segments")
    if any(b <= a for a, b in itertools.pairwise(pts)):
        raise ValueError("pts must be strictly increasing (presentation order, no duplicates)")
    segments: list[Segment] = []
    start = 0
    for index, size in enumerate(balanced_sizes(total, count)):
        end = start + size
        context = min(context_frames, start)
        segments.append(
            Segment(
                index=index,
                start_frame=start,
                frame_count=size,
                start_pts=int(pts[start]),
                end_pts=int(pts[end]) if end < total else None,
                context_before=context,
                context_start_pts=int(pts[start - context]),
            )
        )
        start = end
    return segments


# --- the policy: how many segments -------------------------------------------------------------------------
@dataclass(frozen=True)
class PlanChoice:
    """One candidate plan with its predictions (what `vsr plan --json` prints and the job records)."""

    strategy: str
    arch: str
    concurrency: int
    segments: int
    frames_per_segment: int  # the largest segment (sizes differ by at most one)
    predicted_wall_s: float
    predicted_cost_usd: float
    seconds_per_frame: float
    tier: str = "lambda"  # lambda | gpu: which segment queue, and so which workers, the job's segments go to
    instance_type: str | None = None  # the GPU tier's priced instance type
    assembly: str = "faststart"  # faststart | fragmented (vsr.assembly_path), chosen by admission for the job
    output_bytes: int = 0  # the output size admission predicted (0: not predicted)
    assembly_reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PlanChoice:
        # plans recorded before the GPU tier and the assembly paths
        defaults = {"tier": "lambda", "instance_type": None, "assembly": "faststart", "output_bytes": 0}
        defaults["assembly_reason"] = ""
        return cls(**{name: data.get(name, defaults.get(name)) for name in cls.__dataclass_fields__})


@dataclass(frozen=True)
class JobPlan:
    """The chosen plan, its segments, and the alternatives it was chosen from (one per strategy)."""

    chosen: PlanChoice
    segments: list[Segment]
    options: dict[str, PlanChoice]  # per strategy, over the pooled tiers
    tier_options: dict[str, dict[str, PlanChoice]] = dataclasses.field(default_factory=dict)  # tier -> strategy


def job_cost_usd(sim: Simulation, sizes: FunctionSizes, pricing: Pricing) -> float:
    """Lambda GB-seconds of the three functions (init billed too) plus requests, at list prices."""
    gb_s = (
        sim.ingest_billed_s * sizes.ingest_mb
        + sim.worker_billed_s * sizes.worker_mb
        + sim.assembly_billed_s * sizes.assemble_mb
    ) / 1024.0
    if sizes.architecture not in pricing.lambda_gb_s:
        raise ValueError(f"no Lambda price for architecture {sizes.architecture!r}")
    n = sim.invocations
    requests = (
        (n + 2) * pricing.lambda_request
        + (n * 3 + 3) * pricing.sqs_request  # send, receive, delete per segment; the ingest message
        + (n * 2 + 6) * pricing.dynamodb_write  # job item, progress and count per segment, lease, complete
        + (n + 4) * pricing.dynamodb_read
        + (n + 6) * pricing.s3_put
        + n * (pricing.s3_gets_per_segment + 1) * pricing.s3_get
        + (n * 6 + 10) * pricing.kms_request
    )
    return gb_s * pricing.lambda_gb_s[sizes.architecture] + requests


def max_frames_per_segment(seconds_per_frame_: float, policy: SegmentPolicy, timeout_s: float) -> int:
    """The most output frames one invocation may take (the timeout budget, within the floor and the cap)."""
    return frames_per_segment(
        seconds_per_frame=seconds_per_frame_,
        timeout_s=timeout_s,
        work_budget_fraction=policy.work_budget_fraction,
        context_frames=policy.context_frames,
        min_frames=policy.min_frames,
        max_frames=policy.max_frames,
    )


def candidate_counts(frame_count: int, max_frames: int, min_frames: int, concurrency: int) -> list[int]:
    """Segment counts worth predicting: from the fewest the timeout allows up to filling the last wave of
    workers, never making segments shorter than the floor."""
    fewest = max(1, math.ceil(frame_count / max_frames))
    by_floor = max(1, frame_count // max(1, min_frames))
    most = max(fewest, min(by_floor, math.ceil(fewest / concurrency) * concurrency))
    if most - fewest + 1 <= MAX_CANDIDATES:
        return list(range(fewest, most + 1))
    step = (most - fewest) / (MAX_CANDIDATES - 1)
    spread = {fewest + round(i * step) for i in range(MAX_CANDIDATES)}
    multiples = {k * concurrency for k in range(1, most // concurrency + 1) if k * concurrency >= fewest}
    return sorted(spread | multiples | {most})


def choose(options: Sequence[PlanChoice], strategy: Strategy, max_cost_overhead: float) -> PlanChoice:
    """Pick a plan: the cheapest, the fastest, or the fastest within the cost bound (ties: fewer segments)."""
    if not options:
        raise ValueError("no plan to choose from")
    cheapest = min(options, key=lambda o: (o.predicted_cost_usd, o.segments))
    if strategy == "cost":
        return cheapest
    if strategy == "latency":
        pool = list(options)
    elif strategy == "default":
        bound = cheapest.predicted_cost_usd * (1.0 + max_cost_overhead)
        pool = [o for o in options if o.predicted_cost_usd <= bound + 1e-12]
    else:
        raise ValueError(f"unknown plan strategy {strategy!r}; use one of {', '.join(STRATEGIES)}")
    return min(pool, key=lambda o: (round(o.predicted_wall_s, 6), o.segments))


def plan_job(
    pts: Sequence[int],
    *,
    seconds_per_frame: float,
    policy: SegmentPolicy,
    capacity: WorkerCapacity,
    latency: LatencyModel,
    pricing: Pricing,
    sizes: FunctionSizes,
    strategy: Strategy = "default",
    warm_containers: int = 0,
    output_mpix_per_frame: float = 0.0,
    assembly: AssemblyWork | None = None,
    temporal_s_per_frame: float = 0.0,
    gpu: GpuFleet | None = None,
    tiers: Sequence[str] = ("lambda",),
) -> JobPlan:
    """THE planning entry point: segments for the frames at `pts`, chosen by `strategy` from predicted plans of
    every tier in `tiers` ("lambda", and "gpu" when `gpu` describes the fleet).

    `temporal_s_per_frame` > 0: the job is stabilised (settings model.temporal), so each frame costs that much
    more and every segment but the first also upscales its context frames."""
    total = len(pts)
    if total == 0:
        raise ValueError("nothing to plan: no frames")
    if not tiers:
        raise ValueError("no worker tier to plan for")
    upscaled_context = policy.context_frames if temporal_s_per_frame > 0 else 0
    by_tier: dict[str, list[PlanChoice]] = {}
    if "lambda" in tiers:
        most_frames = max_frames_per_segment(seconds_per_frame + temporal_s_per_frame, policy, capacity.timeout_s)
        by_tier["lambda"] = []
        for count in candidate_counts(total, most_frames, policy.min_frames, capacity.concurrency):
            sizes_ = balanced_sizes(total, count)
            sim = simulate(
                sizes_,
                seconds_per_frame=seconds_per_frame,
                concurrency=capacity.concurrency,
                latency=latency,
                warm_containers=warm_containers,
                warm_functions=warm_containers > 0,
                output_mpix_per_frame=output_mpix_per_frame,
                assembly=assembly,
                context_frames=upscaled_context,
                temporal_s_per_frame=temporal_s_per_frame,
            )
            by_tier["lambda"].append(
                PlanChoice(
                    strategy="",
                    arch=sizes.architecture,
                    concurrency=capacity.concurrency,
                    segments=count,
                    frames_per_segment=sizes_[0],
                    predicted_wall_s=round(sim.wall_s, 3),
                    predicted_cost_usd=round(job_cost_usd(sim, sizes, pricing), 6),
                    seconds_per_frame=round(seconds_per_frame, 6),
                )
            )
    if "gpu" in tiers:
        if gpu is None:
            raise ValueError("the GPU tier was asked for without a fleet to plan it on")
        by_tier["gpu"] = _gpu_candidates(
            total,
            gpu,
            policy=policy,
            latency=latency,
            pricing=pricing,
            sizes=sizes,
            output_mpix_per_frame=output_mpix_per_frame,
            assembly=assembly,
            context_frames=upscaled_context,
            temporal_s_per_frame=temporal_s_per_frame,
        )
    pooled = [choice for choices in by_tier.values() for choice in choices]
    options = {
        name: dataclasses.replace(choose(pooled, name, policy.max_cost_overhead), strategy=name) for name in STRATEGIES
    }
    tier_options = {
        tier: {
            name: dataclasses.replace(choose(choices, name, policy.max_cost_overhead), strategy=name)
            for name in STRATEGIES
        }
        for tier, choices in by_tier.items()
    }
    chosen = options[strategy]
    return JobPlan(
        chosen=chosen,
        segments=split_segments(pts, chosen.segments, policy.context_frames),
        options=options,
        tier_options=tier_options,
    )


def gpu_job_cost_usd(run_sim: Simulation, instance_cost_usd: float, sizes: FunctionSizes, pricing: Pricing) -> float:
    """The GPU tier: instance time plus ingest and assembly on Lambda and the same requests, but no worker
    invocations (the fleet's tasks poll the queue)."""
    lambda_part = job_cost_usd(dataclasses.replace(run_sim, worker_billed_s=0.0), sizes, pricing)
    return lambda_part - run_sim.invocations * pricing.lambda_request + instance_cost_usd


def _gpu_candidates(
    total: int,
    gpu: GpuFleet,
    *,
    policy: SegmentPolicy,
    latency: LatencyModel,
    pricing: Pricing,
    sizes: FunctionSizes,
    output_mpix_per_frame: float,
    assembly: AssemblyWork | None,
    context_frames: int,
    temporal_s_per_frame: float,
) -> list[PlanChoice]:
    """The GPU tier's candidate plans: from the fewest segments its per-segment limit allows up to one more wave
    of tasks (GPU segments are far longer than Lambda's: a task takes minutes of work per message)."""
    choices = []
    for count in candidate_counts(total, gpu.max_frames, policy.min_frames, gpu.tasks):
        sizes_ = balanced_sizes(total, count)
        run = simulate_fleet(
            sizes_,
            gpu,
            latency,
            output_mpix_per_frame=output_mpix_per_frame,
            assembly=assembly,
            context_frames=context_frames,
            temporal_s_per_frame=temporal_s_per_frame,
        )
        cost = gpu_job_cost_usd(run.simulation, fleet_cost_usd(run, gpu), sizes, pricing)
        choices.append(
            PlanChoice(
                strategy="",
                arch=sizes.architecture,
                concurrency=gpu.tasks,
                segments=count,
                frames_per_segment=sizes_[0],
                predicted_wall_s=round(run.simulation.wall_s, 3),
                predicted_cost_usd=round(cost, 6),
                seconds_per_frame=round(gpu.seconds_per_frame, 6),
                tier="gpu",
                instance_type=gpu.instance_type,
            )
        )
    return choices


def eta_s(*, predicted_wall_s: float, elapsed_s: float, frames_done: int, frames_total: int) -> float | None:
    """Seconds left: the plan's prediction, handed over to the measured rate as frames complete.

    Weighted by the fraction done p: (1 - p) x (predicted - elapsed) + p x (elapsed x (1 - p) / p). Early on the
    plan speaks (nothing measured yet); near the end the measured pace does. None when nothing is done yet and
    the prediction has already passed (running late: no honest number).
    """
    if frames_total <= 0:
        return None
    done = min(max(frames_done, 0), frames_total) / frames_total
    predicted_left = predicted_wall_s - elapsed_s
    if done == 0.0:
        return predicted_left if predicted_left > 0 else None
    measured_left = elapsed_s * (1.0 - done) / done
    return (1.0 - done) * max(predicted_left, 0.0) + done * measured_left
