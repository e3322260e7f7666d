"""`vsr serve`'s loop over the jobs, without AWS: one job's failing delivery or display never stops another's;
a failed delivery is retried with backoff, once per attempt, then leaves `<name>.delivery-error.json`."""

from __future__ import annotations

import io
import json
import shlex
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from vsr.local import serve
from vsr.local.names import local_path
from vsr.pipeline import jobs
from vsr.settings import get_settings

ENDPOINT = "http://127.0.0.1:4566"


class FakeS3:
    """download_file writes the key's bytes, except for keys in `refuse` (an OSError, as a full disk)."""

    def __init__(self) -> None:
        self.refuse: set[str] = set()
        self.calls: list[str] = []

    def download_file(self, bucket: str, key: str, path: str) -> None:
        self.calls.append(key)
        if key in self.refuse:
            raise OSError(28, "No space left on device")
        Path(path).write_bytes(key.encode())


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _job(job_id: str, key: str, status: str = jobs.COMPLETE) -> jobs.Job:
    job = jobs.Job(job_id=job_id * 32, status=status, input={"bucket": "in", "key": key})
    if status == jobs.COMPLETE:
        stem = key.rsplit(".", 1)[0]
        job.output = {"bucket": "out", "key": f"{stem}.upscaled-x2.mp4", "report_key": f"{stem}.upscaled-x2.json"}
    else:
        job.error = {"reason": "not a video"}
    return job


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    s3, clock, listed = FakeS3(), Clock(), []
    monkeypatch.setattr(serve.clients, "s3", lambda: s3)
    monkeypatch.setattr(serve.jobs, "list_jobs", lambda table: list(listed))
    runtime: Any = SimpleNamespace(resources=SimpleNamespace(names=SimpleNamespace(table="t")), endpoint=ENDPOINT)
    stream = io.StringIO()
    server = serve.Server(runtime, inbox=None, outbox=tmp_path / "outbox", stream=stream, clock=clock)
    return SimpleNamespace(s3=s3, clock=clock, jobs=listed, server=server, out=stream, outbox=tmp_path / "outbox")


def _ticks(world: SimpleNamespace, seconds: float, step: float = 0.5) -> None:
    for _ in range(int(seconds / step)):
        world.server.tick()
        world.clock.now += step


def test_a_failing_delivery_does_not_stop_the_jobs_after_it(world: SimpleNamespace) -> None:
    stuck, fine, failed = _job("a", "stuck.mp4"), _job("b", "fine.mp4"), _job("c", "bad.mp4", jobs.FAILED)
    world.jobs.extend([stuck, fine, failed])  # the stuck one is looked at first
    world.s3.refuse.add(stuck.output["key"])
    world.server.tick()
    assert (world.outbox / "fine.upscaled-x2.mp4").read_bytes() == b"fine.upscaled-x2.mp4"
    assert (world.outbox / "fine.upscaled-x2.json").is_file()
    assert json.loads((world.outbox / "bad.mp4.error.json").read_text())["error"]["reason"] == "not a video"
    assert not (world.outbox / "stuck.upscaled-x2.mp4").exists()
    assert not list(world.outbox.glob(".*.part"))  # the failed download left nothing behind


def test_retries_back_off_then_a_delivery_error_names_the_output_and_fetches_it(world: SimpleNamespace) -> None:
    policy = get_settings().delivery_retry
    stuck = _job("a", "drop/stuck clip.mp4")
    world.jobs.append(stuck)
    world.s3.refuse.add(stuck.output["key"])
    total = sum(policy.delay_after(n) or 0 for n in range(1, policy.attempts)) + 5
    _ticks(world, total)
    # one download and one line per attempt, not one per tick
    assert world.s3.calls.count(stuck.output["key"]) == policy.attempts
    lines = [line for line in world.out.getvalue().splitlines() if "delivery of drop/stuck clip.mp4 failed" in line]
    assert len(lines) == policy.attempts
    assert "retrying in 1 s" in lines[0] and "retrying in 2 s" in lines[1] and lines[-1].endswith("giving up")

    error_file = world.outbox / "drop" / "stuck clip.mp4.delivery-error.json"
    body = json.loads(error_file.read_text())
    assert body["input"]["key"] == "drop/stuck clip.mp4" and "No space left on device" in body["reason"]
    assert body["attempts"] == policy.attempts
    video = body["objects"][0]
    assert video["location"] == "s3://out/drop/stuck clip.upscaled-x2.mp4"
    words = shlex.split(video["command"])
    assert words[:3] == ["aws", "--endpoint-url", ENDPOINT]
    assert "--key=drop/stuck clip.upscaled-x2.mp4" in words and words[-1] == "./stuck clip.upscaled-x2.mp4"

    # given up: never tried again, and no quality delivery follows
    stuck.output["quality_measured"] = True
    calls = len(world.s3.calls)
    _ticks(world, 60)
    assert len(world.s3.calls) == calls


def test_a_delivery_that_recovers_is_delivered_and_forgotten(world: SimpleNamespace) -> None:
    flaky = _job("a", "flaky.mp4")
    world.jobs.append(flaky)
    world.s3.refuse.add(flaky.output["key"])
    _ticks(world, 1.5)  # attempt 1 fails; attempt 2 is due 1 s later and fails
    world.s3.refuse.clear()
    _ticks(world, 3)
    assert (world.outbox / "flaky.upscaled-x2.mp4").is_file()
    assert not list(world.outbox.rglob("*.delivery-error.json"))
    flaky.output["quality_measured"] = True
    flaky.output["preview_key"] = "flaky.upscaled-x2.preview.png"
    world.server.tick()
    assert (world.outbox / "flaky.upscaled-x2.preview.png").is_file()


def test_a_job_whose_line_cannot_be_shown_is_still_delivered(world: SimpleNamespace, monkeypatch) -> None:
    def broken(job: jobs.Job, *args: Any) -> str:
        if job.job_id.startswith("a"):
            raise UnicodeEncodeError("ascii", "é", 0, 1, "the terminal cannot show it")
        return "fine"

    monkeypatch.setattr(serve, "progress_text", broken)
    world.jobs.extend([_job("a", "é.mp4"), _job("b", "plain.mp4")])
    world.server.tick()
    assert (world.outbox / "é.upscaled-x2.mp4").is_file() and (world.outbox / "plain.upscaled-x2.mp4").is_file()


def test_long_and_hostile_keys_are_delivered_under_local_names(world: SimpleNamespace) -> None:
    keys = ["n" * 300 + ".mp4", "../../../tmp/x.mp4", "/abs/evil.mp4", "..%2F..%2Fx.mp4", "ctl\x1b[2J\x00.mp4"]
    world.jobs.extend(_job(str(i), key) for i, key in enumerate(keys))
    world.server.tick()
    for job in world.jobs:
        for key in (job.output["key"], job.output["report_key"]):
            assert (world.outbox / local_path(key)).read_bytes() == key.encode()
    assert "\x1b" not in world.out.getvalue() and "\\x1b[2J" in world.out.getvalue()
    assert not list(world.outbox.rglob("*.delivery-error.json"))


def test_a_delivery_error_that_cannot_be_written_where_named_goes_to_the_outbox_root(world: SimpleNamespace) -> None:
    stuck = _job("a", "blocked/x.mp4")
    world.jobs.append(stuck)
    world.outbox.mkdir(parents=True, exist_ok=True)
    (world.outbox / "blocked").write_text("a file where the folder should be")  # every name under it fails
    _ticks(world, 60)
    body = json.loads((world.outbox / f"{stuck.job_id}.delivery-error.json").read_text())
    assert body["input"]["key"] == "blocked/x.mp4" and "FileExistsError" in body["reason"]


def test_fetch_command_quotes_any_key() -> None:
    command = serve.fetch_command(ENDPOINT, "out", "-a b'c\x01.mp4", "x.mp4")
    assert shlex.split(command)[-2:] == ["--key=-a b'c\x01.mp4", "x.mp4"]
    nul = serve.fetch_command(ENDPOINT, "out", "a\x00b.mp4", "a_b.mp4")
    assert nul.startswith("python3 -c ") and "\x00" not in nul and "'a\\x00b.mp4'" in shlex.split(nul)[2]


def test_an_output_that_cannot_be_written_does_not_stop_deliveries(world: SimpleNamespace) -> None:
    class Closed(io.StringIO):
        def write(self, text: str) -> int:
            raise OSError(5, "Input/output error")

    world.server.stream = Closed()
    world.jobs.extend([_job("a", "one.mp4"), _job("b", "two.mp4")])
    world.server.tick()
    assert (world.outbox / "one.upscaled-x2.mp4").is_file() and (world.outbox / "two.upscaled-x2.mp4").is_file()
