"""The job record: statuses, the item's (de)serialisation and the `Job` view of it (no AWS calls).

See vsr.pipeline.jobs for the item layout.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

from vsr.errors import VsrError


class Status(StrEnum):
    """Where a job is; the allowed moves between them are vsr.pipeline.jobs.transitions.TRANSITIONS."""

    QUEUED = "QUEUED"  # created; ingest may not have sent every segment message yet
    PROCESSING = "PROCESSING"  # every segment message sent; workers count segments down
    ASSEMBLING = "ASSEMBLING"  # an assembly holds the lease
    COMPLETE = "COMPLETE"
    FAILED = "FAILED"


QUEUED, PROCESSING, ASSEMBLING, COMPLETE, FAILED = (
    Status.QUEUED,
    Status.PROCESSING,
    Status.ASSEMBLING,
    Status.COMPLETE,
    Status.FAILED,
)
STATUSES = tuple(Status)
ACTIVE = (QUEUED, PROCESSING, ASSEMBLING)  # FAILED and COMPLETE are terminal

KEY = "job_id"
TTL_ATTRIBUTE = "expires_at"

# decode/infer/encode overlap (process_segment pipelines them in threads), so process_s, the wall time of
# decode -> upscale -> encode, is the compute time; wall_s is the whole invocation (setup and upload too).
SEGMENT_TIMING_FIELDS = ("decode_s", "infer_s", "encode_s", "temporal_s", "process_s", "wall_s")
# input pixels a guarded int8 model upscaled, and those it recomputed in fp32 (vsr.guard), summed like timings
SEGMENT_GUARD_FIELDS = ("guard_px", "guard_recomputed_px")
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
    executions: set[str] = field(default_factory=set)  # "<tier>:<provider>" of every counted segment

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
                name: data.get(f"seg_{name}", 0)
                for name in (*SEGMENT_TIMING_FIELDS, *SEGMENT_GUARD_FIELDS, "frames")
                if f"seg_{name}" in data
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
            executions={str(e) for e in data.get("executions", set())},
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
            "executions": sorted(self.executions),
        }


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
    if status == FAILED:  # created at its end (ingest refused it): the same field as a job failed later
        item["completed_at"] = now
    if ingest_message_id:
        item["ingest_message_id"] = ingest_message_id
    if plan:
        item["plan"] = dict(plan)
    return item


def error_dict(error: BaseException, segment: int | None = None) -> dict[str, Any]:
    if isinstance(error, VsrError):
        data: dict[str, Any] = {"code": error.code, "reason": error.reason}
    else:
        data = {"code": "internal", "reason": f"{type(error).__name__}: {error}"}
    if segment is not None:
        data["segment"] = segment
    return data
