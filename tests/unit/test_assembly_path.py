"""The two assembly paths: the output size prediction, the path admission picks, and the S3 parts of the
fragmented join (pure: plain values, synthetic probes)."""

from __future__ import annotations

import pytest

from tests.support.probes import video
from vsr.admission import ModelCost, admit
from vsr.assembly_path import (
    FASTSTART,
    FRAGMENTED,
    AssemblyCapacity,
    NoAssemblyPath,
    OutputModel,
    choose_path,
    fragmented_parts_bound,
    predict_output_bytes,
)
from vsr.errors import LimitExceededError
from vsr.pipeline.multipart import Piece, plan_parts
from vsr.settings import Settings, deep_merge, get_settings

MODEL = ModelCost(name="realesr-animevideov3-x2", scale=2, macs_per_input_pixel=619_200)
MIB = 1024**2


def test_the_prediction_is_frames_times_output_megapixels_times_the_rate_and_margin() -> None:
    model = OutputModel(bytes_per_output_mpix=50_000, margin=1.5)
    assert predict_output_bytes(1000, 8.2944, model) == pytest.approx(1000 * 8.2944 * 50_000 * 1.5, abs=1)
    assert predict_output_bytes(0, 8.2944, model) == 0


def test_small_outputs_keep_faststart_big_ones_go_fragmented_and_impossible_ones_are_refused() -> None:
    capacity = AssemblyCapacity(faststart_disk_bytes=10 * 10**9, faststart_copies=2)
    small = choose_path(4 * 10**9, 100, capacity)
    assert small.path == FASTSTART and "fits the assembler's 10.00 GB /tmp" in small.reason
    big = choose_path(6 * 10**9, 100, capacity)  # two copies of 6 GB do not fit 10 GB
    assert big.path == FRAGMENTED and "does not fit" in big.reason and big.predicted_bytes == 6 * 10**9
    with pytest.raises(NoAssemblyPath, match="10000 parts"):
        choose_path(6 * 10**9, 5000, capacity)
    with pytest.raises(NoAssemblyPath, match="largest object"):
        choose_path(6 * 10**12, 100, capacity)
    assert fragmented_parts_bound(4999) <= 10_000 < fragmented_parts_bound(5000)


def test_admission_records_the_path_a_two_hour_4k_master_needs() -> None:
    settings = Settings(raw=deep_merge(get_settings().raw, {"gpu": {"enabled": True}}))
    film = video(1920, 1080, 7200, fps=60, size_bytes=3_000_000_000)
    chosen = admit(film, MODEL, settings).plan.chosen
    rate = settings.output_model
    assert chosen.assembly == FRAGMENTED
    assert chosen.output_bytes == predict_output_bytes(432_000, 3840 * 2160 / 1e6, rate)
    assert chosen.output_bytes > 10 * 1024**3  # tens of GB: no assembler /tmp holds it
    assert "fragmented MP4" in chosen.assembly_reason
    clip = admit(video(640, 360, 10), MODEL, settings).plan.chosen
    assert clip.assembly == FASTSTART and clip.output_bytes > 0


def test_a_job_no_path_can_assemble_is_refused_before_any_work() -> None:
    # so many tiny segments that one multipart upload cannot join them, and a /tmp too small for faststart
    settings = Settings(
        raw=deep_merge(
            get_settings().raw,
            {"functions": {"assemble": {"ephemeral_storage_mb": 1}}, "segments": {"max_frames": 4, "min_frames": 4}},
        )
    )
    with pytest.raises(LimitExceededError, match="more than one S3 multipart upload can join"):
        admit(video(640, 360, 1800), MODEL, settings)


def test_faststart_capacity_counts_the_reencode_copy() -> None:
    settings = get_settings()
    storage = settings.function("assemble").ephemeral_storage_mb * MIB
    assert settings.assembly_capacity(True).faststart_copies == 2
    assert settings.assembly_capacity(False).faststart_copies == 1
    assert settings.assembly_capacity(True).faststart_disk_bytes < storage


def _check(parts: list, pieces: list[Piece], min_part: int, max_part: int) -> None:
    assert [p.number for p in parts] == list(range(1, len(parts) + 1))
    assert all(min_part <= p.size <= max_part for p in parts[:-1])  # S3's rule for every part but the last
    assert all(len(p.ranges) == 1 and p.ranges[0].key is not None for p in parts if p.copy)
    assert all(p.size < 2 * min_part for p in parts if not p.copy)  # memory: under two minimum parts

    def expand(ranges: list[Piece]) -> list[tuple[str | None, int]]:
        return [(r.key, offset) for r in ranges for offset in range(r.start, r.end)]

    # the bytes in order, each exactly once
    assert expand([r for p in parts for r in p.ranges]) == expand(pieces)


@pytest.mark.parametrize(
    "sizes",
    [
        [7, 30, 30, 30],  # big segments: copied whole, the init gathered with the head of the first
        [7, 2, 3, 1, 4, 2, 30, 1],  # small segments gathered
        [7, 12],  # one segment
        [7, 3],  # all small: one part
        [7, 10, 10, 10, 1],  # a small last segment: the last part may be small
        [7, 200],  # a segment over the part maximum is split
        [7, 14, 14, 14],  # segments just over the minimum: the first joins the init, the others are copied
    ],
)
def test_parts_keep_s3s_minimum_and_the_bytes_in_order(sizes: list[int]) -> None:
    min_part, max_part = 10, 50
    pieces = [Piece(None, 0, sizes[0])] + [Piece(f"s{i}", 5, 5 + size) for i, size in enumerate(sizes[1:])]
    parts = plan_parts(pieces, min_part=min_part, max_part=max_part)
    _check(parts, pieces, min_part, max_part)


def test_big_segments_are_copied_server_side_not_uploaded() -> None:
    pieces = [Piece(None, 0, 1200)] + [Piece(f"s{i}", 1200, 1200 + 40 * MIB) for i in range(10)]
    parts = plan_parts(pieces)
    copied = sum(p.size for p in parts if p.copy)
    uploaded = sum(p.size for p in parts if not p.copy)
    assert uploaded == 5 * MIB  # only the first part (init + the head of segment 0) passes through memory
    assert copied == 400 * MIB + 1200 - uploaded
    assert len(parts) == 11


def test_segments_just_over_the_minimum_are_copied_after_the_first() -> None:
    pieces = [Piece(None, 0, 1200)] + [Piece(f"s{i}", 1200, 1200 + int(5.4 * MIB)) for i in range(3)]
    parts = plan_parts(pieces)
    assert [p.copy for p in parts] == [False, True, True]
    assert parts[0].ranges == (pieces[0], pieces[1])  # the init and all of segment 0, in memory
