"""Local stand-in for the GPU fleet's ECS service: N real `vsr worker` processes on the GPU segment queue.

Each process is exactly what the ECS task runs (`vsr worker --tier gpu`, the same environment as the worker
function except the queue and the tier); here the GPU provider is missing, so it logs that once and runs on the
CPU provider. Like an ECS service keeping its desired count, a task that exits (a SIGTERM drain) or dies (a
SIGKILL) is replaced by a fresh one, until the runtime stops.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from vsr.aws.deployment import WORKER_TIER_ENV
from vsr.logs import get_logger

log = get_logger(__name__)

RESTART_CHECK_S = 0.5  # how often the stand-in looks for a stopped task to replace
POLL_WAIT_S = 1  # short long-polls locally, so a drain is prompt; the fleet uses settings gpu.poll_wait_s


WORKER_ARGS = ["worker", "--tier", "gpu", "--wait-s", str(POLL_WAIT_S)]


class GpuTask:
    """One `vsr worker` process (an ECS task). With a fault plan (tests only) it starts through this module's
    `main`, which installs the faults around the same command, as vsr.local.containers does for functions."""

    def __init__(self, name: str, env: dict[str, str], log_path: Path, fault_plan_json: str | None = None) -> None:
        self.name = name
        self.log_path = log_path
        self._log: IO[bytes] = open(log_path, "ab")  # noqa: SIM115 - closed in wait()/kill()
        command = [sys.executable, "-m", "vsr.cli", *WORKER_ARGS]
        if fault_plan_json:
            command = [sys.executable, "-m", "vsr.local.fleet", "--fault-plan", fault_plan_json]
        self.process = subprocess.Popen(
            command,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def terminate(self) -> None:
        """What ECS does to stop a task: SIGTERM, then the task drains (vsr.pipeline.poller)."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        if self.alive():
            self.process.kill()
        self.wait(5.0)

    def wait(self, timeout_s: float) -> int | None:
        try:
            code = self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return None
        self._log.close()
        return code


class LocalGpuFleet:
    """`count` GpuTasks kept running (the service's desired count) until `stop`."""

    def __init__(
        self,
        count: int,
        make_env: Callable[[int], dict[str, str]],
        log_dir: Path,
        drain_s: float,
        fault_plan_json: str | None = None,
    ) -> None:
        self.count = count
        self._fault_plan_json = fault_plan_json
        self._make_env = make_env
        self._log_dir = log_dir
        self._drain_s = drain_s
        self._stop = threading.Event()
        self._serial = 0
        self.tasks: list[GpuTask] = []
        self.replaced = 0
        self.exits: list[int | None] = []  # exit codes of tasks that stopped (0: a clean drain)
        self._lock = threading.Lock()
        self._watcher = threading.Thread(target=self._watch, name="gpu-fleet", daemon=True)

    def start(self) -> None:
        self._log_dir.mkdir(parents=True, exist_ok=True)
        with self._lock:
            self.tasks = [self._launch() for _ in range(self.count)]
        self._watcher.start()

    def _launch(self) -> GpuTask:
        self._serial += 1
        env = self._make_env(self._serial)
        env[WORKER_TIER_ENV] = "gpu"
        name = f"gpu-worker-{self._serial}"
        return GpuTask(name, env, self._log_dir / f"{name}.log", self._fault_plan_json)

    def _watch(self) -> None:
        while not self._stop.wait(RESTART_CHECK_S):
            with self._lock:
                for i, task in enumerate(self.tasks):
                    if not task.alive() and not self._stop.is_set():
                        self.exits.append(task.wait(0))
                        log.warning("gpu_task_replaced", task=task.name, exit_code=task.process.returncode)
                        self.tasks[i] = self._launch()
                        self.replaced += 1

    def stop(self) -> None:
        """Drain every task as ECS would (SIGTERM), then kill what outlives the drain."""
        self._stop.set()
        if self._watcher.is_alive():
            self._watcher.join()
        with self._lock:
            for task in self.tasks:
                task.terminate()
            for task in self.tasks:
                if task.wait(self._drain_s + 5.0) is None:
                    task.kill()

    def log_paths(self) -> list[Path]:
        return sorted(self._log_dir.glob("gpu-worker-*.log"))


def main(argv: list[str] | None = None) -> int:
    """Child side with a fault plan: patch the plan's targets, arm its rule per SQS record around the real
    `process_record`, then run the real `vsr worker`."""
    import argparse
    import json

    from vsr import cli
    from vsr.local import faults
    from vsr.pipeline import worker
    from vsr.pipeline.events import SqsRecord

    parser = argparse.ArgumentParser(prog="python -m vsr.local.fleet")
    parser.add_argument("--fault-plan", required=True)
    args = parser.parse_args(argv)
    plan = faults.FaultPlan.from_dict(json.loads(args.fault_plan))
    faults.install(plan)
    real = worker.process_record

    def process_record(record: SqsRecord, *rest: Any, **kwargs: Any) -> bool:
        event = {
            "Records": [
                {
                    "messageId": record.message_id,
                    "body": record.body,
                    "attributes": {"ApproximateReceiveCount": str(record.receive_count)},
                }
            ]
        }
        return bool(faults.wrap_handler(lambda _event, _context: real(record, *rest, **kwargs), plan)(event, None))

    worker.process_record = process_record  # type: ignore[assignment]
    return cli.main(WORKER_ARGS)


if __name__ == "__main__":
    sys.exit(main())
