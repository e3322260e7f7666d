"""Worker: one segment message -> decode its frame window from S3, upscale, encode, upload, count it once.

SQS event source with batch size 1 and ReportBatchItemFailures. Per message:
- malformed -> logged and acked (redelivery cannot help);
- job missing, FAILED/COMPLETE, or the segment already in `done` -> a duplicate: acked;
- otherwise the segment is processed while a heartbeat thread extends the message's visibility, uploaded to
  `jobs/<id>/segments/<index>.nut` in the work bucket (a duplicate overwrites it with the same frames), the
  job's next segment is sent (`vsr.pipeline.window`) and then this one is counted with ONE conditional update
  (`jobs.mark_segment_done`);
- a PermanentError (bad input found while decoding, ...), or an error `vsr.failures.classify` knows will recur
  (FFmpeg cannot decode the input, a frame of an impossible size), fails the job once with its reason and acks;
- anything else is recorded on the job (attempts, error, when it is retried), the message is hidden for the
  next backoff of `queues.retry_backoff_s` (vsr.pipeline.retry) and reported as a batch item failure; the
  attempt that reaches maxReceiveCount fails the job at once with "segment 3 of 12 failed 5 times: ...", and
  the segment DLQ keeps its message for `vsr redrive`, which returns the job to PROCESSING.
The model (downloaded once per container) and the ONNX Runtime session are cached across warm invocations.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.exceptions
import structlog

from vsr import logs
from vsr.assembly_path import FRAGMENTED
from vsr.aws import clients
from vsr.aws.resources import ConfigurationError, Resources, worker_tier
from vsr.aws.s3io import S3RangeReader
from vsr.engine import get_upscaler, usable_providers
from vsr.errors import CorruptInputError, DeadLetteredError, ModelError, PermanentError
from vsr.failures import classify
from vsr.logs import get_logger
from vsr.media.fragmented import FRAGMENT_ENCODER_OPTIONS, encoder_primer
from vsr.media.probe import VideoInfo
from vsr.media.profiles import delivery_codec
from vsr.models.registry import ModelInfo, model_dir, resolve_model
from vsr.pipeline import artifacts, jobs, timejob, window
from vsr.pipeline.events import SqsRecord, batch_response, sqs_records
from vsr.pipeline.fragments import fragment_upload
from vsr.pipeline.messages import MalformedMessageError, SegmentMessage, parse_segment_message
from vsr.pipeline.modelstore import ensure_local_model
from vsr.pipeline.retry import Retry, dead_letter_reason, decide, draw_for, hide
from vsr.quality.stabilise import Stabiliser
from vsr.segment import process_segment
from vsr.settings import RetryPolicy, get_settings

log = get_logger(__name__)

REQUIRED = ("work_bucket", "segment_queue_url", "table", "models_bucket", "model_key")
PROBE_CACHE_SIZE = 4  # probes of recent jobs kept per container (a pts table can be ~1 MB)

_probe_cache: OrderedDict[str, VideoInfo] = OrderedDict()
_probe_lock = threading.Lock()
_models: dict[tuple[str, int, int], ModelInfo] = {}


def handle_event(event: dict[str, Any], context: Any) -> dict[str, Any]:
    resources = Resources.from_env().require(*REQUIRED)
    request_id = getattr(context, "aws_request_id", None)
    failed = [record.message_id for record in sqs_records(event) if not process_record(record, resources, request_id)]
    return batch_response(failed)


def process_record(
    record: SqsRecord,
    resources: Resources,
    request_id: str | None = None,
    *,
    retry: RetryPolicy | None = None,
) -> bool:
    """Handle one message; True means ack it (done, duplicate or permanently failed), False means retry.

    Before it returns False the message's visibility is already set for the retry's backoff (`retry`, default
    settings `retry_policy("worker")`), and on the last attempt the job is already FAILED with its reason, so
    any consumer of the segment queue (the Lambda event source, the GPU tier's poller) only acks or not."""
    logs.clear()
    logs.bind(stage="worker", request_id=request_id, message_id=record.message_id, receive_count=record.receive_count)
    try:
        try:
            message = parse_segment_message(record.body)
        except MalformedMessageError as exc:
            log.error("worker.malformed_message_dropped", reason=exc.reason, body=record.body[:500])
            return True
        index = message.segment.index
        logs.bind(job_id=message.job_id, segment=index)
        job: jobs.Job | None = None
        try:
            job = jobs.get_job(message.job_id, resources.table)
            if job is None:
                log.warning("worker.job_not_found")
                return True
            if job.terminal or index in job.done:
                log.info("worker.skip", status=job.status, already_done=index in job.done)
                return True
            with heartbeat(resources.segment_queue_url, record.receipt_handle):
                timings, frames = run_segment(message, resources)
            # Release the job's next segment BEFORE counting this one: "done" then implies "released".
            window.release_next(message, job.segment_count, resources.work_bucket, resources.segment_queue_url)
            jobs.mark_segment_done(message.job_id, index, timings, frames, resources.table, execution=execution_label())
            return True
        except Exception as exc:
            failure = classify(exc)  # an error that recurs on every attempt is permanent at once
            if isinstance(failure, PermanentError):
                log.warning("worker.permanent_failure", code=failure.code, reason=failure.reason, error=repr(exc))
                jobs.fail_job(message.job_id, failure, segment=index, table=resources.table)
                return True
            log.exception("worker.retry", error=f"{type(exc).__name__}: {exc}")
            policy = retry or get_settings().retry_policy("worker")
            retry_later(record, message, job.segment_count if job else None, exc, resources, policy)
            return False
    finally:
        logs.clear()


def retry_later(
    record: SqsRecord,
    message: SegmentMessage,
    segment_count: int | None,
    error: BaseException,
    resources: Resources,
    policy: RetryPolicy,
) -> Retry:
    """The failure path of a transient error: note the attempt on the job; after the last attempt fail the job
    with its reason (the message then waits in the DLQ for `vsr redrive`); hide the message for the backoff
    (visible at once after the last attempt, so SQS dead-letters it on its next receive)."""
    index = message.segment.index
    decision = decide(policy, record.receive_count, draw_for(record.message_id, record.receive_count))
    # bookkeeping is best effort: the redelivery (or the DLQ) matters more than the record of it
    with contextlib.suppress(Exception):
        jobs.record_segment_error(
            message.job_id,
            index,
            record.receive_count,
            error,
            resources.table,
            max_attempts=decision.max_attempts,
            retry_in_s=None if decision.final else decision.delay_s,
        )
    if decision.final:
        reason = dead_letter_reason(index, segment_count, decision.attempt, jobs.error_dict(error)["reason"])
        with contextlib.suppress(Exception):
            jobs.fail_job(message.job_id, DeadLetteredError(reason), segment=index, table=resources.table)
    hide(resources.segment_queue_url, record.receipt_handle, decision.delay_s)
    log.warning("worker.retry_scheduled", attempt=decision.attempt, of=decision.max_attempts, in_s=decision.delay_s)
    return decision


def run_segment(message: SegmentMessage, resources: Resources) -> tuple[dict[str, float], int]:
    """Decode, upscale and encode the segment's window to a local file, upload it; returns (timings, frames)."""
    settings = get_settings()
    started = time.monotonic()
    model_path = ensure_local_model(resources.models_bucket, resources.model_key, model_dir())
    try:
        model = _resolve_cached(model_path)
        upscaler = get_upscaler(
            model,
            tile=settings.tile,
            tile_overlap=settings.tile_overlap,
            providers=settings.providers(worker_tier()),
            guard_max_clipped=settings.int8_guard.max_clipped_channels,
        )
    except ModelError as exc:  # a broken deployment, not the user's video: retry, then DLQ and redrive after a fix
        raise ConfigurationError(f"the deployed model cannot be used: {exc.reason}") from exc
    expected_scale = message.model.get("scale")
    if expected_scale is not None and int(expected_scale) != model.scale:
        raise PermanentError(
            f"the deployed model now upscales x{model.scale}, but this job was planned for x{expected_scale}"
        )
    info = load_probe(message)
    setup_s = time.monotonic() - started
    ref = message.input
    work = Path(
        tempfile.mkdtemp(prefix=f"vsr-{message.job_id[:8]}-{message.segment.index}-", dir=artifacts.local_tmp_dir())
    )
    try:
        output = work / f"{message.segment.index:05d}{artifacts.SEGMENT_SUFFIX}"
        reader = S3RangeReader(
            clients.s3(), ref["bucket"], ref["key"], ref.get("version_id"), ref.get("size"), etag=ref.get("etag")
        )
        progress = ProgressReporter(
            message.job_id, message.segment.index, resources.table, settings.progress_interval_s
        )
        stabiliser = Stabiliser(model.scale) if message.model.get("temporal") == "flow" else None
        fragmented = message.assembly == FRAGMENTED  # admission's choice: delivery-quality fMP4, joined in S3
        # fragmented segments are the delivery itself (H.264 at the delivery CRF); otherwise lossless or
        # delivery-quality segments by the limit of the job's delivery encoder (as the assembler decides)
        encode = settings.encode_settings if fragmented else settings.encode_settings_for(delivery_codec(message.model))
        time_request = timejob.request_of(message.model)
        counts: dict[str, float] = {}
        if time_request.active:  # frame interpolation (vsr.chain): the segment owns its source intervals
            interpolation_path = ensure_local_model(
                resources.models_bucket, str(message.model["interpolation_key"]), model_dir()
            )
            result, counts = timejob.run(
                reader,
                message.segment,
                info,
                time_request,
                interpolation_path,
                upscaler,
                output,
                settings,
                settings.providers(worker_tier()),
                progress,
            )
        else:
            result = process_segment(
                reader,
                message.segment,
                upscaler,
                info,
                output,
                encode=encode,
                on_frames=progress,
                stabiliser=stabiliser,
                geometry_changes=settings.geometry_changes,
                crf=encode.crf if fragmented else None,
                encoder_options=FRAGMENT_ENCODER_OPTIONS if fragmented else None,
                primer=encoder_primer(encode) if fragmented else None,
            )
        if result.frames != message.segment.frame_count:
            raise CorruptInputError(
                f"frames {message.segment.start_frame}-{message.segment.start_frame + message.segment.frame_count - 1}"
                f" could not all be decoded ({result.frames} of {message.segment.frame_count})"
            )
        timings = {
            "decode_s": float(result.decode_s),
            "infer_s": float(result.infer_s),
            "encode_s": float(result.encode_s),
            "process_s": float(result.wall_s),
            "temporal_s": float(result.temporal_s),
            **(
                {"guard_px": float(result.guard_px), "guard_recomputed_px": float(result.guard_recomputed_px)}
                if result.guard_px
                else {}
            ),
            **{k: v for k, v in counts.items() if not k.startswith(timejob.CUT_PREFIX)},
        }
        key = artifacts.segment_key(message.job_id, message.segment.index)
        metadata = artifacts.segment_metadata({**timings, **counts, "setup_s": setup_s}, result.frames)
        if fragmented:
            output, key, extra = fragment_upload(output, reader, info, message.segment, message.job_id)
            metadata.update(extra)
        artifacts.upload_file(output, resources.work_bucket, key, metadata=metadata)
        timings["wall_s"] = time.monotonic() - started
        log.info("worker.segment_done", frames=result.frames, bytes_read=reader.bytes_fetched, **timings)
        return timings, int(result.frames)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def execution_label() -> str:
    """ "<tier>:<provider>" this process runs segments on, recorded with each counted segment (the job report
    shows a GPU-planned job that fell back to CPU)."""
    tier = worker_tier()
    return f"{tier}:{usable_providers(get_settings().providers(tier))[0]}"


class ProgressReporter:
    """`on_frames` callback of process_segment: frames written so far, to the job at most every `interval_s`.

    Best effort: a failed progress write is logged and ignored, never failing or retrying the segment.
    """

    def __init__(self, job_id: str, index: int, table: str, interval_s: float) -> None:
        self.job_id, self.index, self.table, self.interval_s = job_id, index, table, interval_s
        self.frames = 0
        self._last_write = time.monotonic()

    def __call__(self, frames: int) -> None:
        self.frames += frames
        now = time.monotonic()
        if now - self._last_write < self.interval_s:
            return
        self._last_write = now
        try:
            jobs.record_segment_progress(self.job_id, self.index, self.frames, self.table)
        except Exception as exc:
            log.warning("worker.progress_write_failed", error=f"{type(exc).__name__}: {exc}")


def _resolve_cached(path: Path) -> ModelInfo:
    """ModelInfo per model file version: resolving a user .onnx opens a session to read its metadata, which
    must not happen on every warm invocation."""
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    with _probe_lock:
        found = _models.get(key)
    if found is None:
        found = resolve_model(str(path))
        with _probe_lock:
            _models[key] = found
    return found


def load_probe(message: SegmentMessage) -> VideoInfo:
    """The job's full VideoInfo from the work bucket, cached per container for the job's next segments."""
    with _probe_lock:
        cached = _probe_cache.get(message.job_id)
        if cached is not None:
            _probe_cache.move_to_end(message.job_id)
            return cached
    info = VideoInfo.from_dict(artifacts.get_json(message.probe["bucket"], message.probe["key"]))
    with _probe_lock:
        _probe_cache[message.job_id] = info
        while len(_probe_cache) > PROBE_CACHE_SIZE:
            _probe_cache.popitem(last=False)
    return info


@contextlib.contextmanager
def heartbeat(queue_url: str, receipt_handle: str, extension_s: int | None = None) -> Iterator[None]:
    """Keep the message invisible while a long segment runs: every third of `extension_s`, push its
    visibility `extension_s` into the future (settings queues.visibility_extension_s). If the worker dies,
    beats stop and the message reappears at most `extension_s` later."""
    seconds = get_settings().visibility_extension_s if extension_s is None else extension_s
    stop = threading.Event()
    beat_id = uuid.uuid4().hex[:8]
    context = structlog.contextvars.get_contextvars()

    def run() -> None:
        logs.bind(**context)
        while not stop.wait(seconds / 3):
            try:
                clients.sqs().change_message_visibility(
                    QueueUrl=queue_url, ReceiptHandle=receipt_handle, VisibilityTimeout=int(seconds)
                )
                log.debug("worker.heartbeat", beat=beat_id, visibility_s=seconds)
            except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
                log.warning("worker.heartbeat_failed", error=str(exc))

    thread = threading.Thread(target=run, name=f"heartbeat-{beat_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
