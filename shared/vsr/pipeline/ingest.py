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
   prices, by the strategy the upload's `vsr-plan` metadata asks for, over the tiers whose limits admit it
   (`vsr.admission.admit`: settings `limits`, `gpu.limits`); refuse a job whose predicted cost is over its
   tier's `max_job_cost_usd`; choose the delivery profile (`vsr-codec` metadata, vsr.media.profiles) and
   refuse one the assembler cannot write; write probe and plan to the work bucket, create the job QUEUED with the
   chosen plan's predictions and the upload's user metadata, send the messages of the job's first segment
   window (SendMessageBatch; the rest follow as segments finish, `vsr.pipeline.window`), mark it PROCESSING.

Transient failures (throttling, network, misconfiguration) hide the message for the next backoff of
`queues.retry_backoff_s` and are reported as batch item failures (vsr.pipeline.retry); the attempt that reaches
maxReceiveCount fails the upload's job at once with the reason, and the ingest DLQ keeps the event. `vsr redrive`
returns it: ingest then replaces the FAILED job (only one FAILED because of a dead letter) and starts over.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from vsr import logs
from vsr.admission import (
    admit,
    check_delivery,
    check_geometry_changes,
    delivery_for,
    probe_summary,
    requested_strategy,
    requested_tier,
)
from vsr.aws import clients
from vsr.aws.resources import ConfigurationError, Resources
from vsr.aws.s3io import S3RangeReader
from vsr.errors import (
    CorruptInputError,
    CostLimitError,
    DeadLetteredError,
    EmptyInputError,
    LimitExceededError,
    PermanentError,
)
from vsr.failures import classify
from vsr.logs import get_logger
from vsr.media.interlace import requested_deinterlace
from vsr.media.probe import VideoInfo, probe
from vsr.media.profiles import requested_codec_from_metadata
from vsr.pipeline import artifacts, jobs, timejob, window
from vsr.pipeline.events import MalformedEventError, S3Object, SqsRecord, batch_response, s3_objects, sqs_records
from vsr.pipeline.messages import SegmentMessage, send_segments
from vsr.pipeline.modelstore import configured_model
from vsr.pipeline.retry import decide, draw_for, hide, ingest_dead_letter_reason
from vsr.planning import Segment
from vsr.settings import RetryPolicy, Settings, get_settings

log = get_logger(__name__)

REQUIRED = ("work_bucket", "segment_queue_url", "ingest_queue_url", "table", "model_key")


def handle_event(event: dict[str, Any], context: Any) -> dict[str, Any]:
    resources = Resources.from_env().require(*REQUIRED)
    request_id = getattr(context, "aws_request_id", None)
    failed = [record.message_id for record in sqs_records(event) if not process_record(record, resources, request_id)]
    return batch_response(failed)


def process_record(
    record: SqsRecord, resources: Resources, request_id: str | None = None, *, retry: RetryPolicy | None = None
) -> bool:
    """Ingest one S3 event message; True means ack it, False means retry it. As for the worker, the message is
    already hidden for the retry's backoff when this returns False, and after the last attempt its jobs are
    already FAILED with the reason (vsr.pipeline.retry)."""
    logs.clear()
    logs.bind(stage="ingest", request_id=request_id, message_id=record.message_id, receive_count=record.receive_count)
    objects: list[S3Object] = []
    try:
        objects = list(s3_objects(record.body))
        for obj in objects:
            ingest_object(obj, resources, message_id=record.message_id)
        return True
    except MalformedEventError as exc:
        log.error("ingest.malformed_event_dropped", reason=exc.reason)
        return True
    except Exception as exc:
        failure = classify(exc)
        if isinstance(failure, PermanentError):  # outside the probe's own handling: fail its jobs once
            log.warning("ingest.permanent_failure", code=failure.code, reason=failure.reason, error=repr(exc))
            for obj in objects:
                _give_up(obj, failure, resources, record.message_id)
            return True
        log.exception("ingest.retry", error=f"{type(exc).__name__}: {exc}")
        policy = retry or get_settings().retry_policy("ingest")
        decision = decide(policy, record.receive_count, draw_for(record.message_id, record.receive_count))
        if decision.final:
            reason = ingest_dead_letter_reason(decision.attempt, jobs.error_dict(exc)["reason"])
            for obj in objects:
                with contextlib.suppress(Exception):  # the DLQ keeps the event whatever the bookkeeping does
                    _give_up(obj, DeadLetteredError(reason), resources, record.message_id)
        hide(resources.ingest_queue_url, record.receipt_handle, decision.delay_s)
        log.warning("ingest.retry_scheduled", attempt=decision.attempt, of=decision.max_attempts, in_s=decision.delay_s)
        return False
    finally:
        logs.clear()


def _give_up(obj: S3Object, error: PermanentError, resources: Resources, message_id: str) -> None:
    """Tell the user now: the upload's job is FAILED with `error` (created FAILED if ingest never got that far).
    A job already past QUEUED is left alone: its segments run whatever this late event does."""
    job_id = jobs.job_id_for(obj.bucket, obj.key, obj.version_id, obj.etag)
    existing = jobs.get_job(job_id, resources.table)
    if existing is None:
        item = jobs.new_job_item(
            job_id=job_id,
            status=jobs.FAILED,
            input_ref=obj.to_input_ref(),
            now=time.time(),
            ttl_s=get_settings().job_ttl_s,
            error=jobs.error_dict(error),
            ingest_message_id=message_id,
        )
        jobs.create_job(item, resources.table)
    elif existing.status == jobs.QUEUED:
        jobs.fail_job(job_id, error, table=resources.table)


def _dead_lettered(job: jobs.Job) -> bool:
    """FAILED because its ingest ran out of attempts (not a segment: `vsr redrive` reopens that job instead)."""
    error = job.error or {}
    return job.status == jobs.FAILED and error.get("code") == jobs.DEAD_LETTERED and "segment" not in error


def ingest_object(obj: S3Object, resources: Resources, message_id: str = "") -> str:
    """Create (or resume) the job for one uploaded object; returns the job id."""
    started = time.monotonic()
    job_id = jobs.job_id_for(obj.bucket, obj.key, obj.version_id, obj.etag)
    logs.bind(job_id=job_id, key=obj.key)
    existing = jobs.get_job(job_id, resources.table)
    if existing is not None and _dead_lettered(existing):
        log.warning("ingest.retry_dead_lettered", error=existing.error)  # a redriven event: start the job over
    elif existing is not None:
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
        info, metadata = _probe(obj, settings)
        probe_s = time.monotonic() - probe_started
        input_ref["size"] = info.size_bytes
        input_ref["metadata"] = metadata  # `--metadata k=v` of the upload (vsr-plan, per-job options)
        strategy = requested_strategy(metadata)
        tier = requested_tier(metadata, settings.enabled_tiers())
        codec = requested_codec_from_metadata(metadata)
        # frame interpolation (vsr-interpolate / vsr-fps / vsr-slowmo / vsr-scale): bad values fail here
        time_request = timejob.request_from_upload(metadata, model.scale)
        timejob.check(time_request, info, model.scale, settings)
        job_model.update(timejob.job_fields(time_request, resources.model_key, settings))
        check_geometry_changes(info, settings.geometry_changes)
        if not info.pts:  # a job with nothing to count would never reach remaining == 0
            raise CorruptInputError("the video stream contains no frames")
        delivery = delivery_for(info, model.scale, codec, settings)
        job_model["delivery"] = delivery.to_dict()  # the job's one request: every segment and the assembler
        # each tier's limits, the plan over the tiers that admit it, its assembly path, its tier's cost limit
        planned = timejob.planned_cost(model.cost(settings.int8_guard), time_request, settings)
        admission = admit(info, planned, settings, strategy, tier=tier, codec=delivery.codec)
        if admission.refusal:
            raise CostLimitError(admission.refusal)
        check_delivery(info, model.scale, delivery, settings)
        job_plan = admission.plan
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
    _enqueue(job_id, segments, input_ref, job_model, resources, started, job_plan.chosen.tier, job_plan.chosen.assembly)
    return job_id


def _creator_is_gone(job: jobs.Job, message_id: str) -> bool:
    """A QUEUED job is resumed by the redelivered message that created it, or once its creator must be dead."""
    if message_id and job.ingest_message_id == message_id:
        return True
    return time.time() - job.created_at > get_settings().function("ingest").timeout_s


def resume_enqueue(job: jobs.Job, resources: Resources, started: float) -> None:
    log.warning("ingest.resume_enqueue", segments=job.segment_count)
    segments = artifacts.load_plan(job.artifacts["bucket"], job.job_id)
    plan = job.plan
    _enqueue(
        job.job_id,
        segments,
        job.input,
        job.model,
        resources,
        started,
        str(plan.get("tier", "lambda")),
        str(plan.get("assembly", "faststart")),
    )


def _enqueue(
    job_id: str,
    segments: list[Segment],
    input_ref: dict[str, Any],
    model: dict[str, Any],
    resources: Resources,
    started: float,
    tier: str = "lambda",
    assembly: str = "faststart",
) -> None:
    enqueue_started = time.monotonic()
    probe_loc = {"bucket": resources.work_bucket, "key": artifacts.probe_key(job_id)}
    size = get_settings().segment_window(tier)  # the rest follow as segments finish (vsr.pipeline.window)
    messages = [
        SegmentMessage(
            job_id=job_id, segment=s, input=input_ref, probe=probe_loc, model=model, window=size, assembly=assembly
        )
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


def _probe(obj: S3Object, settings: Settings) -> tuple[VideoInfo, dict[str, str]]:
    """Probe the object in place; also returns its user metadata (from the reader's one HEAD), which may ask
    for a deinterlace mode and rate (`vsr-deinterlace`, vsr.media.interlace) before the probe judges
    interlacing; deinterlaced at field rate, the VideoInfo is the output's timeline (vsr.media.fieldrate)."""
    limits = settings.intake_limits()  # the tier is not known yet: the most permissive of the deployment's
    if obj.size == 0:
        raise EmptyInputError("the uploaded file is empty (0 bytes)")
    if obj.size is not None and obj.size > limits.max_input_bytes:
        raise LimitExceededError(
            f"the file is {obj.size / 1e9:.2f} GB; the limit is {limits.max_input_bytes / 1e9:.2f} GB"
        )
    # No size from the event: the reader HEADs the (pinned) object, which also brings its user metadata.
    reader = S3RangeReader(clients.s3(), obj.bucket, obj.key, obj.version_id, None, etag=obj.etag)
    try:
        mode, rate = requested_deinterlace(reader.metadata, settings.deinterlace, settings.deinterlace_rate)
        return probe(reader, mode, settings.idet_frames, rate), reader.metadata
    finally:
        log.info("ingest.probe_read", **reader.stats())
