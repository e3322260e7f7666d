"""The job: one DynamoDB item per uploaded object, and the conditional updates that move it along.

- `record`: statuses (`Status`), the item's (de)serialisation and the `Job` view;
- `transitions`: the state machine (`TRANSITIONS`) and the pure UpdateItem builders that enforce it;
- `store`: the DynamoDB calls.

Item layout (table key: `job_id`, string):

    job_id            sha256 of bucket, key and version id (or ETag): a duplicate S3 event maps to the same job
    status            QUEUED -> PROCESSING -> ASSEMBLING -> COMPLETE, or FAILED (terminal) from any earlier state;
                      a job FAILED because a message dead-lettered (error.code "dead_lettered") is the one
                      exception: `vsr redrive` reopens it (transitions.TRANSITIONS lists both moves).
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
    seg_errors        {"<index>": {attempts, max_attempts, next_at, code, error, at}} for segments that failed
                      (transiently) at least once: next_at is when the retry's backoff ends (vsr.pipeline.retry)
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

Every store function does one DynamoDB call (get, put or conditional update). The expression builders are
pure functions (unit-tested) returning the request arguments before serialisation.
"""

from vsr.pipeline.jobs.record import (
    ACTIVE,
    ASSEMBLING,
    COMPLETE,
    FAILED,
    KEY,
    MAX_ERROR_CHARS,
    PROCESSING,
    QUEUED,
    SEGMENT_TIMING_FIELDS,
    STATUSES,
    TTL_ATTRIBUTE,
    Job,
    Status,
    deserialize,
    error_dict,
    job_id_for,
    new_job_item,
    serialize,
    table_spec,
)
from vsr.pipeline.jobs.store import (
    acquire_assembly_lease,
    complete_job,
    create_job,
    fail_job,
    get_job,
    iter_jobs,
    list_jobs,
    mark_processing,
    mark_segment_done,
    record_quality,
    record_segment_error,
    record_segment_progress,
    release_assembly_lease,
    reopen_job,
)
from vsr.pipeline.jobs.transitions import (
    DEAD_LETTERED,
    TRANSITIONS,
    Update,
    allowed,
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
    sources_of,
)

__all__ = [
    "ACTIVE",
    "ASSEMBLING",
    "COMPLETE",
    "DEAD_LETTERED",
    "FAILED",
    "KEY",
    "MAX_ERROR_CHARS",
    "PROCESSING",
    "QUEUED",
    "SEGMENT_TIMING_FIELDS",
    "STATUSES",
    "TRANSITIONS",
    "TTL_ATTRIBUTE",
    "Job",
    "Status",
    "Update",
    "acquire_assembly_lease",
    "allowed",
    "complete_job",
    "complete_update",
    "create_condition",
    "create_job",
    "deserialize",
    "error_dict",
    "fail_job",
    "fail_update",
    "get_job",
    "iter_jobs",
    "job_id_for",
    "lease_update",
    "list_jobs",
    "mark_processing",
    "mark_processing_update",
    "mark_segment_done",
    "new_job_item",
    "quality_update",
    "record_quality",
    "record_segment_error",
    "record_segment_progress",
    "release_assembly_lease",
    "release_lease_update",
    "reopen_job",
    "reopen_update",
    "segment_done_update",
    "segment_error_update",
    "segment_progress_update",
    "serialize",
    "sources_of",
    "table_spec",
]
