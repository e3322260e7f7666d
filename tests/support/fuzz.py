"""Hostile keys against a real `vsr serve` with an outbox: every upload ends delivered or with a reason.

Shared by tests/local/test_serve.py (a small draw, in `make test`) and bench/bench_load.py (a large one). Tiny
uploads (a few frames of real footage at 64x48) under keys from tests/support/hostile_keys.py go in together
with ordinary ones, all at once. Then, for each key, within a bound:

- its job is seen (exactly one), and is COMPLETE with its output and report in the outbox under the local
  names of their keys (vsr.local.names), or FAILED with a reason and `<key>.error.json`, or has
  `<key>.delivery-error.json` (or `<job id>.delivery-error.json`) with a reason;
- an ordinary key is always COMPLETE and delivered, on the first look of serve that saw it COMPLETE (its
  outbox lines follow its COMPLETE line, whatever the hostile jobs around it do).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

from tests import clips as clip_builders
from tests.local.conftest import overrides
from tests.support import hostile_keys
from tests.support.load import make_clip
from tests.support.serve import Served, serve
from vsr.local.names import local_path
from vsr.local.provision import local_names
from vsr.pipeline import jobs

NAMES = local_names()
DELIVERY_ERROR = ".delivery-error.json"


@dataclass
class Outcome:
    key: str
    ordinary: bool
    job: jobs.Job | None = None
    jobs_seen: int = 0
    delivered: list[Path] = field(default_factory=list)
    error_file: Path | None = None  # <key>.error.json or a delivery error
    reason: str | None = None

    @property
    def settled(self) -> bool:
        return self.job is not None and self.job.terminal and (bool(self.delivered) or self.error_file is not None)

    def problem(self) -> str | None:
        """None when this key ended as it must; else what is wrong."""
        if self.jobs_seen != 1 or self.job is None:
            return f"{self.jobs_seen} job(s) seen"
        if not self.settled:
            return f"not settled: {self.job.status}, delivered {self.delivered}, error file {self.error_file}"
        if self.ordinary and (self.job.status != jobs.COMPLETE or not self.delivered):
            return f"ordinary upload not delivered: {self.job.status} {self.reason}"
        if self.error_file is not None and not self.reason:
            return f"error file without a reason: {self.error_file}"
        return None


@dataclass
class FuzzResult:
    outcomes: list[Outcome]
    wall_s: float

    def problems(self) -> dict[str, str]:
        return {o.key: p for o in self.outcomes if (p := o.problem()) is not None}

    def counts(self) -> dict[str, int]:
        counts = {"uploads": len(self.outcomes), "ordinary": sum(o.ordinary for o in self.outcomes)}
        for outcome in self.outcomes:
            kind = "unseen" if outcome.job is None else outcome.job.status
            if outcome.error_file is not None:
                kind += "+delivery-error" if outcome.error_file.name.endswith(DELIVERY_ERROR) else "+error-file"
            elif outcome.delivered:
                kind += "+delivered"
            counts[kind] = counts.get(kind, 0) + 1
        return counts


def _client(endpoint: str, service: str) -> Any:
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def _jobs_by_key(endpoint: str) -> dict[str, list[jobs.Job]]:
    ddb = _client(endpoint, "dynamodb")
    by_key: dict[str, list[jobs.Job]] = {}
    for page in ddb.get_paginator("scan").paginate(TableName=NAMES.table, ConsistentRead=True):
        for item in page.get("Items", []):
            job = jobs.Job.from_item(item)
            by_key.setdefault(job.input.get("key", ""), []).append(job)
    return by_key


def _look(outbox: Path, outcome: Outcome, found: list[jobs.Job]) -> None:
    outcome.jobs_seen = len(found)
    outcome.job = found[0] if found else None
    job = outcome.job
    if job is None or not job.terminal:
        return
    error_files = [outbox / local_path(outcome.key + DELIVERY_ERROR), outbox / f"{job.job_id}{DELIVERY_ERROR}"]
    if job.status == jobs.FAILED:
        error_files.insert(0, outbox / local_path(outcome.key + ".error.json"))
    elif job.output:
        wanted = [outbox / local_path(job.output[name]) for name in ("key", "report_key")]
        if all(path.is_file() for path in wanted):
            outcome.delivered = wanted
    outcome.error_file = next((path for path in error_files if path.is_file()), None)
    if outcome.error_file is not None:
        body = json.loads(outcome.error_file.read_text())
        outcome.reason = body.get("reason") or (body.get("error") or {}).get("reason")
        assert body["input"]["key"] == outcome.key, (body["input"], outcome.key)  # the original key is recorded


def upload_together(endpoint: str, uploads: dict[str, Path], threads: int = 8) -> None:
    s3 = _client(endpoint, "s3")
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda item: s3.upload_file(str(item[1]), NAMES.input_bucket, item[0]), uploads.items()))


def run_keys(
    served: Served,
    outbox: Path,
    hostile: list[str],
    ordinary: list[str],
    clip: Path,
    timeout_s: float,
    report: Callable[[str], None] | None = None,
    other: dict[str, Path] | None = None,
) -> FuzzResult:
    """Upload `clip` under every key at once (the hostile keys in `other` with their own file, a bad one that
    must fail); wait (bounded) until each is settled; what each key came to."""
    started = time.monotonic()
    keys = [*hostile, *ordinary]
    assert len(set(keys)) == len(keys)
    upload_together(served.endpoint, {**dict.fromkeys(keys, clip), **(other or {})})
    outcomes = [Outcome(key, key in ordinary) for key in keys]
    deadline = time.monotonic() + timeout_s
    ticker = threading.Event()
    last_report = 0.0
    while True:
        by_key = _jobs_by_key(served.endpoint)
        for outcome in outcomes:
            if not outcome.settled:
                _look(outbox, outcome, by_key.get(outcome.key, []))
            else:
                outcome.jobs_seen = len(by_key.get(outcome.key, []))
        settled = sum(o.settled for o in outcomes)
        if report and time.monotonic() - last_report > 15:
            last_report = time.monotonic()
            report(f"{settled}/{len(outcomes)} keys settled")
        if settled == len(outcomes) or time.monotonic() > deadline:
            return FuzzResult(outcomes, time.monotonic() - started)
        ticker.wait(1.0)


def delivered_on_first_look(output: str, job: jobs.Job, outbox: Path) -> bool:
    """In serve's output, the job's first COMPLETE line is followed at once by its outbox lines. Job event lines
    (`event ...`, printed by another thread as EventBridge delivers them) may fall anywhere and are skipped."""
    lines = [line for line in output.splitlines() if not line.startswith("event ")]
    first = next(i for i, line in enumerate(lines) if f"{job.job_id[:8]} COMPLETE" in line)
    assert job.output is not None
    video = str(outbox / local_path(job.output["key"]))
    return first + 1 < len(lines) and lines[first + 1].endswith(f"outbox: {video}")


def run_fuzz(
    work: Path,
    count: int,
    *,
    seed: int,
    ordinary: int = 5,
    bad_every: int = 10,
    workers: int | None = None,
    timeout_s: float = 3600,
    report: Callable[[str], None] | None = None,
) -> tuple[FuzzResult, int]:
    """Its own `vsr serve` with an outbox: `count` hostile keys (the fixed cases, then drawn from `seed`) and
    `ordinary` ordinary ones, uploaded together (every `bad_every`-th hostile key with a file that is not a
    video: it must fail with its error file); returns the result and how many ordinary keys were delivered on
    serve's first look at them COMPLETE."""
    work.mkdir(parents=True, exist_ok=True)
    clip = make_clip(work / "tiny.mp4", 3, 64, 48)
    not_a_video = clip_builders.make_not_a_video(work)
    hostile = hostile_keys.draw(seed, count)
    outbox = work / "outbox"
    extra = ["--outbox", str(outbox), *(["--workers", str(workers)] if workers else [])]
    plain = [f"ordinary/clip-{index:03d}.mp4" for index in range(ordinary)]
    with serve(work / "serve", *extra, overrides=overrides()) as served:
        bad = {key: not_a_video for key in hostile[bad_every - 1 :: bad_every]}
        result = run_keys(served, outbox, hostile, plain, clip, timeout_s, report, other=bad)
        output = served.output()
    first_look = sum(
        1
        for outcome in result.outcomes
        if outcome.ordinary and outcome.job is not None and outcome.job.status == jobs.COMPLETE
        and outcome.delivered and delivered_on_first_look(output, outcome.job, outbox)
    )  # fmt: skip
    return result, first_look
