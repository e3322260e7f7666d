"""A load and fault run against `vsr serve`, and the fairness measurement (short jobs behind a long one).

Shared by bench/bench_load.py (`make bench-load`, 100 uploads) and tests/local/test_load.py (the CI-sized
run, about 12 uploads). Everything goes through a real `vsr serve` process (tests/support/serve.py):

- uploads: real-footage clips in several containers and codecs (tests/clips.py) and about 10% bad files,
  all put at once from a thread pool, each under its own key;
- faults (vsr.local.faults): about 10% of worker invocations hang inside the engine and are SIGKILLed by a
  watcher thread (first delivery only), about 10% raise a TransientError (first delivery only), one
  assembler hangs mid-join and is SIGKILLed; duplicate S3 events for every tenth upload;
- then one `vsr redrive`, and the invariants: every upload has exactly one terminal job, FAILED exactly for
  the bad files (each with a reason), one output per COMPLETE job with every segment counted once, nothing
  left in a dead-letter queue, every output frame-exact against its source (frame count, timestamps, audio).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import boto3

from tests import clips as clip_builders
from tests.local.conftest import overrides
from tests.local.media_checks import audio_packets, video_size, video_times
from tests.support.events import s3_notification
from tests.support.serve import Served, serve
from vsr.local.provision import local_names
from vsr.pipeline import jobs

NAMES = local_names()
# Containers and codecs whose outputs the frame-exact checks apply to (see tests/media/test_segment_join.py).
GOOD = ("webm_vp9_opus", "mkv_hevc", "mov_h264", "vfr_mp4", "rotated_mp4", "odd_mkv", "10bit_mp4", "ts_mp2")
TRANSCODED_AUDIO = {"ts_mp2"}  # MP4 cannot carry MP2: the join re-encodes it to AAC
BAD = ("audio_only", "truncated_mp4", "not_a_video", "zero_bytes", "hls_playlist", "concat_script", "unknown_codec")
FAULT_FRACTION = 0.1
DUPLICATE_EVERY = 10  # every tenth upload gets its S3 event twice


def _client(endpoint: str, service: str) -> Any:
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def fault_plan(marker_dir: Path) -> dict[str, Any]:
    return {
        "marker_dir": str(marker_dir),
        "rules": [
            {"action": "block", "attempts": [1], "fraction": FAULT_FRACTION, "block_s": 600},
            # drawn independently of the block rule: about 10% of all first deliveries
            {
                "action": "raise",
                "attempts": [1],
                "fraction": FAULT_FRACTION / (1 - FAULT_FRACTION),
                "reason": "injected transient fault",
            },
            {
                "function": "assemble",
                "target": "vsr.pipeline.assemble:join_segments",
                "action": "block",
                "once": True,
                "block_s": 600,
            },
        ],
    }


class Killer(threading.Thread):
    """SIGKILLs every container that writes a 'blocked' marker (a fault plan's hang), like a crash mid-work."""

    def __init__(self, marker_dir: Path) -> None:
        super().__init__(daemon=True, name="killer")
        self.marker_dir = marker_dir
        self.stop = threading.Event()
        self.killed: dict[str, int] = {"worker": 0, "assemble": 0}
        self._seen: set[str] = set()

    def run(self) -> None:
        while not self.stop.wait(0.2):
            for marker in self.marker_dir.glob("blocked-*"):
                if marker.name in self._seen:
                    continue
                self._seen.add(marker.name)
                try:
                    os.kill(int(marker.read_text()), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    continue
                self.killed["assemble" if marker.name.startswith("blocked-assemble") else "worker"] += 1


@dataclass
class Upload:
    key: str
    source: Path
    kind: str  # a GOOD or BAD name
    bad: bool
    uploaded_at: float = 0.0
    duplicated: bool = False


@dataclass
class LoadResult:
    uploads: int
    complete: int
    failed: int
    failed_reasons: dict[str, str]
    failed_exactly_the_bad: bool
    lost: int
    duplicated_outputs: int
    dlq_after_redrive: int
    frame_exact: int
    frame_mismatches: list[str]
    jobs_per_min: float
    latency_p50_s: float
    latency_p95_s: float
    serve_peak_rss_mb: float
    killed_workers: int
    killed_assemblers: int
    transient_errors: int
    duplicate_events: int
    segments: int  # segments of the COMPLETE jobs: what the worker fault fractions apply to (plus redeliveries)
    wall_s: float
    bad_terminal_p50_s: float = 0.0  # upload -> FAILED of the bad files: a user learns why within this
    bad_terminal_max_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def table(self) -> str:
        rows = [
            ("uploads", self.uploads),
            ("COMPLETE", self.complete),
            ("FAILED (with a reason)", self.failed),
            ("FAILED == the bad files", self.failed_exactly_the_bad),
            ("lost", self.lost),
            ("duplicated outputs", self.duplicated_outputs),
            ("DLQ messages after one vsr redrive", self.dlq_after_redrive),
            ("outputs frame-exact (frames, timestamps, audio)", f"{self.frame_exact}/{self.complete}"),
            ("jobs/min", f"{self.jobs_per_min:.1f}"),
            ("latency p50 / p95 (s)", f"{self.latency_p50_s:.1f} / {self.latency_p95_s:.1f}"),
            (
                "bad files: upload -> FAILED p50 / max (s)",
                f"{self.bad_terminal_p50_s:.1f} / {self.bad_terminal_max_s:.1f}",
            ),
            ("peak memory of the serve process (MB)", f"{self.serve_peak_rss_mb:.0f}"),
            ("segments of the COMPLETE jobs", self.segments),
            ("faults: workers SIGKILLed mid-segment", self.killed_workers),
            ("faults: transient errors raised", self.transient_errors),
            ("faults: duplicate S3 events", self.duplicate_events),
            ("faults: assemblers SIGKILLed mid-join", self.killed_assemblers),
            ("wall (s)", f"{self.wall_s:.0f}"),
        ]
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"  {name:<{width}}  {value}" for name, value in rows)


def build_uploads(folder: Path, count: int) -> list[Upload]:
    """`count` uploads, about 10% bad, cycling through the good and bad kinds."""
    folder.mkdir(parents=True, exist_ok=True)
    built = {name: clip_builders.GOOD_CLIPS[name](folder) for name in GOOD}
    built.update({name: clip_builders.BAD_CLIPS[name](folder) for name in BAD})
    bad_count = max(1, round(count * 0.1))
    every = count / bad_count
    bad_slots = {int(i * every + every / 2) for i in range(bad_count)}
    uploads, good_i, bad_i = [], 0, 0
    for index in range(count):
        if index in bad_slots:
            kind, bad_i = BAD[bad_i % len(BAD)], bad_i + 1
        else:
            kind, good_i = GOOD[good_i % len(GOOD)], good_i + 1
        source = built[kind]
        uploads.append(Upload(f"load/{index:03d}-{source.name}", source, kind, kind in BAD))
    return uploads


def _depth(sqs: Any, name: str) -> int:
    url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    attrs = sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])


def all_jobs(endpoint: str) -> list[jobs.Job]:
    ddb = _client(endpoint, "dynamodb")
    items: list[dict[str, Any]] = []
    for page in ddb.get_paginator("scan").paginate(TableName=NAMES.table, ConsistentRead=True):
        items.extend(page.get("Items", []))
    return [jobs.Job.from_item(item) for item in items]


def upload_all(endpoint: str, uploads: list[Upload], threads: int = 16) -> None:
    """Every upload at once (a thread pool of S3 clients); every tenth also gets a duplicate S3 event."""
    s3, sqs = _client(endpoint, "s3"), _client(endpoint, "sqs")
    ingest_url = sqs.get_queue_url(QueueName=NAMES.ingest_queue)["QueueUrl"]

    def put(upload: Upload) -> None:
        s3.upload_file(str(upload.source), NAMES.input_bucket, upload.key)
        upload.uploaded_at = time.time()

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(put, uploads))
    for index, upload in enumerate(uploads):
        if index % DUPLICATE_EVERY == DUPLICATE_EVERY // 2:
            head = s3.head_object(Bucket=NAMES.input_bucket, Key=upload.key)
            body = s3_notification(
                NAMES.input_bucket, upload.key, etag=head["ETag"].strip('"'), size=head["ContentLength"]
            )
            sqs.send_message(QueueUrl=ingest_url, MessageBody=body)
            upload.duplicated = True


def wait_terminal(
    endpoint: str, keys: set[str], timeout_s: float, report: Callable[[str], None] | None = None
) -> dict[str, list[jobs.Job]]:
    """Jobs per uploaded key once every key has a terminal job (or at the deadline)."""
    deadline = time.monotonic() + timeout_s
    last_report = 0.0
    ticker = threading.Event()
    while True:
        by_key: dict[str, list[jobs.Job]] = {}
        for job in all_jobs(endpoint):
            by_key.setdefault(job.input.get("key", ""), []).append(job)
        finished = sum(1 for key in keys if any(j.terminal for j in by_key.get(key, [])))
        if report and time.monotonic() - last_report > 15:
            last_report = time.monotonic()
            report(f"{finished}/{len(keys)} jobs finished")
        if finished == len(keys) or time.monotonic() > deadline:
            return by_key
        ticker.wait(1.0)


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def frame_exact(source: Path, output: Path, kind: str) -> str | None:
    """None when the output has the source's frames at the source's times and its audio; else what differs."""
    if video_times(output) != video_times(source):
        return "video timestamps differ"
    if video_size(output)[2] != video_size(source)[2]:
        return "frame count differs"
    if kind in TRANSCODED_AUDIO:
        with av.open(str(output)) as container:
            if [s.codec_context.name for s in container.streams.audio] != ["aac"]:
                return "audio not transcoded to AAC"
    elif audio_packets(output) != audio_packets(source):
        return "audio packets differ"
    return None


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def run_load(
    work: Path,
    count: int,
    *,
    workers: int | None = None,
    timeout_s: float = 3600,
    report: Callable[[str], None] | None = None,
) -> LoadResult:
    """Serve, upload `count` files at once with the fault mix, wait, redrive once, check; see the module doc."""
    say = report or (lambda _text: None)
    uploads = build_uploads(work / "clips", count)
    markers = work / "markers"
    markers.mkdir(parents=True, exist_ok=True)
    plan_file = work / "faults.json"
    plan_file.write_text(json.dumps(fault_plan(markers)))
    extra = ["--fault-plan", str(plan_file), *(["--workers", str(workers)] if workers else [])]
    killer = Killer(markers)
    killer.start()
    try:
        with serve(work / "serve", *extra, overrides=overrides(worker_timeout_s=20)) as served:
            started = time.time()
            upload_all(served.endpoint, uploads)
            say(f"{len(uploads)} uploads done in {time.time() - started:.1f} s")
            by_key = wait_terminal(served.endpoint, {u.key for u in uploads}, timeout_s, say)
            result = _check(served, uploads, by_key, work / "outputs", killer, started)
    finally:
        killer.stop.set()
    return result


def _check(
    served: Served,
    uploads: list[Upload],
    by_key: dict[str, list[jobs.Job]],
    out_dir: Path,
    killer: Killer,
    started: float,
) -> LoadResult:
    endpoint = served.endpoint
    peak = peak_rss_mb(served.process.pid)
    redriven = served.vsr("redrive")
    sqs = _client(endpoint, "sqs")
    # what the redrive left in the dead-letter queues (and in the assembly stream's failure destination)
    dlq_left = sum(_depth(sqs, name) for name in (NAMES.ingest_dlq, NAMES.segment_dlq, NAMES.assembly_failures))
    s3 = _client(endpoint, "s3")
    outputs = [
        o["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=NAMES.output_bucket)
        for o in page.get("Contents", [])
        if o["Key"].endswith(".mp4")
    ]
    lost = 0
    complete: list[tuple[Upload, jobs.Job]] = []
    failed: dict[str, str] = {}
    bad_terminal: list[float] = []
    double_counted = 0
    for upload in uploads:
        found = [j for j in by_key.get(upload.key, []) if j.terminal]
        if len(by_key.get(upload.key, [])) != 1 or not found:
            lost += 1
            continue
        job = found[0]
        if job.status == jobs.COMPLETE:
            complete.append((upload, job))
            if int(job.segment_totals.get("frames", 0)) != job.frames_total or job.done != set(
                range(job.segment_count)
            ):
                double_counted += 1
        elif (job.error or {}).get("reason"):
            failed[upload.key] = job.error["reason"]
            if upload.bad:
                bad_terminal.append(float(job.completed_at or job.updated_at) - upload.uploaded_at)
    duplicated = max(0, len(outputs) - len(complete)) + double_counted
    bad_keys = {u.key for u in uploads if u.bad}
    mismatches: list[str] = []
    out_dir.mkdir(parents=True, exist_ok=True)
    for upload, job in complete:
        local = out_dir / Path(job.output["key"]).name
        s3.download_file(job.output["bucket"], job.output["key"], str(local))
        problem = frame_exact(upload.source, local, upload.kind)
        if problem:
            mismatches.append(f"{upload.key}: {problem}")
    latencies = [float(job.completed_at) - upload.uploaded_at for upload, job in complete if job.completed_at]
    finished_at = max((float(j.completed_at or 0) for js in by_key.values() for j in js), default=time.time())
    span_min = max(1e-9, (finished_at - started) / 60)
    transient = sum(
        1
        for js in by_key.values()
        for j in js
        for err in j.segment_errors.values()
        if "injected transient fault" in str(err.get("error"))
    )
    shutil.rmtree(out_dir, ignore_errors=True)
    return LoadResult(
        uploads=len(uploads),
        complete=len(complete),
        failed=len(failed),
        failed_reasons=failed,
        failed_exactly_the_bad=set(failed) == bad_keys,
        lost=lost,
        duplicated_outputs=duplicated,
        dlq_after_redrive=dlq_left,
        frame_exact=len(complete) - len(mismatches),
        frame_mismatches=mismatches,
        jobs_per_min=len(uploads) / span_min,
        latency_p50_s=_percentile(latencies, 50),
        latency_p95_s=_percentile(latencies, 95),
        serve_peak_rss_mb=peak,
        killed_workers=killer.killed["worker"],
        killed_assemblers=killer.killed["assemble"],
        transient_errors=transient,
        duplicate_events=sum(1 for u in uploads if u.duplicated),
        bad_terminal_p50_s=_percentile(bad_terminal, 50),
        bad_terminal_max_s=max(bad_terminal, default=0.0),
        segments=sum(job.segment_count for _, job in complete),
        wall_s=time.time() - started,
        extra={"redrive_output": redriven.stdout.strip(), "redrive_code": redriven.returncode},
    )


# --- fairness ---------------------------------------------------------------------------------------------
FAIR_SEGMENT_FRAMES = 2  # max_frames in the fairness stacks: the long clip is 40 segments, a short one is 1


def make_clip(path: Path, frames: int, width: int = 128, height: int = 72) -> Path:
    """A real-footage H.264 clip of `frames` frames (bikes.mp4, resized)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25, options={"preset": "ultrafast", "g": "10"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index, rgb in enumerate(clip_builders.footage(frames, width, height)):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, 25)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


@dataclass
class FairnessResult:
    idle_s: list[float]
    loaded_s: list[float]
    long_s: float | None

    @property
    def idle_p95(self) -> float:
        return _percentile(self.idle_s, 95)

    @property
    def loaded_p95(self) -> float:
        return _percentile(self.loaded_s, 95)

    @property
    def ratio(self) -> float:
        return self.loaded_p95 / self.idle_p95


def _latencies(endpoint: str, keys: dict[str, float], timeout_s: float) -> dict[str, float]:
    by_key = wait_terminal(endpoint, set(keys), timeout_s)
    out = {}
    for key, uploaded in keys.items():
        done = [j for j in by_key.get(key, []) if j.status == jobs.COMPLETE and j.completed_at]
        if done:
            out[key] = float(done[0].completed_at) - uploaded
    return out


def _put(endpoint: str, path: Path, key: str) -> float:
    _client(endpoint, "s3").upload_file(str(path), NAMES.input_bucket, key)
    return time.time()


def measure_fairness(
    work: Path,
    *,
    window_per_worker: int | None,
    shorts: int = 5,
    long_segments: int = 40,
    delay_s: float = 2.0,
    workers: int | None = None,
    timeout_s: float = 1800,
) -> FairnessResult:
    """Short one-segment jobs on an idle stack, then the same behind a long job uploaded `delay_s` earlier.
    `window_per_worker` None keeps settings.json's value; 0 enqueues every segment at once (the old design)."""
    clips_dir = work / "clips"
    clips_dir.mkdir(parents=True, exist_ok=True)
    long_clip = make_clip(clips_dir / "long.mp4", long_segments * FAIR_SEGMENT_FRAMES)
    short_clip = make_clip(clips_dir / "short.mp4", FAIR_SEGMENT_FRAMES)
    settings = overrides(max_frames=FAIR_SEGMENT_FRAMES, window_per_worker=window_per_worker)
    extra = ["--workers", str(workers)] if workers else []
    with serve(work / "serve", *extra, overrides=settings) as served:
        # warm-up: the first job pays the containers' cold starts, which are not what is measured
        warm = {"warmup.mp4": _put(served.endpoint, short_clip, "warmup.mp4")}
        _latencies(served.endpoint, warm, timeout_s)
        with ThreadPoolExecutor(shorts) as pool:
            idle_keys = dict(
                pool.map(lambda i: (f"idle-{i}.mp4", _put(served.endpoint, short_clip, f"idle-{i}.mp4")), range(shorts))
            )
        idle = _latencies(served.endpoint, idle_keys, timeout_s)
        long_at = _put(served.endpoint, long_clip, "long.mp4")
        threading.Event().wait(delay_s)  # the scenario: the short clips arrive 2 s after the long one
        with ThreadPoolExecutor(shorts) as pool:
            loaded_keys = dict(
                pool.map(
                    lambda i: (f"short-{i}.mp4", _put(served.endpoint, short_clip, f"short-{i}.mp4")), range(shorts)
                )
            )
        loaded = _latencies(served.endpoint, loaded_keys, timeout_s)
        long = _latencies(served.endpoint, {"long.mp4": long_at}, timeout_s)
    return FairnessResult(sorted(idle.values()), sorted(loaded.values()), long.get("long.mp4"))
