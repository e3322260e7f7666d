"""Local stand-ins for Lambda's event source mappings: poll SQS and the DynamoDB stream, invoke containers.

Semantics mirrored from AWS (and from the Terraform event source mappings; both read settings.json event_sources):
- SQS: receive with the queue's own visibility timeout; build the Lambda SQS event; on success delete every
  message not listed in `batchItemFailures`; if the invocation raised, timed out or its container died,
  delete nothing, so the messages reappear after the visibility timeout and the redrive policy moves them
  to the DLQ after maxReceiveCount receives. A dead container is replaced by a fresh one (a cold start).
- DynamoDB stream: read every shard from TRIM_HORIZON (moto emits two INSERT records for an update that
  creates an item; the filter only passes MODIFY records, so they never reach assembly), apply the assembly filter (the same file Terraform
  uses as FilterCriteria), invoke with `{"Records": [record]}`, and retry a failing record in order
  (blocking its shard, like Lambda) up to `maximum_retry_attempts`, then send Lambda's on-failure record
  (stream batch info, not the data) to the assembly failure queue, as the Terraform destination does, and
  move on.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import threading
import time
from collections.abc import Callable
from typing import Any

from vsr.local.containers import REGION, Container, Invocation
from vsr.local.filters import matches
from vsr.logs import get_logger

log = get_logger(__name__)

# Poll cadence: SQS long polls are short so stop() is prompt; Lambda polls streams about 4 times a second.
SQS_WAIT_S = 1
STREAM_IDLE_S = 0.25
SHARD_REFRESH_S = 5.0  # new shards appear rarely (stream shards roll over every few hours on AWS)
RETRY_BACKOFF_S = 1.0


def _jsonable(value: Any) -> Any:
    """Stream records as Lambda delivers them: datetimes as epoch seconds, binary values base64."""
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set):
        return [_jsonable(item) for item in value]
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, dt.datetime):
        return value.timestamp()
    return value


def sqs_record(message: dict[str, Any], queue_arn: str) -> dict[str, Any]:
    """One record of Lambda's SQS event, from a ReceiveMessage result."""
    attributes = {}
    for name, attr in message.get("MessageAttributes", {}).items():
        attributes[name] = {
            "stringValue": attr.get("StringValue"),
            "binaryValue": base64.b64encode(attr["BinaryValue"]).decode() if "BinaryValue" in attr else None,
            "stringListValues": attr.get("StringListValues", []),
            "binaryListValues": [],
            "dataType": attr.get("DataType"),
        }
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": dict(message.get("Attributes", {})),
        "messageAttributes": attributes,
        "md5OfBody": message.get("MD5OfBody"),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": REGION,
    }


ContainerFactory = Callable[[], Container]


class _Loop(threading.Thread):
    def __init__(self, name: str, stop: threading.Event, make_container: ContainerFactory) -> None:
        super().__init__(name=name, daemon=True)
        self.stop_event = stop
        self._make_container = make_container
        self.container: Container = make_container()
        self.invocations = 0
        self.replaced = 0
        self.init_failure: str | None = None  # log file of a container whose handler could not even load
        self.failures: list[str] = []  # every failed invocation or reported batch item failure, for observers

    def invoke(self, event: dict[str, Any], label: str) -> Invocation:
        if not self.container.alive():
            self._replace()
        self.container.busy_with = label
        outcome = self.container.invoke(event)
        self.container.busy_with = None
        self.invocations += 1
        if self.stop_event.is_set():
            return outcome  # killed by shutdown: its message reappears after the visibility timeout
        if not outcome.ok:
            self.failures.append(f"{label}: {outcome.error or ('timed out' if outcome.timed_out else 'died')}")
        if outcome.init_failed:
            self.init_failure = str(self.container.log_path)
        if outcome.died or outcome.timed_out:
            log.warning(
                "container_lost", loop=self.name, pid=self.container.pid, timed_out=outcome.timed_out, what=label
            )
            self._replace()
        elif outcome.error:
            log.warning("invocation_failed", loop=self.name, what=label, error=outcome.error)
        return outcome

    def _replace(self) -> None:
        self.container.kill()
        self.container = self._make_container()
        self.replaced += 1

    def shutdown(self) -> None:
        """Called with stop_event set: kill the container even mid-invocation (nothing is deleted then)."""
        self.container.kill()


class SqsPoller(_Loop):
    """One concurrent execution of a function fed from an SQS queue (Lambda runs N of these)."""

    def __init__(
        self,
        name: str,
        stop: threading.Event,
        make_container: ContainerFactory,
        sqs: Any,
        queue_url: str,
        queue_arn: str,
        batch_size: int,
    ) -> None:
        super().__init__(name, stop, make_container)
        self._sqs = sqs
        self._queue_url = queue_url
        self._queue_arn = queue_arn
        self._batch_size = batch_size

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                self.poll_once()
            except Exception:  # a poller must survive a flaky endpoint, as Lambda's does
                log.exception("poll_failed", loop=self.name)
                self.stop_event.wait(RETRY_BACKOFF_S)

    def poll_once(self) -> None:
        response = self._sqs.receive_message(
            QueueUrl=self._queue_url,
            MaxNumberOfMessages=self._batch_size,
            WaitTimeSeconds=SQS_WAIT_S,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        messages = response.get("Messages", [])
        if not messages or self.stop_event.is_set():
            return  # a message received during shutdown simply reappears after its visibility timeout
        records = [sqs_record(message, self._queue_arn) for message in messages]
        outcome = self.invoke({"Records": records}, ",".join(r["messageId"] for r in records))
        if not outcome.ok:
            return
        failed = {
            item.get("itemIdentifier")
            for item in (outcome.result or {}).get("batchItemFailures", [])
            if isinstance(item, dict)
        }
        if failed:
            self.failures.append(f"batch item failures: {', '.join(sorted(str(f) for f in failed))}")
        done = [r for r in records if r["messageId"] not in failed]
        if done:
            self._sqs.delete_message_batch(
                QueueUrl=self._queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": r["receiptHandle"]} for i, r in enumerate(done)],
            )


class StreamPoller(_Loop):
    """The DynamoDB stream event source mapping with its filter criteria."""

    def __init__(
        self,
        name: str,
        stop: threading.Event,
        make_container: ContainerFactory,
        streams: Any,
        stream_arn: str,
        pattern: dict[str, Any],
        maximum_retry_attempts: int,
        sqs: Any = None,
        failure_queue_url: str | None = None,
    ) -> None:
        super().__init__(name, stop, make_container)
        self._sqs = sqs
        self._failure_queue_url = failure_queue_url
        self._streams = streams
        self._stream_arn = stream_arn
        self._pattern = pattern
        self._max_retries = maximum_retry_attempts
        self._iterators: dict[str, str | None] = {}
        self._shards_checked = float("-inf")
        self.matched = 0

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                if not self.poll_once():
                    self.stop_event.wait(STREAM_IDLE_S)
            except Exception:
                log.exception("poll_failed", loop=self.name)
                self.stop_event.wait(RETRY_BACKOFF_S)

    def _refresh_shards(self) -> None:
        if time.monotonic() - self._shards_checked < SHARD_REFRESH_S:
            return
        self._shards_checked = time.monotonic()
        description = self._streams.describe_stream(StreamArn=self._stream_arn)["StreamDescription"]
        for shard in description.get("Shards", []):
            shard_id = shard["ShardId"]
            if shard_id not in self._iterators:
                self._iterators[shard_id] = self._streams.get_shard_iterator(
                    StreamArn=self._stream_arn, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
                )["ShardIterator"]

    def poll_once(self) -> bool:
        """Read each shard once; True when any record arrived."""
        self._refresh_shards()
        got_any = False
        for shard_id, iterator in list(self._iterators.items()):
            if iterator is None:
                continue  # a closed shard
            response = self._streams.get_records(ShardIterator=iterator, Limit=100)
            for record in response.get("Records", []):
                got_any = True
                self._deliver(_jsonable({**record, "eventSourceARN": self._stream_arn}), shard_id)
            self._iterators[shard_id] = response.get("NextShardIterator")
        return got_any

    def _deliver(self, record: dict[str, Any], shard_id: str = "") -> None:
        if not matches(self._pattern, record):
            return
        self.matched += 1
        for attempt in range(self._max_retries + 1):
            if self.stop_event.is_set():
                return
            if self.invoke({"Records": [record]}, str(record.get("eventID"))).ok:
                return
            log.warning("stream_record_retry", loop=self.name, attempt=attempt + 1, event_id=record.get("eventID"))
            self.stop_event.wait(RETRY_BACKOFF_S * (attempt + 1))
        log.error("stream_record_skipped", loop=self.name, event_id=record.get("eventID"))
        if self._sqs is not None and self._failure_queue_url:
            sequence = record.get("dynamodb", {}).get("SequenceNumber")
            failure = {
                "version": "1.0",
                "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "requestContext": {
                    "condition": "RetryAttemptsExhausted",
                    "approximateInvokeCount": self._max_retries + 1,
                },
                "DDBStreamBatchInfo": {
                    "shardId": shard_id,
                    "startSequenceNumber": sequence,
                    "endSequenceNumber": sequence,
                    "batchSize": 1,
                    "streamArn": self._stream_arn,
                },
            }
            self._sqs.send_message(QueueUrl=self._failure_queue_url, MessageBody=json.dumps(failure))
