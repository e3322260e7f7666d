"""Feature-length films: limits per worker tier, and the fleet's plan for a 2-hour film (pure: synthetic probes)."""

from __future__ import annotations

import pytest

from tests.support.probes import video
from vsr import plan_command
from vsr.admission import ModelCost, admit
from vsr.errors import LimitExceededError
from vsr.settings import Settings, deep_merge, get_settings

MODEL = ModelCost(name="realesr-animevideov3-x2", scale=2, macs_per_input_pixel=619_200)
FILM = video(1920, 1080, 7200, fps=60, size_bytes=8_000_000_000)  # 2 hours, 1080p60, a typical 8 GB file


def settings_with(**overrides: object) -> Settings:
    return Settings(raw=deep_merge(get_settings().raw, overrides))


def with_fleet(**gpu: object) -> Settings:
    return settings_with(gpu={"enabled": True, **gpu})


def test_each_tier_has_its_limits_from_one_block_of_settings() -> None:
    settings = get_settings()
    lam, gpu = settings.limits_for("lambda"), settings.limits_for("gpu")
    assert lam == settings.limits
    raw_gpu = settings.raw["gpu"]["limits"]
    assert gpu.max_duration_s == raw_gpu["max_duration_s"] > lam.max_duration_s
    assert gpu.max_job_cost_usd == raw_gpu["max_job_cost_usd"] > lam.max_job_cost_usd
    assert gpu.max_output_pixels == lam.max_output_pixels  # not overridden: the common limit
    with pytest.raises(ValueError, match="unknown worker tier"):
        settings.limits_for("tpu")
    # before the probe only the size is known: the most permissive enabled tier decides
    assert settings.intake_limits() == lam
    assert with_fleet().intake_limits().max_input_bytes == gpu.max_input_bytes


def test_a_two_hour_1080p60_film_is_accepted_on_the_gpu_fleet_within_its_cost_limit() -> None:
    settings = with_fleet()
    admission = admit(FILM, MODEL, settings)
    chosen = admission.plan.chosen
    assert admission.accepted, admission.refusal
    assert chosen.tier == "gpu" and set(admission.plan.tier_options) == {"gpu"}  # Lambda's limits refuse it
    assert chosen.predicted_cost_usd <= settings.limits_for("gpu").max_job_cost_usd
    assert chosen.predicted_cost_usd > settings.limits_for("lambda").max_job_cost_usd  # why the tier has its own
    assert sum(s.frame_count for s in admission.plan.segments) == FILM.frame_count == 432_000
    assert chosen.concurrency == settings.gpu.max_tasks


def test_lambda_only_refuses_the_film_with_a_reason_that_names_the_gpu_tier() -> None:
    with pytest.raises(LimitExceededError) as refused:
        admit(FILM, MODEL, get_settings())
    reason = refused.value.reason
    assert "the file is 8.00 GB; the limit is 4.29 GB on Lambda" in reason  # an 8 GB file: its size first
    assert "gpu_fleet_enabled" in reason and "GPU tier" in reason
    small_file = video(1920, 1080, 7200, fps=60, size_bytes=3_000_000_000)
    with pytest.raises(LimitExceededError, match="the video lasts 7200 s; the limit is 1800 s on Lambda; the GPU"):
        admit(small_file, MODEL, get_settings())


def test_a_film_over_every_tier_limit_names_each_tier_reason() -> None:
    settings = with_fleet(limits={"max_duration_s": 3600})
    with pytest.raises(LimitExceededError) as refused:
        admit(video(1920, 1080, 7200, fps=60, size_bytes=3_000_000_000), MODEL, settings)
    reason = refused.value.reason
    assert "on Lambda, the video lasts 7200 s; the limit is 1800 s" in reason
    assert "on the GPU fleet, the video lasts 7200 s; the limit is 3600 s" in reason
    assert "gpu_fleet_enabled" not in reason  # it is enabled: nothing to advise


def test_over_the_chosen_tier_cost_limit_the_other_tier_within_its_own_is_taken() -> None:
    # a short clip: Lambda is the pooled choice, but over a (tiny) Lambda cost limit; the fleet's limit is not
    settings = settings_with(gpu={"enabled": True}, limits={"max_job_cost_usd": 0.000001})
    clip = video(640, 360, 10)
    assert admit(clip, MODEL, with_fleet()).plan.chosen.tier == "lambda"
    admission = admit(clip, MODEL, settings)
    assert admission.accepted and admission.plan.chosen.tier == "gpu"
    # no tier within its limit: refused, with the chosen tier's setting named
    refused = admit(
        clip,
        MODEL,
        settings_with(
            gpu={"enabled": True, "limits": {"max_job_cost_usd": 0.000001}}, limits={"max_job_cost_usd": 0.000001}
        ),
    )
    assert not refused.accepted and "max_job_cost_usd" in str(refused.refusal)


def test_the_film_plan_plays_the_fleet_from_zero_to_its_maximum_and_back() -> None:
    settings = with_fleet()
    admitted = plan_command.admissions(FILM, MODEL, settings)
    samples = plan_command.timeline(FILM, MODEL, admitted, settings)
    assert samples[0].at_s == 0 and samples[0].tasks == 0  # the fleet starts at zero
    assert samples[-1].tasks == 0 and samples[-1].busy == 0  # and scales back in
    assert max(s.tasks for s in samples) == settings.gpu.max_tasks
    assert max(s.busy for s in samples) == settings.gpu.max_tasks
    assert all(s.busy <= s.tasks for s in samples)
    # the first task works only after the alarm, the boot and the task start
    first_busy = next(s.at_s for s in samples if s.busy)
    assert first_busy >= settings.gpu.scale_out_s + settings.gpu.boot_s + settings.gpu.task_start_s
    table = plan_command.as_table(FILM, MODEL, admitted, settings)
    chosen = admitted["default"].plan.chosen
    assert f"chosen: GPU fleet ({settings.gpu.instance.name}), {chosen.segments} segments" in table
    assert "GPU fleet tasks over time" in table and "accepted" in table
    assert "assembly: fragmented, the output (predicted" in table
    data = plan_command.as_json(FILM, MODEL, admitted, settings)
    assert data["accepted"] and data["fleet_tasks"][0]["tasks"] == 0
    assert data["assembly"]["path"] == "fragmented" and data["assembly"]["predicted_bytes"] > 10 * 1024**3
    assert data["max_job_cost_usd"] == settings.limits_for("gpu").max_job_cost_usd


def test_a_lambda_plan_has_no_fleet_timeline() -> None:
    admitted = plan_command.admissions(video(640, 360, 10), MODEL, get_settings())
    assert plan_command.timeline(video(640, 360, 10), MODEL, admitted, get_settings()) == []
