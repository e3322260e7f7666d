"""`vsr worker`: the GPU tier's entry point, a long-running poller of one segment queue (the ECS task's command).

It is the Lambda worker behind another event source, not a copy: every message goes through the same unit of
work, `vsr.pipeline.worker.process_record` (the same idempotence, window release, conditional count, error
classification and visibility heartbeat). Only the event source differs:
- SQS long polling, one message at a time (batch size 1: a GPU segment is minutes of work);
- True from process_record deletes the message; False leaves it to the queue (redelivery, then the DLQ);
- SIGTERM (an ECS stop, a scale-in, a spot interruption's two-minute notice) drains: no new message is taken; a
  running segment may finish within `drain_s` (settings gpu.drain_s, under the task's stopTimeout), else its
  message is released (visibility 0) so another task takes it at once; then the process exits 0. A message
  received while stopping is released the same way. A SIGKILL instead leaves the message invisible until its
  heartbeat-extended visibility lapses; the work is redone then, and counted once.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import threading
from collections.abc import Callable
from typing import Any

import structlog

from vsr import logs
from vsr.aws import clients
from vsr.aws.deployment import WORKER_TIER_ENV
from vsr.logs import get_logger
from vsr.pipeline.events import SqsRecord

log = get_logger(__name__)

Handler = Callable[[SqsRecord], bool]


class QueuePoller:
    """Long-poll `queue_url` and hand each message to `handle` until `request_stop`; see the module doc."""

    def __init__(self, queue_url: str, handle: Handler, *, wait_s: int, drain_s: float, sqs: Any = None) -> None:
        self.queue_url = queue_url
        self.handle = handle
        self.wait_s = int(wait_s)
        self.drain_s = float(drain_s)
        self._sqs = sqs
        self._stop = threading.Event()
        self._wake = threading.Event()  # set when a segment finishes or a stop is requested
        self.processed = 0
        self.released = 0

    @property
    def sqs(self) -> Any:
        return self._sqs if self._sqs is not None else clients.sqs()

    def request_stop(self, signum: int | None = None, _frame: Any = None) -> None:
        """Signal handler (SIGTERM, SIGINT): drain and stop."""
        if not self._stop.is_set():
            log.info("worker.drain_requested", signal=signum)
        self._stop.set()
        self._wake.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self) -> int:
        """Poll until stopped; 0 once drained."""
        log.info("worker.polling", queue=self.queue_url, wait_s=self.wait_s, drain_s=self.drain_s)
        while not self._stop.is_set():
            try:
                response = self.sqs.receive_message(
                    QueueUrl=self.queue_url,
                    MaxNumberOfMessages=1,
                    WaitTimeSeconds=self.wait_s,
                    AttributeNames=["All"],
                    MessageAttributeNames=["All"],
                )
            except Exception as exc:  # a flaky endpoint must not end the task; the next poll retries
                log.warning("worker.poll_failed", error=f"{type(exc).__name__}: {exc}")
                self._stop.wait(1.0)
                continue
            for message in response.get("Messages", []):
                if self._stop.is_set():
                    self._release(message, "received while stopping")
                else:
                    self._process(message)
        log.info("worker.stopped", processed=self.processed, released=self.released)
        return 0

    def _process(self, message: dict[str, Any]) -> None:
        record = SqsRecord(
            message_id=str(message["MessageId"]),
            body=str(message["Body"]),
            receipt_handle=str(message["ReceiptHandle"]),
            receive_count=int(message.get("Attributes", {}).get("ApproximateReceiveCount", 1) or 1),
            source_arn=self.queue_url,
        )
        outcome: dict[str, bool] = {}
        finished = threading.Event()
        context = dict(structlog.contextvars.get_contextvars())

        def work() -> None:
            logs.bind(**context)
            try:
                outcome["ack"] = bool(self.handle(record))
            except Exception as exc:  # process_record classifies its own errors; this is a bug: retry later
                log.exception("worker.unhandled", error=f"{type(exc).__name__}: {exc}")
                outcome["ack"] = False
            finally:
                finished.set()
                self._wake.set()

        self._wake.clear()
        thread = threading.Thread(target=work, name=f"segment-{record.message_id[:8]}", daemon=True)
        thread.start()
        self._wake.wait()
        # stopping mid-segment: finish within the drain time, or hand it back
        if not finished.is_set() and not finished.wait(self.drain_s):
            self._release(message, f"still running after {self.drain_s:.0f} s of draining")
            return  # the daemon thread dies with the process; its work is redone elsewhere, counted once
        self.processed += 1
        if outcome.get("ack"):
            self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=record.receipt_handle)

    def _release(self, message: dict[str, Any], why: str) -> None:
        """Make the message visible again now, so another task takes it without waiting out its visibility."""
        try:
            self.sqs.change_message_visibility(
                QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
            )
            self.released += 1
            log.info("worker.released", message_id=message.get("MessageId"), why=why)
        except Exception as exc:  # it reappears after its visibility timeout anyway
            log.warning("worker.release_failed", message_id=message.get("MessageId"), error=str(exc))


def command(args: argparse.Namespace) -> int:
    """`vsr worker [--tier gpu] [--queue-url URL]`: poll the tier's segment queue until SIGTERM."""
    from vsr.aws.resources import Resources
    from vsr.engine import usable_providers
    from vsr.pipeline import worker
    from vsr.settings import get_settings

    os.environ[WORKER_TIER_ENV] = args.tier  # what worker.run_segment reads: this process's tier
    logs.configure(level=os.environ.get("VSR_LOG_LEVEL", "INFO"))  # a service: JSON lines at INFO, like Lambda
    settings = get_settings()
    if args.endpoint:
        clients.use_endpoint(args.endpoint)
    resources = Resources.from_env().require(*worker.REQUIRED)
    queue_url = args.queue_url or resources.segment_queue_url
    gpu = settings.gpu
    # backoff-paced retries (vsr.pipeline.retry), counted against this queue's own maxReceiveCount
    retry = dataclasses.replace(settings.retry_policy("worker"), max_attempts=settings.gpu.max_receive_count)
    poller = QueuePoller(
        queue_url,
        lambda record: worker.process_record(record, resources, retry=retry),
        wait_s=args.wait_s if args.wait_s is not None else gpu.poll_wait_s,
        drain_s=gpu.drain_s,
    )
    signal.signal(signal.SIGTERM, poller.request_stop)
    signal.signal(signal.SIGINT, poller.request_stop)
    log.info(
        "worker.started",
        tier=args.tier,
        providers=list(usable_providers(settings.providers(args.tier))),
        pid=os.getpid(),
    )
    return poller.run()
