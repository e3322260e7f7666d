"""`vsr serve` as a user runs it: a subprocess on a fixed port, its output followed line by line, and the AWS CLI.

Used by tests/local/test_serve.py, tests/local/test_load.py and bench/bench_load.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.moto_server import _free_port, fake_credentials

READY = "vsr serve: ready"


@dataclass
class Served:
    """A running `vsr serve` process."""

    process: subprocess.Popen[str]
    endpoint: str
    env: dict[str, str]  # what a client shell exports (credentials, endpoint, AWS_CONFIG_FILE)
    lines: list[str] = field(default_factory=list)
    _reader: threading.Thread | None = None
    _changed: threading.Condition = field(default_factory=threading.Condition)

    def _follow(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for_line(self, text: str, timeout_s: float) -> str:
        """The first output line containing `text`; AssertionError after timeout_s or if serve exits first."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                found = next((line for line in self.lines if text in line), None)
                if found is not None:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.process.poll() is not None and not self._reader_alive()):
                    raise AssertionError(f"no line with {text!r} from vsr serve; output:\n" + "\n".join(self.lines))
                self._changed.wait(min(remaining, 1.0))

    def _reader_alive(self) -> bool:
        return self._reader is not None and self._reader.is_alive()

    def output(self) -> str:
        with self._changed:
            return "\n".join(self.lines)

    def aws(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """The official AWS CLI (awscli v1 from PyPI) against this endpoint."""
        command = [str(Path(sys.executable).with_name("aws")), "--endpoint-url", self.endpoint, *args]
        done = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=timeout, check=False)
        if check and done.returncode != 0:
            raise AssertionError(f"aws {' '.join(args)} failed ({done.returncode}): {done.stderr[-2000:]}")
        return done

    def vsr(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "vsr.cli", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def stop(self, timeout_s: float = 10.0) -> int:
        """SIGTERM, as a service manager stops it; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=timeout_s)
        if self._reader is not None:
            self._reader.join(timeout=5)
        return code


def client_env(endpoint: str, config_file: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "VSR_ENDPOINT"))}
    env.update(fake_credentials())
    env.update({"VSR_ENDPOINT_URL": endpoint, "AWS_ENDPOINT_URL": endpoint, "AWS_MAX_ATTEMPTS": "3"})
    if config_file is not None:
        env["AWS_CONFIG_FILE"] = str(config_file)
    return env


@contextlib.contextmanager
def serve(
    work: Path,
    *extra: str,
    overrides: dict[str, Any] | None = None,
    port: int | None = None,
    ready_timeout_s: float = 120,
) -> Iterator[Served]:
    """Start `vsr serve` on a free (or given) port with settings `overrides`; stop it (SIGTERM) afterwards."""
    port = port or _free_port()
    work.mkdir(parents=True, exist_ok=True)
    config = work / "aws-config"
    # A low multipart threshold so a small file is a real multipart upload (the CLI's own setting).
    config.write_text(
        "[default]\nregion = us-east-1\ns3 =\n  multipart_threshold = 64KB\n  multipart_chunksize = 5MB\n"
    )
    endpoint = f"http://127.0.0.1:{port}"
    server_env = {k: v for k, v in os.environ.items() if k != "VSR_ENDPOINT_URL"}
    if overrides is not None:
        server_env["VSR_SETTINGS_OVERRIDES"] = json.dumps(overrides)
    if "--web-port" not in extra:  # the page's fixed default port would clash between concurrent serves
        extra = (*extra, "--web-port", "-1")
    process = subprocess.Popen(
        [sys.executable, "-m", "vsr.cli", "serve", "--port", str(port), "--log-dir", str(work / "logs"), *extra],
        env=server_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        encoding="utf-8",
    )
    served = Served(process, endpoint, client_env(endpoint, config))
    served._reader = threading.Thread(target=served._follow, daemon=True)
    served._reader.start()
    try:
        served.wait_for_line(READY, ready_timeout_s)
        yield served
    finally:
        if process.poll() is None:
            try:
                served.stop(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
