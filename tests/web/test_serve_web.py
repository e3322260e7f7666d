"""`vsr serve --web-port`: a page port in use is one clear error line, before anything starts."""

from __future__ import annotations

import socket
import subprocess
import sys

from tests.support.moto_server import _free_port


def test_a_web_port_in_use_is_one_clear_error_line() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        busy = listener.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "vsr.cli", "serve", "--port", str(_free_port()), "--web-port", str(busy)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert done.returncode == 2, done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and str(busy) in lines[0] and "--web-port" in lines[0], done.stderr
    assert "vsr serve: ready" not in done.stdout
