"""Fair sharing of the segment queue between jobs: each job keeps at most a window of segments in the queue.

Without it, ingest enqueues every segment of a job at once, and a 5-second clip uploaded after a 30-minute one
waits behind hundreds of that job's segments (one queue, FIFO-ish). With a window W (settings
`segments.window_per_worker` x `queues.worker_max_concurrency`, see `Settings.segment_window`):

- ingest sends segments 0..W-1 (`initial`), each message carrying W;
- the worker that finishes segment i sends segment i + W (`release_next`) BEFORE it counts segment i done.

So each job has at most W messages waiting (plus redeliveries), a new job's segments queue behind at most W
of every running job's, and every finished segment puts its successor at the back of the queue: round robin.

Why nothing is lost, with no counter and no sweeper: "segment i is done" implies "segment i + W was sent",
because the send happens first. A worker that dies between the send and the count leaves segment i
uncounted, so its message is redelivered and sends i + W again: a duplicate message, which the worker skips
(or, if both copies run at once, counts once: `jobs.mark_segment_done` is conditional). By induction from
the initial window every segment gets a message, and a dead-lettered segment holds back only its own chain
until `vsr redrive` returns it.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict
from collections.abc import Sequence

from vsr.logs import get_logger
from vsr.pipeline import artifacts
from vsr.pipeline.messages import SegmentMessage, send_segments
from vsr.planning import Segment

log = get_logger(__name__)

PLAN_CACHE_SIZE = 4  # plans of recent jobs kept per worker container (a plan is ~150 B per segment)

_plans: OrderedDict[str, dict[int, Segment]] = OrderedDict()
_plans_lock = threading.Lock()


def initial(segments: Sequence[Segment], window: int) -> list[Segment]:
    """The segments ingest sends: the first `window` (all of them when the window is 0)."""
    return list(segments) if window <= 0 else list(segments[:window])


def next_index(message: SegmentMessage, segment_count: int) -> int | None:
    """The segment that finishing `message` releases, or None (no window, or past the end of the job)."""
    if message.window <= 0:
        return None
    index = message.segment.index + message.window
    return index if index < segment_count else None


def frontier(done: set[int], segment_count: int, window: int) -> list[int]:
    """The unfinished segments that must have a message for the job to finish: those the initial window or a
    finished predecessor (i - window) released. A job reopened by `vsr redrive` resends them, since messages
    that arrived while it was FAILED were dropped as stale (workers skip a terminal job's segments)."""
    if window <= 0:
        return [i for i in range(segment_count) if i not in done]
    return [i for i in range(segment_count) if i not in done and (i < window or (i - window) in done)]


def _plan(work_bucket: str, job_id: str) -> dict[int, Segment]:
    with _plans_lock:
        cached = _plans.get(job_id)
        if cached is not None:
            _plans.move_to_end(job_id)
            return cached
    plan = {segment.index: segment for segment in artifacts.load_plan(work_bucket, job_id)}
    with _plans_lock:
        _plans[job_id] = plan
        while len(_plans) > PLAN_CACHE_SIZE:
            _plans.popitem(last=False)
    return plan


def release_next(message: SegmentMessage, segment_count: int, work_bucket: str, queue_url: str) -> int | None:
    """Send the message of the segment `message` releases (idempotent: a duplicate send is a duplicate
    message, which workers tolerate); returns its index, or None when there is none to send."""
    index = next_index(message, segment_count)
    if index is None:
        return None
    segment = _plan(work_bucket, message.job_id)[index]
    successor = dataclasses.replace(message, segment=segment)  # the same job fields (window, assembly path)
    send_segments(queue_url, [successor])
    log.info("window.released", segment=index, by=message.segment.index)
    return index
