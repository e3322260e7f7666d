"""The job's state machine: which status moves are allowed, and the pure UpdateItem builders that make them.

Every builder's condition only admits a move listed in TRANSITIONS, so DynamoDB enforces the state machine
atomically; `tests/pipeline/test_jobs.py` checks the list and the builders against each other.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from vsr.errors import VsrError
from vsr.pipeline.jobs.record import (
    ASSEMBLING,
    COMPLETE,
    FAILED,
    KEY,
    MAX_ERROR_CHARS,
    PROCESSING,
    QUEUED,
    SEGMENT_GUARD_FIELDS,
    SEGMENT_TIMING_FIELDS,
    Status,
    serialize,
)

# (from, to) -> what makes the move. Anything else never happens: a duplicate or late event leaves the item alone.
TRANSITIONS: dict[tuple[Status, Status], str] = {
    (QUEUED, PROCESSING): "ingest sent every segment message (mark_processing)",
    (QUEUED, ASSEMBLING): "every segment counted before ingest marked the job PROCESSING (lease)",
    (PROCESSING, ASSEMBLING): "the last segment was counted and an assembly took the lease (lease)",
    (ASSEMBLING, ASSEMBLING): "a crashed assembly's lease expired or its stream retry retakes it (lease)",
    (ASSEMBLING, COMPLETE): "the lease holder uploaded the output and report (complete)",
    (QUEUED, FAILED): "a permanent error (fail)",
    (PROCESSING, FAILED): "a permanent error in a segment (fail)",
    (ASSEMBLING, FAILED): "a permanent error in the join (fail)",
    (FAILED, PROCESSING): "`vsr redrive` returned a dead-lettered segment of a job FAILED for it (reopen)",
    (FAILED, QUEUED): "a redriven ingest event retries an ingest that was FAILED when it dead-lettered (create)",
}
# The one FAILED that is not final: a stage ran out of attempts and its message waits in a dead-letter queue.
# Only such a job may leave FAILED, and only by the two moves above (vsr.errors.DeadLetteredError).
DEAD_LETTERED = "dead_lettered"
# Two builders move a job to PROCESSING, each from its own listed source.
MARK_PROCESSING_FROM = (QUEUED,)
REOPEN_FROM = (FAILED,)
# Moves that keep the status: counting segments and reporting progress while the job runs.
COUNTING = (QUEUED, PROCESSING)


def allowed(source: Status, target: Status) -> bool:
    return (source, target) in TRANSITIONS


def sources_of(target: Status) -> tuple[Status, ...]:
    """The statuses a job may be in for a move to `target` (in Status order)."""
    return tuple(s for s in Status if (s, target) in TRANSITIONS)


@dataclass(frozen=True)
class Update:
    """Arguments of one UpdateItem call, before serialisation of the values."""

    update: str
    condition: str | None
    names: dict[str, str]
    values: dict[str, Any]

    def request(self, table: str, job_id: str) -> dict[str, Any]:
        args: dict[str, Any] = {
            "TableName": table,
            "Key": serialize({KEY: job_id}),
            "UpdateExpression": self.update,
        }
        if self.names:  # DynamoDB rejects an empty map
            args["ExpressionAttributeNames"] = self.names
        if self.values:
            args["ExpressionAttributeValues"] = serialize(self.values)
        if self.condition:
            args["ConditionExpression"] = self.condition
        return args


def _status_in(statuses: tuple[str, ...], values: dict[str, Any], prefix: str = "st") -> str:
    names = []
    for i, status in enumerate(statuses):
        values[f":{prefix}{i}"] = status
        names.append(f":{prefix}{i}")
    return f"#status IN ({', '.join(names)})"


def mark_processing_update(now: float, timings: Mapping[str, Any]) -> Update:
    values: dict[str, Any] = {":processing": PROCESSING, ":now": now}
    sets = ["#status = :processing", "updated_at = :now"]
    names = {"#status": "status"}
    for i, (name, value) in enumerate(sorted(timings.items())):
        names[f"#t{i}"] = name
        values[f":t{i}"] = value
        sets.append(f"timings.#t{i} = :t{i}")
    return Update(f"SET {', '.join(sets)}", _status_in(MARK_PROCESSING_FROM, values), names, values)


def segment_done_update(
    index: int, timings: Mapping[str, float], frames: int, now: float, execution: str | None = None
) -> Update:
    """ADD the index to `done` and decrement `remaining`, only if not counted yet and the job still runs.
    `execution` ("gpu:CUDAExecutionProvider", ...) joins the set of tiers and providers the job's segments ran on."""
    values: dict[str, Any] = {":idx_set": {index}, ":idx": index, ":minus1": -1, ":zero": 0, ":now": now}
    adds = ["done :idx_set", "remaining :minus1"]
    if execution:
        values[":exec"] = {execution}
        adds.append("executions :exec")
    for name in SEGMENT_TIMING_FIELDS:
        values[f":{name}"] = float(timings.get(name, 0.0))
        adds.append(f"seg_{name} :{name}")
    for name in SEGMENT_GUARD_FIELDS:
        if timings.get(name):
            values[f":{name}"] = float(timings[name])
            adds.append(f"seg_{name} :{name}")
    values[":frames"] = int(frames)
    adds.append("seg_frames :frames")
    condition = "attribute_exists(job_id) AND NOT contains(done, :idx) AND remaining > :zero AND " + _status_in(
        COUNTING, values
    )
    return Update(f"SET updated_at = :now ADD {', '.join(adds)}", condition, {"#status": "status"}, values)


def segment_error_update(
    index: int,
    attempts: int,
    error: VsrError | BaseException,
    now: float,
    max_attempts: int | None = None,
    next_at: float | None = None,
) -> Update:
    """A segment's failed attempt: its count, error and, when paced by vsr.pipeline.retry, the attempt limit
    and when the retry's backoff ends (what `vsr status` shows as "next in 30 s")."""
    code = error.code if isinstance(error, VsrError) else type(error).__name__
    text = error.reason if isinstance(error, VsrError) else f"{type(error).__name__}: {error}"
    entry: dict[str, Any] = {"attempts": int(attempts), "code": code, "error": text[:MAX_ERROR_CHARS], "at": now}
    if max_attempts is not None:
        entry["max_attempts"] = int(max_attempts)
    if next_at is not None:
        entry["next_at"] = float(next_at)
    values = {":err": entry, ":now": now}
    return Update(
        "SET seg_errors.#idx = :err, updated_at = :now",
        "attribute_exists(job_id)",
        {"#idx": str(index)},
        values,
    )


def segment_progress_update(index: int, frames: int, now: float) -> Update:
    """Frames written so far by a running segment; ignored once it is counted or the job stopped."""
    values: dict[str, Any] = {":frames": int(frames), ":idx": index, ":now": now}
    condition = "attribute_exists(seg_progress) AND NOT contains(done, :idx) AND " + _status_in(COUNTING, values)
    return Update(
        "SET seg_progress.#idx = :frames, updated_at = :now",
        condition,
        {"#idx": str(index), "#status": "status"},
        values,
    )


def fail_update(error: Mapping[str, Any], now: float) -> Update:
    values: dict[str, Any] = {":failed": FAILED, ":err": dict(error), ":now": now}
    condition = _status_in(sources_of(FAILED), values)
    return Update(
        "SET #status = :failed, #error = :err, updated_at = :now, completed_at = :now REMOVE lease_owner, lease_until",
        condition,
        {"#status": "status", "#error": "error"},
        values,
    )


def lease_update(owner: str, now: float, lease_s: float) -> Update:
    """Take the assembly lease: all segments done, job active, and no live lease held by someone else.

    The owner may retake its own live lease: a stream retry of the same record (same owner id) after a crash
    must not wait for the lease to expire.
    """
    values: dict[str, Any] = {
        ":assembling": ASSEMBLING,
        ":owner": owner,
        ":until": now + lease_s,
        ":now": now,
        ":zero": 0,
        ":one": 1,
    }
    condition = (
        "attribute_exists(job_id) AND remaining = :zero AND "
        + _status_in(sources_of(ASSEMBLING), values)
        + " AND (attribute_not_exists(lease_until) OR lease_until < :now OR lease_owner = :owner)"
    )
    return Update(
        "SET #status = :assembling, lease_owner = :owner, lease_until = :until, updated_at = :now "
        "ADD assembly_attempts :one",
        condition,
        {"#status": "status"},
        values,
    )


def release_lease_update(owner: str, now: float) -> Update:
    return Update(
        "SET updated_at = :now REMOVE lease_owner, lease_until",
        "lease_owner = :owner AND #status = :assembling",
        {"#status": "status"},
        {":owner": owner, ":assembling": ASSEMBLING, ":now": now},
    )


def quality_update(flicker_ratio: float | None, preview_key: str | None, now: float) -> Update:
    """The job's own quality check, recorded after COMPLETE (the status does not move)."""
    values: dict[str, Any] = {":true": True, ":now": now}
    sets = ["#output.quality_measured = :true", "updated_at = :now"]
    if flicker_ratio is not None:
        values[":flicker"] = float(flicker_ratio)
        sets.append("#output.flicker_ratio = :flicker")
    if preview_key:
        values[":preview"] = preview_key
        sets.append("#output.preview_key = :preview")
    condition = _status_in((COMPLETE,), values) + " AND attribute_exists(#output)"
    return Update(f"SET {', '.join(sets)}", condition, {"#status": "status", "#output": "output"}, values)


def complete_update(owner: str, output: Mapping[str, Any], timings: Mapping[str, Any], now: float) -> Update:
    values: dict[str, Any] = {":complete": COMPLETE, ":owner": owner, ":output": dict(output), ":now": now}
    names = {"#status": "status"}
    sets = ["#status = :complete", "#output = :output", "updated_at = :now", "completed_at = :now"]
    names["#output"] = "output"
    for i, (name, value) in enumerate(sorted(timings.items())):
        names[f"#t{i}"] = name
        values[f":t{i}"] = value
        sets.append(f"timings.#t{i} = :t{i}")
    return Update(
        f"SET {', '.join(sets)} REMOVE lease_owner, lease_until",
        _status_in(sources_of(COMPLETE), values) + " AND lease_owner = :owner",
        names,
        values,
    )


def reopen_update(segments: tuple[int, ...], now: float) -> Update:
    """FAILED -> PROCESSING for a job that failed because a segment was dead-lettered (its error's code and
    segment) and still has segments to count; the returned segments' recorded errors are cleared (fresh
    attempts)."""
    values: dict[str, Any] = {":processing": PROCESSING, ":dead": DEAD_LETTERED, ":zero": 0, ":now": now}
    names = {"#status": "status", "#error": "error", "#code": "code", "#seg": "segment"}
    removes = ["#error", "completed_at"]
    for i, index in enumerate(sorted(set(segments))):
        names[f"#s{i}"] = str(index)
        removes.append(f"seg_errors.#s{i}")
    condition = (
        _status_in(REOPEN_FROM, values)
        + " AND #error.#code = :dead AND attribute_exists(#error.#seg) AND remaining > :zero"
    )
    return Update(f"SET #status = :processing, updated_at = :now REMOVE {', '.join(removes)}", condition, names, values)


def create_condition() -> Update:
    """PutItem condition (and its names and values) of a new job: no item yet, or one FAILED because its
    ingest dead-lettered (FAILED -> QUEUED: the redriven event starts the job over). A permanent failure, a
    job FAILED for a dead-lettered segment (error.segment: `vsr redrive` reopens that one) or a running job is
    never replaced."""
    values: dict[str, Any] = {":dead": DEAD_LETTERED}
    dead_ingest = (
        f"{_status_in(sources_of(QUEUED), values)} AND #error.#code = :dead AND attribute_not_exists(#error.#seg)"
    )
    names = {"#status": "status", "#error": "error", "#code": "code", "#seg": "segment"}
    return Update("", f"attribute_not_exists(job_id) OR ({dead_ingest})", names, values)
