"""The CI-sized load and fault run (bench/bench_load.py runs it with 100 uploads): 12 uploads at once into a real
`vsr serve`, with workers SIGKILLed mid-segment, transient errors, duplicate S3 events and one assembler killed
mid-join (tests/support/load.py). Asserts the invariants, not timings."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.load import run_load

pytestmark = pytest.mark.timeout(1200)

UPLOADS = 12


@pytest.mark.slow  # a few minutes on 2 cores: about 11 tiny clips of real inference plus redelivery timeouts
def test_twelve_uploads_with_faults_lose_nothing_and_duplicate_nothing(tmp_path: Path) -> None:
    result = run_load(tmp_path, UPLOADS, timeout_s=900)
    summary = result.table()
    assert result.uploads == UPLOADS
    assert result.lost == 0, summary
    assert result.duplicated_outputs == 0, summary
    assert result.failed_exactly_the_bad, (summary, result.failed_reasons)
    assert result.complete + result.failed == UPLOADS, summary
    assert all(reason for reason in result.failed_reasons.values())
    assert result.dlq_after_redrive == 0, (summary, result.extra)
    assert result.frame_exact == result.complete, result.frame_mismatches
    assert result.killed_assemblers == 1, summary  # the assembler fault fired, and only once
    assert result.duplicate_events >= 1, summary
