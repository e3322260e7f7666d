"""`vsr serve`: the local stack as a long-running S3 drop box for the real AWS CLI, a folder, or any S3 client.

It is `vsr run` without the single job: the embedded AWS (moto server) on a fixed port, the resources Terraform
creates (vsr.local.provision), and the Lambda stand-ins (vsr.local.dispatch) running until Ctrl-C or SIGTERM,
through the same `vsr.local.runtime.local_stack`. Anything that puts an object into the input bucket starts a
job, exactly as on AWS. On top of that:

- `--inbox DIR`: a file that appears there, once fully written, is uploaded to the input bucket under its
  path relative to DIR (`InboxWatcher`);
- `--outbox DIR`: each finished job's output video and JSON report are downloaded there, and a failed job
  leaves `<input name>.error.json` with its reason (`Outbox`);
- one progress line per job whenever it changes (frames done / total, segments, ETA once planning offers one).
"""

from __future__ import annotations

import argparse
import json
import os
import posixpath
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from vsr.aws import clients
from vsr.aws.clients import LOCAL_CREDENTIALS
from vsr.local.faults import FaultPlan
from vsr.local.runtime import LocalRuntime, _quiet_logs, job_eta, local_stack
from vsr.logs import get_logger
from vsr.pipeline import jobs
from vsr.pipeline.retry import retrying_texts

log = get_logger(__name__)

TICK_S = 0.5  # how often jobs, the inbox and the outbox are looked at
PARTIAL_SUFFIXES = (".part", ".partial", ".tmp", ".crdownload", ".download", ".swp")


def progress_text(job: jobs.Job, eta: Callable[[jobs.Job], float | None] = job_eta) -> str:
    """One job's progress line (without the time prefix)."""
    name = job.input.get("key", "?")
    text = f"{job.job_id[:8]} {job.status:<10} {name}"
    if job.status == jobs.FAILED:
        return f"{text}: {(job.error or {}).get('reason', 'no reason recorded')}"
    if job.frames_total:
        text += f"  {min(job.frames_done, job.frames_total)}/{job.frames_total} frames"
    if job.segment_count:
        text += f", {len(job.done)}/{job.segment_count} segments"
    retrying = retrying_texts(job.segment_errors, job.done, time.time()) if not job.terminal else []
    if retrying:  # what the job waits for, instead of an ETA
        more = f" (and {len(retrying) - 1} more)" if len(retrying) > 1 else ""
        return f"{text}, {retrying[0]}{more}"
    remaining = eta(job) if not job.terminal else None
    if remaining is not None:
        text += f", ETA {remaining:.0f} s"
    if job.status == jobs.COMPLETE and job.completed_at:
        text += f", {job.completed_at - job.created_at:.1f} s"
    return text


# --- inbox ----------------------------------------------------------------------------------------------
def open_for_writing(path: Path) -> bool:
    """True when some process we can see (Linux /proc) holds `path` open for writing; False elsewhere."""
    proc = Path("/proc")
    if not proc.is_dir():
        return False
    target = os.path.realpath(path)
    for pid_dir in proc.iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            for fd in (pid_dir / "fd").iterdir():
                if os.readlink(fd) != target:
                    continue
                for line in (pid_dir / "fdinfo" / fd.name).read_text().splitlines():
                    if line.startswith("flags:") and int(line.split()[1], 8) & (os.O_WRONLY | os.O_RDWR):
                        return True
        except OSError:  # a process that ended, or one we may not inspect
            continue
    return False


@dataclass(frozen=True)
class _Seen:
    size: int
    mtime_ns: int


class InboxWatcher:
    """Uploads files that appear in `folder` once fully written: the same size and mtime over two looks at
    least `settle_s` apart, and not open for writing by any process (a slow `cp` or a download in progress).
    Hidden files and usual partial-download names are ignored. A file changed after its upload is uploaded
    again (a new object version: a new job)."""

    def __init__(self, folder: Path, upload: Callable[[Path, str], None], settle_s: float = 1.0) -> None:
        self.folder = folder
        self._upload = upload
        self._settle_s = settle_s
        self._pending: dict[Path, tuple[_Seen, float]] = {}
        self._uploaded: dict[Path, _Seen] = {}

    def _candidates(self) -> list[Path]:
        found = []
        for root, dirs, files in os.walk(self.folder):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for name in files:
                if name.startswith(".") or name.lower().endswith(PARTIAL_SUFFIXES):
                    continue
                found.append(Path(root) / name)
        return found

    def scan(self, now: float | None = None) -> list[str]:
        """Look once; upload what is ready; return the keys uploaded."""
        now = time.monotonic() if now is None else now
        uploaded = []
        for path in self._candidates():
            try:
                stat = path.stat()
            except OSError:
                continue
            seen = _Seen(stat.st_size, stat.st_mtime_ns)
            if self._uploaded.get(path) == seen:
                continue
            previous = self._pending.get(path)
            if previous is None or previous[0] != seen:
                self._pending[path] = (seen, now)
                continue
            if now - previous[1] < self._settle_s or open_for_writing(path):
                continue
            key = path.relative_to(self.folder).as_posix()
            self._upload(path, key)
            self._uploaded[path] = seen
            del self._pending[path]
            uploaded.append(key)
        return uploaded


# --- outbox ---------------------------------------------------------------------------------------------
def _local_name(key: str) -> Path:
    """An S3 key as a relative local path that cannot leave the outbox."""
    parts = [p for p in posixpath.normpath(key).split("/") if p not in ("", ".", "..")]
    return Path(*parts) if parts else Path("unnamed")


class Outbox:
    """Downloads each finished job's output and report, or writes `<input name>.error.json` for a failed one."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def _fetch(self, bucket: str, key: str) -> Path:
        target = self.folder / _local_name(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.part")  # hidden until complete: watchers see whole files
        clients.s3().download_file(bucket, key, str(partial))
        partial.replace(target)
        return target

    def deliver_quality(self, job: jobs.Job) -> list[Path]:
        """After the job's quality check (it runs once the output is out): the report again, and the preview."""
        assert job.output is not None
        paths = []
        for key in (job.output.get("report_key"), job.output.get("preview_key")):
            if key:
                paths.append(self._fetch(job.output["bucket"], key))
        return paths

    def deliver(self, job: jobs.Job) -> list[Path]:
        if job.status == jobs.COMPLETE and job.output:
            paths = [self._fetch(job.output["bucket"], job.output["key"])]
            if job.output.get("report_key"):
                paths.append(self._fetch(job.output["bucket"], job.output["report_key"]))
            return paths
        if job.status == jobs.FAILED:
            target = self.folder / _local_name(f"{job.input.get('key', job.job_id)}.error.json")
            target.parent.mkdir(parents=True, exist_ok=True)
            body = {"job_id": job.job_id, "status": job.status, "input": job.input, "error": job.error}
            target.write_text(json.dumps(body, indent=2, default=str) + "\n")
            return [target]
        return []


# --- the server -------------------------------------------------------------------------------------------
def banner(runtime: LocalRuntime, inbox: Path | None, outbox: Path | None) -> str:
    assert runtime.resources is not None
    n = runtime.resources.names
    endpoint = runtime.endpoint
    exports = {**LOCAL_CREDENTIALS, "AWS_ENDPOINT_URL": endpoint, "VSR_ENDPOINT_URL": endpoint}
    lines = [
        f"vsr serve: local AWS at {endpoint}; {runtime.workers} worker container(s) x {runtime.cpus_per_worker} CPU",
        f"  input bucket:  s3://{n.input_bucket}/   (every object put here becomes a job)",
        f"  output bucket: s3://{n.output_bucket}/",
        f"  work bucket:   s3://{n.work_bucket}/   job table: {n.table}",
        f"  logs:          {runtime.log_dir}",
    ]
    if inbox:
        lines.append(f"  inbox:         {inbox}   (files dropped here are uploaded once fully written)")
    if outbox:
        lines.append(f"  outbox:        {outbox}   (outputs, reports and <name>.error.json land here)")
    lines += [
        "In another shell:",
        *(f"  export {name}={value}" for name, value in exports.items()),
        f'  aws --endpoint-url {endpoint} s3 cp "my clip.mp4" s3://{n.input_bucket}/',
        f"  aws --endpoint-url {endpoint} s3 ls s3://{n.output_bucket}/ --recursive",
        "  vsr status        vsr redrive",
        "vsr serve: ready (Ctrl-C to stop)",
    ]
    return "\n".join(lines)


class Server:
    """The serve loop: follows every job, feeds the inbox, fills the outbox, until `stop` is set."""

    def __init__(
        self,
        runtime: LocalRuntime,
        *,
        inbox: Path | None,
        outbox: Path | None,
        stop: threading.Event | None = None,
        stream: TextIO | None = None,
    ) -> None:
        self.runtime = runtime
        self.stream = stream or sys.stdout
        self.stop = stop or threading.Event()
        self.inbox = InboxWatcher(inbox, self._upload) if inbox else None
        self.outbox = Outbox(outbox) if outbox else None
        self.started = time.monotonic()
        self._shown: dict[str, str] = {}
        self._delivered: set[str] = set()
        self._quality_delivered: set[str] = set()  # report and preview again once the quality check ran
        self._jobs: dict[str, jobs.Job] = {}

    def say(self, text: str) -> None:
        self.stream.write(f"{time.monotonic() - self.started:8.1f} s  {text}\n")
        self.stream.flush()

    def _upload(self, path: Path, key: str) -> None:
        assert self.runtime.resources is not None
        clients.s3().upload_file(str(path), self.runtime.resources.names.input_bucket, key)
        self.say(f"inbox: uploaded {key} ({path.stat().st_size} bytes)")

    def tick(self) -> None:
        if self.inbox is not None:
            self.inbox.scan()
        assert self.runtime.resources is not None
        for job in jobs.list_jobs(self.runtime.resources.names.table):
            self._jobs[job.job_id] = job
            text = progress_text(job)
            if self._shown.get(job.job_id) != text:
                self._shown[job.job_id] = text
                self.say(text)
            if self.outbox is not None and job.terminal and job.job_id not in self._delivered:
                for path in self.outbox.deliver(job):
                    self.say(f"outbox: {path}")
                self._delivered.add(job.job_id)
            measured = job.output is not None and job.output.get("quality_measured")
            if self.outbox is not None and measured and job.job_id not in self._quality_delivered:
                for path in self.outbox.deliver_quality(job):
                    self.say(f"outbox: {path}")
                self._quality_delivered.add(job.job_id)

    def unfinished(self) -> list[jobs.Job]:
        return [job for job in self._jobs.values() if not job.terminal]

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.tick()
            except Exception as exc:  # one bad look (a vanished file, a slow endpoint) must not end the service
                log.warning("serve.tick_failed", error=f"{type(exc).__name__}: {exc}")
            self.stop.wait(TICK_S)


def serve_command(args: argparse.Namespace) -> int:
    """`vsr serve [--host H] [--port P] [--workers N] [--inbox DIR] [--outbox DIR]`: runs until Ctrl-C/SIGTERM."""
    _quiet_logs()
    inbox = Path(args.inbox).resolve() if args.inbox else None
    outbox = Path(args.outbox).resolve() if args.outbox else None
    if inbox is not None:
        inbox.mkdir(parents=True, exist_ok=True)
    fault_plan = FaultPlan.from_dict(json.loads(Path(args.fault_plan).read_text())) if args.fault_plan else None
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with local_stack(
            host=args.host,
            port=args.port,
            workers=args.workers,
            log_dir=Path(args.log_dir) if args.log_dir else None,
            fault_plan=fault_plan,
        ) as runtime:
            print(banner(runtime, inbox, outbox), flush=True)
            server = Server(runtime, inbox=inbox, outbox=outbox, stop=stop)
            server.run()
            unfinished = server.unfinished()
            names = ", ".join(f"{job.input.get('key', '?')} ({job.job_id[:8]}, {job.status})" for job in unfinished)
            print(
                f"vsr serve: stopping; {len(unfinished)} unfinished job(s){': ' + names if names else ''}",
                flush=True,
            )
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print("vsr serve: stopped", flush=True)
    return 0
