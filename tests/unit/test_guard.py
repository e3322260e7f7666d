"""The int8 saturation guard's run-time decisions (vsr.guard): which rectangles to recompute in fp32."""

from __future__ import annotations

import numpy as np

from vsr.guard import GuardSpec, GuardStats, recomputed_fraction, regions_to_recompute, spec_from_metadata

SPEC = GuardSpec(cell=16, radius=20, max_clipped_channels=64)


def covered(regions: list, height: int, width: int) -> np.ndarray:
    mask = np.zeros((height, width), int)
    for r in regions:
        mask[r.y0 : r.y1, r.x0 : r.x1] += 1
    return mask


def test_no_cell_over_the_threshold_recomputes_nothing() -> None:
    counts = np.full((1, 1, 10, 20), 64.0)  # at the threshold, not over it
    assert regions_to_recompute(counts, SPEC, 160, 320) == []


def test_a_clipped_cell_is_recomputed_with_its_receptive_field_and_nothing_far_away() -> None:
    counts = np.zeros((10, 20))
    counts[4, 7] = 65
    regions = regions_to_recompute(counts, SPEC, 160, 320)
    mask = covered(regions, 160, 320)
    # every output pixel within `radius` of the clipped cell [64, 80) x [112, 128) comes from fp32
    assert mask[64 - 20 : 80 + 20, 112 - 20 : 128 + 20].all()
    # dilation by ceil(20 / 16) = 2 cells: nothing beyond
    assert not mask[: 64 - 32].any() and not mask[80 + 32 :].any()
    assert not mask[:, : 112 - 32].any() and not mask[:, 128 + 32 :].any()


def test_regions_are_clipped_to_the_window_and_never_overlap() -> None:
    counts = np.zeros((3, 5))  # a 40 x 70 window: the last cells are partial
    counts[0, 0] = counts[2, 4] = counts[1, 2] = 500
    regions = regions_to_recompute(counts, SPEC, 40, 70)
    mask = covered(regions, 40, 70)
    assert mask.max() == 1  # merged where dilation made them touch: no pixel recomputed twice
    assert all(0 <= r.y0 < r.y1 <= 40 and 0 <= r.x0 < r.x1 <= 70 for r in regions)


def test_separate_clusters_stay_separate_regions() -> None:
    counts = np.zeros((20, 40))
    counts[2, 2] = counts[17, 37] = 100
    regions = regions_to_recompute(counts, SPEC, 320, 640)
    assert len(regions) == 2
    assert sum(r.pixels for r in regions) < 0.1 * 320 * 640


def test_spec_comes_from_model_metadata_only_for_a_guarded_model() -> None:
    assert spec_from_metadata({}, 64) is None
    assert spec_from_metadata({"guard_cell": "16", "guard_radius": "20"}, 32) == GuardSpec(16, 20, 32.0)


def test_job_fraction_is_pixel_weighted_and_absent_without_a_guard() -> None:
    stats = GuardStats()
    stats.add(1000, 0, 0)
    stats.add(3000, 1000, 2)
    assert stats.fraction == 0.25 and stats.regions == 2
    assert recomputed_fraction({"guard_px": 4000.0, "guard_recomputed_px": 1000.0}) == 0.25
    assert recomputed_fraction({"decode_s": 1.0}) is None


def test_the_planner_counts_an_int8_model_at_its_cost_factor() -> None:
    from vsr.admission import model_cost
    from vsr.settings import Int8Guard, get_settings

    guard = Int8Guard(cell=16, max_clipped_channels=64, int8_relative_cost=0.5, expected_recompute_fraction=0.1)
    assert model_cost("m-int8", 2, 1000, "int8", guard).macs_per_input_pixel == 600
    assert model_cost("m", 2, 1000, "fp32", guard).macs_per_input_pixel == 1000
    configured = get_settings().int8_guard  # settings.json, the one source Terraform reads too
    assert 0 < configured.int8_relative_cost < 1 and 0 <= configured.expected_recompute_fraction <= 1
