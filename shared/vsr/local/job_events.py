"""The job events of the local stack, as a user's systems would receive them: read from the queue a bus rule
fills (vsr.local.provision), printed one line each by `vsr run` / `vsr serve`, and with `vsr serve --events-to
URL` POSTed to a local HTTP endpoint as EventBridge's API destination would (the whole event as JSON)."""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Callable
from typing import Any

from tenacity import retry, stop_after_attempt, wait_exponential

from vsr.aws import clients
from vsr.logs import get_logger

log = get_logger(__name__)

WAIT_S = 1  # long-poll seconds: short so stop() is prompt
POST_TIMEOUT_S = 5.0
Listener = Callable[[dict[str, Any]], None]


def event_line(event: dict[str, Any]) -> str:
    """One human line per event: state, job, file, and what matters for that state."""
    d = event.get("detail", {})
    state = d.get("state", "?")
    if d.get("milestone"):
        state = f"{state} {d['milestone']}%"
    text = f"event {state:<14} {str(d.get('job_id', ''))[:12]} {d.get('input', {}).get('key', '')}"
    if d.get("state") == "FAILED" and d.get("error"):
        text += f": {d['error'].get('reason', '')}"
    if d.get("state") == "COMPLETE" and d.get("output"):
        plan = d.get("plan") or {}
        wall = plan.get("actual_wall_s")
        text += f" -> s3://{d['output'].get('bucket')}/{d['output'].get('key')}"
        text += f" ({wall:.1f} s)" if isinstance(wall, int | float) else ""
    return text


def http_poster(url: str) -> Listener:
    """POST each event as JSON to `url` (a local webhook consumer), retried with backoff, never raising."""

    @retry(stop=stop_after_attempt(3), wait=wait_exponential(multiplier=0.2, max=2.0), reraise=True)
    def post(event: dict[str, Any]) -> None:
        request = urllib.request.Request(
            url, data=json.dumps(event).encode(), headers={"Content-Type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(request, timeout=POST_TIMEOUT_S) as response:
            response.read()

    def deliver(event: dict[str, Any]) -> None:
        try:
            post(event)
        except Exception as exc:
            log.warning("job_event.post_failed", url=url, error=f"{type(exc).__name__}: {exc}")

    return deliver


class EventWatcher(threading.Thread):
    """Read job events from `queue_url` and hand each (the EventBridge envelope, detail parsed) to listeners."""

    def __init__(self, queue_url: str, listeners: list[Listener]) -> None:
        super().__init__(name="job-events", daemon=True)
        self.queue_url = queue_url
        self.listeners = listeners
        self.seen: list[dict[str, Any]] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        sqs = clients.sqs()
        while not self._stop_event.is_set():
            try:
                messages = sqs.receive_message(
                    QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=WAIT_S
                ).get("Messages", [])
            except Exception as exc:
                log.warning("job_event.poll_failed", error=str(exc))
                self._stop_event.wait(1.0)
                continue
            for message in messages:
                event = json.loads(message["Body"])
                if isinstance(event.get("detail"), str):
                    event["detail"] = json.loads(event["detail"])
                self.seen.append(event)
                for listener in self.listeners:
                    listener(event)
                sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])

    def stop(self) -> None:
        self._stop_event.set()
        if self.is_alive():
            self.join(timeout=WAIT_S + 5)
