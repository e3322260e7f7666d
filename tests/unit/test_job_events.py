"""Job event details (pure): the schema every event must match, milestones crossed exactly once."""

from __future__ import annotations

import json

import jsonschema
import pytest

from vsr.pipeline.jobs import notify
from vsr.pipeline.jobs.record import Job
from vsr.settings import CONFIG_DIR

SCHEMA = json.loads((CONFIG_DIR / "job_event.schema.json").read_text())


def _job(**changes: object) -> Job:
    base = Job(
        job_id="j1",
        status="PROCESSING",
        input={"bucket": "in", "key": "a b.mp4", "version_id": None, "size": 123},
        segment_count=8,
        done={0, 1},
        created_at=1000.0,
        plan={"tier": "gpu", "strategy": "default", "segments": 8, "predicted_wall_s": 60.0, "predicted_cost_usd": 0.1},
    )
    for key, value in changes.items():
        setattr(base, key, value)
    return base


def validate(body: dict) -> None:
    jsonschema.validate(body, SCHEMA)


def test_every_state_matches_the_schema() -> None:
    validate(notify.detail(_job(status="QUEUED", done=set(), plan={}), "ACCEPTED"))
    validate(notify.detail(_job(), "PROCESSING", milestone=25))
    done = _job(
        status="COMPLETE",
        done=set(range(8)),
        completed_at=1042.5,
        output={"bucket": "out", "key": "a b.upscaled-x2.mp4", "report_key": "r.json", "bytes": 99},
        segment_totals={"frames": 200},
    )
    complete = notify.detail(done, "COMPLETE")
    validate(complete)
    assert complete["output"]["frames"] == 200 and complete["plan"]["actual_wall_s"] == 42.5
    failed = notify.detail(_job(status="FAILED", error={"code": "bad_request", "reason": "no", "segment": 3}), "FAILED")
    validate(failed)
    assert failed["error"] == {"code": "bad_request", "reason": "no", "segment": 3}
    with pytest.raises(jsonschema.ValidationError):
        validate({**complete, "state": "DONE"})
    with pytest.raises(ValueError):
        notify.detail(_job(), "DONE")


@pytest.mark.parametrize("total", [1, 2, 3, 4, 5, 7, 8, 13, 100])
def test_each_milestone_is_crossed_by_exactly_one_count(total: int) -> None:
    crossed = [m for done in range(1, total + 1) for m in notify.crossed_milestones(done, total)]
    assert crossed == sorted(set(crossed))  # each once, in order
    # a milestone is announced when a job of enough segments reaches it before finishing (COMPLETE says 100%)
    assert set(crossed) == {m for m in notify.MILESTONES if any(100 * d / total >= m for d in range(1, total))}


def test_undelivered_events_never_raise_and_set_the_metric(monkeypatch: pytest.MonkeyPatch) -> None:
    logged: list[dict] = []

    def refuse(entries: list) -> None:
        raise notify.EventDeliveryError("bus down")

    monkeypatch.setattr(notify, "_put_events", refuse)
    monkeypatch.setattr(notify.log, "error", lambda event, **kw: logged.append({"event": event, **kw}))
    assert notify.emit(_job(), "PROCESSING", bus="default") is False
    (line,) = logged
    assert line[notify.UNDELIVERED_METRIC] == 1
    assert line["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Name"] == notify.UNDELIVERED_METRIC
    assert notify.emit(_job(), "PROCESSING", bus="") is False  # events off: nothing to do
    assert len(logged) == 1
