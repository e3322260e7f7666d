"""The job record: one DynamoDB item per uploaded object, and the conditional updates that move it along.

Item layout (table key: `job_id`, string):

    job_id            sha256 of bucket, key and version id (or ETag): a duplicate S3 event maps to the same job
    status            QUEUED -> PROCESSING -> ASSEMBLING -> COMPLETE, or FAILED (terminal) from any earlier state.
                      QUEUED also means "ingest has not finished enqueuing": a redelivered S3 event resumes it.
    input             {bucket, key, version_id, etag, size}
    model             {name, scale, key}
    probe             summary for people and the report (size, fps, frames, duration, format, codec, audio);
                      the full VideoInfo (with its pts table, up to ~1 MB) lives in S3 at `artifacts.probe`
    artifacts         {bucket, probe, plan}: S3 keys in the work bucket of the full probe and the segment plan.
                      The plan is in S3, not in the item: a long video at a small segment size is tens of
                      thousands of segments (~150 B each), past DynamoDB's 400 KB item limit.
    segment_count     number of segments planned
    remaining         segments not finished yet; the stream filter fires assembly when it goes to 0
    done              number set of finished segment indexes (absent until the first one: sets cannot be empty)
    seg_errors        {"<index>": {attempts, code, error, at}} for segments that failed (transiently) at least once
    seg_progress      {"<index>": frames written so far} for running segments, written every
                      jobs.progress_interval_s by the worker so a long segment can be followed frame by frame
    seg_decode_s, seg_infer_s, seg_encode_s, seg_process_s, seg_wall_s, seg_frames
                      sums over finished segments (ADD, constant size); per-segment timings travel as metadata
                      on the segment objects and end up in the report
    timings           {ingest_s, probe_s, enqueue_s, assembly_s, ...}
    output            {bucket, key, report_key} once COMPLETE
    error             {code, reason, segment?} once FAILED: the user-facing reason
    lease_owner, lease_until   the assembly lease (see `acquire_assembly_lease`)
    created_at, updated_at, completed_at     epoch seconds
    expires_at        TTL attribute (settings jobs.ttl_days after creation)
    ingest_message_id the SQS message id of the S3 event that created the job

Every function here does one DynamoDB call (get, put or conditional update). The expression builders are
pure functions (unit-tested) returning the request arguments before serialisation.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import botocore.exceptions
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

from vsr.aws import clients
from vsr.aws.clients import as_transient, aws_retry, is_conditional_check_failed
from vsr.aws.resources import Resources
from vsr.errors import VsrError
from vsr.logs import get_logger
from vsr.settings import get_settings

log = get_logger(__name__)

KEY = "job_id"
TTL_ATTRIBUTE = "expires_at"

QUEUED = "QUEUED"
PROCESSING = "PROCESSING"
ASSEMBLING = "ASSEMBLING"
COMPLETE = "COMPLETE"
FAILED = "FAILED"
STATUSES = (QUEUED, PROCESSING, ASSEMBLING, COMPLETE, FAILED)
ACTIVE = (QUEUED, PROCESSING, ASSEMBLING)  # FAILED and COMPLETE are terminal

# decode/infer/encode overlap (process_segment pipelines them in threads), so process_s, the wall time of
# decode -> upscale -> encode, is the compute time; wall_s is the whole invocation (setup and upload too).
SEGMENT_TIMING_FIELDS = ("decode_s", "infer_s", "encode_s", "process_s", "wall_s")
MAX_ERROR_CHARS = 1000  # keeps seg_errors bounded however many segments fail

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def table_spec() -> dict[str, Any]:
    """CreateTable arguments (minus TableName) for the local runtime; Terraform declares the same table."""
    return {
        "KeySchema": [{"AttributeName": KEY, "KeyType": "HASH"}],
        "AttributeDefinitions": [{"AttributeName": KEY, "AttributeType": "S"}],
        "BillingMode": "PAY_PER_REQUEST",
        "StreamSpecification": {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    }


# --- job id -----------------------------------------------------------------------------------------
def job_id_for(bucket: str, key: str, version_id: str | None, etag: str | None) -> str:
    """Stable id of one uploaded object version: the same S3 event delivered twice gives the same id."""
    import hashlib

    identity = version_id or (etag or "").strip('"')
    digest = hashlib.sha256("\0".join((bucket, key, identity)).encode()).hexdigest()
    return digest[:32]


# --- (de)serialisation ------------------------------------------------------------------------------
def _to_dynamo_value(value: Any) -> Any:
    """Python -> types TypeSerializer accepts (floats become Decimals, tuples lists)."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, float):
        return Decimal(repr(round(value, 6)))
    if isinstance(value, Mapping):
        return {str(k): _to_dynamo_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_to_dynamo_value(v) for v in value]
    if isinstance(value, set | frozenset):
        return {_to_dynamo_value(v) for v in value}
    return value


def serialize(values: Mapping[str, Any]) -> dict[str, Any]:
    return {name: _serializer.serialize(_to_dynamo_value(value)) for name, value in values.items()}


def _from_dynamo_value(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _from_dynamo_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_dynamo_value(v) for v in value]
    if isinstance(value, set):
        return {_from_dynamo_value(v) for v in value}
    return value


def deserialize(item: Mapping[str, Any]) -> dict[str, Any]:
    return {name: _from_dynamo_value(_deserializer.deserialize(value)) for name, value in item.items()}


# --- the job view -----------------------------------------------------------------------------------
@dataclass
class Job:
    """A job item as plain Python values (what `vsr status` and the stages read)."""

    job_id: str
    status: str
    input: dict[str, Any]
    model: dict[str, Any] = field(default_factory=dict)
    probe: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, Any] = field(default_factory=dict)
    segment_count: int = 0
    remaining: int = 0
    done: set[int] = field(default_factory=set)
    segment_errors: dict[int, dict[str, Any]] = field(default_factory=dict)
    segment_progress: dict[int, int] = field(default_factory=dict)
    segment_totals: dict[str, float] = field(default_factory=dict)
    timings: dict[str, Any] = field(default_factory=dict)
    output: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    lease_owner: str | None = None
    lease_until: float | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    completed_at: float | None = None
    expires_at: int | None = None
    ingest_message_id: str | None = None
    plan: dict[str, Any] = field(default_factory=dict)  # the chosen plan's predictions (vsr.planning.PlanChoice)

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> Job:
        data = deserialize(item)
        return cls(
            job_id=data[KEY],
            status=data["status"],
            input=data.get("input", {}),
            model=data.get("model", {}),
            probe=data.get("probe", {}),
            artifacts=data.get("artifacts", {}),
            segment_count=int(data.get("segment_count", 0)),
            remaining=int(data.get("remaining", 0)),
            done={int(i) for i in data.get("done", set())},
            segment_errors={int(k): v for k, v in data.get("seg_errors", {}).items()},
            segment_progress={int(k): int(v) for k, v in data.get("seg_progress", {}).items()},
            segment_totals={
                name: data.get(f"seg_{name}", 0) for name in (*SEGMENT_TIMING_FIELDS, "frames") if f"seg_{name}" in data
            },
            timings=data.get("timings", {}),
            output=data.get("output"),
            error=data.get("error"),
            lease_owner=data.get("lease_owner"),
            lease_until=data.get("lease_until"),
            created_at=data.get("created_at", 0.0),
            updated_at=data.get("updated_at", 0.0),
            completed_at=data.get("completed_at"),
            expires_at=data.get(TTL_ATTRIBUTE),
            ingest_message_id=data.get("ingest_message_id"),
            plan=data.get("plan", {}),
        )

    @property
    def terminal(self) -> bool:
        return self.status in (COMPLETE, FAILED)

    @property
    def frames_total(self) -> int:
        return int(self.probe.get("frames") or 0)

    @property
    def frames_done(self) -> int:
        """Frames of finished segments plus the last reported progress of running ones."""
        running = sum(frames for index, frames in self.segment_progress.items() if index not in self.done)
        return int(self.segment_totals.get("frames", 0)) + running

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly (sets as sorted lists, int keys as strings)."""
        return {
            "job_id": self.job_id,
            "status": self.status,
            "input": self.input,
            "model": self.model,
            "probe": self.probe,
            "artifacts": self.artifacts,
            "segment_count": self.segment_count,
            "remaining": self.remaining,
            "done": sorted(self.done),
            "segment_errors": {str(k): v for k, v in sorted(self.segment_errors.items())},
            "segment_progress": {str(k): v for k, v in sorted(self.segment_progress.items())},
            "frames_done": self.frames_done,
            "frames_total": self.frames_total,
            "segment_totals": self.segment_totals,
            "timings": self.timings,
            "output": self.output,
            "error": self.error,
            "lease_owner": self.lease_owner,
            "lease_until": self.lease_until,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "completed_at": self.completed_at,
            "expires_at": self.expires_at,
            "plan": self.plan,
        }


# --- expression builders (pure) ---------------------------------------------------------------------
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


def new_job_item(
    *,
    job_id: str,
    status: str,
    input_ref: Mapping[str, Any],
    now: float,
    ttl_s: int,
    model: Mapping[str, Any] | None = None,
    probe: Mapping[str, Any] | None = None,
    artifacts: Mapping[str, Any] | None = None,
    segment_count: int = 0,
    timings: Mapping[str, Any] | None = None,
    error: Mapping[str, Any] | None = None,
    ingest_message_id: str | None = None,
    plan: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    if status not in (QUEUED, FAILED):
        raise ValueError(f"a job is created QUEUED or FAILED, not {status}")
    item: dict[str, Any] = {
        KEY: job_id,
        "status": status,
        "input": dict(input_ref),
        "model": dict(model or {}),
        "probe": dict(probe or {}),
        "artifacts": dict(artifacts or {}),
        "segment_count": segment_count,
        "remaining": segment_count if status == QUEUED else 0,
        "seg_errors": {},
        "seg_progress": {},
        "timings": dict(timings or {}),
        "created_at": now,
        "updated_at": now,
        TTL_ATTRIBUTE: int(now + ttl_s),
    }
    if error:
        item["error"] = dict(error)
    if ingest_message_id:
        item["ingest_message_id"] = ingest_message_id
    if plan:
        item["plan"] = dict(plan)
    return item


def mark_processing_update(now: float, timings: Mapping[str, Any]) -> Update:
    values: dict[str, Any] = {":processing": PROCESSING, ":queued": QUEUED, ":now": now}
    sets = ["#status = :processing", "updated_at = :now"]
    names = {"#status": "status"}
    for i, (name, value) in enumerate(sorted(timings.items())):
        names[f"#t{i}"] = name
        values[f":t{i}"] = value
        sets.append(f"timings.#t{i} = :t{i}")
    return Update(f"SET {', '.join(sets)}", "#status = :queued", names, values)


def segment_done_update(index: int, timings: Mapping[str, float], frames: int, now: float) -> Update:
    """ADD the index to `done` and decrement `remaining`, only if not counted yet and the job still runs."""
    values: dict[str, Any] = {":idx_set": {index}, ":idx": index, ":minus1": -1, ":zero": 0, ":now": now}
    adds = ["done :idx_set", "remaining :minus1"]
    for name in SEGMENT_TIMING_FIELDS:
        values[f":{name}"] = float(timings.get(name, 0.0))
        adds.append(f"seg_{name} :{name}")
    values[":frames"] = int(frames)
    adds.append("seg_frames :frames")
    condition = "attribute_exists(job_id) AND NOT contains(done, :idx) AND remaining > :zero AND " + _status_in(
        (QUEUED, PROCESSING), values
    )
    return Update(f"SET updated_at = :now ADD {', '.join(adds)}", condition, {"#status": "status"}, values)


def segment_error_update(index: int, attempts: int, error: VsrError | BaseException, now: float) -> Update:
    code = error.code if isinstance(error, VsrError) else type(error).__name__
    text = error.reason if isinstance(error, VsrError) else f"{type(error).__name__}: {error}"
    values = {
        ":err": {"attempts": int(attempts), "code": code, "error": text[:MAX_ERROR_CHARS], "at": now},
        ":now": now,
    }
    return Update(
        "SET seg_errors.#idx = :err, updated_at = :now",
        "attribute_exists(job_id)",
        {"#idx": str(index)},
        values,
    )


def segment_progress_update(index: int, frames: int, now: float) -> Update:
    """Frames written so far by a running segment; ignored once it is counted or the job stopped."""
    values: dict[str, Any] = {":frames": int(frames), ":idx": index, ":now": now}
    condition = "attribute_exists(seg_progress) AND NOT contains(done, :idx) AND " + _status_in(
        (QUEUED, PROCESSING), values
    )
    return Update(
        "SET seg_progress.#idx = :frames, updated_at = :now",
        condition,
        {"#idx": str(index), "#status": "status"},
        values,
    )


def fail_update(error: Mapping[str, Any], now: float) -> Update:
    values: dict[str, Any] = {":failed": FAILED, ":err": dict(error), ":now": now}
    condition = _status_in(ACTIVE, values)
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
        + _status_in(ACTIVE, values)
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


def complete_update(owner: str, output: Mapping[str, Any], timings: Mapping[str, Any], now: float) -> Update:
    values: dict[str, Any] = {
        ":complete": COMPLETE,
        ":assembling": ASSEMBLING,
        ":owner": owner,
        ":output": dict(output),
        ":now": now,
    }
    names = {"#status": "status"}
    sets = ["#status = :complete", "#output = :output", "updated_at = :now", "completed_at = :now"]
    names["#output"] = "output"
    for i, (name, value) in enumerate(sorted(timings.items())):
        names[f"#t{i}"] = name
        values[f":t{i}"] = value
        sets.append(f"timings.#t{i} = :t{i}")
    return Update(
        f"SET {', '.join(sets)} REMOVE lease_owner, lease_until",
        "#status = :assembling AND lease_owner = :owner",
        names,
        values,
    )


# --- calls --------------------------------------------------------------------------------------------
def _table(table: str | None) -> str:
    return table or Resources.from_env().require("table").table


@aws_retry()
def _update(update: Update, table: str, job_id: str, return_new: bool = False) -> dict[str, Any] | None:
    """One conditional UpdateItem; None when the condition failed (the caller decides what that means)."""
    args = update.request(table, job_id)
    if return_new:
        args["ReturnValues"] = "ALL_NEW"
    try:
        response = clients.dynamodb().update_item(**args)
    except botocore.exceptions.ClientError as exc:
        if is_conditional_check_failed(exc):
            return None
        raise
    return response.get("Attributes", {})


def _call(what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except botocore.exceptions.BotoCoreError as exc:
        raise as_transient(exc, what) from exc
    except botocore.exceptions.ClientError as exc:
        if clients.is_transient(exc):
            raise as_transient(exc, what) from exc
        raise


def create_job(item: Mapping[str, Any], table: str | None = None) -> bool:
    """Put a new job item (see `new_job_item`) unless one with that id exists. True if this call created it."""

    @aws_retry()
    def put() -> bool:
        try:
            clients.dynamodb().put_item(
                TableName=_table(table),
                Item=serialize(item),
                ConditionExpression="attribute_not_exists(job_id)",
            )
        except botocore.exceptions.ClientError as exc:
            if is_conditional_check_failed(exc):
                return False
            raise
        return True

    created = _call("create job", put)
    log.info("job_created" if created else "job_exists", job_id=item[KEY], status=item["status"])
    return bool(created)


def get_job(job_id: str, table: str | None = None) -> Job | None:
    """Strongly consistent read: the stages decide on what is really there."""

    @aws_retry()
    def get() -> dict[str, Any]:
        return clients.dynamodb().get_item(TableName=_table(table), Key=serialize({KEY: job_id}), ConsistentRead=True)

    item = _call("get job", get).get("Item")
    return Job.from_item(item) if item else None


def list_jobs(table: str | None = None, limit: int | None = None) -> list[Job]:
    """All jobs, newest first (a Scan: fine for an operator's listing, not for a hot path)."""
    return sorted(iter_jobs(table, limit), key=lambda job: job.created_at, reverse=True)


def iter_jobs(table: str | None = None, limit: int | None = None) -> Iterator[Job]:
    paginator = clients.dynamodb().get_paginator("scan")
    count = 0
    for page in _call("list jobs", lambda: list(paginator.paginate(TableName=_table(table), ConsistentRead=True))):
        for item in page.get("Items", []):
            yield Job.from_item(item)
            count += 1
            if limit is not None and count >= limit:
                return


def mark_processing(job_id: str, timings: Mapping[str, Any] | None = None, table: str | None = None) -> bool:
    """QUEUED -> PROCESSING once every segment message is sent. False if the job had already moved on."""
    done = _call("mark processing", _update, mark_processing_update(time.time(), timings or {}), _table(table), job_id)
    return done is not None


def mark_segment_done(
    job_id: str,
    index: int,
    timings: Mapping[str, float],
    frames: int = 0,
    table: str | None = None,
) -> bool:
    """Count a finished segment with ONE conditional update; False (and nothing changed) for a duplicate,
    an unknown job or a job that is no longer running."""
    new = _call(
        "mark segment done",
        _update,
        segment_done_update(index, timings, frames, time.time()),
        _table(table),
        job_id,
        return_new=True,
    )
    if new is None:
        log.info("segment_already_counted_or_job_inactive", job_id=job_id, segment=index)
        return False
    remaining = deserialize(new).get("remaining")
    log.info("segment_counted", job_id=job_id, segment=index, remaining=remaining)
    return True


def record_segment_error(
    job_id: str, index: int, attempts: int, error: BaseException, table: str | None = None
) -> bool:
    """Remember a segment's attempt count and last error (shown by `vsr status`, kept when it dead-letters)."""
    done = _call(
        "record segment error",
        _update,
        segment_error_update(index, attempts, error, time.time()),
        _table(table),
        job_id,
    )
    return done is not None


def record_segment_progress(job_id: str, index: int, frames: int, table: str | None = None) -> bool:
    """Report a running segment's frames; False when the segment is already counted or the job stopped."""
    done = _call(
        "record segment progress",
        _update,
        segment_progress_update(index, frames, time.time()),
        _table(table),
        job_id,
    )
    return done is not None


def error_dict(error: BaseException, segment: int | None = None) -> dict[str, Any]:
    if isinstance(error, VsrError):
        data: dict[str, Any] = {"code": error.code, "reason": error.reason}
    else:
        data = {"code": "internal", "reason": f"{type(error).__name__}: {error}"}
    if segment is not None:
        data["segment"] = segment
    return data


def fail_job(job_id: str, error: BaseException, segment: int | None = None, table: str | None = None) -> bool:
    """Move an active job to FAILED with a user-facing reason, once. False if it was already terminal."""
    failed = _call("fail job", _update, fail_update(error_dict(error, segment), time.time()), _table(table), job_id)
    if failed is None:
        log.info("job_already_terminal", job_id=job_id)
        return False
    log.warning("job_failed", job_id=job_id, error=error_dict(error, segment))
    return True


def acquire_assembly_lease(job_id: str, owner: str, lease_s: float | None = None, table: str | None = None) -> bool:
    """Take the assembly lease (status ASSEMBLING) so one assembly runs; a crashed holder's lease expires after
    settings jobs.assembly_lease_s and can then be retaken."""
    seconds = get_settings().assembly_lease_s if lease_s is None else lease_s
    taken = _call("acquire lease", _update, lease_update(owner, time.time(), seconds), _table(table), job_id)
    return taken is not None


def release_assembly_lease(job_id: str, owner: str, table: str | None = None) -> bool:
    """Give the lease back after a failed attempt so a retry need not wait for it to expire."""
    released = _call("release lease", _update, release_lease_update(owner, time.time()), _table(table), job_id)
    return released is not None


def complete_job(
    job_id: str,
    owner: str,
    output: Mapping[str, Any],
    timings: Mapping[str, Any] | None = None,
    table: str | None = None,
) -> bool:
    """ASSEMBLING -> COMPLETE by the lease holder, with the output location and assembly timings."""
    done = _call(
        "complete job", _update, complete_update(owner, output, timings or {}, time.time()), _table(table), job_id
    )
    return done is not None


__all__ = [
    "ACTIVE",
    "ASSEMBLING",
    "COMPLETE",
    "FAILED",
    "KEY",
    "PROCESSING",
    "QUEUED",
    "STATUSES",
    "TTL_ATTRIBUTE",
    "Job",
    "acquire_assembly_lease",
    "complete_job",
    "create_job",
    "fail_job",
    "get_job",
    "job_id_for",
    "list_jobs",
    "mark_processing",
    "mark_segment_done",
    "new_job_item",
    "record_segment_error",
    "record_segment_progress",
    "release_assembly_lease",
    "table_spec",
]
