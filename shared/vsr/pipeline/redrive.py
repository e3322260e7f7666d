"""Returning a job to work when `vsr redrive` returns its dead-lettered segment messages.

A job whose segment ran out of attempts is FAILED at once with the reason (vsr.pipeline.retry), while the
segment's message waits in the dead-letter queue. Before that message goes back to the segment queue, its job
moves FAILED -> PROCESSING (`jobs.reopen_job`: a listed, guarded transition that only a job FAILED for a dead
letter can take), or the worker would drop the message as belonging to a finished job. Messages of the job's
other segments that arrived while it was FAILED were dropped that way, so the reopened job's frontier
(`window.frontier`) is sent again too: duplicates are harmless (workers skip or count once), a gap is not.
"""

from __future__ import annotations

from collections.abc import Iterable

from vsr.logs import get_logger
from vsr.pipeline import artifacts, jobs, window
from vsr.pipeline.messages import MalformedMessageError, SegmentMessage, parse_segment_message, send_segments

log = get_logger(__name__)


def reopen_jobs(bodies: Iterable[str], table: str, segment_queue_url: str) -> list[str]:
    """Reopen the jobs of these dead-lettered segment message bodies; returns the ids of the jobs reopened."""
    by_job: dict[str, list[SegmentMessage]] = {}
    for body in bodies:
        try:
            message = parse_segment_message(body)
        except MalformedMessageError:
            continue
        by_job.setdefault(message.job_id, []).append(message)
    reopened = []
    for job_id, messages in by_job.items():
        indexes = tuple(sorted({m.segment.index for m in messages}))
        if not jobs.reopen_job(job_id, indexes, table):
            continue  # running, COMPLETE, or FAILED for good: the messages go back as they are
        reopened.append(job_id)
        job = jobs.get_job(job_id, table)
        if job is None:
            continue
        resend = [i for i in window.frontier(job.done, job.segment_count, messages[0].window) if i not in indexes]
        if resend:
            plan = {s.index: s for s in artifacts.load_plan(job.artifacts["bucket"], job_id)}
            template = messages[0]
            send_segments(
                segment_queue_url,
                [
                    SegmentMessage(
                        job_id=job_id,
                        segment=plan[i],
                        input=template.input,
                        probe=template.probe,
                        model=template.model,
                        window=template.window,
                    )
                    for i in resend
                ],
            )
        log.warning("redrive.job_reopened", job_id=job_id, segments=list(indexes), resent=resend)
    return reopened
