"""Lambda-like container processes: warm state across invocations, errors, timeouts, deaths, broken imports."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest

from vsr.local.containers import Container

HANDLER = """
import os, time
calls = {"n": 0}  # module state survives between invocations of a warm container

def handler(event, context):
    calls["n"] += 1
    print("stray output must not corrupt the protocol")
    if event.get("raise"):
        raise ValueError("bad thing")
    if event.get("sleep"):
        time.sleep(event["sleep"])
    return {"n": calls["n"], "pid": os.getpid(), "remaining_ms": context.get_remaining_time_in_millis(),
            "name": context.function_name, "env": os.environ.get("MARK")}
"""


def _container(tmp_path: Path, source: str = HANDLER, timeout_s: float = 20) -> Container:
    handler = tmp_path / "fn" / "handler.py"
    handler.parent.mkdir(exist_ok=True)
    handler.write_text(source)
    return Container(
        "vsr-test",
        handler,
        timeout_s=timeout_s,
        memory_mb=256,
        env={**os.environ, "MARK": "set"},
        log_path=tmp_path / "logs" / "c.log",
    )


def test_warm_container_keeps_state_and_reports_errors(tmp_path: Path) -> None:
    container = _container(tmp_path)
    try:
        first = container.invoke({})
        second = container.invoke({})
        assert first.ok and second.ok
        assert (first.result["n"], second.result["n"]) == (1, 2)  # same process, warm
        assert first.result["pid"] == second.result["pid"] == container.pid
        assert first.result["name"] == "vsr-test" and first.result["env"] == "set"
        assert 0 < first.result["remaining_ms"] <= 20_000
        failed = container.invoke({"raise": True})
        assert failed.error == "ValueError: bad thing" and container.alive()
        assert container.invoke({}).result["n"] == 4
    finally:
        container.stop()
    assert "stray output" in (tmp_path / "logs" / "c.log").read_text()


def test_timeout_kills_the_container(tmp_path: Path) -> None:
    container = _container(tmp_path, timeout_s=1.5)
    container.invoke({})  # warm up so the init phase is not counted
    outcome = container.invoke({"sleep": 30})
    assert outcome.timed_out and not container.alive()
    assert outcome.duration_s < 10


def test_killed_container_reports_died(tmp_path: Path) -> None:
    container = _container(tmp_path)
    container.invoke({})
    killer = threading.Timer(0.5, lambda: os.kill(container.pid, signal.SIGKILL))
    killer.start()
    outcome = container.invoke({"sleep": 30})
    killer.join()
    assert outcome.died and not outcome.timed_out and not outcome.init_failed


@pytest.mark.parametrize("source", ["raise ImportError('no such layer')\n", "def not_the_handler(): pass\n"])
def test_a_handler_that_cannot_load_is_an_init_failure(tmp_path: Path, source: str) -> None:
    outcome = _container(tmp_path, source).invoke({})
    assert outcome.died and outcome.init_failed
