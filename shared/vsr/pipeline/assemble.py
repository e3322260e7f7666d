"""Assembly: when `remaining` reaches 0, join the segments with the source's audio into the output, once.

Fired by the table's stream through the filter in `config/assembly_filter.json`; the item is re-read here
(strongly consistent) rather than trusted from the record. One assembly runs per job thanks to a lease taken
with a conditional update; the lease owner is the stream record's event id, so a retry of the same record
after a crash retakes its own lease at once, while anybody else waits for it to expire
(settings jobs.assembly_lease_s). Steps: download the segments from the work bucket, `join_segments` with the
source read in place through `S3RangeReader`, upload the output and a JSON report beside it, mark COMPLETE,
delete the work segments (a crash after COMPLETE leaves them to the work bucket's lifecycle rule).

Running it again after a crash finishes the job; after COMPLETE it is a no-op. A permanent error fails the
job with its reason; a transient one releases the lease and raises, so the stream retries the batch (and the
Terraform on-failure destination keeps the record once retries run out).
"""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from vsr import logs
from vsr.admission import delivery_for
from vsr.assembly_path import ASSEMBLER_DISK_HEADROOM, FASTSTART, FRAGMENTED
from vsr.aws import clients
from vsr.aws.resources import Resources
from vsr.aws.s3io import S3RangeReader
from vsr.errors import PermanentError
from vsr.guard import recomputed_fraction
from vsr.logs import get_logger
from vsr.media.concat import join_segments
from vsr.media.fragmented import FRAGMENT_AUDIO_CODECS, film_duration, output_video_pts
from vsr.media.probe import VideoInfo, probe
from vsr.media.profiles import Delivery, Hdr10, choose_delivery, job_profile
from vsr.pipeline import artifacts, jobs, sidecars, timejob
from vsr.pipeline.events import stream_records
from vsr.pipeline.fragments import fragment_keys
from vsr.pipeline.multipart import join_fragments
from vsr.quality import jobcheck, preview
from vsr.settings import get_settings

log = get_logger(__name__)

REQUIRED = ("work_bucket", "output_bucket", "table")

DISK_HEADROOM = ASSEMBLER_DISK_HEADROOM  # fraction of free /tmp the assembler plans to use (admission's too)

# outcomes of assemble_job
ASSEMBLED = "assembled"
SKIPPED = "skipped"  # missing job, not ready, already terminal, or another live lease
FAILED = "failed"


def handle_event(event: dict[str, Any], context: Any) -> dict[str, Any]:
    resources = Resources.from_env().require(*REQUIRED)
    outcomes: dict[str, str] = {}
    first_error: BaseException | None = None
    request_id = getattr(context, "aws_request_id", None)
    for record in stream_records(event):
        job_id = record.keys.get(jobs.KEY)
        new = record.new_image or {}
        if not job_id or record.event_name == "REMOVE" or new.get("remaining") != 0:
            continue
        try:
            outcomes[str(job_id)] = assemble_job(
                str(job_id), owner=record.event_id or uuid.uuid4().hex, resources=resources, request_id=request_id
            )
        except Exception as exc:  # transient: finish the other records, then raise so the stream retries
            log.exception("assemble.retry", job_id=job_id, error=f"{type(exc).__name__}: {exc}")
            first_error = first_error or exc
    if first_error is not None:
        raise first_error
    return {"jobs": outcomes}


def assemble_job(job_id: str, owner: str, resources: Resources | None = None, request_id: str | None = None) -> str:
    """Assemble one job if it is ready and nobody else is; returns ASSEMBLED, SKIPPED or FAILED.

    Also the entry point for an operator re-running a job whose stream record was lost (`owner` any id).
    """
    res = resources or Resources.from_env().require(*REQUIRED)
    logs.clear()
    logs.bind(stage="assemble", request_id=request_id, job_id=job_id)
    try:
        job = jobs.get_job(job_id, res.table)
        if job is None or job.terminal or job.remaining != 0:
            log.info("assemble.skip", status=job.status if job else None, remaining=job.remaining if job else None)
            return SKIPPED
        missing = set(range(job.segment_count)) - job.done
        if missing:  # the counter and the set disagree: never join with holes (only a non-atomic store could)
            log.error("assemble.counter_mismatch", missing=sorted(missing)[:20])
            return SKIPPED
        if not jobs.acquire_assembly_lease(job_id, owner, get_settings().assembly_lease_s, table=res.table):
            log.info("assemble.lease_held_elsewhere")
            return SKIPPED
        try:
            _assemble(job, owner, res)
        except PermanentError as exc:
            log.warning("assemble.permanent_failure", code=exc.code, reason=exc.reason)
            jobs.fail_job(job_id, exc, table=res.table)
            return FAILED
        except BaseException:
            jobs.release_assembly_lease(job_id, owner, table=res.table)
            raise
        return ASSEMBLED
    finally:
        logs.clear()


def _assemble(job: jobs.Job, owner: str, res: Resources) -> None:
    started = time.monotonic()
    work_bucket = job.artifacts.get("bucket") or res.work_bucket
    info = VideoInfo.from_dict(
        artifacts.get_json(work_bucket, job.artifacts.get("probe") or artifacts.probe_key(job.job_id))
    )
    scale = int(job.model.get("scale") or 0)
    if scale <= 0:
        raise PermanentError("the job record does not say which scale it was planned for")
    if job.plan.get("assembly") == FRAGMENTED:  # admission's choice (vsr.assembly_path), recorded on the plan
        _assemble_fragmented(job, owner, res, info, scale, work_bucket, started)
        return
    time_request = timejob.request_of(job.model)
    if time_request.scale == 1:  # interpolation without super-resolution
        scale = 1
    tmp = Path(tempfile.mkdtemp(prefix=f"vsr-assemble-{job.job_id[:8]}-", dir=artifacts.local_tmp_dir()))
    try:
        download_started = time.monotonic()
        segments, per_segment, mode = _fetch_segments(job, work_bucket, tmp)
        download_s = time.monotonic() - download_started

        join_started = time.monotonic()
        delivery = job_delivery(job, info, scale)
        output = tmp / f"output{delivery.profile.extension}"
        ref = job.input
        source = _source_reader(ref)
        settings = get_settings()
        joined_info = timejob.output_of(info, time_request) if time_request.active else info
        joined = join_segments(
            segments,
            source,
            joined_info,
            output,
            settings.encode_settings_for(delivery.profile.codec),
            delivery,
            audio=time_request.audio == "kept",
        )
        join_s = time.monotonic() - join_started

        upload_started = time.monotonic()
        video_key, report_key = artifacts.output_keys(ref["key"], scale, delivery.profile.extension)
        artifacts.upload_file(output, res.output_bucket, video_key, content_type=delivery.profile.content_type)
        upload_s = time.monotonic() - upload_started
        timings: dict[str, Any] = {
            "assembly_segments": mode,
            "assembly_download_s": download_s,
            "assembly_join_s": join_s,
            "assembly_upload_s": upload_s,
            "assembly_s": time.monotonic() - started,
        }
        report = build_report(
            job, info, scale, per_segment, timings, video_key, res.output_bucket, output.stat().st_size
        )
        report["delivery"] = {**delivery.profile.to_dict(), **joined.report()}
        report["assembly"] = assembly_summary(job, FASTSTART)
        if time_request.active:
            report["interpolation"] = timejob.report_block(info, time_request, per_segment)
        report["interlace"] = info.interlace  # what was detected and done (vsr.media.interlace)
        report["quality"] = {"pending": True}  # measured right after COMPLETE, below
        artifacts.put_json(res.output_bucket, report_key, report)
        timings["assembly_s"] = time.monotonic() - started
        out = {"bucket": res.output_bucket, "key": video_key, "report_key": report_key, "bytes": output.stat().st_size}
        if not jobs.complete_job(job.job_id, owner, out, timings, res.table):
            log.warning("assemble.lost_lease_before_complete")  # a newer holder completes it; same output keys
            return
        log.info("assemble.complete", output=f"s3://{res.output_bucket}/{video_key}", **timings)
        # The job's own quality check runs once the user has the output, so it never delays it (a short clip's
        # latency would otherwise grow with every segment join the planner adds). Advisory: best effort.
        quality_started = time.monotonic()
        if time_request.active:  # the check pairs output frames with source frames one to one: not yet here
            quality: dict[str, Any] = {"skipped": "frame interpolation: the job check does not pair made frames yet"}
        else:
            quality = _measure_quality(job, work_bucket, output, source, info, scale, res.output_bucket, video_key, tmp)
        report["quality"] = quality
        report["timings"]["assembly_quality_s"] = time.monotonic() - quality_started
        artifacts.put_json(res.output_bucket, report_key, report)
        jobs.record_quality(job.job_id, quality.get("flicker_ratio"), quality.get("preview"), res.table)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    keys = [artifacts.segment_key(job.job_id, i) for i in range(job.segment_count)]
    try:
        artifacts.delete_keys(work_bucket, keys)
    except Exception as exc:  # the job is complete; leftovers expire with the bucket's lifecycle rule
        log.warning("assemble.cleanup_failed", error=str(exc))


def job_delivery(job: jobs.Job, info: VideoInfo, scale: int) -> Delivery:
    """The job's delivery profile (H.264 in MP4 for jobs from before profiles) and the encoder for it here:
    NVENC where settings allow it and it opens, else the software encoder."""
    settings = get_settings()
    profile = job_profile(job.model) or delivery_for(info, scale, "h264", settings)
    return choose_delivery(
        profile,
        settings.delivery_codec(profile.codec),
        info.width * scale,
        info.height * scale,
        hdr10=Hdr10.from_dict(info.hdr10),
        prefer_nvenc=settings.delivery_nvenc == "auto",
    )


def assembly_summary(job: jobs.Job, path: str, **details: Any) -> dict[str, Any]:
    """The report's `assembly`: which path joined the output and why (admission's reason and prediction)."""
    return {
        "path": path,
        "reason": job.plan.get("assembly_reason") or "recorded before the assembly paths: faststart",
        "predicted_bytes": int(job.plan.get("output_bytes") or 0),
        **details,
    }


def _source_reader(ref: dict[str, Any]) -> S3RangeReader:
    """A reader of the job's upload in place on S3 (each use gets its own: a reader's position is its own)."""
    return S3RangeReader(
        clients.s3(), ref["bucket"], ref["key"], ref.get("version_id"), ref.get("size"), etag=ref.get("etag")
    )


def _assemble_fragmented(
    job: jobs.Job, owner: str, res: Resources, info: VideoInfo, scale: int, work_bucket: str, started: float
) -> None:
    """The fragmented path: the segments' fragments joined in S3 behind segment 0's init; no file on /tmp but
    the quality check's preview."""
    ref = job.input
    video_key, report_key = artifacts.output_keys(ref["key"], scale)
    join_started = time.monotonic()
    joined = join_fragments(
        job.job_id, job.segment_count, work_bucket, res.output_bucket, video_key, film_duration(info)
    )
    timings: dict[str, Any] = {
        "assembly_segments": "copied in S3",
        "assembly_join_s": time.monotonic() - join_started,
        "assembly_s": time.monotonic() - started,
    }
    report = build_report(job, info, scale, joined.per_segment, timings, video_key, res.output_bucket, joined.bytes)
    dropped = len(info.audio) - sum(1 for a in info.audio if a.codec in FRAGMENT_AUDIO_CODECS)
    side = sidecars.deliver(
        _source_reader(ref), len(info.subtitles), res.output_bucket, video_key, get_settings().sidecar_budget_s
    )
    report["assembly"] = assembly_summary(
        job,
        FRAGMENTED,
        multipart=joined.stats.to_dict(),
        audio_streams_copied=len(info.audio) - dropped,
        sidecars=side,
        subtitles_dropped=side["subtitles_dropped"],
    )
    report["quality"] = {"pending": True}
    artifacts.put_json(res.output_bucket, report_key, report)
    out = {
        "bucket": res.output_bucket,
        "key": video_key,
        "report_key": report_key,
        "bytes": joined.bytes,
        "sidecar_keys": sidecars.keys(side),
    }
    if not jobs.complete_job(job.job_id, owner, out, timings, res.table):
        log.warning("assemble.lost_lease_before_complete")
        return
    log.info("assemble.complete", output=f"s3://{res.output_bucket}/{video_key}", path=FRAGMENTED, **timings)
    tmp = Path(tempfile.mkdtemp(prefix=f"vsr-assemble-{job.job_id[:8]}-", dir=artifacts.local_tmp_dir()))
    try:
        quality_started = time.monotonic()
        output = S3RangeReader(clients.s3(), res.output_bucket, video_key)
        quality = _measure_quality(
            job,
            work_bucket,
            output,
            _source_reader(ref),
            info,
            scale,
            res.output_bucket,
            video_key,
            tmp,
            output_video_pts(info),
        )
        report["quality"] = quality
        report["timings"]["assembly_quality_s"] = time.monotonic() - quality_started
        artifacts.put_json(res.output_bucket, report_key, report)
        jobs.record_quality(job.job_id, quality.get("flicker_ratio"), quality.get("preview"), res.table)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    try:
        artifacts.delete_keys(work_bucket, fragment_keys(job.job_id, job.segment_count))
    except Exception as exc:  # the job is complete; leftovers expire with the bucket's lifecycle rule
        log.warning("assemble.cleanup_failed", error=str(exc))


def _measure_quality(
    job: jobs.Job,
    work_bucket: str,
    output: Any,
    source: S3RangeReader,
    info: VideoInfo,
    scale: int,
    output_bucket: str,
    video_key: str,
    tmp: Path,
    output_pts: list[int] | None = None,
) -> dict[str, Any]:
    """The report's `quality` block (vsr.quality.jobcheck) and the preview PNG beside the output (a local
    file, or an S3 reader of it with its known `output_pts`: then read one pair at a time).

    Advisory: a failure here is logged and reported, never fails a job whose output is already uploaded.
    """
    settings = get_settings()
    try:
        starts = [s.start_frame for s in artifacts.load_plan(work_bucket, job.job_id)]
        measured = jobcheck.measure(
            output,
            probe(output).pts if output_pts is None else output_pts,
            source,
            info,
            scale,
            starts,
            samples=settings.quality_sample_pairs,
            budget_s=settings.quality_budget_s,
            workers=None if output_pts is None else 1,  # one reader: its position is shared
        )
        preview_key = None
        if measured.preview is not None:
            preview_key = artifacts.preview_key(video_key)
            path = tmp / "preview.png"
            preview.write_png(path, measured.preview)
            artifacts.upload_file(path, output_bucket, preview_key, content_type="image/png")
        return measured.report(preview_key)
    except Exception as exc:  # advisory: the output is complete without it
        log.warning("assemble.quality_failed", error=f"{type(exc).__name__}: {exc}")
        return {"error": f"{type(exc).__name__}: {exc}"}


def _fetch_segments(job: jobs.Job, bucket: str, tmp: Path) -> tuple[list[Any], list[dict[str, Any]], str]:
    """The segments to join, their timing metadata, and how they are read ("downloaded" or "streamed").

    Joining needs the output on local disk (faststart rewrites it). When the segments and an output of
    about their size fit in /tmp, they are downloaded (each is read twice by the join); otherwise they are
    read in place through ranged GETs, so /tmp holds the output only.
    """
    sizes = artifacts.segment_sizes(bucket, job.job_id)
    missing = [i for i in range(job.segment_count) if i not in sizes]
    if missing:
        raise artifacts.ArtifactMissingError(
            f"upscaled segments {missing[:10]} are missing from the work bucket; the job must be resubmitted"
        )
    total = sum(sizes[i] for i in range(job.segment_count))
    free = shutil.disk_usage(tmp).free
    keys = [artifacts.segment_key(job.job_id, i) for i in range(job.segment_count)]
    per_segment: list[dict[str, Any]] = []
    if 2 * total < DISK_HEADROOM * free:
        paths: list[Any] = []
        for index, key in enumerate(keys):
            path = tmp / f"{index:05d}{artifacts.SEGMENT_SUFFIX}"
            per_segment.append(
                {"index": index, **artifacts.parse_segment_metadata(artifacts.download_file(bucket, key, path))}
            )
            paths.append(path)
        return paths, per_segment, "downloaded"
    log.info("assemble.streaming_segments", segment_bytes=total, free_bytes=free)
    readers: list[Any] = []
    for index, key in enumerate(keys):
        reader = S3RangeReader(clients.s3(), bucket, key)  # its HEAD brings the timing metadata
        per_segment.append({"index": index, **artifacts.parse_segment_metadata(reader.metadata)})
        readers.append(reader)
    return readers, per_segment, "streamed"


def build_report(
    job: jobs.Job,
    info: VideoInfo,
    scale: int,
    per_segment: list[dict[str, Any]],
    assembly: dict[str, float],
    video_key: str,
    output_bucket: str,
    output_bytes: int,
) -> dict[str, Any]:
    """The JSON written beside the output: what was done, and where the time went.

    Compute is the decode -> upscale -> encode wall time of every segment (`process_s`; the three overlap in
    threads, so their sum over-counts). Overhead is everything else that was billed: ingest, worker setup
    (model, session, probe), uploads, bookkeeping, assembly. `overhead_fraction` = overhead / billed seconds.
    `job_wall_s` (upload event to COMPLETE) also includes queueing and waiting for free workers.
    """
    sums = {
        name: sum(float(s.get(name, 0.0)) for s in per_segment)
        for name in ("decode_s", "infer_s", "encode_s", "temporal_s")
    }
    worker_wall = float(job.segment_totals.get("wall_s", 0.0))
    ingest_s = float(job.timings.get("ingest_s", 0.0))
    compute = float(job.segment_totals.get("process_s", 0.0))
    billed = ingest_s + worker_wall + assembly["assembly_s"]
    overhead = max(0.0, billed - compute)
    frames = sum(int(s.get("frames", 0)) for s in per_segment) or info.frame_count
    rate = info.average_rate or info.base_rate
    return {
        "job_id": job.job_id,
        "input": {"bucket": job.input["bucket"], "key": job.input["key"], **job.probe},
        "output": {
            "bucket": output_bucket,
            "key": video_key,
            "width": info.width * scale,
            "height": info.height * scale,
            "frames": frames,
            "bytes": output_bytes,
        },
        "model": {
            "name": job.model.get("name"),
            "scale": scale,
            "sha256": job.model.get("sha256"),
            "precision": job.model.get("precision", "fp32"),
            "temporal": job.model.get("temporal", "off"),
            # int8 with the saturation guard: share of input pixels recomputed in fp32 (per segment: items)
            "recomputed_fraction": recomputed_fraction(job.segment_totals),
        },
        "fps": f"{rate.numerator}/{rate.denominator}" if rate else None,
        "segments": {"count": job.segment_count, "items": per_segment},
        "timings": {
            **job.timings,
            **assembly,
            "segments_decode_s": sums["decode_s"],
            "segments_infer_s": sums["infer_s"],
            "segments_encode_s": sums["encode_s"],
            "segments_temporal_s": sums["temporal_s"],
            "segments_process_s": compute,
            "segments_wall_s": worker_wall,
            "job_wall_s": time.time() - job.created_at,
        },
        "overhead": {
            "compute_s": compute,
            "billed_s": billed,
            "overhead_s": overhead,
            "overhead_fraction": overhead / billed if billed > 0 else 0.0,
        },
        "execution": execution_summary(job),
        # What the planner predicted beside what happened (the assembly's own upload is not in billed_s yet).
        "plan": {
            **job.plan,
            "measured_wall_s": time.time() - job.created_at,
            "measured_billed_s": billed,
            "measured_segments": job.segment_count,
        },
    }


def execution_summary(job: jobs.Job) -> dict[str, Any]:
    """Which tier the job was planned for and what its segments really ran on: a GPU-sized plan that ran on
    CPU (the GPU provider missing on a worker) says so here, with a warning, never silently."""
    planned = str(job.plan.get("tier", "lambda"))
    ran = sorted(job.executions)
    summary: dict[str, Any] = {"planned_tier": planned, "ran_on": ran}
    on_cpu = [e for e in ran if e.startswith("gpu:") and e.endswith(":CPUExecutionProvider")]
    if planned == "gpu" and on_cpu:
        summary["warning"] = (
            "planned for the GPU tier, but segments ran on the CPU provider (no usable GPU provider on "
            f"{len(on_cpu)} worker kind(s)): the plan's timings do not apply"
        )
    return summary
