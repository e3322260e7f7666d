"""Ingest: S3 ObjectCreated (through the ingest SQS queue) -> one job, its segment plan and its segment messages.

Per object:
1. job id from bucket, key and version id/ETag. If the job exists, this is a duplicate event (moto sends two
   for a multipart upload; S3 may redeliver): do nothing, unless the job is still QUEUED and this is the
   message that created it (or the job is older than an ingest invocation can live), which means the ingest
   that created it died before enqueuing everything: finish enqueuing (segment messages are idempotent).
2. probe the object in place through `S3RangeReader` (no download) and validate it against settings limits.
   Bad input -> a FAILED job with the user-facing reason; the message is acked (never retried).
3. plan segments (vsr.admission.plan_for -> vsr.planning.plan_job) from the model's cost
   (VSR_MODEL_MACS_PER_PIXEL, see `modelstore`), the worker's capacity and concurrency, the latency model and
   prices, by the strategy the upload's `vsr-plan` metadata asks for; refuse a job whose predicted cost is
   over `limits.max_job_cost_usd`; write probe and plan to the work bucket, create the job QUEUED with the
   chosen plan's predictions and the upload's user metadata, send the messages of the job's first segment
   window (SendMessageBatch; the rest follow as segments finish, `vsr.pipeline.window`), mark it PROCESSING.

Transient failures (throttling, network, misconfiguration) are reported as batch item failures, so SQS
redelivers the event and, past maxReceiveCount, the ingest DLQ keeps it (`vsr redrive`).
"""

from __future__ import annotations

import time
from typing import Any

from vsr import logs
from vsr.admission import check_cost, check_limits, plan_for, probe_summary, requested_strategy, requested_tier
from vsr.aws import clients
from vsr.aws.resources import ConfigurationError, Resources
from vsr.aws.s3io import S3RangeReader
from vsr.errors import CorruptInputError, EmptyInputError, LimitExceededError, PermanentError
from vsr.logs import get_logger
from vsr.media.probe import VideoInfo, probe
from vsr.pipeline import artifacts, jobs, timejob, window
from vsr.pipeline.events import MalformedEventError, S3Object, batch_response, s3_objects, sqs_records
from vsr.pipeline.messages import SegmentMessage, send_segments
from vsr.pipeline.modelstore import configured_model
from vsr.planning import Segment
from vsr.settings import Limits, get_settings

log = get_logger(__name__)

REQUIRED = ("work_bucket", "segment_queue_url", "table", "model_key")


def handle_event(event: dict[str, Any], context: Any) -> dict[str, Any]:
    resources = Resources.from_env().require(*REQUIRED)
    failed: list[str] = []
    request_id = getattr(context, "aws_request_id", None)
    for record in sqs_records(event):
        logs.clear()
        logs.bind(stage="ingest", request_id=request_id, message_id=record.message_id)
        try:
            for obj in s3_objects(record.body):
                ingest_object(obj, resources, message_id=record.message_id)
        except MalformedEventError as exc:
            log.error("ingest.malformed_event_dropped", reason=exc.reason)
        except Exception as exc:  # transient or unknown: SQS redelivers, then the DLQ keeps it
            log.exception("ingest.retry", error=f"{type(exc).__name__}: {exc}")
            failed.append(record.message_id)
        finally:
            logs.clear()
    return batch_response(failed)


def ingest_object(obj: S3Object, resources: Resources, message_id: str = "") -> str:
    """Create (or resume) the job for one uploaded object; returns the job id."""
    started = time.monotonic()
    job_id = jobs.job_id_for(obj.bucket, obj.key, obj.version_id, obj.etag)
    logs.bind(job_id=job_id, key=obj.key)
    existing = jobs.get_job(job_id, resources.table)
    if existing is not None:
        if existing.status == jobs.QUEUED and _creator_is_gone(existing, message_id):
            resume_enqueue(existing, resources, started)
        else:
            log.info("ingest.duplicate_event", status=existing.status)
        return job_id

    settings = get_settings()
    model = configured_model(resources)
    # the job's segments all stabilise (or not) alike, whatever the settings are when each one runs
    job_model = {**model.to_message(), "temporal": settings.temporal}
    input_ref = obj.to_input_ref()
    try:
        probe_started = time.monotonic()
        info, metadata = _probe(obj, settings.limits)
        probe_s = time.monotonic() - probe_started
        input_ref["size"] = info.size_bytes
        input_ref["metadata"] = metadata  # `--metadata k=v` of the upload (vsr-plan, per-job options)
        strategy = requested_strategy(metadata)
        tier = requested_tier(metadata, settings.enabled_tiers())
        # frame interpolation (vsr-interpolate / vsr-fps / vsr-slowmo / vsr-scale): bad values fail here
        time_request = timejob.request_from_upload(metadata, model.scale)
        timejob.check(time_request, info, model.scale, settings)
        job_model.update(timejob.job_fields(time_request, resources.model_key, settings))
        check_limits(info, model.scale, settings.limits)
        if not info.pts:  # a job with nothing to count would never reach remaining == 0
            raise CorruptInputError("the video stream contains no frames")
        job_plan = plan_for(
            info, timejob.planned_cost(model.cost, time_request, settings), settings, strategy, tier=tier
        )
        check_cost(job_plan.chosen, settings.limits)
    except PermanentError as exc:
        item = jobs.new_job_item(
            job_id=job_id,
            status=jobs.FAILED,
            input_ref=input_ref,
            now=time.time(),
            ttl_s=settings.job_ttl_s,
            model=job_model,
            error=jobs.error_dict(exc),
            timings={"ingest_s": time.monotonic() - started},
            ingest_message_id=message_id,
        )
        jobs.create_job(item, resources.table)
        log.warning("ingest.rejected", code=exc.code, reason=exc.reason)
        return job_id

    segments = job_plan.segments
    log.info("ingest.planned", **job_plan.chosen.to_dict())
    artifacts.put_json(resources.work_bucket, artifacts.probe_key(job_id), info.to_dict())
    artifacts.save_plan(resources.work_bucket, job_id, segments)
    item = jobs.new_job_item(
        job_id=job_id,
        status=jobs.QUEUED,
        input_ref=input_ref,
        now=time.time(),
        ttl_s=settings.job_ttl_s,
        model=job_model,
        probe=probe_summary(info),
        artifacts={
            "bucket": resources.work_bucket,
            "probe": artifacts.probe_key(job_id),
            "plan": artifacts.plan_key(job_id),
        },
        segment_count=len(segments),
        timings={"probe_s": probe_s},
        ingest_message_id=message_id,
        plan=job_plan.chosen.to_dict(),
    )
    if not jobs.create_job(item, resources.table):
        # Either a concurrent duplicate created it (its message owns the enqueuing), or our own put succeeded
        # and its retry after a lost response found the item: then it is ours to finish.
        current = jobs.get_job(job_id, resources.table)
        if current is None or not message_id or current.ingest_message_id != message_id:
            log.info("ingest.lost_race")
            return job_id
    _enqueue(job_id, segments, input_ref, job_model, resources, started, job_plan.chosen.tier)
    return job_id


def _creator_is_gone(job: jobs.Job, message_id: str) -> bool:
    """A QUEUED job is resumed by the redelivered message that created it, or once its creator must be dead."""
    if message_id and job.ingest_message_id == message_id:
        return True
    return time.time() - job.created_at > get_settings().function("ingest").timeout_s


def resume_enqueue(job: jobs.Job, resources: Resources, started: float) -> None:
    log.warning("ingest.resume_enqueue", segments=job.segment_count)
    segments = artifacts.load_plan(job.artifacts["bucket"], job.job_id)
    _enqueue(job.job_id, segments, job.input, job.model, resources, started, str(job.plan.get("tier", "lambda")))


def _enqueue(
    job_id: str,
    segments: list[Segment],
    input_ref: dict[str, Any],
    model: dict[str, Any],
    resources: Resources,
    started: float,
    tier: str = "lambda",
) -> None:
    enqueue_started = time.monotonic()
    probe_loc = {"bucket": resources.work_bucket, "key": artifacts.probe_key(job_id)}
    size = get_settings().segment_window(tier)  # the rest follow as segments finish (vsr.pipeline.window)
    messages = [
        SegmentMessage(job_id=job_id, segment=s, input=input_ref, probe=probe_loc, model=model, window=size)
        for s in window.initial(segments, size)
    ]
    send_segments(segment_queue_for(tier, resources), messages)
    now = time.monotonic()
    jobs.mark_processing(job_id, {"enqueue_s": now - enqueue_started, "ingest_s": now - started}, resources.table)
    log.info("ingest.enqueued", segments=len(segments), sent=len(messages), window=size, tier=tier)


def segment_queue_for(tier: str, resources: Resources) -> str:
    """The segment queue of the job's tier; the GPU one exists only where the fleet is deployed."""
    if tier != "gpu":
        return resources.segment_queue_url
    if not resources.gpu_segment_queue_url:
        # settings say the fleet exists but this function was not given its queue: an operator's mistake
        raise ConfigurationError("the job was planned for the GPU tier, but VSR_GPU_SEGMENT_QUEUE_URL is not set")
    return resources.gpu_segment_queue_url


def _probe(obj: S3Object, limits: Limits) -> tuple[VideoInfo, dict[str, str]]:
    """Probe the object in place; also returns its user metadata (from the reader's one HEAD)."""
    if obj.size == 0:
        raise EmptyInputError("the uploaded file is empty (0 bytes)")
    if obj.size is not None and obj.size > limits.max_input_bytes:
        raise LimitExceededError(
            f"the file is {obj.size / 1e9:.2f} GB; the limit is {limits.max_input_bytes / 1e9:.2f} GB"
        )
    # No size from the event: the reader HEADs the (pinned) object, which also brings its user metadata.
    reader = S3RangeReader(clients.s3(), obj.bucket, obj.key, obj.version_id, None, etag=obj.etag)
    try:
        return probe(reader), reader.metadata
    finally:
        log.info("ingest.probe_read", **reader.stats())
