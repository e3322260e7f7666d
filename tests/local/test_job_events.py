"""Job events end to end: a bus rule with an SQS target (what a user's system would subscribe) receives exactly
one event per state, in order, for a COMPLETE job, a FAILED one, and a job whose segment message is delivered
twice and whose worker is killed once; an EventBridge outage loses no job and sets the undelivered metric."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.local.conftest import wait_for
from vsr.local.faults import FaultPlan
from vsr.local.runtime import LocalRuntime
from vsr.pipeline import artifacts, jobs
from vsr.pipeline.jobs import notify
from vsr.pipeline.messages import SegmentMessage, send_segments
from vsr.settings import CONFIG_DIR

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
SCHEMA = json.loads((CONFIG_DIR / "job_event.schema.json").read_text())
# the short clip has 4 segments: a milestone after each of the first three counts
COMPLETE_STATES = ["ACCEPTED", "PROCESSING", "PROCESSING 25", "PROCESSING 50", "PROCESSING 75", "COMPLETE"]


def _states(events: list[dict[str, Any]], job_id: str) -> list[str]:
    mine = [e["detail"] for e in events if e["detail"]["job_id"] == job_id]
    for detail in mine:
        jsonschema.validate(detail, SCHEMA)
    mine.sort(key=lambda d: (d["time"], d["progress"]["segments_done"]))
    return [d["state"] + (f" {d['milestone']}" if d.get("milestone") else "") for d in mine]


def _run(runtime: LocalRuntime, source: Path, last_state: str) -> tuple[jobs.Job, list[dict[str, Any]]]:
    started = time.time()
    job_id = runtime.submit(source)
    outcome = runtime.wait(job_id, started=started, timeout_s=240)
    assert runtime.events is not None
    wait_for(
        lambda: any(
            e["detail"]["job_id"] == job_id and e["detail"]["state"] == last_state for e in runtime.events.seen
        ),
        60,
        f"the {last_state} event",
    )
    assert outcome.job is not None
    return outcome.job, list(runtime.events.seen)


def test_a_complete_job_announces_each_state_once_in_order(aws: Any, clips: dict[str, Path], tmp_path: Path) -> None:
    with LocalRuntime(aws(), workers=1, log_dir=tmp_path / "logs") as runtime:
        job, events = _run(runtime, clips["short_audio"], "COMPLETE")
    assert job.status == jobs.COMPLETE and job.segment_count == 4
    assert _states(events, job.job_id) == COMPLETE_STATES
    complete = next(e for e in events if e["detail"]["state"] == "COMPLETE")
    assert complete["source"] == notify.SOURCE and complete["detail-type"] == notify.DETAIL_TYPE
    assert complete["detail"]["output"]["key"] == job.output["key"]
    assert complete["detail"]["progress"] == {"segments_done": 4, "segments_total": 4, "percent": 100.0}


def test_a_failed_job_announces_failed_once_with_its_reason(aws: Any, clips: dict[str, Path], tmp_path: Path) -> None:
    with LocalRuntime(aws(), workers=1, log_dir=tmp_path / "logs") as runtime:
        job, events = _run(runtime, clips["not_a_video"], "FAILED")
    assert _states(events, job.job_id) == ["FAILED"]
    failed = next(e["detail"] for e in events if e["detail"]["job_id"] == job.job_id)
    assert failed["error"]["reason"] == job.error["reason"] and failed["error"]["code"] == job.error["code"]


def test_a_duplicated_segment_and_a_killed_worker_still_give_one_event_per_state(
    aws: Any, clips: dict[str, Path], tmp_path: Path
) -> None:
    endpoint = aws(worker_timeout_s=12)
    markers = tmp_path / "markers"
    markers.mkdir()
    plan = FaultPlan.from_dict(
        {"marker_dir": str(markers), "rules": [{"segment": 1, "action": "block", "attempts": [1], "block_s": 120}]}
    )
    with LocalRuntime(endpoint, workers=2, fault_plan=plan, log_dir=tmp_path / "logs") as runtime:
        started = time.time()
        job_id = runtime.submit(clips["short_audio"])
        marker = wait_for(lambda: next(markers.glob("blocked-worker-seg1-pid*"), None), 120, "segment 1 mid-upscale")
        os.kill(int(marker.read_text()), signal.SIGKILL)  # the worker dies; its message comes back
        job = runtime.job(job_id)
        assert job is not None
        segment = next(s for s in artifacts.load_plan(job.artifacts["bucket"], job_id) if s.index == 1)
        probe = {"bucket": job.artifacts["bucket"], "key": job.artifacts["probe"]}
        duplicate = SegmentMessage(job_id=job_id, segment=segment, input=job.input, probe=probe, model=job.model)
        send_segments(runtime.resources.segment_queue_url, [duplicate])  # and a second copy of it arrives
        outcome = runtime.wait(job_id, started=started, timeout_s=240)
        assert outcome.status == jobs.COMPLETE, outcome.error
        wait_for(lambda: any(e["detail"]["state"] == "COMPLETE" for e in runtime.events.seen), 60, "COMPLETE event")
        events = list(runtime.events.seen)
    assert _states(events, job_id) == COMPLETE_STATES


def test_an_eventbridge_outage_loses_no_job_and_sets_the_metric(
    aws: Any, clips: dict[str, Path], tmp_path: Path
) -> None:
    target = "vsr.pipeline.jobs.notify:_put_events"
    plan = FaultPlan.from_dict(
        {
            "rules": [
                {"function": function, "target": target, "action": "raise", "reason": "EventBridge is down"}
                for function in ("ingest", "worker", "assemble")
            ]
        }
    )
    with LocalRuntime(aws(), workers=1, fault_plan=plan, log_dir=tmp_path / "logs") as runtime:
        started = time.time()
        job_id = runtime.submit(clips["short_audio"])
        outcome = runtime.wait(job_id, started=started, timeout_s=240)
        assert outcome.status == jobs.COMPLETE, outcome.error
        seen = list(runtime.events.seen)
    assert seen == []
    lines = [
        json.loads(line)
        for path in (tmp_path / "logs").glob("*.log")
        for line in path.read_text().splitlines()
        if line.startswith("{") and "job_event.undelivered" in line
    ]
    states = sorted({line["state"] for line in lines})
    assert states == ["ACCEPTED", "COMPLETE", "PROCESSING"]
    assert all(line[notify.UNDELIVERED_METRIC] == 1 and "CloudWatchMetrics" in line["_aws"] for line in lines)


def test_serve_events_to_posts_every_event_to_a_local_webhook(
    aws: Any, clips: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import http.server
    import threading

    from vsr.local.serve import event_listeners

    received: list[dict[str, Any]] = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    try:
        listeners = event_listeners(url)  # what `vsr serve --events-to URL` installs
        with LocalRuntime(aws(), workers=1, log_dir=tmp_path / "logs", event_listeners=listeners) as runtime:
            started = time.time()
            job_id = runtime.submit(clips["short_audio"])
            assert runtime.wait(job_id, started=started, timeout_s=240).status == jobs.COMPLETE
            wait_for(lambda: any(e["detail"]["state"] == "COMPLETE" for e in received), 60, "the webhook's COMPLETE")
    finally:
        server.shutdown()
    assert _states(received, job_id) == COMPLETE_STATES
    printed = capsys.readouterr().out
    assert "event COMPLETE" in printed and "event ACCEPTED" in printed  # and one line each on the terminal
