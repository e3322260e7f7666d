"""Pure parts of the local runtime: concurrency plan, SQS event shape, fault plans, overhead arithmetic."""

from __future__ import annotations

import datetime as dt
import io
import json
import re
import time

import pytest

from vsr.local import faults
from vsr.local.dispatch import _jsonable, sqs_record
from vsr.local.runtime import Outcome, Progress, cpu_sets, plan_concurrency, timings_summary
from vsr.pipeline import jobs
from vsr.settings import get_settings


def test_concurrency_gives_each_container_a_lambda_workers_vcpus_capped_by_reserved_concurrency() -> None:
    settings = get_settings()
    reserved = settings.worker_reserved_concurrency
    vcpus = settings.worker_vcpus()
    assert plan_concurrency(None, settings, cpus=2) == (1, 2)  # a 2-core laptop: one worker with both cores
    assert plan_concurrency(2, settings, cpus=2) == (2, 1)  # asked for two: one core each, no oversubscription
    assert plan_concurrency(4, settings, cpus=2) == (4, 1)  # more than the cores: shared round-robin
    big = round(vcpus * 3)
    assert plan_concurrency(None, settings, cpus=big) == (3, big // 3)
    assert plan_concurrency(reserved + 50, settings, cpus=2)[0] == reserved  # never above reserved concurrency
    assert plan_concurrency(None, settings, cpus=round(vcpus * (reserved + 5)))[0] == reserved


def test_cpu_sets_are_disjoint_when_they_fit_and_wrap_when_oversubscribed() -> None:
    assert cpu_sets(2, 1, [0, 1]) == [(0,), (1,)]
    assert cpu_sets(2, 2, [0, 1, 2, 3]) == [(0, 1), (2, 3)]
    assert cpu_sets(3, 1, [0, 1]) == [(0,), (1,), (0,)]


def test_sqs_record_has_the_lambda_shape() -> None:
    message = {
        "MessageId": "m-1",
        "ReceiptHandle": "rh",
        "Body": '{"v": 1}',
        "MD5OfBody": "x",
        "Attributes": {"ApproximateReceiveCount": "3", "SentTimestamp": "1"},
        "MessageAttributes": {"kind": {"DataType": "String", "StringValue": "seg"}},
    }
    record = sqs_record(message, "arn:aws:sqs:us-east-1:123456789012:q")
    assert record["messageId"] == "m-1" and record["receiptHandle"] == "rh" and record["body"] == '{"v": 1}'
    assert record["attributes"]["ApproximateReceiveCount"] == "3"
    assert record["eventSource"] == "aws:sqs" and record["eventSourceARN"].endswith(":q")
    assert record["messageAttributes"]["kind"]["stringValue"] == "seg"
    json.dumps(record)  # serialisable as Lambda would send it


def test_stream_records_become_json_like_lambda_sends_them() -> None:
    when = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    value = _jsonable({"ApproximateCreationDateTime": when, "B": b"\x00\x01", "L": ({"N": "1"},)})
    assert value == {"ApproximateCreationDateTime": when.timestamp(), "B": "AAE=", "L": [{"N": "1"}]}


def test_fault_plan_round_trip_and_matching() -> None:
    plan = faults.FaultPlan.from_dict(
        {
            "rules": [
                {"segment": 2, "action": "raise", "reason": "boom"},
                {"segment": 0, "action": "block", "attempts": [1]},
            ]
        }
    )
    assert faults.FaultPlan.from_dict(json.loads(plan.to_json())) == plan
    event = lambda index, attempt: {  # noqa: E731
        "Records": [
            {"body": json.dumps({"segment": {"index": index}}), "attributes": {"ApproximateReceiveCount": str(attempt)}}
        ]
    }
    assert faults._rule_for(plan, event(2, 7)).reason == "boom"  # every attempt
    assert faults._rule_for(plan, event(0, 1)).action == "block"
    assert faults._rule_for(plan, event(0, 2)) is None  # only the first delivery
    assert faults._rule_for(plan, event(1, 1)) is None
    with pytest.raises(ValueError):
        faults.FaultPlan.from_dict({"rules": [{"segment": 0, "action": "explode"}]})


def test_fault_rules_go_to_their_function_and_may_match_any_invocation() -> None:
    plan = faults.FaultPlan.from_dict(
        {
            "marker_dir": "/tmp/m",
            "rules": [
                {"segment": 1, "action": "raise"},
                {"function": "assemble", "target": "m:f", "action": "block", "once": True},
            ],
        }
    )
    worker, assemble = plan.for_function("worker"), plan.for_function("assemble")
    assert [r.segment for r in worker.rules] == [1] and plan.for_function("ingest") is None
    stream_event = {"Records": [{"eventName": "MODIFY", "dynamodb": {}}]}
    rule = faults._rule_for(assemble, stream_event)
    assert rule is not None and rule.once and rule.target == "m:f" and assemble.marker_dir == "/tmp/m"
    assert faults._rule_for(worker, stream_event) is None


def test_fault_install_patches_only_while_armed() -> None:
    class Engine:
        def upscale(self, x: int) -> int:
            return x * 2

    import sys
    import types

    module = types.ModuleType("fake_engine_for_faults")
    module.Engine = Engine
    sys.modules[module.__name__] = module
    try:
        plan = faults.FaultPlan.from_dict(
            {"target": "fake_engine_for_faults:Engine.upscale", "rules": [{"segment": 1, "action": "raise"}]}
        )
        faults.install(plan)
        handler = faults.wrap_handler(lambda event, context: Engine().upscale(3), plan)
        ok = {"Records": [{"body": json.dumps({"segment": {"index": 0}}), "attributes": {}}]}
        bad = {"Records": [{"body": json.dumps({"segment": {"index": 1}}), "attributes": {}}]}
        assert handler(ok, None) == 6
        with pytest.raises(faults.TransientError):
            handler(bad, None)
        assert Engine().upscale(3) == 6  # disarmed again after the invocation
    finally:
        del sys.modules[module.__name__]


def _job(**kw: object) -> jobs.Job:
    base = {"job_id": "j" * 32, "status": jobs.COMPLETE, "input": {}, "segment_count": 4}
    return jobs.Job(**{**base, **kw})  # type: ignore[arg-type]


def test_overhead_is_wall_minus_segment_processing_shared_by_parallel_workers() -> None:
    # decode, infer and encode overlap in threads: their sum (20 s) exceeds the pipeline's own wall (16 s)
    totals = {"decode_s": 2.0, "infer_s": 14.0, "encode_s": 4.0, "process_s": 16.0, "wall_s": 17.0, "frames": 24}
    job = _job(segment_totals=totals)
    summary = timings_summary(Outcome(job.job_id, job.status, job, None, wall_s=10.0), workers=2)
    assert summary["overhead_s"] == pytest.approx(10.0 - 16.0 / 2)
    assert summary["overhead_pct"] == pytest.approx(100 * 2.0 / 10.0, abs=0.01)
    one = timings_summary(Outcome(job.job_id, job.status, job, None, wall_s=18.0), workers=1)
    assert one["overhead_s"] == pytest.approx(2.0) and one["parallelism"] == 1
    single_segment = _job(segment_count=1, segment_totals=totals)
    assert timings_summary(Outcome("j", "COMPLETE", single_segment, None, wall_s=18.0), workers=4)["parallelism"] == 1


def test_progress_writes_one_line_per_change_when_not_a_terminal() -> None:
    stream = io.StringIO()
    progress = Progress(stream)
    progress(None)
    progress(_job(status=jobs.PROCESSING, done={0}))
    progress(_job(status=jobs.PROCESSING, done={0}))  # unchanged: no new line
    progress(_job(status=jobs.PROCESSING, done={0, 1}, segment_errors={3: {"attempts": 1}}))
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3
    assert "1/4 segments" in lines[1]
    assert lines[2].endswith("2/4 segments, retrying segment 3 (attempt 2): no reason recorded")


def test_progress_says_what_a_retrying_job_waits_for_instead_of_an_eta() -> None:
    stream = io.StringIO()
    progress = Progress(stream)
    error = {"attempts": 1, "max_attempts": 5, "next_at": time.time() + 30.4, "error": "TransientError: throttled"}
    waiting = _job(status=jobs.PROCESSING, done={0}, segment_errors={3: error}, plan={"predicted_wall_s": 1.0})
    progress(waiting)
    progress(waiting)  # the countdown moved (or not): no new line for it
    (line,) = stream.getvalue().splitlines()
    assert re.search(
        r"1/4 segments, retrying segment 3 \(attempt 2 of 5, next in (29|30) s\): TransientError: throttled$", line
    )
    assert "ETA" not in line


def test_progress_counts_frames_of_running_segments() -> None:
    stream = io.StringIO()
    running = _job(
        status=jobs.PROCESSING,
        done={0},
        probe={"frames": 40},
        segment_totals={"frames": 10},
        segment_progress={0: 10, 1: 4},
    )
    Progress(stream)(running)
    assert "[#######.............] 14/40 frames, 1/4 segments" in stream.getvalue()
