"""Retry pacing for the SQS-driven stages: a failed attempt comes back after a backoff, not a visibility timeout.

The queues' visibility timeout (6x the function timeout) exists to cover a running attempt, with the worker's
heartbeat pushing it forward; it is the wrong clock for retries (6 x 900 s between two attempts of a segment).
So after an attempt fails with an error that may be transient, the stage itself sets the message's visibility
(ChangeMessageVisibility) to the next backoff of `queues.retry_backoff_s` with jitter, then reports the item
failure. On the attempt whose receive count reaches the queue's maxReceiveCount there is no next attempt: the
message is made visible at once (so SQS moves it to the dead-letter queue on its next receive) and the caller
fails the job with `dead_letter_reason`, so the user knows in minutes, not after a working day.

Used by every consumer of the queues (the worker Lambda, the GPU tier's poller through the same
`vsr.pipeline.worker.process_record`, ingest); the pure parts (`decide`, the texts) are unit-tested.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import botocore.exceptions

from vsr.aws import clients
from vsr.logs import get_logger
from vsr.settings import RetryPolicy

log = get_logger(__name__)

MAX_VISIBILITY_S = 43_200  # SQS's limit for ChangeMessageVisibility (12 hours)


@dataclass(frozen=True)
class Retry:
    """What happens after failed attempt `attempt` (1 = first delivery) of at most `max_attempts`."""

    attempt: int
    max_attempts: int
    delay_s: int  # the message stays hidden this long (0 on the final attempt: straight to the DLQ)

    @property
    def final(self) -> bool:
        return self.attempt >= self.max_attempts


def backoff_s(policy: RetryPolicy, attempt: int, draw: float) -> int:
    """The hiding time after failed attempt `attempt`: the schedule's value (its last one repeats), scaled by
    1 + jitter x (2 draw - 1) for a `draw` in [0, 1), at least 1 s and at most SQS's 12 hours."""
    if not policy.backoff_s:
        return 0
    base = policy.backoff_s[min(max(attempt, 1), len(policy.backoff_s)) - 1]
    jittered = base * (1.0 + policy.jitter * (2.0 * draw - 1.0))
    return int(min(MAX_VISIBILITY_S, max(1, round(jittered))))


def decide(policy: RetryPolicy, attempt: int, draw: float) -> Retry:
    """Failed attempt `attempt`: the last one (delay 0), or retried after `backoff_s`."""
    if attempt >= policy.max_attempts:
        return Retry(attempt, policy.max_attempts, 0)
    return Retry(attempt, policy.max_attempts, backoff_s(policy, attempt, draw))


def draw_for(message_id: str, attempt: int) -> float:
    """The jitter draw of one delivery: spread over messages, and the same if an attempt is replayed."""
    return random.Random(f"{message_id}:{attempt}").random()


def dead_letter_reason(index: int, segment_count: int | None, attempts: int, error: str) -> str:
    """The FAILED job's reason when one of its segments ran out of attempts (`index` as `vsr status` lists it)."""
    of = f" of {segment_count}" if segment_count else ""
    return (
        f"segment {index}{of} failed {attempts} times: {error}; it is kept in the dead-letter queue; "
        "`vsr redrive` retries it"
    )


def ingest_dead_letter_reason(attempts: int, error: str) -> str:
    return (
        f"ingest failed {attempts} times: {error}; the upload's event is kept in the dead-letter queue; "
        "`vsr redrive` retries it"
    )


def retrying_text(index: int, error: Mapping[str, Any], now: float) -> str:
    """ "retrying segment 3 (attempt 2 of 5, next in 30 s): <reason>" from a segment's recorded error."""
    attempts = int(error.get("attempts") or 0)
    limit = error.get("max_attempts")
    of = f" of {int(limit)}" if limit else ""
    next_at = error.get("next_at")
    when = ""
    if next_at is not None:
        left = float(next_at) - now
        when = f", next in {left:.0f} s" if left >= 0.5 else ", running or due now"
    return f"retrying segment {index} (attempt {attempts + 1}{of}{when}): {error.get('error') or 'no reason recorded'}"


def retrying_texts(segment_errors: Mapping[int, Mapping[str, Any]], done: set[int], now: float) -> list[str]:
    """One `retrying_text` per unfinished segment with a recorded failure, in segment order: what `vsr status`,
    `vsr run` and `vsr serve` show instead of an ETA nobody can give while a segment waits for its retry."""
    return [retrying_text(i, dict(error), now) for i, error in sorted(segment_errors.items()) if i not in done]


def hide(queue_url: str, receipt_handle: str, seconds: int) -> bool:
    """Set the message's visibility to `seconds` from now. Best effort: if it fails (an expired receipt
    handle, a throttle), the queue's own visibility timeout still brings the message back, only later."""
    try:
        clients.sqs().change_message_visibility(
            QueueUrl=queue_url, ReceiptHandle=receipt_handle, VisibilityTimeout=int(seconds)
        )
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
        log.warning("retry.visibility_change_failed", error=str(exc), visibility_s=seconds)
        return False
    return True
