"""The job record: expression building (pure) and the conditions against a real moto server."""

from __future__ import annotations

import threading
import time

import pytest

from vsr.aws.resources import Resources
from vsr.errors import CorruptInputError, DeadLetteredError, TransientError
from vsr.pipeline import jobs

INPUT = {"bucket": "in", "key": "a/b.mp4", "version_id": None, "etag": "abc", "size": 10}


# --- pure -------------------------------------------------------------------------------------------
def test_job_id_is_stable_and_distinguishes_versions() -> None:
    a = jobs.job_id_for("in", "a.mp4", None, '"abc"')
    assert a == jobs.job_id_for("in", "a.mp4", None, "abc")  # quotes around ETags do not matter
    assert a != jobs.job_id_for("in", "a.mp4", None, "abd")
    assert a != jobs.job_id_for("in", "b.mp4", None, "abc")
    assert jobs.job_id_for("in", "a.mp4", "v1", "abc") != jobs.job_id_for("in", "a.mp4", "v2", "abc")
    assert len(a) == 32 and int(a, 16) >= 0


def test_segment_done_update_is_one_conditional_add() -> None:
    update = jobs.segment_done_update(7, {"decode_s": 1.5, "infer_s": 2.0}, frames=12, now=100.0)
    assert update.update.startswith("SET updated_at = :now ADD done :idx_set, remaining :minus1")
    assert "NOT contains(done, :idx)" in update.condition and "remaining > :zero" in update.condition
    assert "#status IN (:st0, :st1)" in update.condition
    assert update.values[":idx_set"] == {7} and update.values[":idx"] == 7 and update.values[":minus1"] == -1
    assert (update.values[":st0"], update.values[":st1"]) == (jobs.QUEUED, jobs.PROCESSING)
    assert update.values[":encode_s"] == 0.0 and update.values[":frames"] == 12
    request = update.request("t", "j1")
    assert request["ExpressionAttributeValues"][":idx_set"] == {"NS": ["7"]}
    assert request["ExpressionAttributeValues"][":decode_s"] == {"N": "1.5"}
    assert request["Key"] == {"job_id": {"S": "j1"}}


def test_lease_and_fail_conditions() -> None:
    lease = jobs.lease_update("owner-1", now=1000.0, lease_s=900)
    assert "lease_until < :now OR lease_owner = :owner" in lease.condition
    assert lease.values[":until"] == 1900.0 and "remaining = :zero" in lease.condition
    fail = jobs.fail_update({"code": "x", "reason": "y"}, now=5.0)
    assert [fail.values[f":st{i}"] for i in range(3)] == list(jobs.ACTIVE)
    assert "REMOVE lease_owner, lease_until" in fail.update


def test_segment_progress_update_is_guarded() -> None:
    update = jobs.segment_progress_update(5, 42, now=1.0)
    assert update.update.startswith("SET seg_progress.#idx = :frames")
    assert update.names["#idx"] == "5" and update.values[":frames"] == 42
    assert "NOT contains(done, :idx)" in (update.condition or "") and "#status IN" in (update.condition or "")


def test_segment_error_text_is_bounded() -> None:
    update = jobs.segment_error_update(3, 2, RuntimeError("x" * 5000), now=1.0)
    assert update.names == {"#idx": "3"}
    assert len(update.values[":err"]["error"]) == jobs.MAX_ERROR_CHARS
    assert update.values[":err"]["attempts"] == 2 and update.values[":err"]["code"] == "RuntimeError"


# --- against moto -----------------------------------------------------------------------------------
def _create(job_id: str, segments: int = 3) -> None:
    item = jobs.new_job_item(
        job_id=job_id, status=jobs.QUEUED, input_ref=INPUT, now=time.time(), ttl_s=60, segment_count=segments
    )
    assert jobs.create_job(item)


def test_create_is_idempotent(resources: Resources) -> None:
    _create("j1")
    item = jobs.new_job_item(
        job_id="j1", status=jobs.FAILED, input_ref=INPUT, now=time.time(), ttl_s=60, error={"code": "x", "reason": "y"}
    )
    assert not jobs.create_job(item)
    job = jobs.get_job("j1")
    assert job is not None and job.status == jobs.QUEUED and job.remaining == 3 and job.done == set()
    assert job.expires_at is not None and job.expires_at > time.time()
    assert jobs.get_job("missing") is None
    assert [j.job_id for j in jobs.list_jobs()] == ["j1"]


def test_duplicate_segment_is_counted_once(resources: Resources) -> None:
    _create("j1", segments=2)
    assert jobs.mark_segment_done("j1", 0, {"decode_s": 1.0, "infer_s": 2.0, "encode_s": 0.5, "wall_s": 4.0}, 10)
    assert not jobs.mark_segment_done("j1", 0, {"decode_s": 1.0, "wall_s": 4.0}, 10)
    job = jobs.get_job("j1")
    assert job is not None and job.done == {0} and job.remaining == 1
    assert job.segment_totals["wall_s"] == 4.0 and job.segment_totals["frames"] == 10
    assert not jobs.mark_segment_done("nope", 0, {}, 1)  # unknown job: no item created
    assert jobs.get_job("nope") is None


def test_the_int8_guards_recomputed_pixels_sum_over_segments(resources: Resources) -> None:
    from vsr.guard import recomputed_fraction

    _create("j1", segments=3)
    assert jobs.mark_segment_done("j1", 0, {"wall_s": 1.0, "guard_px": 3000.0, "guard_recomputed_px": 0.0}, 4)
    assert jobs.mark_segment_done("j1", 1, {"wall_s": 1.0, "guard_px": 1000.0, "guard_recomputed_px": 1000.0}, 4)
    assert not jobs.mark_segment_done("j1", 1, {"guard_px": 1000.0, "guard_recomputed_px": 1000.0}, 4)  # duplicate
    job = jobs.get_job("j1")
    assert job is not None and recomputed_fraction(job.segment_totals) == 0.25
    _create("j2", segments=1)
    assert jobs.mark_segment_done("j2", 0, {"wall_s": 1.0}, 4)  # fp32: no guard counters at all
    job = jobs.get_job("j2")
    assert job is not None and recomputed_fraction(job.segment_totals) is None


def test_progress_of_running_segments_counts_until_they_finish(resources: Resources) -> None:
    _create("jp", segments=2)
    assert jobs.record_segment_progress("jp", 0, 4)
    assert jobs.record_segment_progress("jp", 1, 3)
    job = jobs.get_job("jp")
    assert job is not None and job.segment_progress == {0: 4, 1: 3} and job.frames_done == 7
    assert jobs.mark_segment_done("jp", 0, {"wall_s": 1.0}, 10)
    assert not jobs.record_segment_progress("jp", 0, 6)  # a counted segment's progress is frozen
    job = jobs.get_job("jp")
    assert job is not None and job.frames_done == 10 + 3
    assert jobs.fail_job("jp", CorruptInputError("bad"))
    assert not jobs.record_segment_progress("jp", 1, 5)  # a stopped job takes no more progress


def test_concurrent_duplicates_are_counted_once(resources: Resources) -> None:
    """16 threads deliver 4 segments 4 times each, all at once: each segment counted exactly once."""
    _create("j1", segments=6)
    results: list[bool] = []
    lock = threading.Lock()
    start = threading.Barrier(16)

    def deliver(index: int) -> None:
        start.wait()
        ok = jobs.mark_segment_done("j1", index, {"wall_s": 1.0}, 1)
        with lock:
            results.append(ok)

    threads = [threading.Thread(target=deliver, args=(i % 4,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 12 + [True] * 4
    job = jobs.get_job("j1")
    assert job is not None and job.done == {0, 1, 2, 3} and job.remaining == 2
    assert job.segment_totals["wall_s"] == 4.0 and job.segment_totals["frames"] == 4


def test_failed_is_terminal_and_stops_counting(resources: Resources) -> None:
    _create("j1", segments=2)
    assert jobs.record_segment_error("j1", 1, 2, TransientError("throttled"))
    assert jobs.fail_job("j1", CorruptInputError("frame 12 is corrupt"), segment=1)
    assert not jobs.fail_job("j1", CorruptInputError("again"))
    assert not jobs.mark_segment_done("j1", 0, {}, 1)
    job = jobs.get_job("j1")
    assert job is not None and job.status == jobs.FAILED
    assert job.error == {"code": "corrupt_input", "reason": "frame 12 is corrupt", "segment": 1}
    assert job.segment_errors[1]["attempts"] == 2 and job.segment_errors[1]["error"] == "throttled"
    assert job.remaining == 2 and job.done == set()


def test_lease_is_exclusive_retakable_and_completes_once(resources: Resources) -> None:
    _create("j1", segments=1)
    assert not jobs.acquire_assembly_lease("j1", "a", lease_s=600)  # segments still missing
    assert jobs.mark_segment_done("j1", 0, {}, 1)
    assert jobs.acquire_assembly_lease("j1", "a", lease_s=600)
    assert not jobs.acquire_assembly_lease("j1", "b", lease_s=600)  # live lease held by a
    assert jobs.acquire_assembly_lease("j1", "a", lease_s=600)  # a retry of the same owner retakes it
    assert jobs.release_assembly_lease("j1", "a")
    assert jobs.acquire_assembly_lease("j1", "b", lease_s=-1)  # b takes it; already expired
    assert jobs.acquire_assembly_lease("j1", "c", lease_s=600)  # expired -> c retakes
    assert not jobs.complete_job("j1", "b", {"bucket": "o", "key": "k"})  # b lost the lease
    assert jobs.complete_job("j1", "c", {"bucket": "o", "key": "k"}, {"assembly_s": 1.25})
    assert not jobs.acquire_assembly_lease("j1", "d", lease_s=-1)  # COMPLETE: never assembled again
    assert not jobs.fail_job("j1", CorruptInputError("late"))
    job = jobs.get_job("j1")
    assert job is not None and job.status == jobs.COMPLETE and job.output == {"bucket": "o", "key": "k"}
    assert job.timings["assembly_s"] == 1.25 and job.lease_owner is None


def test_mark_processing_only_from_queued(resources: Resources) -> None:
    _create("j1")
    assert jobs.mark_processing("j1", {"enqueue_s": 0.5})
    assert not jobs.mark_processing("j1")
    job = jobs.get_job("j1")
    assert job is not None and job.status == jobs.PROCESSING and job.timings == {"enqueue_s": 0.5}


def test_redrive_reopens_only_a_job_failed_for_a_dead_letter(resources: Resources) -> None:
    _create("j1", segments=3)
    assert jobs.mark_processing("j1")
    assert jobs.mark_segment_done("j1", 0, {}, 1)
    assert jobs.record_segment_error("j1", 1, 5, TransientError("GPU fell off"), max_attempts=5)
    assert jobs.fail_job("j1", DeadLetteredError("segment 1 of 3 failed 5 times: GPU fell off"), segment=1)
    assert not jobs.mark_segment_done("j1", 2, {}, 1)  # FAILED stops counting, dead letter or not
    assert jobs.reopen_job("j1", (1,))
    assert not jobs.reopen_job("j1", (1,))  # once: it is PROCESSING now
    job = jobs.get_job("j1")
    assert job is not None and job.status == jobs.PROCESSING and job.error is None and job.completed_at is None
    assert job.segment_errors == {} and job.done == {0} and job.remaining == 2  # fresh attempts, counts kept
    assert jobs.mark_segment_done("j1", 1, {}, 1) and jobs.mark_segment_done("j1", 2, {}, 1)
    # a permanent failure is final: no redrive reopens it
    _create("j2", segments=2)
    assert jobs.fail_job("j2", CorruptInputError("frame 12 is corrupt"), segment=1)
    assert not jobs.reopen_job("j2", (1,))
    assert jobs.get_job("j2").status == jobs.FAILED  # type: ignore[union-attr]


def test_a_queued_job_replaces_only_a_dead_lettered_ingest(resources: Resources) -> None:
    def item(job_id: str, status: str, error: dict[str, str] | None = None) -> dict[str, object]:
        return jobs.new_job_item(job_id=job_id, status=status, input_ref=INPUT, now=1.0, ttl_s=60, error=error)

    assert jobs.create_job(item("j1", jobs.FAILED, {"code": jobs.DEAD_LETTERED, "reason": "ingest failed 5 times"}))
    assert not jobs.create_job(item("j1", jobs.FAILED, {"code": "x", "reason": "y"}))  # FAILED -> FAILED: no
    assert jobs.create_job(item("j1", jobs.QUEUED))  # FAILED -> QUEUED: the redriven event starts over
    assert not jobs.create_job(item("j1", jobs.QUEUED))  # and only once
    assert jobs.get_job("j1").status == jobs.QUEUED  # type: ignore[union-attr]
    assert jobs.create_job(item("j2", jobs.FAILED, {"code": "not_a_video", "reason": "not a video"}))
    assert not jobs.create_job(item("j2", jobs.QUEUED))  # a permanent failure is never replaced
    # nor a job whose *segment* dead-lettered: a late duplicate S3 event must not wipe its finished segments
    assert jobs.create_job(item("j3", jobs.FAILED, {"code": jobs.DEAD_LETTERED, "reason": "seg", "segment": 2}))
    assert not jobs.create_job(item("j3", jobs.QUEUED))


@pytest.mark.parametrize("status", [jobs.FAILED])
def test_job_to_dict_is_json(resources: Resources, status: str) -> None:
    import json

    item = jobs.new_job_item(
        job_id="j2",
        status=status,
        input_ref=INPUT,
        now=1.0,
        ttl_s=60,
        error={"code": "not_a_video", "reason": "not a video"},
    )
    jobs.create_job(item)
    job = jobs.get_job("j2")
    assert job is not None
    assert json.loads(json.dumps(job.to_dict()))["error"]["code"] == "not_a_video"


# --- the state machine --------------------------------------------------------------------------------------
def _statuses_in(update: jobs.Update) -> set[str]:
    return {value for name, value in update.values.items() if name.startswith(":st")}


def test_the_listed_transitions_are_the_whole_state_machine() -> None:
    S = jobs.Status
    assert set(jobs.TRANSITIONS) == {
        (S.QUEUED, S.PROCESSING),
        (S.QUEUED, S.ASSEMBLING),
        (S.PROCESSING, S.ASSEMBLING),
        (S.ASSEMBLING, S.ASSEMBLING),
        (S.ASSEMBLING, S.COMPLETE),
        (S.QUEUED, S.FAILED),
        (S.PROCESSING, S.FAILED),
        (S.ASSEMBLING, S.FAILED),
        (S.FAILED, S.PROCESSING),  # `vsr redrive`, only for a job FAILED because a segment dead-lettered
        (S.FAILED, S.QUEUED),  # a redriven ingest event, only for a job FAILED because its ingest dead-lettered
    }
    assert not any(jobs.allowed(S.COMPLETE, target) for target in S)  # nothing leaves COMPLETE
    assert not jobs.allowed(S.FAILED, S.ASSEMBLING) and not jobs.allowed(S.FAILED, S.COMPLETE)
    assert not jobs.allowed(S.PROCESSING, S.QUEUED) and not jobs.allowed(S.QUEUED, S.COMPLETE)


def test_each_builder_admits_exactly_the_listed_sources_of_its_target() -> None:
    S = jobs.Status
    builders = [
        (S.PROCESSING, jobs.mark_processing_update(1.0, {})),
        (S.PROCESSING, jobs.reopen_update((3,), 1.0)),
        (S.QUEUED, jobs.create_condition()),
        (S.ASSEMBLING, jobs.lease_update("a", 1.0, 60)),
        (S.COMPLETE, jobs.complete_update("a", {"key": "k"}, {}, 1.0)),
        (S.FAILED, jobs.fail_update({"code": "x", "reason": "y"}, 1.0)),
    ]
    for target in {target for target, _ in builders}:  # together the builders of a target admit its sources
        admitted = set().union(*(_statuses_in(update) for t, update in builders if t == target))
        assert admitted == set(jobs.sources_of(target)), target
    # each move out of FAILED is guarded by the dead-letter code: a permanent failure stays FAILED
    for update in (jobs.reopen_update((3,), 1.0), jobs.create_condition()):
        assert "#error.#code = :dead" in (update.condition or "") and update.values[":dead"] == jobs.DEAD_LETTERED
    # counting and progress never move the status, and only while the job runs
    for update in (jobs.segment_done_update(0, {}, 1, 1.0), jobs.segment_progress_update(0, 1, 1.0)):
        assert _statuses_in(update) == {S.QUEUED, S.PROCESSING}
        assert "#status =" not in update.update
    # the quality check is recorded on a COMPLETE job and leaves it COMPLETE
    quality = jobs.quality_update(1.1, "k.preview.png", 1.0)
    assert _statuses_in(quality) == {S.COMPLETE} and "#status =" not in quality.update


def test_status_is_a_string_on_the_wire() -> None:
    item = jobs.new_job_item(job_id="j", status=jobs.QUEUED, input_ref={}, now=1.0, ttl_s=10)
    assert jobs.serialize(item)["status"] == {"S": "QUEUED"}
    assert jobs.Job.from_item(jobs.serialize(item)).status == jobs.Status.QUEUED == "QUEUED"
