"""The job table's DynamoDB calls: one get, put, scan or conditional update each, retried by clients.call."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import Any

import botocore.exceptions

from vsr.aws import clients
from vsr.aws.clients import is_conditional_check_failed
from vsr.aws.resources import Resources
from vsr.logs import get_logger
from vsr.pipeline.jobs import notify
from vsr.pipeline.jobs.record import FAILED, KEY, QUEUED, Job, deserialize, error_dict, serialize
from vsr.pipeline.jobs.transitions import (
    Update,
    complete_update,
    create_condition,
    fail_update,
    lease_update,
    mark_processing_update,
    quality_update,
    release_lease_update,
    reopen_update,
    segment_done_update,
    segment_error_update,
    segment_progress_update,
)

log = get_logger(__name__)


def _table(table: str | None) -> str:
    return table or Resources.from_env().require("table").table


def _update(
    what: str, update: Update, table: str | None, job_id: str, return_new: bool = False
) -> dict[str, Any] | None:
    """One conditional UpdateItem; None when the condition failed (the caller decides what that means)."""
    args = update.request(_table(table), job_id)
    if return_new:
        args["ReturnValues"] = "ALL_NEW"

    def update_item() -> dict[str, Any] | None:
        try:
            response = clients.dynamodb().update_item(**args)
        except botocore.exceptions.ClientError as exc:
            if is_conditional_check_failed(exc):
                return None
            raise
        return dict(response.get("Attributes", {}))

    return clients.call(what, update_item)


def create_job(item: Mapping[str, Any], table: str | None = None) -> bool:
    """Put a new job item (see `new_job_item`) unless one with that id exists. True if this call created it.

    A QUEUED item also replaces a job that FAILED because its ingest dead-lettered (`create_condition`): that is
    the redriven upload event starting the job over."""
    if item["status"] == QUEUED:
        guard = create_condition()
        condition: dict[str, Any] = {
            "ConditionExpression": guard.condition,
            "ExpressionAttributeNames": guard.names,
            "ExpressionAttributeValues": serialize(guard.values),
        }
    else:
        condition = {"ConditionExpression": "attribute_not_exists(job_id)"}

    def put() -> bool:
        try:
            clients.dynamodb().put_item(TableName=_table(table), Item=serialize(item), **condition)
        except botocore.exceptions.ClientError as exc:
            if is_conditional_check_failed(exc):
                return False
            raise
        return True

    created = clients.call("create job", put)
    log.info("job_created" if created else "job_exists", job_id=item[KEY], status=item["status"])
    if created and item["status"] in (QUEUED, FAILED):  # the job exists (or was refused at the door): say so once
        notify.emit(Job.from_item(serialize(item)), "ACCEPTED" if item["status"] == QUEUED else "FAILED")
    return bool(created)


def get_job(job_id: str, table: str | None = None) -> Job | None:
    """Strongly consistent read: the stages decide on what is really there."""

    def get() -> dict[str, Any]:
        return clients.dynamodb().get_item(TableName=_table(table), Key=serialize({KEY: job_id}), ConsistentRead=True)

    item = clients.call("get job", get).get("Item")
    return Job.from_item(item) if item else None


def list_jobs(table: str | None = None, limit: int | None = None) -> list[Job]:
    """All jobs, newest first (a Scan: fine for an operator's listing, not for a hot path)."""
    return sorted(iter_jobs(table, limit), key=lambda job: job.created_at, reverse=True)


def iter_jobs(table: str | None = None, limit: int | None = None) -> Iterator[Job]:
    paginator = clients.dynamodb().get_paginator("scan")
    count = 0
    for page in clients.call(
        "list jobs", lambda: list(paginator.paginate(TableName=_table(table), ConsistentRead=True))
    ):
        for item in page.get("Items", []):
            yield Job.from_item(item)
            count += 1
            if limit is not None and count >= limit:
                return


def mark_processing(job_id: str, timings: Mapping[str, Any] | None = None, table: str | None = None) -> bool:
    """QUEUED -> PROCESSING once every segment message is sent. False if the job had already moved on."""
    done = _update("mark processing", mark_processing_update(time.time(), timings or {}), table, job_id, True)
    if done is not None:
        notify.emit(Job.from_item(done), "PROCESSING")
    return done is not None


def mark_segment_done(
    job_id: str,
    index: int,
    timings: Mapping[str, float],
    frames: int = 0,
    table: str | None = None,
    execution: str | None = None,
) -> bool:
    """Count a finished segment with ONE conditional update; False (and nothing changed) for a duplicate,
    an unknown job or a job that is no longer running."""
    new = _update(
        "mark segment done",
        segment_done_update(index, timings, frames, time.time(), execution),
        _table(table),
        job_id,
        return_new=True,
    )
    if new is None:
        log.info("segment_already_counted_or_job_inactive", job_id=job_id, segment=index)
        return False
    remaining = deserialize(new).get("remaining")
    log.info("segment_counted", job_id=job_id, segment=index, remaining=remaining)
    job = Job.from_item(new)
    for milestone in notify.crossed_milestones(len(job.done), job.segment_count):
        notify.emit(job, "PROCESSING", milestone=milestone)  # only this count crossed it: once per milestone
    return True


def record_segment_error(
    job_id: str,
    index: int,
    attempts: int,
    error: BaseException,
    table: str | None = None,
    *,
    max_attempts: int | None = None,
    retry_in_s: float | None = None,
) -> bool:
    """Remember a segment's attempt count and last error (shown by `vsr status`, kept when it dead-letters),
    and with `retry_in_s` when its next attempt is due."""
    now = time.time()
    done = _update(
        "record segment error",
        segment_error_update(
            index, attempts, error, now, max_attempts, None if retry_in_s is None else now + retry_in_s
        ),
        _table(table),
        job_id,
    )
    return done is not None


def record_segment_progress(job_id: str, index: int, frames: int, table: str | None = None) -> bool:
    """Report a running segment's frames; False when the segment is already counted or the job stopped."""
    done = _update(
        "record segment progress",
        segment_progress_update(index, frames, time.time()),
        _table(table),
        job_id,
    )
    return done is not None


def fail_job(job_id: str, error: BaseException, segment: int | None = None, table: str | None = None) -> bool:
    """Move an active job to FAILED with a user-facing reason, once. False if it was already terminal."""
    failed = _update("fail job", fail_update(error_dict(error, segment), time.time()), table, job_id, True)
    if failed is None:
        log.info("job_already_terminal", job_id=job_id)
        return False
    log.warning("job_failed", job_id=job_id, error=error_dict(error, segment))
    notify.emit(Job.from_item(failed), "FAILED")
    return True


def reopen_job(job_id: str, segments: tuple[int, ...] = (), table: str | None = None) -> bool:
    """FAILED -> PROCESSING for a job that failed because `segments` were dead-lettered, as `vsr redrive`
    returns them to work. False (nothing changed) for any other job: running, COMPLETE or failed for good."""
    reopened = _update("reopen job", reopen_update(tuple(segments), time.time()), table, job_id, True)
    if reopened is None:
        return False
    log.warning("job_reopened", job_id=job_id, segments=sorted(segments))
    notify.emit(Job.from_item(reopened), "PROCESSING")  # back at work after FAILED: a state change of its own
    return True


def acquire_assembly_lease(job_id: str, owner: str, lease_s: float, table: str | None = None) -> bool:
    """Take the assembly lease (status ASSEMBLING) so one assembly runs; a crashed holder's lease expires after
    `lease_s` (settings jobs.assembly_lease_s) and can then be retaken."""
    taken = _update("acquire lease", lease_update(owner, time.time(), lease_s), table, job_id)
    return taken is not None


def release_assembly_lease(job_id: str, owner: str, table: str | None = None) -> bool:
    """Give the lease back after a failed attempt so a retry need not wait for it to expire."""
    released = _update("release lease", release_lease_update(owner, time.time()), table, job_id)
    return released is not None


def record_quality(job_id: str, flicker_ratio: float | None, preview_key: str | None, table: str | None = None) -> bool:
    """Note the quality check's headline numbers on a COMPLETE job (`output.quality_measured` tells it ran)."""
    done = _update("record quality", quality_update(flicker_ratio, preview_key, time.time()), table, job_id)
    return done is not None


def complete_job(
    job_id: str,
    owner: str,
    output: Mapping[str, Any],
    timings: Mapping[str, Any] | None = None,
    table: str | None = None,
) -> bool:
    """ASSEMBLING -> COMPLETE by the lease holder, with the output location and assembly timings."""
    done = _update("complete job", complete_update(owner, output, timings or {}, time.time()), table, job_id, True)
    if done is not None:
        notify.emit(Job.from_item(done), "COMPLETE")
    return done is not None
