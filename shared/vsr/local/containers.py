"""Lambda-like containers: one child process per concurrent execution environment, alive across invocations.

Like a warm Lambda container, a child imports the function's handler once (its init phase: imports,
cached ONNX Runtime session, downloaded model) and then serves invocations one at a time. The parent sends
one JSON line per invocation on the child's stdin; the child answers one JSON line on a private copy of its
original stdout (its fd 1 is pointed at stderr, the log file, so stray prints cannot corrupt the protocol).
An invocation that outlives the function timeout gets the container killed, as Lambda does; a container that
dies (crash, SIGKILL from a test) reports `died` and the dispatcher starts a fresh one.

The child side is vsr.local.bootstrap (standard library only); `python -m vsr.local.containers` runs it. A
container may be started by another command that runs the same bootstrap (`command=`): the Lambda sandbox of
tools/lambda_smoke.py runs it under bubblewrap, on a Debian CPython, with only the packaged code on the path.
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from vsr.local.bootstrap import REGION, LambdaContext, load_handler, main
from vsr.logs import get_logger

log = get_logger(__name__)
__all__ = ["REGION", "Container", "Invocation", "LambdaContext", "load_handler"]


@dataclass
class Invocation:
    """What came back from one invocation."""

    result: Any = None
    error: str | None = None  # "Type: message" when the handler raised
    died: bool = False  # the container exited (killed) before answering
    timed_out: bool = False  # ran past the function timeout; the container was killed
    init_failed: bool = False  # the container never got ready (handler import failed): a broken install
    duration_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)  # what the bootstrap reports besides the result (/tmp use)

    @property
    def ok(self) -> bool:
        return self.error is None and not self.died and not self.timed_out


class Container:
    """Parent-side handle of one container process."""

    def __init__(
        self,
        function_name: str,
        handler: str | Path,
        *,
        timeout_s: float,
        memory_mb: int,
        env: dict[str, str],
        log_path: Path,
        fault_plan_json: str | None = None,
        cpus: tuple[int, ...] | None = None,
        command: Sequence[str] | None = None,
        bootstrap_args: Sequence[str] = (),
    ) -> None:
        """`command` starts the bootstrap (default: this Python, `-m vsr.local.containers`); `bootstrap_args` are
        added to its own arguments (e.g. `--path`, `--watch-tmp`)."""
        self.function_name = function_name
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self.busy_with: str | None = None  # message id / record id being processed, for observers
        self.init: dict[str, Any] = {}  # the bootstrap's ready line: init_s (the handler's import), /tmp use
        self.last_report: dict[str, Any] = {}  # the latest reply's extras (the bootstrap's /tmp peak so far)
        self.ready_s: float | None = None  # process start -> ready (interpreter start and imports included)
        self._spawned = time.time()  # wall clock: the bootstrap stamps its ready line with the same clock
        command = [
            *(command or (sys.executable, "-m", "vsr.local.containers")),
            "--function",
            function_name,
            "--handler",
            str(handler),
            *bootstrap_args,
        ]
        if fault_plan_json:
            command += ["--fault-plan", fault_plan_json]
        if cpus:
            command += ["--cpus", ",".join(str(c) for c in cpus)]
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = log_path
        self._log = log_path.open("ab")
        self._process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, env=env, start_new_session=True
        )
        assert self._process.stdin is not None and self._process.stdout is not None
        self._stdin: BinaryIO = self._process.stdin
        self._stdout: BinaryIO = self._process.stdout
        self._buffer = b""
        self._eof = False
        self._ready = False

    @property
    def pid(self) -> int:
        return self._process.pid

    def alive(self) -> bool:
        return self._process.poll() is None

    def _read_line(self, deadline: float) -> bytes | None:
        """One protocol line; None when the deadline passed or the child closed its end (then `self._eof`)."""
        fd = self._stdout.fileno()
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while b"\n" not in self._buffer:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not selector.select(timeout=remaining):
                    return None
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    self._eof = True
                    return None
                self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line

    def wait_ready(self) -> bool:
        """Wait for the init phase (the handler's import) to end; False, with the container killed, when it
        failed or outlived its limit. Lambda's init phase has its own 10 s limit; imports of ORT + PyAV on a busy
        2-core box can take several seconds, so the function timeout is allowed on top rather than failing
        spuriously."""
        if self._ready:
            return True
        line = self._read_line(time.monotonic() + 10.0 + self.timeout_s)
        ready = json.loads(line) if line is not None else {}
        if not ready.get("ready"):
            self.kill()
            return False
        self._ready = True
        self.init = ready
        if "ready_at" in ready:
            self.ready_s = float(ready["ready_at"]) - self._spawned
        return True

    def invoke(self, event: dict[str, Any]) -> Invocation:
        started = time.monotonic()
        if not self._ready:
            if not self.wait_ready():
                return Invocation(died=True, init_failed=True, duration_s=time.monotonic() - started)
            started = time.monotonic()
        deadline_ms = int(time.time() * 1000 + self.timeout_s * 1000)
        request = {"event": event, "request_id": str(uuid.uuid4()), "deadline_ms": deadline_ms}
        try:
            self._stdin.write(json.dumps(request, default=str).encode() + b"\n")
            self._stdin.flush()
        except (BrokenPipeError, OSError):
            return Invocation(died=True, duration_s=time.monotonic() - started)
        line = self._read_line(started + self.timeout_s)
        duration = time.monotonic() - started
        if line is None:
            if self._eof:  # the process died (its end of the pipe closed) before answering
                self.kill()
                return Invocation(died=True, duration_s=duration)
            self.kill()  # still running past the timeout: Lambda kills the execution environment
            return Invocation(timed_out=True, duration_s=duration)
        reply = json.loads(line)
        extra = {k: v for k, v in reply.items() if k not in ("ok", "result", "error_type", "error_message")}
        self.last_report = extra
        if reply.get("ok"):
            return Invocation(result=reply.get("result"), duration_s=duration, extra=extra)
        error = f"{reply.get('error_type')}: {reply.get('error_message')}"
        return Invocation(error=error, duration_s=duration, extra=extra)

    def kill(self) -> None:
        if self.alive():
            self._process.kill()
        self._process.wait()
        self._log.close()

    def stop(self) -> None:
        """Ask an idle container to exit (EOF on stdin), killing it if it does not."""
        try:
            self._stdin.close()
            self._process.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.kill()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
