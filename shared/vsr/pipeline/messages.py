"""Versioned JSON segment messages (ingest -> worker) and sending them in batches of ten.

    {"v": 1, "job_id": "...", "segment": Segment.to_dict(),
     "input": {bucket, key, version_id, etag, size},
     "probe": {"bucket": work bucket, "key": jobs/<id>/probe.json},
     "model": {"name", "scale", "key"},
     "window": W,      # optional: ingest sent segments 0..W-1; finishing segment i releases segment i + W
     "assembly": "fragmented"}  # optional: the job's assembly path when not "faststart" (vsr.assembly_path)


A message that is not JSON, has an unknown version or misses a field is a `MalformedMessageError`
(permanent): the worker logs and acks it; redelivering it could never help.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import botocore.exceptions
from tenacity import RetryError, retry, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from vsr.aws import clients
from vsr.errors import PermanentError, TransientError
from vsr.logs import get_logger
from vsr.planning import Segment

log = get_logger(__name__)

VERSION = 1
SQS_BATCH = 10  # SendMessageBatch limit


class MalformedMessageError(PermanentError):
    code = "malformed_message"


@dataclass(frozen=True)
class SegmentMessage:
    job_id: str
    segment: Segment
    input: dict[str, Any]
    probe: dict[str, str]
    model: dict[str, Any]
    window: int = 0  # 0: every segment of the job was enqueued at once (see vsr.pipeline.window)
    assembly: str = "faststart"  # the job's assembly path (admission's): "fragmented" segments are fMP4

    def to_dict(self) -> dict[str, Any]:
        data = {
            "v": VERSION,
            "job_id": self.job_id,
            "segment": self.segment.to_dict(),
            "input": dict(self.input),
            "probe": dict(self.probe),
            "model": dict(self.model),
        }
        if self.window:
            data["window"] = self.window
        if self.assembly != "faststart":
            data["assembly"] = self.assembly
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=True)


def _require(data: Mapping[str, Any], name: str, kind: type) -> Any:
    value = data.get(name)
    if not isinstance(value, kind) or (isinstance(value, str | dict) and not value):
        raise MalformedMessageError(f"segment message field {name!r} missing or not a {kind.__name__}")
    return value


def parse_segment_message(body: str) -> SegmentMessage:
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise MalformedMessageError(f"segment message is not JSON: {body[:200]!r}") from exc
    if not isinstance(data, dict):
        raise MalformedMessageError("segment message is not a JSON object")
    if data.get("v") != VERSION:
        raise MalformedMessageError(f"unsupported segment message version {data.get('v')!r} (expected {VERSION})")
    job_id = _require(data, "job_id", str)
    input_ref = _require(data, "input", dict)
    probe = _require(data, "probe", dict)
    model = data.get("model") or {}
    for name in ("bucket", "key"):
        _require(input_ref, name, str)
        _require(probe, name, str)
    try:
        segment = Segment.from_dict(_require(data, "segment", dict))
    except (KeyError, TypeError, ValueError) as exc:
        raise MalformedMessageError(f"segment message has an invalid segment: {exc}") from exc
    if segment.index < 0 or segment.frame_count <= 0:
        raise MalformedMessageError(f"segment message has an invalid segment {segment}")
    window = data.get("window", 0)
    if not isinstance(window, int) or isinstance(window, bool) or window < 0:
        raise MalformedMessageError(f"segment message has an invalid window {window!r}")
    assembly = data.get("assembly", "faststart")
    if assembly not in ("faststart", "fragmented"):
        raise MalformedMessageError(f"segment message has an unknown assembly path {assembly!r}")
    return SegmentMessage(
        job_id=job_id, segment=segment, input=input_ref, probe=probe, model=model, window=window, assembly=assembly
    )


class _EntriesFailed(Exception):
    def __init__(self, pending: dict[str, str], failures: list[dict[str, Any]]) -> None:
        super().__init__(f"{len(pending)} entries not sent: {failures[:3]}")
        self.pending = pending


def _send_batch(queue_url: str, entries: dict[str, str], attempts: int) -> None:
    """Send up to 10 entries; resend only the ones SQS reports as failed, with backoff."""
    pending = dict(entries)

    @retry(
        retry=retry_if_exception_type(_EntriesFailed),
        stop=stop_after_attempt(attempts),
        wait=wait_random_exponential(multiplier=0.2, max=5),
    )
    def attempt() -> None:
        try:
            response = clients.sqs().send_message_batch(
                QueueUrl=queue_url,
                Entries=[{"Id": entry_id, "MessageBody": body} for entry_id, body in pending.items()],
            )
        except botocore.exceptions.ClientError as exc:
            if clients.is_transient(exc):
                raise _EntriesFailed(pending, [{"Code": clients.error_code(exc)}]) from exc
            raise
        except botocore.exceptions.BotoCoreError as exc:
            raise _EntriesFailed(pending, [{"Code": type(exc).__name__}]) from exc
        for ok in response.get("Successful", []):
            pending.pop(ok["Id"], None)
        failed = response.get("Failed", [])
        sender_faults = [f for f in failed if f.get("SenderFault")]
        if sender_faults:  # e.g. a message too large: resending the same bytes cannot succeed
            raise PermanentError(f"SQS rejected segment messages: {sender_faults[:3]}")
        if pending:
            raise _EntriesFailed(pending, failed)

    try:
        attempt()
    except RetryError as exc:
        raise TransientError(
            f"SendMessageBatch: {len(pending)} entries still failing: {exc.last_attempt.exception()}"
        ) from exc


def send_segments(queue_url: str, messages: Sequence[SegmentMessage], attempts: int = 5) -> int:
    """Send every message (SendMessageBatch, 10 per call); raise TransientError if entries keep failing."""
    sent = 0
    for start in range(0, len(messages), SQS_BATCH):
        chunk = messages[start : start + SQS_BATCH]
        _send_batch(queue_url, {str(i): m.to_json() for i, m in enumerate(chunk)}, attempts)
        sent += len(chunk)
    log.info("segments_enqueued", count=sent)
    return sent
