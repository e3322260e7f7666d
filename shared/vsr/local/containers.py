"""Lambda-like containers: one child process per concurrent execution environment, alive across invocations.

Like a warm Lambda container, a child imports the function's handler once (its init phase: imports,
cached ONNX Runtime session, downloaded model) and then serves invocations one at a time. The parent sends
one JSON line per invocation on the child's stdin; the child answers one JSON line on a private copy of its
original stdout (its fd 1 is pointed at stderr, the log file, so stray prints cannot corrupt the protocol).
An invocation that outlives the function timeout gets the container killed, as Lambda does; a container that
dies (crash, SIGKILL from a test) reports `died` and the dispatcher starts a fresh one.

Run as `python -m vsr.local.containers --function NAME --handler MODULE:FUNCTION|PATH [--fault-plan JSON]`
(the child side).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import selectors
import subprocess
import sys
import time
import traceback
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from vsr.logs import get_logger

log = get_logger(__name__)
REGION = "us-east-1"


@dataclass
class Invocation:
    """What came back from one invocation."""

    result: Any = None
    error: str | None = None  # "Type: message" when the handler raised
    died: bool = False  # the container exited (killed) before answering
    timed_out: bool = False  # ran past the function timeout; the container was killed
    init_failed: bool = False  # the container never got ready (handler import failed): a broken install
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None and not self.died and not self.timed_out


class LambdaContext:
    """The attributes of the Lambda context object that handlers use."""

    def __init__(self, function_name: str, memory_mb: int, request_id: str, deadline_ms: int) -> None:
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = memory_mb
        self.aws_request_id = request_id
        self.invoked_function_arn = f"arn:aws:lambda:{REGION}:123456789012:function:{function_name}"
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = f"local/{os.getpid()}"
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self) -> int:
        return max(0, self._deadline_ms - int(time.time() * 1000))


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
    ) -> None:
        self.function_name = function_name
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self.busy_with: str | None = None  # message id / record id being processed, for observers
        command = [
            sys.executable,
            "-m",
            "vsr.local.containers",
            "--function",
            function_name,
            "--handler",
            str(handler),
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

    def invoke(self, event: dict[str, Any]) -> Invocation:
        started = time.monotonic()
        if not self._ready:
            # Lambda's init phase has its own 10 s limit; imports of ORT + PyAV on a busy 2-core box can take
            # several seconds, so allow the function timeout on top rather than failing spuriously.
            line = self._read_line(started + 10.0 + self.timeout_s)
            if line is None or not json.loads(line).get("ready"):
                self.kill()
                return Invocation(died=True, init_failed=True, duration_s=time.monotonic() - started)
            self._ready = True
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
        if reply.get("ok"):
            return Invocation(result=reply.get("result"), duration_s=duration)
        return Invocation(error=f"{reply.get('error_type')}: {reply.get('error_message')}", duration_s=duration)

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


# --- child side ----------------------------------------------------------------------------------------


def _load_handler(target: str) -> Any:
    """The handler: "package.module:function" from the installed package (vsr.entrypoints), or a handler.py
    path whose `handler` is imported the way the Lambda runtime imports `handler.handler`."""
    if ":" in target and not target.endswith(".py"):
        module_name, function_name = target.split(":", 1)
        return getattr(importlib.import_module(module_name), function_name)
    path = Path(target)
    spec = importlib.util.spec_from_file_location(f"lambda_handler_{path.parent.name}", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.handler


def _child_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--function", required=True)
    parser.add_argument("--handler", required=True)
    parser.add_argument("--fault-plan")
    parser.add_argument("--cpus", help="CPU affinity, like the vCPUs Lambda gives an execution environment")
    args = parser.parse_args(argv)
    if args.cpus and hasattr(os, "sched_setaffinity"):  # before ONNX Runtime starts: the engine sizes its
        os.sched_setaffinity(0, {int(c) for c in args.cpus.split(",")})  # thread pool from this affinity

    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything printed goes to the log, never into the protocol stream

    handler = _load_handler(args.handler)
    if args.fault_plan:
        from vsr.local import faults

        plan = faults.FaultPlan.from_dict(json.loads(args.fault_plan))
        faults.install(plan)
        handler = faults.wrap_handler(handler, plan)
    memory_mb = int(os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"))
    protocol.write(json.dumps({"ready": True}) + "\n")

    for line in sys.stdin:
        request = json.loads(line)
        context = LambdaContext(args.function, memory_mb, request["request_id"], int(request["deadline_ms"]))
        try:
            result = handler(request["event"], context)
            reply: dict[str, Any] = {"ok": True, "result": result}
        except Exception as exc:  # reported to the dispatcher like Lambda's errorType/errorMessage
            traceback.print_exc()
            reply = {"ok": False, "error_type": type(exc).__name__, "error_message": str(exc)}
        protocol.write(json.dumps(reply, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
