"""The GPU tier as the planner sees it: an ECS fleet on GPU instances, scaled from zero; pure, no AWS.

One job on the fleet, played through the same discrete-event model as the Lambda tier (vsr.simulation), with
the fleet's own start and billing:
- the fleet is at zero: the queue-backlog alarm fires after `scale_out_s`, then every task the backlog asks for
  (up to `tasks`) waits for its instance to boot, join the cluster and pull the image, and for the container to
  load the model (`cold_start_s` in all);
- a task then takes segments one after another (a warm start each);
- EC2 bills each instance by the second, with a minimum, from its launch until the fleet scales back to zero:
  `scale_in_idle_s` after the queue drained, every instance that was started is still running and billed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from vsr.settings import AssemblyWork, GpuTier, LatencyModel
from vsr.simulation import Simulation, simulate


@dataclass(frozen=True)
class GpuFleet:
    """Plain values the planner needs of the GPU tier for one job (built by vsr.admission from settings)."""

    instance_type: str
    hourly_usd: float
    seconds_per_frame: float  # on the planned instance's GPU
    max_frames: int  # per segment: the work target and the task's disk, within the floor
    tasks: int  # the fleet's maximum
    cold_start_s: float  # alarm + boot + image pull + container start, from a fleet at zero
    scale_out_s: float
    scale_in_idle_s: float
    min_billed_s: float

    @classmethod
    def for_job(
        cls, tier: GpuTier, *, width: int, height: int, scale: int, macs_per_input_pixel: float, min_frames: int
    ) -> GpuFleet:
        spf = tier.seconds_per_frame(width, height, macs_per_input_pixel)
        by_work = math.floor(tier.segment_work_s / spf) if spf > 0 else 10**9
        frame_bytes = width * height * scale * scale * tier.segment_bytes_per_output_pixel
        by_disk = math.floor(tier.disk_bytes * tier.disk_budget_fraction / max(frame_bytes, 1.0))
        return cls(
            instance_type=tier.instance.name,
            hourly_usd=tier.instance.hourly_usd,
            seconds_per_frame=spf,
            max_frames=max(min_frames, min(by_work, by_disk)),
            tasks=tier.max_tasks,
            cold_start_s=tier.scale_out_s + tier.boot_s + tier.task_start_s,
            scale_out_s=tier.scale_out_s,
            scale_in_idle_s=tier.scale_in_idle_s,
            min_billed_s=tier.min_billed_s,
        )

    def latency(self, base: LatencyModel) -> LatencyModel:
        """The Lambda tier's latency model with the fleet's start: every task the backlog asks for at once (the
        step-scaling alarm sets the desired count from the backlog), each paying the fleet's cold start."""
        return base.replace(
            scaling_initial_concurrency=self.tasks,
            scaling_per_minute=0,
            worker_cold_start_s=self.cold_start_s,
        )


@dataclass(frozen=True)
class FleetRun:
    """One job's predicted run on the fleet: the simulation and the instance time EC2 bills."""

    simulation: Simulation
    instances: int
    instance_billed_s: float


def simulate_fleet(
    segment_frames: Sequence[int],
    fleet: GpuFleet,
    latency: LatencyModel,
    *,
    output_mpix_per_frame: float = 0.0,
    assembly: AssemblyWork | None = None,
    context_frames: int = 0,
    temporal_s_per_frame: float = 0.0,
) -> FleetRun:
    """Play the job on a fleet that starts at zero; instance-seconds are billed from each launch (after the
    alarm) until the fleet scales in, `scale_in_idle_s` after the last segment."""
    sim = simulate(
        segment_frames,
        seconds_per_frame=fleet.seconds_per_frame,
        concurrency=fleet.tasks,
        latency=fleet.latency(latency),
        output_mpix_per_frame=output_mpix_per_frame,
        assembly=assembly,
        context_frames=context_frames,
        temporal_s_per_frame=temporal_s_per_frame,
    )
    instances = sim.cold_starts
    launched_at = sim.first_segment_start_s + fleet.scale_out_s
    per_instance = max(fleet.min_billed_s, sim.workers_done_s + fleet.scale_in_idle_s - launched_at)
    return FleetRun(simulation=sim, instances=instances, instance_billed_s=instances * per_instance)


def fleet_cost_usd(run: FleetRun, fleet: GpuFleet) -> float:
    """EC2 instance time at the planned type's hourly price (on demand: spot only lowers it)."""
    return run.instance_billed_s / 3600.0 * fleet.hourly_usd


@dataclass(frozen=True)
class FleetSample:
    """The fleet at one moment of a job: tasks running (billed: booting, working or idle before scale-in) and
    tasks working on a segment."""

    at_s: float
    tasks: int
    busy: int


def task_timeline(run: FleetRun, fleet: GpuFleet, points: int = 12) -> list[FleetSample]:
    """The fleet's task count over one job, from zero back to zero: at the alarm, at the middle of every
    `points`-th of the run, when the last segment ends and when the fleet has scaled in (what `vsr plan` prints)."""
    sim = run.simulation
    launched = sim.first_segment_start_s + fleet.scale_out_s  # the alarm fired: instances launch (billed)
    scaled_in = sim.workers_done_s + fleet.scale_in_idle_s

    def at(t: float) -> FleetSample:
        tasks = run.instances if launched <= t < scaled_in else 0
        busy = sum(1 for start, end in sim.segment_runs if start <= t < end)
        return FleetSample(at_s=round(t, 1), tasks=tasks, busy=busy)

    first_work = min((start for start, _ in sim.segment_runs), default=launched)
    moments = {0.0, launched, first_work, sim.workers_done_s, scaled_in}
    steps = max(1, points)
    # mid-steps, not step edges: tasks of equal segments all change segments at the same instants
    moments |= {first_work + (sim.workers_done_s - first_work) * (k + 0.5) / steps for k in range(steps)}
    return [at(t) for t in sorted(moments)]
