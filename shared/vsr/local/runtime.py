"""`vsr run`: the whole serverless pipeline on this machine, on an embedded AWS (moto server), real handlers.

What runs where:
- moto server in this process (ThreadedMotoServer on 127.0.0.1, a free port), unless `--endpoint` names one;
- resources created from the settings exactly as Terraform creates them (vsr.local.provision);
- Lambda stand-ins (vsr.local.dispatch): one ingest poller, N worker pollers and one stream poller, each owning
  a container process (vsr.local.containers) that imports the function's handler from the installed package
  (vsr.entrypoints, what `services/<fn>/handler.py` delegates to), so it runs outside a checkout too.

Worker concurrency: Lambda runs up to the reserved concurrency, each execution with its own vCPUs
(settings: min(max_vcpus, memory / mb_per_vcpu), about 5.8 for the worker), and the ingest planner sizes
segments for one such execution. Locally each worker container gets about that many CPUs too, pinned by
CPU affinity (the engine sizes its ONNX Runtime pool from the process's affinity), and there are
round(cpus / vcpus) containers, at least one and never more than the reserved concurrency. So containers
never share cores and nothing is oversubscribed: on a 2-core machine that is ONE worker with both cores,
which is also the fastest choice there, because a short clip is a single Lambda-sized segment (bikes.mp4:
250 frames, one segment) that a second, 1-core worker could not share. `--workers N` asks for N containers
with cpu_count // N CPUs each (at least one; CPUs are shared round-robin if N exceeds the CPU count).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from vsr.aws import clients
from vsr.aws.deployment import FIXED_ENV
from vsr.entrypoints import FUNCTIONS, HANDLERS
from vsr.errors import VsrError
from vsr.local.containers import REGION, Container
from vsr.local.dispatch import SqsPoller, StreamPoller
from vsr.local.download import download
from vsr.local.faults import FaultPlan
from vsr.local.fleet import LocalGpuFleet
from vsr.local.job_events import EventWatcher, Listener, event_line
from vsr.local.names import local_path
from vsr.local.provision import Provisioned, provision, queue_arn
from vsr.logs import get_logger
from vsr.pipeline import jobs
from vsr.pipeline.jobs.eta import job_eta
from vsr.pipeline.retry import retrying_texts
from vsr.settings import Settings, deep_merge, get_settings, load_assembly_filter

log = get_logger(__name__)

POLL_S = 0.25  # how often the job record is read for progress
QUALITY_GRACE_S = 30.0  # beyond the quality check's own budget: decoding, the preview upload, the report
DLQ_CHECK_S = 2.0  # how often the dead-letter queues are checked while a job has failing segments
_COUNTDOWN = re.compile(r", next in \d+ s")  # vsr.pipeline.retry.retrying_text


def usable_cpus() -> list[int]:
    """The CPUs this process may run on (all of them where affinity is not available, e.g. macOS)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def plan_concurrency(requested: int | None, settings: Settings, cpus: int | None = None) -> tuple[int, int]:
    """(worker containers, CPUs per container): by default one container per Lambda worker's worth of vCPUs;
    never above the reserved concurrency."""
    cpus = max(1, cpus or len(usable_cpus()))
    wanted = requested or round(cpus / settings.worker_vcpus())
    workers = max(1, min(settings.worker_reserved_concurrency, wanted))
    return workers, max(1, cpus // workers)


def cpu_sets(workers: int, per_worker: int, cpus: list[int]) -> list[tuple[int, ...]]:
    """Contiguous CPU sets per worker, wrapping around when the user asked for more workers than CPUs."""
    return [tuple(cpus[(w * per_worker + j) % len(cpus)] for j in range(per_worker)) for w in range(workers)]


class PortInUseError(VsrError):
    code = "port_in_use"


def check_port_free(host: str, port: int) -> None:
    """Raise PortInUseError (one clear line for the CLI) when something already listens on host:port."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise PortInUseError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc} (another `vsr serve` or a local AWS "
                "emulator?); stop it or choose another --port"
            ) from exc


@contextmanager
def embedded_moto(host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """moto server in this process on host:port (port 0: a free one); yields its URL."""
    from moto.server import ThreadedMotoServer

    from vsr.local.moto_compat import serialize_dynamodb_writes

    if port:
        check_port_free(host, port)
    serialize_dynamodb_writes()  # moto applies concurrent conditional updates non-atomically; DynamoDB does not
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no access log lines on the user's terminal
    server = ThreadedMotoServer(ip_address=host, port=port, verbose=False)
    server.start()
    bound_host, bound_port = server.get_host_and_port()
    try:
        yield f"http://{bound_host}:{bound_port}"
    finally:
        server.stop()


@contextmanager
def local_stack(
    *,
    endpoint: str | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    **runtime_options: Any,
) -> Iterator[LocalRuntime]:
    """The whole local stack `vsr run` and `vsr serve` share: the embedded AWS (or `endpoint`), the resources
    Terraform would create, and the running dispatchers; `runtime_options` go to LocalRuntime."""
    with embedded_moto(host, port) if not endpoint else _given(endpoint) as url:
        use_endpoint(url)
        with LocalRuntime(url, **runtime_options) as runtime:
            yield runtime


def use_endpoint(endpoint: str) -> None:
    """Point this process's clients (and the containers it starts, through the environment) at `endpoint`."""
    clients.use_endpoint(endpoint)


@dataclass
class Outcome:
    """How a waited-for job ended (status COMPLETE or FAILED) as `vsr run` reports it."""

    job_id: str
    status: str
    job: jobs.Job | None
    error: str | None
    wall_s: float
    output: Path | None = None
    report: Path | None = None
    preview: Path | None = None
    sidecars: list[Path] = field(default_factory=list)  # WebVTT subtitles and chapters beside a fragmented output
    extra: dict[str, Any] = field(default_factory=dict)


class ContainerLauncher(Protocol):
    """Starts a function's container other than as a host process running the installed package: the Lambda
    sandbox of tools/lambda_smoke.py runs the packaged zips on a clean interpreter. `env` is the function's
    Lambda environment (LocalRuntime.lambda_env), nothing of this process's own."""

    def __call__(
        self, function: str, *, env: dict[str, str], log_path: Path, timeout_s: float, memory_mb: int
    ) -> Container: ...


class LocalRuntime:
    """Provisioned resources plus running dispatchers; use as a context manager.

    `fault_plan` (tests only) is handed to worker containers, see vsr.local.faults. `functions` limits which
    event source mappings run (default all three), e.g. to hold segment messages while a test inspects them.
    `launcher` starts the containers some other way (see ContainerLauncher).
    """

    def __init__(
        self,
        endpoint: str,
        *,
        workers: int | None = None,
        work_dir: Path | None = None,
        log_dir: Path | None = None,
        fault_plan: FaultPlan | None = None,
        model_path: Path | None = None,
        functions: tuple[str, ...] = FUNCTIONS,
        gpu_workers: int = 0,
        event_listeners: list[Listener] | None = None,
        launcher: ContainerLauncher | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.launcher = launcher
        self.functions = functions
        self.gpu_workers = int(gpu_workers or 0)
        self.gpu_fleet: LocalGpuFleet | None = None
        self.event_listeners = list(event_listeners or [])
        self.events: EventWatcher | None = None
        self.settings = get_settings()
        self.workers, self.cpus_per_worker = plan_concurrency(workers, self.settings)
        self._work_dir = Path(work_dir or tempfile.mkdtemp(prefix="vsr-local-"))
        self.log_dir = Path(log_dir or self._work_dir / "logs")
        self.fault_plan = fault_plan
        self._model_path = model_path
        self._stop = threading.Event()
        self._serial = 0
        self._serial_lock = threading.Lock()
        self.loops: list[SqsPoller | StreamPoller] = []
        self.resources: Provisioned | None = None

    # --- lifecycle ------------------------------------------------------------------------------------
    def __enter__(self) -> LocalRuntime:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self.resources = provision(self.settings, self._model_path)
        r = self.resources
        sqs = clients.sqs()
        ingest_arn, segment_arn = queue_arn(sqs, r.ingest_queue_url), queue_arn(sqs, r.segment_queue_url)
        if "ingest" in self.functions:
            self.loops.append(
                SqsPoller(
                    "ingest",
                    self._stop,
                    self._factory("ingest"),
                    sqs,
                    r.ingest_queue_url,
                    ingest_arn,
                    self.settings.event_source("ingest")["batch_size"],
                )
            )
        cpus = usable_cpus()
        for index, cpu_set in enumerate(cpu_sets(self.workers, self.cpus_per_worker, cpus)):
            if "worker" not in self.functions:
                break
            self.loops.append(
                SqsPoller(
                    f"worker-{index}",
                    self._stop,
                    self._factory("worker", cpu_set),
                    sqs,
                    r.segment_queue_url,
                    segment_arn,
                    self.settings.event_source("worker")["batch_size"],
                )
            )
        if "assemble" in self.functions:
            self.loops.append(
                StreamPoller(
                    "assemble",
                    self._stop,
                    self._factory("assemble"),
                    clients.dynamodbstreams(),
                    r.table_stream_arn,
                    load_assembly_filter(),
                    self.settings.event_source("assemble")["maximum_retry_attempts"],
                    sqs,
                    r.assembly_failures_url,
                )
            )
        for loop in self.loops:
            loop.start()
        self.events = EventWatcher(r.job_events_url, self.event_listeners)
        self.events.start()
        if self.gpu_workers > 0:
            rules = self.fault_plan.for_function("gpu-worker") if self.fault_plan else None
            self.gpu_fleet = LocalGpuFleet(
                self.gpu_workers,
                self._gpu_task_env,
                self.log_dir,
                drain_s=self.settings.gpu.drain_s,
                fault_plan_json=rules.to_json() if rules else None,
            )
            self.gpu_fleet.start()
        log.info(
            "runtime_started",
            endpoint=self.endpoint,
            workers=self.workers,
            cpus_per_worker=self.cpus_per_worker,
            gpu_workers=self.gpu_workers,
        )

    def stop(self) -> None:
        self._stop.set()
        if self.gpu_fleet is not None:
            self.gpu_fleet.stop()
        for loop in self.loops:
            loop.shutdown()
        for loop in self.loops:
            loop.join(timeout=30)
            loop.shutdown()  # a container started during shutdown
        if self.events is not None:
            self.events.stop()

    # --- containers -----------------------------------------------------------------------------------
    def lambda_env(self, function: str) -> dict[str, str]:
        """The function's environment as Terraform sets it (the deployment contract's variables) plus the ones
        Lambda itself sets, pointed at this runtime's endpoint."""
        assert self.resources is not None
        fn = self.settings.function(function)
        # The segment queue's concurrency here is this runtime's worker pollers, as Terraform passes the event
        # source mapping's MaximumConcurrency: ingest plans for them and sizes each job's segment window from it.
        overrides = json.loads(os.environ.get("VSR_SETTINGS_OVERRIDES") or "{}")
        overrides = deep_merge(overrides, {"queues": {"worker_max_concurrency": self.workers}})
        if self.gpu_workers > 0:  # as Terraform tells the functions that the fleet exists, and its size
            overrides = deep_merge(overrides, {"gpu": {"enabled": True, "max_tasks": self.gpu_workers}})
        return {
            **self.resources.function_env(),
            **FIXED_ENV,
            "VSR_SETTINGS_OVERRIDES": json.dumps(overrides),
            "VSR_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or REGION,
            "AWS_LAMBDA_FUNCTION_NAME": getattr(self.resources.names, f"{function}_function"),
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(fn.memory_mb),
        }

    def _container_env(self, function: str, tmp: Path) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.lambda_env(function))
        env.update(
            {
                "TMPDIR": str(tmp),  # each execution environment has its own /tmp
                "VSR_MODEL_DIR": str(tmp / "vsr-models"),  # what Terraform sets: the model is fetched from S3
                "PYTHONUNBUFFERED": "1",
            }
        )
        return env

    def _gpu_task_env(self, serial: int) -> dict[str, str]:
        """The ECS task's environment: the worker's, with the GPU queue as its segment queue."""
        assert self.resources is not None
        tmp = self._work_dir / f"gpu-worker-{serial}"
        tmp.mkdir(parents=True, exist_ok=True)
        env = self._container_env("worker", tmp)
        env["VSR_SEGMENT_QUEUE_URL"] = self.resources.gpu_segment_queue_url
        for name in ("AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE"):
            env.pop(name, None)  # not a Lambda
        return env

    def _factory(self, function: str, cpus: tuple[int, ...] | None = None) -> Callable[[], Container]:
        def make() -> Container:
            with self._serial_lock:
                self._serial += 1
                serial = self._serial
            log_path = self.log_dir / f"{function}-{serial}.log"
            fn = self.settings.function(function)
            timeout_s, memory_mb = fn.timeout_s, fn.memory_mb
            if self.launcher is not None:
                env = self.lambda_env(function)
                return self.launcher(function, env=env, log_path=log_path, timeout_s=timeout_s, memory_mb=memory_mb)
            tmp = self._work_dir / f"{function}-{serial}"
            tmp.mkdir(parents=True, exist_ok=True)
            rules = self.fault_plan.for_function(function) if self.fault_plan else None
            plan = rules.to_json() if rules else None
            return Container(
                function,
                HANDLERS[function],
                timeout_s=timeout_s,
                memory_mb=memory_mb,
                env=self._container_env(function, tmp),
                log_path=log_path,
                fault_plan_json=plan,
                cpus=cpus,
            )

        return make

    def worker_loops(self) -> list[SqsPoller]:
        return [loop for loop in self.loops if isinstance(loop, SqsPoller) and loop.name.startswith("worker")]

    # --- jobs -----------------------------------------------------------------------------------------
    def submit(self, path: Path, key: str | None = None, metadata: dict[str, str] | None = None) -> str:
        """Upload `path` to the input bucket (S3 notifies ingest) with optional user metadata (vsr-tier,
        vsr-plan); return the job id that upload gets."""
        assert self.resources is not None
        bucket = self.resources.names.input_bucket
        key = key or path.name
        s3 = clients.s3()
        s3.upload_file(str(path), bucket, key, ExtraArgs={"Metadata": metadata} if metadata else None)
        head = s3.head_object(Bucket=bucket, Key=key)
        return jobs.job_id_for(bucket, key, head.get("VersionId"), head.get("ETag"))

    def job(self, job_id: str) -> jobs.Job | None:
        assert self.resources is not None
        return jobs.get_job(job_id, self.resources.names.table)

    def dlq_depth(self) -> int:
        assert self.resources is not None
        total = 0
        r = self.resources
        for url in (r.segment_dlq_url, r.ingest_dlq_url, r.gpu_segment_dlq_url):
            attrs = clients.sqs().get_queue_attributes(
                QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
            )["Attributes"]
            total += int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])
        return total

    def deadline_s(self, segments: int) -> float:
        """A generous bound on a healthy job's duration: every stage may use all its retries."""
        s = self.settings
        ingest = s.visibility_timeout_s("ingest") * s.ingest_max_receive_count
        rounds = math.ceil(max(1, segments) / self.workers)
        worker = (
            rounds * s.function("worker").timeout_s + s.visibility_timeout_s("worker") * s.segment_max_receive_count
        )
        assemble = s.function("assemble").timeout_s * (s.event_source("assemble")["maximum_retry_attempts"] + 1)
        return float(ingest + worker + assemble)

    def wait(
        self,
        job_id: str,
        *,
        started: float,
        on_update: Callable[[jobs.Job | None], None] | None = None,
        timeout_s: float | None = None,
        stop_on_dead_letters: bool = True,
    ) -> Outcome:
        """Poll the job record until COMPLETE or FAILED, a dead-lettered message stalls it, or the deadline."""
        baseline = self.dlq_depth()
        ticker = threading.Event()
        job: jobs.Job | None = None
        dlq_checked = time.monotonic()
        while True:
            job = self.job(job_id)
            if on_update:
                on_update(job)
            elapsed = time.time() - started
            if job is not None and job.terminal:
                end = job.completed_at or time.time()
                error = (job.error or {}).get("reason") if job.status == jobs.FAILED else None
                return Outcome(job_id, job.status, job, error, end - started)
            broken = next((loop for loop in self.loops if loop.init_failure), None)
            if broken is not None:
                reason = f"the {broken.name} container failed to start (a broken install?); see {broken.init_failure}"
                return Outcome(job_id, jobs.FAILED, job, reason, elapsed)
            # Only a delivery that failed can dead-letter: a segment with a recorded error, or an ingest that never
            # created (or finished) its job. Checking rarely keeps the embedded moto (in this process) quiet.
            suspicious = job is None or job.status == jobs.QUEUED or any(i not in job.done for i in job.segment_errors)
            if stop_on_dead_letters and suspicious and time.monotonic() - dlq_checked >= DLQ_CHECK_S:
                dlq_checked = time.monotonic()
                if self.dlq_depth() > baseline:
                    job = self.job(job_id) or job  # the stage fails the job before its message dead-letters
                    if job is not None and job.status == jobs.FAILED:
                        error = (job.error or {}).get("reason")
                        return Outcome(job_id, job.status, job, error, (job.completed_at or time.time()) - started)
                    return Outcome(job_id, jobs.FAILED, job, _dead_letter_reason(job), elapsed)
            limit = timeout_s if timeout_s is not None else self.deadline_s(job.segment_count if job else 0)
            if elapsed > limit:
                return Outcome(
                    job_id,
                    jobs.FAILED,
                    job,
                    f"timed out after {elapsed:.0f} s (status {job.status if job else 'not created'})",
                    elapsed,
                )
            ticker.wait(POLL_S)

    def download(self, outcome: Outcome, out_dir: Path) -> None:
        """Fetch the output video, its JSON report and the preview into out_dir.

        The job's quality check runs right after COMPLETE (it never delays the output): wait for it, within its
        time budget, so the report carries the quality block and the preview is there.
        """
        if outcome.job is None or not outcome.job.output:
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.settings.quality_budget_s + QUALITY_GRACE_S
        ticker = threading.Event()
        while not outcome.job.output.get("quality_measured") and time.monotonic() < deadline:
            ticker.wait(POLL_S)
            outcome.job = self.job(outcome.job_id) or outcome.job
        output = outcome.job.output

        def fetch(key: str) -> Path:  # a name that fits the filesystem, whatever the input's name was
            return download(output["bucket"], key, out_dir / local_path(key).name).resolve()

        outcome.output = fetch(output["key"])
        if output.get("report_key"):
            outcome.report = fetch(output["report_key"])
        if output.get("preview_key"):
            outcome.preview = fetch(output["preview_key"])
        outcome.sidecars = [fetch(key) for key in output.get("sidecar_keys", [])]  # subtitles, chapters (WebVTT)


def _dead_letter_reason(job: jobs.Job | None) -> str:
    if job is None:
        return "the upload's ingest message went to the dead-letter queue; see `vsr status` and `vsr redrive`"
    failing = ", ".join(
        f"segment {index} ({err.get('attempts')} attempts): {err.get('error')}"
        for index, err in sorted(job.segment_errors.items())
        if index not in job.done
    )
    return f"a message went to the dead-letter queue; {failing or 'no segment error recorded'}; fix the cause and run `vsr redrive`"


# --- reporting ----------------------------------------------------------------------------------------
def timings_summary(outcome: Outcome, workers: int) -> dict[str, Any]:
    """Job timings with the orchestration overhead: wall minus the workers' decode -> infer -> encode time.

    Compute is each segment's `process_s`, the wall time of its decode -> upscale -> encode pipeline (the three
    overlap in threads, so decode_s + infer_s + encode_s over-counts it). With W workers and S segments that
    compute divides over min(W, S) workers at best, so overhead = wall - process / min(W, S): events and
    queues, probe and planning, container start, model download, session, uploads, counting, the stream,
    assembly, and any imbalance between workers. With one worker it is wall - process exactly.
    """
    job = outcome.job
    totals = job.segment_totals if job else {}
    decode, infer, encode = (float(totals.get(name, 0.0)) for name in ("decode_s", "infer_s", "encode_s"))
    compute = float(totals.get("process_s") or min(decode + infer + encode, float(totals.get("wall_s", 0.0))))
    parallel = max(1, min(workers, job.segment_count if job and job.segment_count else 1))
    overhead = outcome.wall_s - compute / parallel
    summary: dict[str, Any] = {
        "wall_s": round(outcome.wall_s, 3),
        "decode_s": round(decode, 3),
        "infer_s": round(infer, 3),
        "encode_s": round(encode, 3),
        "process_s": round(compute, 3),
        "worker_wall_s": round(float(totals.get("wall_s", 0.0)), 3),
        "workers": workers,
        "parallelism": parallel,
        "overhead_s": round(overhead, 3),
        "overhead_pct": round(100.0 * overhead / outcome.wall_s, 2) if outcome.wall_s > 0 else None,
    }
    if job:
        summary["stages"] = job.timings
    return summary


def summary_line(outcome: Outcome, workers: int) -> dict[str, Any]:
    job = outcome.job
    return {
        "job_id": outcome.job_id,
        "status": outcome.status,
        "output": str(outcome.output) if outcome.output else None,
        "report": str(outcome.report) if outcome.report else None,
        "preview": str(outcome.preview) if outcome.preview else None,
        **({"sidecars": [str(path) for path in outcome.sidecars]} if outcome.sidecars else {}),
        "flicker_ratio": (job.output or {}).get("flicker_ratio") if job else None,
        "error": outcome.error,
        "segments": job.segment_count if job else 0,
        "frames": int(job.segment_totals.get("frames", 0)) if job else 0,
        "timings": timings_summary(outcome, workers),
    }


def job_eta_text(job: jobs.Job, elapsed_s: float) -> str:
    """ ", ETA 42 s" from the job's plan and measured progress; empty when there is nothing to say."""
    if job.status not in (jobs.QUEUED, jobs.PROCESSING) or not job.plan.get("predicted_wall_s"):
        return ""
    left = job_eta(job, elapsed_s)
    return ", ETA unknown (behind plan)" if left is None else f", ETA {left:.0f} s"


class Progress:
    """One status line on stderr, rewritten in place on a terminal, one line per change otherwise."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.started = time.time()
        self._last = ""

    def __call__(self, job: jobs.Job | None) -> None:
        if job is None:
            text = "waiting for ingest"
        else:
            done, total = len(job.done), job.segment_count
            frames_done, frames_total = job.frames_done, job.frames_total
            bar = ""
            if frames_total:
                filled = round(20 * min(frames_done, frames_total) / frames_total)
                bar = f"[{'#' * filled}{'.' * (20 - filled)}] {frames_done}/{frames_total} frames, "
            text = f"{job.job_id[:12]} {job.status:<10} {bar}{done}/{total} segments"
            retrying = retrying_texts(job.segment_errors, job.done, time.time()) if not job.terminal else []
            if retrying:  # what the job waits for, instead of "ETA unknown"
                more = f" (and {len(retrying) - 1} more)" if len(retrying) > 1 else ""
                text += f", {retrying[0]}{more}"
            else:
                text += job_eta_text(job, time.time() - self.started)
        key = _COUNTDOWN.sub("", text)  # a retry's countdown alone is not a change worth a new line
        if key == self._last:
            if self.tty:
                self.stream.write(f"\r{text}  {time.time() - self.started:6.1f} s")
                self.stream.flush()
            return
        self._last = key
        if self.tty:
            self.stream.write(f"\r\033[K{text}  {time.time() - self.started:6.1f} s")
        else:
            self.stream.write(f"{time.time() - self.started:7.1f} s  {text}\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _quiet_logs() -> None:
    """This process's own JSON logs: warnings and up unless VSR_LOG_LEVEL says otherwise (containers log to files)."""
    import structlog

    level = os.environ.get("VSR_LOG_LEVEL", "WARNING").upper()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level, logging.WARNING)))


def upload_metadata(args: argparse.Namespace) -> dict[str, str]:
    """The S3 user metadata the time-request flags stand for (ingest parses and checks them, as for any upload)."""
    keys = {"interpolate": "vsr-interpolate", "fps": "vsr-fps", "slowmo": "vsr-slowmo", "scale": "vsr-scale"}
    return {key: str(value) for flag, key in keys.items() if (value := getattr(args, flag, None)) is not None}


def run_command(args: argparse.Namespace) -> int:
    """`vsr run INPUT [-o DIR] [--workers N] [--tier T] [--codec C] [--endpoint URL] [--json]`: exit 0 on
    COMPLETE, 1 on FAILED."""
    _quiet_logs()
    source = Path(args.input)
    if not source.is_file():
        print(f"vsr run: no such file: {source}", file=sys.stderr)
        return 2
    out_dir = Path(args.output_dir)
    gpu_workers = getattr(args, "gpu_workers", None) or 0

    def show_event(event: dict[str, Any]) -> None:
        sys.stderr.write(event_line(event) + "\n")  # one write: this runs on the event watcher's thread
        sys.stderr.flush()

    with local_stack(
        endpoint=args.endpoint,
        workers=args.workers,
        log_dir=out_dir / "logs",
        gpu_workers=gpu_workers,
        event_listeners=[show_event],
    ) as runtime:
        gpu = f" and {gpu_workers} GPU-tier `vsr worker` process(es)" if gpu_workers else ""
        print(
            f"vsr run: local AWS at {runtime.endpoint}; {runtime.workers} worker container(s) x "
            f"{runtime.cpus_per_worker} CPU{gpu}; logs in {runtime.log_dir}",
            file=sys.stderr,
        )
        started = time.time()
        # the options an upload's user metadata carries (ingest reads them, as from `aws s3 cp --metadata`)
        options = {
            "vsr-tier": getattr(args, "tier", None),
            "vsr-codec": getattr(args, "codec", None),
            "vsr-deinterlace": getattr(args, "deinterlace", None),
        }
        metadata = {key: value for key, value in options.items() if value}
        metadata.update(upload_metadata(args))  # --interpolate/--fps/--slowmo/--scale as the upload's metadata
        job_id = runtime.submit(source, metadata=metadata or None)
        progress = Progress()
        try:
            outcome = runtime.wait(job_id, started=started, on_update=progress)
        finally:
            progress.close()
        if outcome.status == jobs.COMPLETE:
            runtime.download(outcome, out_dir)
    summary = summary_line(outcome, runtime.workers)
    if outcome.status == jobs.COMPLETE:
        t = summary["timings"]
        print(
            f"COMPLETE {summary['output']} ({summary['segments']} segments, {t['wall_s']:.1f} s, "
            f"orchestration overhead {t['overhead_s']:.1f} s = {t['overhead_pct']}%)",
            file=sys.stderr,
        )
        if summary["preview"]:
            ratio = summary["flicker_ratio"]
            flicker = f"; flicker ratio {ratio:.3f} (output / bicubic)" if ratio is not None else ""
            print(f"preview {summary['preview']}{flicker}", file=sys.stderr)
    else:
        print(f"FAILED: {outcome.error}", file=sys.stderr)
    if args.json:
        print(json.dumps(summary, default=str))
    return 0 if outcome.status == jobs.COMPLETE else 1


@contextmanager
def _given(endpoint: str) -> Iterator[str]:
    yield endpoint.rstrip("/")
