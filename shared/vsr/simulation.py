"""A discrete-event model of one job going through the deployed pipeline; pure, deterministic, no AWS.

The planner plays each candidate plan through it to predict wall time and billed seconds, `vsr plan` prints
what it predicts, and `make bench-plan` checks it against measured `vsr run` jobs with this machine's numbers.

What it models, in order (every time a named number of `LatencyModel`):
1. S3 event -> ingest message visible (`s3_event_s`), picked up after `sqs_poll_s`; ingest runs a cold start,
   the probe and one send per segment.
2. The SQS event source mapping polls the segment queue and scales out: AWS documents that Lambda starts with
   up to 5 concurrent batches and adds up to 300 concurrent executions per minute for standard queues, never
   above the function's reserved concurrency or the mapping's MaximumConcurrency
   (docs.aws.amazon.com/lambda/latest/dg/with-sqs.html, "Scaling and processing"). Messages are taken in
   the order they were sent (a standard queue only approximates that; the model ignores reordering).
3. Each segment runs in a free container: a warm one when one is idle, else a new one that pays the cold start
   (init is billed since 2025). Then setup (seek, context frames, encoder), frames x seconds per frame x
   (1 + per-frame decode/encode overhead), upload and the DynamoDB count.
4. The last count reaches assembly through the DynamoDB stream (`stream_s`); assembly pays its cold start, a
   fixed part, the join (one delivery encode of the whole output at the measured megapixel rate, or a
   per-frame remux above the re-encode limit) and the quality check (every join pair plus sampled pairs, at a
   measured cost per pair and output megapixel, within its time budget). The wall time ends at COMPLETE, when
   the output is in the bucket; the quality check runs after it (billed, but it does not delay the output).
Hand-rolled rather than SimPy: the model is one list-scheduling loop, it runs inside the ingest Lambda for
every candidate plan, and a heap keeps a 1000-segment plan at milliseconds.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass

from vsr.settings import AssemblyWork, LatencyModel


@dataclass(frozen=True)
class Simulation:
    """What one job is predicted to take; every time in seconds from the end of the upload."""

    wall_s: float
    ingest_done_s: float
    first_segment_start_s: float
    workers_done_s: float
    ingest_billed_s: float
    worker_billed_s: float
    assembly_billed_s: float
    invocations: int
    cold_starts: int
    # (start, end) of each segment on its worker, after a cold start; in plan order (the fleet's timeline)
    segment_runs: tuple[tuple[float, float], ...] = ()


def segment_seconds(frames: int, seconds_per_frame: float, latency: LatencyModel) -> float:
    """A warm invocation's time for one segment of `frames` output frames."""
    work = frames * seconds_per_frame * (1.0 + latency.frame_overhead_fraction)
    return latency.segment_setup_s + work + latency.segment_upload_s + latency.bookkeeping_s


def assembly_seconds(
    segment_frames: Sequence[int], output_mpix_per_frame: float, latency: LatencyModel, work: AssemblyWork | None
) -> tuple[float, float]:
    """The assembler's work after its start: (until COMPLETE: fixed part and join; the quality check after it)."""
    frames = sum(segment_frames)
    total_mpix = frames * output_mpix_per_frame
    if work is not None and work.reencode and total_mpix <= work.reencode_max_mpix:
        join = total_mpix * work.reencode_s_per_output_mpix
    else:
        join = frames * latency.assembly_s_per_frame
    quality = 0.0
    if work is not None:
        boundaries = max(0, len(segment_frames) - 1)
        pairs = boundaries + min(work.quality_sample_pairs, max(0, frames - 1 - boundaries))
        quality = min(work.quality_budget_s, pairs * work.quality_s_per_pair_mpix * output_mpix_per_frame)
    return latency.assembly_fixed_s + join, quality


def allowed_concurrency(elapsed_s: float, concurrency: int, latency: LatencyModel) -> int:
    """Executions the SQS event source allows `elapsed_s` after messages first became visible."""
    ramp = latency.scaling_initial_concurrency + math.floor(
        latency.scaling_per_minute * max(0.0, elapsed_s) / 60.0 + 1e-9
    )  # 1e-9: exact at ramp times
    return max(1, min(concurrency, ramp))


def _next_ramp_s(running: int, latency: LatencyModel) -> float:
    """Seconds after the start at which the event source allows `running + 1` executions."""
    needed = running + 1 - latency.scaling_initial_concurrency
    if needed <= 0:
        return 0.0
    if latency.scaling_per_minute <= 0:
        return math.inf
    return 60.0 * needed / latency.scaling_per_minute


def simulate(
    segment_frames: Sequence[int],
    *,
    seconds_per_frame: float,
    concurrency: int,
    latency: LatencyModel,
    warm_containers: int = 0,
    warm_functions: bool = False,
    output_mpix_per_frame: float = 0.0,
    assembly: AssemblyWork | None = None,
    context_frames: int = 0,
    temporal_s_per_frame: float = 0.0,
) -> Simulation:
    """Play one job with segments of `segment_frames` output frames through the pipeline.

    `warm_containers` worker containers (and, with `warm_functions`, ingest and assembly) are already
    initialised, as after a recent job: they skip the cold start. With temporal stabilisation, every segment but
    the first also upscales its `context_frames`, and every upscaled frame pays `temporal_s_per_frame`.
    """
    if concurrency <= 0:
        raise ValueError("concurrency must be positive")
    if seconds_per_frame < 0:
        raise ValueError("seconds_per_frame must not be negative")
    ingest_start = latency.s3_event_s + latency.sqs_poll_s
    ingest_billed = (
        (0.0 if warm_functions else latency.ingest_cold_start_s)
        + latency.probe_s
        + latency.enqueue_s_per_segment * len(segment_frames)
    )
    visible = ingest_start + ingest_billed
    ready = visible + latency.sqs_poll_s

    running: list[float] = []  # finish times of executions in flight
    idle = min(warm_containers, concurrency)  # initialised containers with nothing to do
    worker_billed = 0.0
    cold_starts = 0
    first_start = math.inf
    done = ready
    clock = ready
    runs: list[tuple[float, float]] = []
    for index, frames in enumerate(segment_frames):
        upscaled = frames + (context_frames if index > 0 else 0)
        while True:
            while running and running[0] <= clock:
                heapq.heappop(running)
                idle += 1
            if len(running) < allowed_concurrency(clock - visible, concurrency, latency):
                break
            next_events = [running[0]] if running else []
            if len(running) < concurrency:
                ramp_at = visible + _next_ramp_s(len(running), latency)
                if ramp_at > clock:
                    next_events.append(ramp_at)
            clock = min(next_events)
        cold = idle <= 0
        if cold:
            cold_starts += 1
            start_cost = latency.worker_cold_start_s
        else:
            idle -= 1
            start_cost = latency.worker_warm_start_s
        duration = start_cost + segment_seconds(upscaled, seconds_per_frame, latency) + upscaled * temporal_s_per_frame
        first_start = min(first_start, clock)
        worker_billed += duration
        heapq.heappush(running, clock + duration)
        # a warm task goes on to its next segment at once; a new one works only after its cold start
        runs.append((clock + (start_cost if cold else 0.0), clock + duration))
        done = max(done, clock + duration)

    to_complete, quality_check = assembly_seconds(segment_frames, output_mpix_per_frame, latency, assembly)
    assembly_start = 0.0 if warm_functions else latency.assembly_cold_start_s
    wall = done + latency.stream_s + assembly_start + to_complete  # the output is out; the quality check follows
    assembly_billed = assembly_start + to_complete + quality_check
    return Simulation(
        wall_s=wall,
        ingest_done_s=visible,
        first_segment_start_s=first_start if segment_frames else visible,
        workers_done_s=done,
        ingest_billed_s=ingest_billed,
        worker_billed_s=worker_billed,
        assembly_billed_s=assembly_billed,
        invocations=len(segment_frames),
        cold_starts=cold_starts,
        segment_runs=tuple(runs),
    )
