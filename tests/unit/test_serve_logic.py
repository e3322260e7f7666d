"""Pure logic of `vsr serve` (inbox settling, outbox names, progress lines, one job's failure isolated from the
others, delivery retries), the segment window and fault fractions."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from vsr.local import faults
from vsr.local.names import local_path
from vsr.local.serve import InboxWatcher, open_for_writing, progress_text
from vsr.pipeline import jobs, window
from vsr.pipeline.messages import SegmentMessage, parse_segment_message
from vsr.planning import Segment
from vsr.settings import get_settings


def _segment(index: int) -> Segment:
    return Segment(
        index=index, start_frame=index, frame_count=1, start_pts=index, end_pts=None, context_before=0,
        context_start_pts=index,
    )  # fmt: skip


def _message(index: int, window_size: int) -> SegmentMessage:
    return SegmentMessage(
        "j" * 32, _segment(index), {"bucket": "b", "key": "k"}, {"bucket": "b", "key": "p"}, {}, window_size
    )


# --- inbox ----------------------------------------------------------------------------------------------
def test_inbox_uploads_a_file_once_it_is_settled(tmp_path: Path) -> None:
    uploaded: list[str] = []
    watcher = InboxWatcher(tmp_path, lambda path, key: uploaded.append(key), settle_s=1.0)
    (tmp_path / "sub").mkdir()
    clip = tmp_path / "sub" / "my clip (1) é.mp4"
    clip.write_bytes(b"x" * 10)
    assert watcher.scan(now=0.0) == []  # first look: remembered, not yet trusted
    assert watcher.scan(now=0.5) == []  # unchanged but not for settle_s yet
    clip.write_bytes(b"x" * 20)  # still growing: the clock restarts
    assert watcher.scan(now=1.2) == []
    assert watcher.scan(now=2.3) == ["sub/my clip (1) é.mp4"]
    assert watcher.scan(now=9.0) == []  # uploaded once
    clip.write_bytes(b"y" * 30)  # changed after the upload: a new version, uploaded again
    watcher.scan(now=10.0)
    assert watcher.scan(now=11.5) == ["sub/my clip (1) é.mp4"]
    assert uploaded == ["sub/my clip (1) é.mp4"] * 2


def test_a_failing_inbox_upload_does_not_stop_the_others_and_is_retried(tmp_path: Path) -> None:
    uploaded: list[str] = []
    refused = {"a.mp4"}

    def upload(path: Path, key: str) -> None:
        if key in refused:
            raise OSError(13, "Permission denied")
        uploaded.append(key)

    watcher = InboxWatcher(tmp_path, upload, settle_s=0.0)
    for name in ("a.mp4", "b.mp4"):
        (tmp_path / name).write_bytes(b"data")
    watcher.scan(now=0.0)
    assert watcher.scan(now=1.0) == ["b.mp4"]
    refused.clear()
    watcher.scan(now=2.0)
    assert watcher.scan(now=3.0) == ["a.mp4"] and uploaded == ["b.mp4", "a.mp4"]


def test_inbox_ignores_hidden_and_partial_names(tmp_path: Path) -> None:
    watcher = InboxWatcher(tmp_path, lambda path, key: None, settle_s=0.0)
    for name in (".hidden.mp4", "download.mp4.part", "x.crdownload", "y.tmp"):
        (tmp_path / name).write_bytes(b"data")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "z.mp4").write_bytes(b"data")
    watcher.scan(now=0.0)
    assert watcher.scan(now=5.0) == []


def test_a_file_open_for_writing_is_seen_as_such(tmp_path: Path) -> None:
    path = tmp_path / "growing.mp4"
    with path.open("wb") as handle:
        handle.write(b"abc")
        assert open_for_writing(path) == os.path.isdir("/proc")
    assert not open_for_writing(path)


# --- outbox and progress ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("key", "expected"),
    [("a/b c é.mp4", "a/b c é.mp4"), ("../../etc/passwd", "etc/passwd~"), ("/abs/x.mp4", "abs/x~"), ("", "unnamed~")],
)
def test_outbox_names_stay_inside_the_outbox(key: str, expected: str) -> None:
    # a key that had to change to stay inside gets a tag (~<hash of the key>), see tests/unit/test_key_names.py
    assert local_path(key).as_posix().startswith(expected)


def test_progress_line_shows_frames_segments_and_the_eta_hook() -> None:
    job = jobs.Job(job_id="abcdef0123456789", status=jobs.PROCESSING, input={"key": "clip.mp4"})
    job.probe = {"frames": 40}
    job.segment_count = 4
    job.done = {0}
    job.segment_totals = {"frames": 10}
    job.segment_progress = {1: 5}
    assert progress_text(job) == "abcdef01 PROCESSING clip.mp4  15/40 frames, 1/4 segments"
    assert progress_text(job, eta=lambda _job: 12.4).endswith(", ETA 12 s")
    failed = jobs.Job(job_id="0" * 32, status=jobs.FAILED, input={"key": "bad.mp4"}, error={"reason": "not a video"})
    assert progress_text(failed).endswith("bad.mp4: not a video")


# --- the segment window -------------------------------------------------------------------------------------
def test_window_sends_the_first_segments_and_each_releases_its_successor() -> None:
    segments = [_segment(i) for i in range(7)]
    assert [s.index for s in window.initial(segments, 3)] == [0, 1, 2]
    assert window.initial(segments, 0) == segments  # 0: everything at once (the design before)
    released = [window.next_index(_message(i, 3), 7) for i in range(7)]
    assert released == [3, 4, 5, 6, None, None, None]
    # every segment is sent exactly once: by ingest or by the one segment that releases it
    assert sorted([s.index for s in window.initial(segments, 3)] + [r for r in released if r is not None]) == list(
        range(7)
    )
    assert window.next_index(_message(2, 0), 7) is None


def test_window_travels_in_the_message_and_old_messages_have_none() -> None:
    assert parse_segment_message(_message(1, 4).to_json()).window == 4
    legacy = json.loads(_message(1, 0).to_json())
    assert "window" not in legacy and parse_segment_message(json.dumps(legacy)).window == 0
    legacy["window"] = -1
    with pytest.raises(Exception, match="window"):
        parse_segment_message(json.dumps(legacy))


def test_window_size_comes_from_settings_and_the_queue_concurrency(monkeypatch: pytest.MonkeyPatch) -> None:
    s = get_settings()
    assert s.segment_window() == s.segment_policy.window_per_worker * s.worker_max_concurrency
    monkeypatch.setenv("VSR_SETTINGS_OVERRIDES", json.dumps({"queues": {"worker_max_concurrency": 3}}))
    assert get_settings().segment_window() == 3 * s.segment_policy.window_per_worker


# --- fault fractions ------------------------------------------------------------------------------------------
def test_fault_fraction_picks_about_that_share_reproducibly() -> None:
    plan = faults.FaultPlan.from_dict({"rules": [{"action": "raise", "fraction": 0.1, "attempts": [1]}]})

    def event(message_id: str, attempt: int = 1) -> dict:
        body = _message(0, 0).to_json()
        return {
            "Records": [
                {"messageId": message_id, "body": body, "attributes": {"ApproximateReceiveCount": str(attempt)}}
            ]
        }

    hits = [faults._rule_for(plan, event(f"m-{i}")) is not None for i in range(2000)]
    assert 150 <= sum(hits) <= 250  # 10% of 2000, well inside the binomial spread
    assert hits == [faults._rule_for(plan, event(f"m-{i}")) is not None for i in range(2000)]  # same draws
    assert all(faults._rule_for(plan, event(f"m-{i}", attempt=2)) is None for i in range(200))
