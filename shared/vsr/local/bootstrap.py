"""The inside of a local Lambda container: Lambda's runtime loop, on the standard library only.

`vsr.local.containers.Container` starts this in a child process. It loads the function's handler once (the init
phase), says `{"ready": true, "init_s": ...}` on a private copy of its stdout, then answers one JSON line per
invocation request read from stdin. Its fd 1 is pointed at stderr (the log file), so stray prints cannot corrupt
the protocol.

It imports nothing from `vsr` itself, so the Lambda sandbox (`make lambda-smoke`, tools/lambda_smoke.py) can
run this very file as the runtime's bootstrap in /var/runtime, beside the runtime's boto3, with nothing but the
packaged layer and function on the path.

    python bootstrap.py --function NAME --handler HANDLER [--path DIR ...] [--fault-plan JSON] [--cpus LIST]
                        [--watch-tmp DIR]

HANDLER is Lambda's handler string `module.function` (`handler.handler`: handler.py's `handler`, found on the
path like the runtime finds it in /var/task), or `package.module:function` (vsr.entrypoints), or a path to a
handler.py file. `--path` entries go to the front of sys.path in order, as Lambda puts /var/task, then
/opt/python..., then its runtime directory. `--watch-tmp` samples the space used on that file system (Lambda's
/tmp) and reports the peak with every reply.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

REGION = "us-east-1"
TMP_SAMPLE_S = 0.05  # how often --watch-tmp samples the space used


class LambdaContext:
    """The attributes of the Lambda context object that handlers use."""

    def __init__(self, function_name: str, memory_mb: int, request_id: str, deadline_ms: int) -> None:
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = memory_mb
        self.aws_request_id = request_id
        region = os.environ.get("AWS_REGION", REGION)
        self.invoked_function_arn = f"arn:aws:lambda:{region}:123456789012:function:{function_name}"
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = f"local/{os.getpid()}"
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self) -> int:
        return max(0, self._deadline_ms - int(time.time() * 1000))


def load_handler(target: str) -> Any:
    """The handler named by a Lambda handler string (`module.function`), `package.module:function`, or the path
    of a handler.py whose `handler` is imported the way the Lambda runtime imports `handler.handler`."""
    if target.endswith(".py"):
        path = Path(target)
        spec = importlib.util.spec_from_file_location(f"lambda_handler_{path.parent.name}", path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {path}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.handler
    if ":" in target:
        module_name, function_name = target.split(":", 1)
    else:  # Lambda: the last dot separates the function; a module may be given as a path with slashes
        module_name, _, function_name = target.rpartition(".")
        module_name = module_name.replace("/", ".")
    if not module_name or not function_name:
        raise ValueError(f"bad handler string {target!r}: expected module.function")
    handler = getattr(importlib.import_module(module_name), function_name)
    if not callable(handler):
        raise TypeError(f"{target} is not callable")
    return handler


class TmpWatch:
    """Peak bytes used on the file system holding `path`, sampled in a daemon thread and at every reply."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.peak = 0
        self.sample()
        threading.Thread(target=self._run, name="tmp-watch", daemon=True).start()

    def used(self) -> int:
        stat = os.statvfs(self.path)
        return (stat.f_blocks - stat.f_bfree) * stat.f_frsize

    def sample(self) -> int:
        used = self.used()
        self.peak = max(self.peak, used)
        return used

    def _run(self) -> None:
        ticker = threading.Event()
        while not ticker.wait(TMP_SAMPLE_S):
            self.sample()

    def report(self) -> dict[str, Any]:
        return {"tmp_used_bytes": self.sample(), "tmp_peak_bytes": self.peak}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--function", required=True)
    parser.add_argument("--handler", required=True)
    parser.add_argument("--path", action="append", default=[], help="put DIR at the front of sys.path (in order)")
    parser.add_argument("--fault-plan")
    parser.add_argument("--cpus", help="CPU affinity, like the vCPUs Lambda gives an execution environment")
    parser.add_argument("--watch-tmp", help="report the peak space used on this file system")
    args = parser.parse_args(argv)
    if args.cpus and hasattr(os, "sched_setaffinity"):  # before ONNX Runtime starts: the engine sizes its
        os.sched_setaffinity(0, {int(c) for c in args.cpus.split(",")})  # thread pool from this affinity
    if args.path:
        here = str(Path(__file__).resolve().parent)
        sys.path[:] = [*args.path, *(p for p in sys.path if p not in args.path and p != here)]

    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything printed goes to the log, never into the protocol stream

    watch = TmpWatch(args.watch_tmp) if args.watch_tmp else None
    started = time.perf_counter()
    try:
        handler = load_handler(args.handler)
    except Exception as exc:  # Lambda's Runtime.ImportModuleError: reported, then the container is gone
        traceback.print_exc()
        protocol.write(json.dumps({"ready": False, "error": f"{type(exc).__name__}: {exc}"}) + "\n")
        return 1
    init_s = time.perf_counter() - started
    if args.fault_plan:
        from vsr.local import faults

        plan = faults.FaultPlan.from_dict(json.loads(args.fault_plan))
        faults.install(plan)
        handler = faults.wrap_handler(handler, plan)
    memory_mb = int(os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"))
    ready: dict[str, Any] = {"ready": True, "init_s": init_s, "ready_at": time.time()}
    ready.update(watch.report() if watch else {})
    protocol.write(json.dumps(ready) + "\n")

    for line in sys.stdin:
        request = json.loads(line)
        context = LambdaContext(args.function, memory_mb, request["request_id"], int(request["deadline_ms"]))
        try:
            result = handler(request["event"], context)
            reply: dict[str, Any] = {"ok": True, "result": result}
        except Exception as exc:  # reported to the dispatcher like Lambda's errorType/errorMessage
            traceback.print_exc()
            reply = {"ok": False, "error_type": type(exc).__name__, "error_message": str(exc)}
        if watch:
            reply.update(watch.report())
        protocol.write(json.dumps(reply, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
