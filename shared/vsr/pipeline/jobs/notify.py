"""Job events: one EventBridge event per job state change, for the user's systems (like MediaConvert's
"Job State Change"). Source `vsr`, detail-type `VSR Job State Change`, detail as in
`config/job_event.schema.json` (version 1).

Exactly once per state, by construction rather than bookkeeping: the job store emits an event only from the call
whose conditional write made the change (vsr.pipeline.jobs.store), and a duplicate SQS message or S3 event loses
that condition and emits nothing. PROCESSING milestones (25/50/75% of segments) are crossed by exactly one
conditional count each. Two gaps remain, both documented: a process that dies between winning the write and
PutEvents loses that event, and a lost DynamoDB response whose retry then fails its condition does too.

Delivery never fails a job: PutEvents is retried with backoff (tenacity), then the event is logged with an
embedded CloudWatch metric (`vsr/JobEventsUndelivered`, EMF: Lambda turns the log line into the metric, no API
call) that an alarm watches.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any

from tenacity import retry, stop_after_attempt, wait_random_exponential

from vsr.aws import clients
from vsr.aws.resources import Resources
from vsr.logs import get_logger
from vsr.pipeline.jobs.record import Job

log = get_logger(__name__)

SOURCE = "vsr"
DETAIL_TYPE = "VSR Job State Change"
VERSION = "1"
MILESTONES = (25, 50, 75)
STATES = ("ACCEPTED", "PROCESSING", "COMPLETE", "FAILED")
METRIC_NAMESPACE = "vsr"
UNDELIVERED_METRIC = "JobEventsUndelivered"
PUT_ATTEMPTS = 4


class EventDeliveryError(Exception):
    """PutEvents accepted the call but not the entry (FailedEntryCount)."""


def crossed_milestones(done_after: int, total: int) -> list[int]:
    """The progress milestones the count that made `done_after` of `total` segments crossed (pure)."""
    if total <= 0 or done_after <= 0:
        return []
    before, after = 100 * (done_after - 1) / total, 100 * done_after / total
    return [m for m in MILESTONES if before < m <= after and done_after < total]


def _iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def detail(job: Job, state: str, *, milestone: int | None = None, now: float | None = None) -> dict[str, Any]:
    """The event detail for `job` entering `state` (pure: the job record as the winning write returned it)."""
    if state not in STATES:
        raise ValueError(f"unknown job event state {state!r}")
    total = job.segment_count
    done = len(job.done)
    plan = job.plan or None
    if plan is not None:
        plan = {
            key: plan[key]
            for key in ("tier", "strategy", "segments", "predicted_wall_s", "predicted_cost_usd")
            if key in plan and plan[key] is not None
        }
        plan.setdefault("tier", "lambda")
        if state == "COMPLETE" and job.completed_at:
            plan["actual_wall_s"] = round(float(job.completed_at) - float(job.created_at), 3)
    output = None
    if state == "COMPLETE" and job.output:
        output = {
            "bucket": job.output.get("bucket"),
            "key": job.output.get("key"),
            "report_key": job.output.get("report_key"),
            "bytes": int(job.output["bytes"]) if job.output.get("bytes") is not None else None,
            "frames": int(job.segment_totals.get("frames", 0)) or None,
        }
    error = None
    if state == "FAILED" and job.error:
        error = {"code": str(job.error.get("code", "internal")), "reason": str(job.error.get("reason", ""))}
        if job.error.get("segment") is not None:
            error["segment"] = int(job.error["segment"])
    body: dict[str, Any] = {
        "version": VERSION,
        "job_id": job.job_id,
        "state": state,
        "time": _iso(time.time() if now is None else now),
        "input": {
            "bucket": job.input.get("bucket", ""),
            "key": job.input.get("key", ""),
            "version_id": job.input.get("version_id"),
            "size": int(job.input["size"]) if job.input.get("size") is not None else None,
        },
        "progress": {
            "segments_done": done,
            "segments_total": total,
            "percent": round(100.0 * done / total, 1) if total else (100.0 if state == "COMPLETE" else 0.0),
        },
        "plan": plan,
        "output": output,
        "error": error,
    }
    if milestone is not None:
        body["milestone"] = milestone
    return body


def entry(body: dict[str, Any], bus: str) -> dict[str, Any]:
    return {
        "Source": SOURCE,
        "DetailType": DETAIL_TYPE,
        "Detail": json.dumps(body, default=str),
        "EventBusName": bus,
        "Resources": [],
    }


@retry(stop=stop_after_attempt(PUT_ATTEMPTS), wait=wait_random_exponential(multiplier=0.2, max=2.0), reraise=True)
def _put_events(entries: list[dict[str, Any]]) -> None:
    response = clients.events().put_events(Entries=entries)
    if int(response.get("FailedEntryCount", 0)):
        failures = [e for e in response.get("Entries", []) if e.get("ErrorCode")]
        raise EventDeliveryError(f"PutEvents refused {len(failures)} entr(ies): {failures[:1]}")


def emit(job: Job, state: str, *, milestone: int | None = None, bus: str | None = None) -> bool:
    """Send one job event; False (logged, metric set) when events are off or it could not be delivered."""
    bus = Resources.from_env().event_bus if bus is None else bus
    if not bus:
        return False
    body = detail(job, state, milestone=milestone)
    try:
        _put_events([entry(body, bus)])
    except Exception as exc:  # never fail the job for its notification
        log.error(
            "job_event.undelivered",
            job_id=job.job_id,
            state=state,
            milestone=milestone,
            error=f"{type(exc).__name__}: {exc}",
            _aws={
                "Timestamp": int(time.time() * 1000),
                "CloudWatchMetrics": [
                    {
                        "Namespace": METRIC_NAMESPACE,
                        "Dimensions": [[]],
                        "Metrics": [{"Name": UNDELIVERED_METRIC, "Unit": "Count"}],
                    }
                ],
            },
            **{UNDELIVERED_METRIC: 1},
        )
        return False
    log.info("job_event.sent", job_id=job.job_id, state=state, milestone=milestone)
    return True
