"""`vsr serve`: the local stack as a long-running S3 drop box for the real AWS CLI, a folder, or any S3 client.

It is `vsr run` without the single job: the embedded AWS (moto server) on a fixed port, the resources Terraform
creates (vsr.local.provision), and the Lambda stand-ins (vsr.local.dispatch) running until Ctrl-C or SIGTERM,
through the same `vsr.local.runtime.local_stack`. Anything that puts an object into the input bucket starts a
job, exactly as on AWS. On top of that:

- `--inbox DIR`: a file that appears there, once fully written, is uploaded to the input bucket under its
  path relative to DIR (`InboxWatcher`);
- `--outbox DIR`: each finished job's output video and JSON report are downloaded there, and a failed job
  leaves `<input name>.error.json` with its reason (`Outbox`). Local names come from `vsr.local.names`: any key
  S3 accepts gets a path inside the outbox that the filesystem can hold;
- one progress line per job whenever it changes (frames done / total, segments, ETA once planning offers one).

Every job is followed on its own: one job's failure to show or deliver never stops another's. A failed delivery
is retried with backoff (settings `serve.delivery_*`, one output line and one log line per attempt); after the
last attempt the job gets `<input name>.delivery-error.json` in the outbox instead: the reason, where its output
is in S3, and a command that fetches it.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
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
from vsr.local.download import download
from vsr.local.faults import FaultPlan
from vsr.local.names import local_path, partial_name, printable
from vsr.local.retries import Retries
from vsr.local.runtime import LocalRuntime, PortInUseError, _quiet_logs, check_port_free, job_eta, local_stack
from vsr.logs import get_logger
from vsr.pipeline import jobs
from vsr.pipeline.retry import retrying_texts
from vsr.settings import get_settings

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
        self._failed: dict[Path, _Seen] = {}

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
            del self._pending[path]  # on failure it settles again and is retried, other files meanwhile go on
            try:
                self._upload(path, key)
            except Exception as exc:
                if self._failed.get(path) != seen:  # one log line per version of the file
                    self._failed[path] = seen
                    log.warning("serve.inbox_upload_failed", path=str(path), error=f"{type(exc).__name__}: {exc}")
                continue
            self._failed.pop(path, None)
            self._uploaded[path] = seen
            uploaded.append(key)
        return uploaded


# --- outbox ---------------------------------------------------------------------------------------------
ERROR_SUFFIX = ".error.json"
DELIVERY_ERROR_SUFFIX = ".delivery-error.json"
OUTPUT_OBJECTS = (("video", "key"), ("report", "report_key"), ("preview", "preview_key"))


def fetch_command(endpoint: str | None, bucket: str, key: str, destination: str) -> str:
    """A shell command that downloads s3://bucket/key to `destination` (the AWS CLI; Python where the key holds
    a NUL, which no command-line argument can)."""
    if "\x00" in key:
        client = f"boto3.client('s3', endpoint_url={endpoint!r})" if endpoint else "boto3.client('s3')"
        script = f"import boto3; {client}.download_file({bucket!r}, {key!r}, {destination!r})"
        return f"python3 -c {shlex.quote(script)}"
    words = ["aws", *(["--endpoint-url", endpoint] if endpoint else []), "s3api", "get-object"]
    # --key=... so a key that starts with '-' is not read as an option
    words += [f"--bucket={bucket}", f"--key={key}", destination]
    return shlex.join(words)


def _write_json(target: Path, body: dict[str, Any]) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(partial_name(target.name))
    partial.write_text(json.dumps(body, indent=2, default=str) + "\n")
    partial.replace(target)
    return target


class Outbox:
    """Downloads each finished job's output and report, or writes `<input name>.error.json` for a failed one."""

    def __init__(self, folder: Path, endpoint: str | None = None) -> None:
        self.folder = folder
        self.endpoint = endpoint  # for the fetch command in a delivery error
        folder.mkdir(parents=True, exist_ok=True)

    def path_for(self, key: str) -> Path:
        return self.folder / local_path(key)

    def _fetch(self, bucket: str, key: str) -> Path:
        return download(bucket, key, self.path_for(key))  # hidden until complete: watchers see whole files

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
            body = {"job_id": job.job_id, "status": job.status, "input": job.input, "error": job.error}
            return [_write_json(self.path_for(f"{job.input.get('key', job.job_id)}{ERROR_SUFFIX}"), body)]
        return []

    def delivery_error(self, job: jobs.Job, what: str, reason: str, attempts: int) -> dict[str, Any]:
        """What `<name>.delivery-error.json` holds: the reason, and for each output object where it is in S3
        and a command that fetches it (into the current directory, under its outbox name)."""
        body: dict[str, Any] = {
            "job_id": job.job_id,
            "status": job.status,
            "input": job.input,  # the original key
            "failed": what,
            "reason": reason,
            "attempts": attempts,
        }
        if job.error:
            body["error"] = job.error
        output = job.output or {}
        objects = []
        for name, field in OUTPUT_OBJECTS:
            key = output.get(field)
            if output.get("bucket") and key:
                destination = f"./{local_path(key).name}"  # ./ so a name that starts with - is no option
                objects.append(
                    {
                        "object": name,
                        "location": f"s3://{output['bucket']}/{key}",
                        "bucket": output["bucket"],
                        "key": key,
                        "command": fetch_command(self.endpoint, output["bucket"], key, destination),
                    }
                )
        body["objects"] = objects
        return body

    def write_delivery_error(self, job: jobs.Job, what: str, reason: str, attempts: int) -> Path:
        """`<input name>.delivery-error.json`; where that name cannot be written either (the same fault), the
        outbox's own `<job id>.delivery-error.json`."""
        body = self.delivery_error(job, what, reason, attempts)
        try:
            return _write_json(self.path_for(f"{job.input.get('key', job.job_id)}{DELIVERY_ERROR_SUFFIX}"), body)
        except OSError as exc:
            body["reason_named_file_failed"] = f"{type(exc).__name__}: {exc}"
            return _write_json(self.folder / f"{job.job_id}{DELIVERY_ERROR_SUFFIX}", body)


# --- the server -------------------------------------------------------------------------------------------
def banner(runtime: LocalRuntime, inbox: Path | None, outbox: Path | None, page_url: str | None = None) -> str:
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
    if page_url:
        lines.append(f"  web page:      {page_url}   (upload from a browser; its API is {page_url}api/uploads)")
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
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.runtime = runtime
        self.stream = stream or sys.stdout
        self.stop = stop or threading.Event()
        self.clock = clock
        self.inbox = InboxWatcher(inbox, self._upload) if inbox else None
        self.outbox = Outbox(outbox, runtime.endpoint) if outbox else None
        self.started = clock()
        self.retries = Retries(get_settings().delivery_retry)
        self._shown: dict[str, str] = {}
        self._delivered: set[str] = set()  # delivered, or given up with a delivery error
        self._quality_delivered: set[str] = set()  # report and preview again once the quality check ran
        self._gave_up: set[str] = set()
        self._warned: set[tuple[str, str]] = set()  # (job id, error) already logged
        self._say_failed = False
        self._jobs: dict[str, jobs.Job] = {}

    def say(self, text: str) -> None:
        """One output line; control characters (from a key) escaped. A line that cannot be written (a closed
        or narrow stdout) is logged once and never stops a delivery."""
        try:
            self.stream.write(f"{self.clock() - self.started:8.1f} s  {printable(text)}\n")
            self.stream.flush()
        except Exception as exc:
            if not self._say_failed:
                self._say_failed = True
                log.warning("serve.output_failed", error=f"{type(exc).__name__}: {exc}")

    def _upload(self, path: Path, key: str) -> None:
        assert self.runtime.resources is not None
        clients.s3().upload_file(str(path), self.runtime.resources.names.input_bucket, key)
        self.say(f"inbox: uploaded {key} ({path.stat().st_size} bytes)")

    def tick(self) -> None:
        if self.inbox is not None:
            try:
                self.inbox.scan()
            except Exception as exc:  # the jobs are still followed
                log.warning("serve.inbox_failed", error=f"{type(exc).__name__}: {exc}")
        assert self.runtime.resources is not None
        for job in jobs.list_jobs(self.runtime.resources.names.table):
            self._jobs[job.job_id] = job
            try:
                self._follow(job)
            except Exception as exc:  # whatever one job does, the next is still looked at
                self._warn_once(job, "serve.job_failed", exc)

    def _warn_once(self, job: jobs.Job, event: str, exc: Exception) -> None:
        error = f"{type(exc).__name__}: {exc}"
        if (job.job_id, error) not in self._warned:
            self._warned.add((job.job_id, error))
            log.warning(event, job_id=job.job_id, error=error)

    def _follow(self, job: jobs.Job) -> None:
        try:
            text = progress_text(job)
            if self._shown.get(job.job_id) != text:
                self._shown[job.job_id] = text
                self.say(text)
        except Exception as exc:  # a line we cannot show does not keep the job from its outbox
            self._warn_once(job, "serve.display_failed", exc)
        if self.outbox is None:
            return
        pending = job.terminal and job.job_id not in self._delivered
        if pending and self._attempt(job, "delivery", self.outbox.deliver):
            self._delivered.add(job.job_id)
        measured = job.output is not None and job.output.get("quality_measured")
        ready = job.job_id in self._delivered and job.job_id not in self._gave_up
        pending = measured and ready and job.job_id not in self._quality_delivered
        if pending and self._attempt(job, "quality delivery", self.outbox.deliver_quality):
            self._quality_delivered.add(job.job_id)

    def _attempt(self, job: jobs.Job, what: str, action: Callable[[jobs.Job], list[Path]]) -> bool:
        """Try one delivery if its backoff allows; True once it is done with (delivered, or given up)."""
        task = (job.job_id, what)
        now = self.clock()
        if not self.retries.due(task, now):
            return False
        try:
            paths = action(job)
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            failure = self.retries.failed(task, now)
            log.warning(
                "serve.delivery_failed",
                job_id=job.job_id,
                key=job.input.get("key"),
                what=what,
                attempt=failure.attempt,
                attempts=failure.attempts,
                retry_in_s=failure.retry_in_s,
                error=reason,
            )
            name = job.input.get("key", job.job_id)
            attempt = f"attempt {failure.attempt}/{failure.attempts}"
            if failure.retry_in_s is not None:
                self.say(f"outbox: {what} of {name} failed ({attempt}): {reason}; retrying in {failure.retry_in_s:g} s")
                return False
            self.say(f"outbox: {what} of {name} failed ({attempt}): {reason}; giving up")
            self._give_up(job, what, reason, failure.attempt)
            return True
        self.retries.succeeded(task)
        for path in paths:
            self.say(f"outbox: {path}")
        return True

    def _give_up(self, job: jobs.Job, what: str, reason: str, attempts: int) -> None:
        assert self.outbox is not None
        self._gave_up.add(job.job_id)
        try:
            path = self.outbox.write_delivery_error(job, what, reason, attempts)
        except Exception as exc:  # nowhere to write it: the log and the output line are all that is left
            log.error("serve.delivery_error_unwritten", job_id=job.job_id, error=f"{type(exc).__name__}: {exc}")
            self.say(f"outbox: could not write the delivery error of {job.input.get('key', job.job_id)}: {exc}")
            return
        self.say(f"outbox: {path}")

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
    web_port = getattr(args, "web_port", -1)
    if web_port and web_port > 0:  # one clear line before anything starts (the S3 port's own first)
        check_port_free(args.host, args.port)
        try:
            check_port_free(WEB_HOST, web_port)
        except PortInUseError as exc:
            raise PortInUseError(
                f"the upload page cannot listen on {WEB_HOST}:{web_port} (another `vsr serve`?); choose another "
                "--web-port, --web-port 0 for a free one, or --web-port -1 for none"
            ) from exc
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
            gpu_workers=getattr(args, "gpu_workers", 0) or 0,
            event_listeners=event_listeners(getattr(args, "events_to", None)),
        ) as runtime:
            web = start_web(runtime, web_port) if web_port is not None and web_port >= 0 else None
            print(banner(runtime, inbox, outbox, web.url if web else None), flush=True)
            server = Server(runtime, inbox=inbox, outbox=outbox, stop=stop)
            try:
                server.run()
            finally:
                if web is not None:
                    web.stop()
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


WEB_HOST = "127.0.0.1"  # loopback only: there is no sign-in locally


def start_web(runtime: LocalRuntime, port: int) -> Any:
    """The upload page and API (vsr.web.local) for the one local user, on loopback."""
    from vsr.web.local import LocalWeb, local_config

    assert runtime.resources is not None
    names = runtime.resources.names
    tiers = ("lambda", "gpu") if runtime.gpu_workers > 0 else None
    config = local_config(runtime.settings, names.input_bucket, names.work_bucket, names.table, tiers)
    return LocalWeb(config, runtime.endpoint, host=WEB_HOST, port=port).start()


def event_listeners(events_to: str | None) -> list[Any]:
    """Every job event as one printed line, and POSTed to `--events-to URL` (a local webhook consumer)."""
    from vsr.local.job_events import event_line, http_poster

    listeners: list[Any] = [lambda event: _write_line(event_line(event))]
    if events_to:
        listeners.append(http_poster(events_to))
    return listeners


def _write_line(text: str) -> None:
    """One write per line: the event watcher prints from its own thread, and print() writes the text and the
    newline separately, so another thread's line could land between them."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
