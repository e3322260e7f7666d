"""A job's ETA from its plan and measured progress: what `vsr run`, `vsr serve` and the upload API show."""

from __future__ import annotations

import time

from vsr.pipeline.jobs.record import PROCESSING, QUEUED, Job
from vsr.planning import eta_s


def job_eta(job: Job, elapsed_s: float | None = None) -> float | None:
    """Seconds left by the job's plan and measured progress (vsr.planning.eta_s); None when there is no
    honest number. `elapsed_s` defaults to the time since the job was created."""
    if job.status not in (QUEUED, PROCESSING) or not job.plan.get("predicted_wall_s"):
        return None
    return eta_s(
        predicted_wall_s=float(job.plan["predicted_wall_s"]),
        elapsed_s=time.time() - job.created_at if elapsed_s is None else elapsed_s,
        frames_done=job.frames_done,
        frames_total=job.frames_total,
    )
