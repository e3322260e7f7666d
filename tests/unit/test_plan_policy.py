"""The latency-first, cost-bounded segment policy and the pipeline simulation it predicts with (pure, no AWS)."""

from __future__ import annotations

import dataclasses

import pytest

from vsr.admission import ModelCost, cost_verdict, requested_strategy
from vsr.errors import BadRequestError
from vsr.planning import (
    PlanChoice,
    balanced_sizes,
    candidate_counts,
    choose,
    eta_s,
    job_cost_usd,
    plan_job,
    seconds_per_frame,
    split_segments,
)
from vsr.settings import get_settings
from vsr.simulation import allowed_concurrency, segment_seconds, simulate

ANIMEVIDEO_MACS = 619_200


def _settings_inputs(concurrency: int | None = None) -> dict:
    s = get_settings()
    capacity = s.worker_capacity
    if concurrency is not None:
        capacity = dataclasses.replace(capacity, concurrency=concurrency)
    return {
        "policy": s.segment_policy,
        "capacity": capacity,
        "latency": s.latency,
        "pricing": s.pricing,
        "sizes": s.function_sizes,
    }


def _spf(width: int, height: int) -> float:
    capacity = get_settings().worker_capacity
    return seconds_per_frame(
        width,
        height,
        macs_per_input_pixel=ANIMEVIDEO_MACS,
        gflops_per_vcpu=capacity.gflops_per_vcpu,
        vcpus=capacity.vcpus,
    )


# --- simulation ----------------------------------------------------------------------------------------------
def test_one_segment_is_the_sum_of_its_stages() -> None:
    lat = get_settings().latency
    sim = simulate([100], seconds_per_frame=0.5, concurrency=20, latency=lat)
    ingest_done = lat.s3_event_s + lat.sqs_poll_s + lat.ingest_cold_start_s + lat.probe_s + lat.enqueue_s_per_segment
    worker = lat.worker_cold_start_s + segment_seconds(100, 0.5, lat)
    assembly = lat.assembly_cold_start_s + lat.assembly_fixed_s + 100 * lat.assembly_s_per_frame
    assert sim.ingest_done_s == pytest.approx(ingest_done)
    assert sim.wall_s == pytest.approx(ingest_done + lat.sqs_poll_s + worker + lat.stream_s + assembly)
    assert sim.worker_billed_s == pytest.approx(worker)
    assert (sim.invocations, sim.cold_starts) == (1, 1)


def test_segments_beyond_the_concurrency_wait_and_reuse_warm_containers() -> None:
    lat = get_settings().latency
    one = simulate([10], seconds_per_frame=1.0, concurrency=2, latency=lat)
    four = simulate([10] * 4, seconds_per_frame=1.0, concurrency=2, latency=lat)
    assert four.cold_starts == 2  # two containers, each reused once
    second_wave = lat.worker_warm_start_s + segment_seconds(10, 1.0, lat)
    after_ingest = four.workers_done_s - four.ingest_done_s  # ingest sends 3 more messages for four segments
    assert after_ingest == pytest.approx(one.workers_done_s - one.ingest_done_s + second_wave)


def test_warm_containers_skip_the_cold_start() -> None:
    lat = get_settings().latency
    cold = simulate([10] * 3, seconds_per_frame=1.0, concurrency=3, latency=lat)
    warm = simulate([10] * 3, seconds_per_frame=1.0, concurrency=3, latency=lat, warm_containers=3, warm_functions=True)
    assert warm.cold_starts == 0 and cold.cold_starts == 3
    assert warm.wall_s < cold.wall_s
    assert cold.worker_billed_s - warm.worker_billed_s == pytest.approx(
        3 * (lat.worker_cold_start_s - lat.worker_warm_start_s)
    )


def test_event_source_scales_out_gradually() -> None:
    lat = dataclasses.replace(get_settings().latency, scaling_initial_concurrency=5, scaling_per_minute=60)
    assert allowed_concurrency(0.0, 100, lat) == 5
    assert allowed_concurrency(10.0, 100, lat) == 15
    assert allowed_concurrency(1e6, 100, lat) == 100
    fast = dataclasses.replace(lat, scaling_per_minute=6000)
    slow_start = simulate([10] * 40, seconds_per_frame=1.0, concurrency=40, latency=lat)
    fast_start = simulate([10] * 40, seconds_per_frame=1.0, concurrency=40, latency=fast)
    assert slow_start.wall_s > fast_start.wall_s


def test_simulation_refuses_nonsense() -> None:
    lat = get_settings().latency
    with pytest.raises(ValueError):
        simulate([1], seconds_per_frame=1.0, concurrency=0, latency=lat)


# --- policy --------------------------------------------------------------------------------------------------
def test_balanced_split_covers_every_frame_once() -> None:
    assert balanced_sizes(10, 3) == [4, 3, 3]
    segments = split_segments(list(range(0, 100, 10)), 3, context_frames=2)
    assert [s.frame_count for s in segments] == [4, 3, 3]
    assert [s.context_before for s in segments] == [0, 2, 2]
    with pytest.raises(ValueError):
        split_segments([0, 1], 3)


def test_candidates_run_from_the_timeout_bound_to_the_concurrency_and_respect_the_floor() -> None:
    assert candidate_counts(250, 226, 4, 20) == list(range(2, 21))
    assert candidate_counts(10, 226, 4, 20) == [1, 2]  # never below 4 frames a segment
    assert candidate_counts(3, 226, 4, 20) == [1]
    # past one wave, fill the last wave of workers
    assert candidate_counts(10_000, 200, 4, 20) == list(range(50, 61))
    many = candidate_counts(100_000, 100, 4, 1000)
    assert many[0] == 1000 and many[-1] == 1000
    big = candidate_counts(100_000, 1000, 4, 1000)
    assert big[0] == 100 and big[-1] == 1000 and len(big) <= 200


def _choice(segments: int, wall: float, cost: float) -> PlanChoice:
    return PlanChoice("", "arm64", 20, segments, 1, wall, cost, 1.0)


def test_choose_by_strategy() -> None:
    options = [_choice(1, 400.0, 1.00), _choice(5, 100.0, 1.05), _choice(10, 60.0, 1.09), _choice(20, 40.0, 1.30)]
    assert choose(options, "cost", 0.10).segments == 1
    assert choose(options, "latency", 0.10).segments == 20
    assert choose(options, "default", 0.10).segments == 10
    assert choose(options, "default", 0.0).segments == 1
    with pytest.raises(ValueError):
        choose(options, "fastest", 0.1)  # type: ignore[arg-type]


def test_a_short_clip_is_cut_for_latency_within_the_cost_bound() -> None:
    """10 s 640x360 25 fps, 20 workers, arm64, cold (the issue's case; README: Plan has the numbers)."""
    s = get_settings()
    plan = plan_job(
        list(range(250)),
        seconds_per_frame=_spf(640, 360),
        output_mpix_per_frame=1280 * 720 / 1e6,
        assembly=s.assembly_work,
        **_settings_inputs(),
    )
    default, cheapest, fastest = plan.options["default"], plan.options["cost"], plan.options["latency"]
    assert default.concurrency == 20 and default.arch == "arm64"
    assert default.predicted_cost_usd <= 1.10 * cheapest.predicted_cost_usd
    assert cheapest.segments < default.segments <= fastest.segments <= 20
    assert default.predicted_wall_s < cheapest.predicted_wall_s / 4  # minutes down to about one
    assert default.predicted_wall_s <= 60.0  # the near-real-time target, within the 10% bound
    assert fastest.predicted_wall_s <= default.predicted_wall_s
    assert plan.chosen == default
    assert sum(s.frame_count for s in plan.segments) == 250 and len(plan.segments) == default.segments


def test_the_quality_check_is_billed_but_does_not_delay_the_output() -> None:
    s = get_settings()
    lat, work = s.latency, s.assembly_work
    plain = simulate([50] * 4, seconds_per_frame=1.0, concurrency=4, latency=lat, output_mpix_per_frame=1.0)
    checked = simulate(
        [50] * 4, seconds_per_frame=1.0, concurrency=4, latency=lat, output_mpix_per_frame=1.0, assembly=work
    )
    pairs = 3 + work.quality_sample_pairs  # every join pair plus the sampled ones
    quality = min(work.quality_budget_s, pairs * work.quality_s_per_pair_mpix)
    reencode = 200 * work.reencode_s_per_output_mpix
    remux = 200 * lat.assembly_s_per_frame
    assert checked.wall_s == pytest.approx(plain.wall_s - remux + reencode)
    assert checked.assembly_billed_s == pytest.approx(plain.assembly_billed_s - remux + reencode + quality)
    huge = simulate(
        [50], seconds_per_frame=1.0, concurrency=1, latency=lat, output_mpix_per_frame=1e6, assembly=work
    )  # past the re-encode limit: remuxed
    assert huge.assembly_billed_s < 50 * 1e6 * work.reencode_s_per_output_mpix


def test_one_worker_gets_the_fewest_segments() -> None:
    plan = plan_job(list(range(250)), seconds_per_frame=_spf(640, 272), **_settings_inputs(concurrency=1))
    assert {o.segments for o in plan.options.values()} == {1}


def test_more_workers_never_predict_a_slower_job() -> None:
    walls = [
        plan_job(list(range(2000)), seconds_per_frame=_spf(640, 360), **_settings_inputs(concurrency=c))
        .options["latency"]
        .predicted_wall_s
        for c in (1, 5, 20, 100)
    ]
    assert walls == sorted(walls, reverse=True) and walls[-1] < walls[0] / 10


def test_cost_counts_every_billed_second_at_the_architecture_price() -> None:
    s = get_settings()
    sim = simulate([100] * 4, seconds_per_frame=1.0, concurrency=4, latency=s.latency)
    arm = job_cost_usd(sim, s.function_sizes, s.pricing)
    x86 = job_cost_usd(sim, dataclasses.replace(s.function_sizes, architecture="x86_64"), s.pricing)
    gb_s = (
        sim.ingest_billed_s * s.function("ingest").memory_mb
        + sim.worker_billed_s * s.function("worker").memory_mb
        + sim.assembly_billed_s * s.function("assemble").memory_mb
    ) / 1024
    assert arm == pytest.approx(gb_s * s.pricing.lambda_gb_s["arm64"], rel=0.05)  # requests are small
    assert x86 > arm
    with pytest.raises(ValueError):
        job_cost_usd(sim, dataclasses.replace(s.function_sizes, architecture="sparc"), s.pricing)


# --- per-upload requests and the cost guard --------------------------------------------------------------------
def test_requested_strategy_from_metadata() -> None:
    assert requested_strategy(None) == "default"
    assert requested_strategy({}) == "default"
    assert requested_strategy({"vsr-plan": "cost"}) == "cost"
    assert requested_strategy({"VSR-Plan": " Latency "}) == "latency"
    with pytest.raises(BadRequestError, match="vsr-plan='fast'"):
        requested_strategy({"vsr-plan": "fast"})
    with pytest.raises(BadRequestError):
        requested_strategy({"vsr-plan": "default"})  # not a user's choice: it is what no metadata means


def test_cost_guard_names_both_figures_and_how_to_raise_the_limit() -> None:
    s = get_settings()
    uhd = list(range(30 * 60 * 25))  # 30 minutes of 3840x2160 at 25 fps, x2
    plan = plan_job(uhd, seconds_per_frame=_spf(3840, 2160), **_settings_inputs()).chosen
    assert plan.predicted_cost_usd > 100  # hundreds of dollars of Lambda time
    reason = cost_verdict(plan, s.limits)
    assert reason is not None
    assert f"${plan.predicted_cost_usd:.2f}" in reason and f"${s.limits.max_job_cost_usd:.2f}" in reason
    assert "limits.max_job_cost_usd" in reason
    small = plan_job(list(range(250)), seconds_per_frame=_spf(640, 360), **_settings_inputs()).chosen
    assert cost_verdict(small, s.limits) is None


def test_model_cost_is_plain_values() -> None:
    cost = ModelCost(name="m", scale=2, macs_per_input_pixel=1.0)
    assert dataclasses.asdict(cost) == {"name": "m", "scale": 2, "macs_per_input_pixel": 1.0}


# --- ETA ---------------------------------------------------------------------------------------------------------
def test_eta_starts_from_the_plan_and_ends_on_the_measured_pace() -> None:
    assert eta_s(predicted_wall_s=60, elapsed_s=10, frames_done=0, frames_total=100) == pytest.approx(50)
    assert eta_s(predicted_wall_s=60, elapsed_s=70, frames_done=0, frames_total=100) is None  # behind plan
    # half done after 40 s: half the plan's 20 s left, half the measured pace's 40 s
    assert eta_s(predicted_wall_s=60, elapsed_s=40, frames_done=50, frames_total=100) == pytest.approx(30)
    assert eta_s(predicted_wall_s=60, elapsed_s=80, frames_done=100, frames_total=100) == pytest.approx(0)
    assert eta_s(predicted_wall_s=60, elapsed_s=10, frames_done=5, frames_total=0) is None


def test_the_quality_check_runs_on_the_assemblers_vcpus() -> None:
    """Billed check time per pair: one thread's CPU time over the threads' measured speed-up (bench-check)."""
    s = get_settings()
    lat, work = s.latency, s.assembly_work
    vcpus = s.function_vcpus("assemble")
    speedup = 1 + (vcpus - 1) * lat.quality_parallel_efficiency
    assert work.quality_s_per_pair_mpix == pytest.approx(lat.quality_cpu_s_per_pair_mpix / speedup)
    assert work.quality_s_per_pair_mpix < lat.quality_cpu_s_per_pair_mpix


def test_stabilisation_is_billed_per_upscaled_frame_and_context() -> None:
    """model.temporal = flow: every frame pays the stabiliser, and every segment but the first upscales its
    context frames too; the planner sees both (fewer segments pay off less)."""
    lat = get_settings().latency
    plain = simulate([50, 50], seconds_per_frame=1.0, concurrency=2, latency=lat)
    steady = simulate(
        [50, 50], seconds_per_frame=1.0, concurrency=2, latency=lat, context_frames=2, temporal_s_per_frame=0.25
    )
    extra_first = 50 * 0.25
    extra_second = segment_seconds(52, 1.0, lat) - segment_seconds(50, 1.0, lat) + 52 * 0.25
    assert steady.worker_billed_s == pytest.approx(plain.worker_billed_s + extra_first + extra_second)
    assert steady.wall_s == pytest.approx(plain.wall_s + extra_second)  # the second segment is the last to end

    kwargs = {"seconds_per_frame": _spf(640, 360), **_settings_inputs()}
    off = plan_job(list(range(250)), **kwargs)
    on = plan_job(list(range(250)), temporal_s_per_frame=0.4, **kwargs)
    assert on.options["cost"].predicted_cost_usd > off.options["cost"].predicted_cost_usd
    assert on.chosen.predicted_wall_s > off.chosen.predicted_wall_s
    assert sum(s.frame_count for s in on.segments) == 250
