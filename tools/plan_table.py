"""The README's planning table: predicted wall time and cost of typical clips, from the simulation and settings.

    python tools/plan_table.py [--model-macs 619200] [--markdown]

Rows: a 10 s 640x360, a 60 s 1280x720 and a 30 min 854x480 clip at 25 fps; reserved concurrency 20, 100 and
1000; every worker cold (a first job) or warm (containers kept from a recent job). Every number comes from
settings.json (segments, latency, pricing): change an assumption there and the table follows.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from vsr.planning import plan_job, seconds_per_frame
from vsr.settings import get_settings

CLIPS = ((640, 360, 10), (1280, 720, 60), (854, 480, 1800))
CONCURRENCY = (20, 100, 1000)
FPS = 25
ANIMEVIDEO_MACS = 619_200  # realesr-animevideov3 (the default model), multiply-adds per input pixel
SCALE = 2  # realesr-animevideov3-x2, the default model


def rows(macs: float) -> list[dict[str, object]]:
    s = get_settings()
    out = []
    for width, height, seconds in CLIPS:
        for concurrency in CONCURRENCY:
            capacity = dataclasses.replace(s.worker_capacity, concurrency=concurrency)
            spf = seconds_per_frame(
                width, height, macs_per_input_pixel=macs, gflops_per_vcpu=capacity.gflops_per_vcpu, vcpus=capacity.vcpus
            )
            for warm in (False, True):
                plan = plan_job(
                    range(seconds * FPS),
                    seconds_per_frame=spf,
                    policy=s.segment_policy,
                    capacity=capacity,
                    latency=s.latency,
                    pricing=s.pricing,
                    sizes=s.function_sizes,
                    warm_containers=concurrency if warm else 0,
                    output_mpix_per_frame=width * height * SCALE**2 / 1e6,
                    assembly=s.assembly_work,
                )
                d, c = plan.options["default"], plan.options["cost"]
                out.append(
                    {
                        "clip": f"{seconds} s {width}x{height}",
                        "concurrency": concurrency,
                        "workers": "warm" if warm else "cold",
                        "segments": d.segments,
                        "frames_per_segment": d.frames_per_segment,
                        "wall_s": d.predicted_wall_s,
                        "cost_usd": d.predicted_cost_usd,
                        "cost_plan_wall_s": c.predicted_wall_s,
                        "cost_plan_usd": c.predicted_cost_usd,
                    }
                )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-macs", type=float, default=ANIMEVIDEO_MACS)
    args = parser.parse_args(argv)
    print(
        "| clip (25 fps) | concurrency | workers | segments x frames | predicted wall | predicted cost | cost plan: wall, cost |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows(args.model_macs):
        print(
            f"| {r['clip']} | {r['concurrency']} | {r['workers']} | {r['segments']} x {r['frames_per_segment']} | "
            f"{r['wall_s']:,.0f} s | ${r['cost_usd']:.3f} | {r['cost_plan_wall_s']:,.0f} s, ${r['cost_plan_usd']:.3f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
