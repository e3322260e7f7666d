"""A real moto server in its own process (state isolated from the test process), for integration tests."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

_FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_until_up(url: str, process: subprocess.Popen[bytes], deadline_s: float = 30.0) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"moto server exited early with code {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/moto-api/", timeout=1):
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.05)  # polling a readiness condition with a deadline, not synchronising on time
    raise TimeoutError("moto server did not start within 30 s")


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """Start a moto server process on a free loopback port; yield its endpoint URL.

    It runs `vsr.local.moto_compat` (moto with DynamoDB item operations serialised, as real DynamoDB applies a
    conditional update atomically); VSR_TEST_PLAIN_MOTO=1 runs unpatched `moto.server` instead.
    """
    port = _free_port()
    env = {**os.environ, **_FAKE_CREDENTIALS}
    module = "moto.server" if os.environ.get("VSR_TEST_PLAIN_MOTO") else "vsr.local.moto_compat"
    process = subprocess.Popen(
        [sys.executable, "-m", module, "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(url, process)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def reset(url: str) -> None:
    """Clear all state of a running moto server (cheaper than a new process between tests)."""
    request = urllib.request.Request(f"{url}/moto-api/reset", method="POST")
    with urllib.request.urlopen(request, timeout=10):
        pass


def fake_credentials() -> dict[str, str]:
    return dict(_FAKE_CREDENTIALS)
