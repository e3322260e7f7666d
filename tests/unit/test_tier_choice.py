"""The planner's choice between the Lambda tier and the GPU fleet (pure: settings values, synthetic probes)."""

from __future__ import annotations

import pytest

from tests.support.probes import video
from vsr.admission import ModelCost, check_cost, plan_for, requested_tier
from vsr.errors import BadRequestError, CostLimitError
from vsr.fleet import GpuFleet, simulate_fleet
from vsr.settings import Settings, deep_merge, get_settings

MODEL = ModelCost(name="realesr-animevideov3-x2", scale=2, macs_per_input_pixel=619_200)


def with_fleet(enabled: bool = True, **gpu: object) -> Settings:
    return Settings(raw=deep_merge(get_settings().raw, {"gpu": {"enabled": enabled, **gpu}}))


def test_a_30_minute_480p_episode_goes_to_the_gpu_fleet_at_a_tenth_of_the_lambda_cost_or_less() -> None:
    settings = with_fleet()
    info = video(854, 480, 1800)
    plan = plan_for(info, MODEL, settings)
    lambda_cheapest = plan.tier_options["lambda"]["cost"]
    assert plan.chosen.tier == "gpu"
    assert plan.chosen.instance_type == settings.gpu.instance.name
    assert plan.chosen.predicted_cost_usd * 10 <= lambda_cheapest.predicted_cost_usd
    # GPU segments are minutes of work each, not Lambda's seconds; every frame is still planned exactly once
    assert plan.chosen.frames_per_segment > 10 * lambda_cheapest.frames_per_segment
    assert sum(s.frame_count for s in plan.segments) == info.frame_count
    check_cost(plan.chosen, settings.limits)  # within the cost limit on the fleet; refused on Lambda alone
    with pytest.raises(CostLimitError, match="GPU tier"):
        check_cost(plan_for(info, MODEL, get_settings()).chosen, settings.limits)


def test_a_10_second_clip_stays_on_lambda_within_a_minute_even_with_the_fleet_enabled() -> None:
    plan = plan_for(video(640, 360, 10), MODEL, with_fleet())
    assert plan.chosen.tier == "lambda"
    assert plan.chosen.predicted_wall_s <= 60
    # the fleet was considered: from zero its boot alone is minutes, and its idle tail costs more than Lambda
    gpu = plan.tier_options["gpu"]["default"]
    assert gpu.predicted_wall_s > get_settings().gpu.boot_s
    assert gpu.predicted_cost_usd > plan.chosen.predicted_cost_usd


def test_without_the_fleet_only_lambda_is_planned() -> None:
    plan = plan_for(video(854, 480, 60), MODEL, get_settings())
    assert set(plan.tier_options) == {"lambda"}
    assert plan.chosen.tier == "lambda"


def test_a_forced_tier_is_planned_alone() -> None:
    settings = with_fleet()
    forced = plan_for(video(640, 360, 10), MODEL, settings, tier="gpu")
    assert set(forced.tier_options) == {"gpu"} and forced.chosen.tier == "gpu"
    assert plan_for(video(854, 480, 1800), MODEL, settings, tier="lambda").chosen.tier == "lambda"


def test_tier_metadata() -> None:
    both = ("lambda", "gpu")
    assert requested_tier(None, both) is None
    assert requested_tier({"vsr-tier": " GPU "}, both) == "gpu"
    assert requested_tier({"Vsr-Tier": "lambda"}, ("lambda",)) == "lambda"
    with pytest.raises(BadRequestError, match="vsr-tier='tpu' is not understood"):
        requested_tier({"vsr-tier": "tpu"}, both)
    with pytest.raises(BadRequestError, match="does not have"):
        requested_tier({"vsr-tier": "gpu"}, ("lambda",))


def test_fleet_bills_every_instance_from_launch_to_scale_in_with_the_minimum() -> None:
    settings = with_fleet(scale_in_idle_s=300, min_billed_s=60)
    fleet = GpuFleet.for_job(
        settings.gpu, width=640, height=360, scale=2, macs_per_input_pixel=MODEL.macs_per_input_pixel, min_frames=4
    )
    run = simulate_fleet([100, 100, 100], fleet, settings.latency)
    assert run.instances == 3  # one task (and instance) per segment up to the fleet's maximum
    launched = run.simulation.first_segment_start_s + fleet.scale_out_s
    expected = 3 * (run.simulation.workers_done_s + 300 - launched)
    assert run.instance_billed_s == pytest.approx(expected)
    one = simulate_fleet([4], fleet, settings.latency)
    assert one.instance_billed_s >= settings.gpu.scale_in_idle_s  # the idle tail before the fleet is back at zero


def test_gpu_segments_fit_the_work_target_and_the_disk() -> None:
    tier = with_fleet().gpu
    small = GpuFleet.for_job(tier, width=854, height=480, scale=2, macs_per_input_pixel=619_200, min_frames=4)
    assert small.max_frames * small.seconds_per_frame <= tier.segment_work_s
    tiny_disk = with_fleet(disk_gb=1).gpu
    big = GpuFleet.for_job(tiny_disk, width=1920, height=1080, scale=2, macs_per_input_pixel=619_200, min_frames=4)
    frame_bytes = 3840 * 2160 * tiny_disk.segment_bytes_per_output_pixel
    assert big.max_frames * frame_bytes <= tiny_disk.disk_bytes * tiny_disk.disk_budget_fraction


def test_the_gpu_throughput_is_the_settings_figure() -> None:
    tier = with_fleet().gpu
    flops = 2 * 619_200 * 854 * 480
    assert tier.seconds_per_frame(854, 480, 619_200) == pytest.approx(flops / (tier.instance.effective_tflops * 1e12))
