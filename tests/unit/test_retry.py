"""Retry pacing (pure): the backoff after each failed attempt, the last attempt, and what people are shown."""

from __future__ import annotations

import pytest

from vsr.pipeline.retry import backoff_s, dead_letter_reason, decide, draw_for, retrying_text, retrying_texts
from vsr.settings import RetryPolicy, get_settings

POLICY = RetryPolicy(backoff_s=(10, 30, 90, 270), jitter=0.2, max_attempts=5)


def test_the_defaults_are_named_settings() -> None:
    assert get_settings().retry_policy("worker") == POLICY
    assert get_settings().retry_policy("ingest").max_attempts == get_settings().ingest_max_receive_count


@pytest.mark.parametrize(("attempt", "base"), [(1, 10), (2, 30), (3, 90), (4, 270), (9, 270)])
def test_backoff_follows_the_schedule_within_the_jitter(attempt: int, base: int) -> None:
    assert backoff_s(POLICY, attempt, 0.5) == base  # the middle of the jitter is the schedule itself
    assert backoff_s(POLICY, attempt, 0.0) == round(base * 0.8)
    assert backoff_s(POLICY, attempt, 0.999999) == round(base * 1.2)


def test_jitter_spreads_messages_and_is_stable_per_delivery() -> None:
    delays = {backoff_s(POLICY, 2, draw_for(f"message-{i}", 2)) for i in range(50)}
    assert len(delays) > 5 and min(delays) >= 24 and max(delays) <= 36
    assert draw_for("m", 2) == draw_for("m", 2) != draw_for("m", 3)


def test_the_attempt_that_reaches_max_receive_count_is_the_last() -> None:
    retries = [decide(POLICY, attempt, 0.5) for attempt in range(1, 6)]
    assert [r.final for r in retries] == [False, False, False, False, True]
    assert [r.delay_s for r in retries] == [10, 30, 90, 270, 0]  # the last: visible at once, so to the DLQ
    assert sum(r.delay_s for r in retries) == 400  # a deterministic failure is FAILED ~7 min after it began


def test_reasons_and_progress_texts() -> None:
    assert dead_letter_reason(3, 12, 5, "ValueError: boom") == (
        "segment 3 of 12 failed 5 times: ValueError: boom; it is kept in the dead-letter queue; "
        "`vsr redrive` retries it"
    )
    error = {"attempts": 1, "max_attempts": 5, "next_at": 1030.0, "error": "throttled"}
    assert retrying_text(3, error, now=1000.0) == "retrying segment 3 (attempt 2 of 5, next in 30 s): throttled"
    assert retrying_text(3, error, now=1031.0).startswith("retrying segment 3 (attempt 2 of 5, running or due now)")
    assert retrying_text(3, {"attempts": 2, "error": "x"}, now=0.0) == "retrying segment 3 (attempt 3): x"
    errors = {1: error, 0: {"attempts": 1, "error": "y"}, 2: {"attempts": 1, "error": "z"}}
    assert [t.split(" (")[0] for t in retrying_texts(errors, done={2}, now=1000.0)] == [
        "retrying segment 0",
        "retrying segment 1",
    ]


def test_vsr_status_prints_what_the_job_waits_for_instead_of_eta_unknown(capsys: pytest.CaptureFixture[str]) -> None:
    from vsr import ops

    text = "retrying segment 3 (attempt 2 of 5, next in 30 s): TransientError: throttled"
    row = {"index": 3, "state": "retrying", "frames_written": 0, "attempts": 1, "error": "throttled"}
    data = {
        "job_id": "j",
        "status": "PROCESSING",
        "input": {"bucket": "b", "key": "k"},
        "done_count": 1,
        "segment_count": 4,
        "remaining": 3,
        "eta_s": None,  # behind plan: no honest ETA
        "retrying": [text],
        "segments": [row],
    }
    ops._print_job(data)
    out = capsys.readouterr().out
    assert f"retry    {text}\n" in out and "eta" not in out
    ops._print_job({**data, "retrying": [], "eta_s": 42.0})
    assert "eta      42 s" in capsys.readouterr().out
