"""Bounded retries with backoff for work that is looked at on every tick (`vsr serve`'s outbox deliveries).

A task is any hashable name. `due` says whether it may be tried now; `failed` records one failed attempt and
says when the next may run, or that there will be none; `succeeded` forgets it. The clock is the caller's, so a
tick loop never sleeps for a task and a test drives time by hand.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

from vsr.settings import DeliveryRetry


@dataclass(frozen=True)
class Failure:
    attempt: int  # 1-based number of the attempt that failed
    attempts: int  # the bound
    retry_in_s: float | None  # None: that was the last attempt

    @property
    def final(self) -> bool:
        return self.retry_in_s is None


class Retries:
    def __init__(self, policy: DeliveryRetry) -> None:
        self.policy = policy
        self._failures: dict[Hashable, tuple[int, float]] = {}  # task -> (failed attempts, next try at)

    def due(self, task: Hashable, now: float) -> bool:
        state = self._failures.get(task)
        return state is None or (state[0] < self.policy.attempts and now >= state[1])

    def failed(self, task: Hashable, now: float) -> Failure:
        attempt = self._failures.get(task, (0, now))[0] + 1
        delay = self.policy.delay_after(attempt)
        self._failures[task] = (attempt, now + (delay if delay is not None else 0.0))
        return Failure(attempt, self.policy.attempts, delay)

    def succeeded(self, task: Hashable) -> None:
        self._failures.pop(task, None)

    def attempts(self, task: Hashable) -> int:
        """Failed attempts so far."""
        return self._failures.get(task, (0, 0.0))[0]
