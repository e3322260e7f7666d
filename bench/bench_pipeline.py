"""Whole `vsr upscale` vs bare ncnn inference on the same real frames: what does the orchestration cost?

(a) ncnn (PyPI, CPU) on the first N frames of bikes.mp4 (640x272), frame by frame, model already loaded.
(b) `vsr.upscale.upscale_file` on a clip of exactly those frames (lossless H.264 copy of the decoded
    frames): probe + plan + decode + ONNX Runtime inference + x264 encode + join, ONNX session already
    created (a warm worker). ncnn runs before and after (b) and is averaged, so load drift on a shared
    machine hits both sides alike.

Prints one table: wall seconds, per-stage seconds, ms/frame and the ratio (b)/(a) (target <= 1.0).

    python bench/bench_pipeline.py [--frames 16] [--model realesr-animevideov3-x2] [--threads N] [--tile N] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from vsr.engine import available_cpus, get_upscaler
from vsr.media.decode import decode_window
from vsr.media.probe import probe
from vsr.models import registry, samples
from vsr.models.ncnn_reference import load_net, run_ncnn
from vsr.settings import get_settings
from vsr.upscale import upscale_file


def lossless_clip(source: Path, path: Path, frames: int) -> Path:
    """The first `frames` decoded frames of `source`, re-encoded losslessly (x264 qp 0) with their timestamps."""
    with av.open(str(source)) as src, av.open(str(path), "w") as out:
        video = src.streams.video[0]
        stream = out.add_stream("libx264", rate=video.average_rate, options={"qp": "0", "preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = video.width, video.height, video.codec_context.pix_fmt
        stream.time_base = stream.codec_context.time_base = video.time_base
        for index, frame in enumerate(src.decode(video)):
            if index == frames:
                break
            frame.time_base = video.time_base
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def int8_for_timing(model: str, folder: Path, threads: int) -> tuple[registry.ModelInfo, str]:
    """The installed int8 variant, or (when none passed the gate) the shipped recipe quantised into `folder`,
    for timing only and labelled so."""
    import onnx

    from vsr.models import fidelity, int8, quantize

    variant = registry.int8_variant(model)
    if variant is not None:
        return variant, "shipped"
    fp32 = registry.resolve_model(model)
    calib, _ = fidelity.calibration_frames()
    q = quantize.quantise(onnx.load(str(fp32.path)), calib, int8.shipped_recipe(get_settings().int8_guard), threads)
    path = folder / f"{model}{registry.INT8_SUFFIX}.onnx"
    onnx.save_model(q.model, str(path))
    meta = {"name": path.stem, "scale": str(fp32.scale), "macs_per_input_pixel": str(fp32.macs_per_input_pixel)}
    path.with_suffix(".json").write_text(json.dumps({**meta, "precision": "int8"}))
    return registry.resolve_model(str(path)), "NOT shipped: its gate failed; quantised here for timing only"


def bench_ncnn(model: str, frames: np.ndarray, threads: int, net: Any) -> float:
    _, seconds = run_ncnn(model, frames, threads, precise=False, net=net)
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--model", default="realesr-animevideov3-x2")
    parser.add_argument("--threads", type=int, default=None, help="threads for both (default: available CPUs)")
    parser.add_argument(
        "--tile", type=int, default=None, help="engine tile size for (b); 0: no tiling (default: settings)"
    )
    parser.add_argument(
        "--precision", choices=("fp32", "int8"), default=None, help="engine model for (b) (default: settings)"
    )
    parser.add_argument("--json", action="store_true", help="also print the results as one JSON line")
    args = parser.parse_args()
    threads = args.threads or available_cpus()
    if args.model not in registry.BUNDLED:
        sys.exit(f"--model must be a bundled model with an ncnn original: {', '.join(registry.BUNDLED)}")

    with tempfile.TemporaryDirectory(prefix="vsr-bench-") as tmp:
        clip = lossless_clip(samples.bikes_path(), Path(tmp) / "bikes_first.mp4", args.frames)
        info = probe(clip)
        # exactly the frames the pipeline will see, as the model's float input
        images = [f.image for f in decode_window(clip, info.pts[0], info.frame_count)]
        frames = np.stack(images).astype(np.float32) / 255.0

        precision = args.precision or get_settings().precision  # int8 only where the variant passed the gate
        status = ""
        if args.precision == "int8":  # asked for: the shipped variant, or one quantised here for timing only
            model, status = int8_for_timing(args.model, Path(tmp), threads)
        else:
            model = registry.resolve_model(args.model, None, precision, strict=args.precision is not None)
        net = load_net(args.model, threads, precise=False)
        tile = get_settings().tile if args.tile is None else args.tile
        upscaler = get_upscaler(
            model,
            tile=tile,
            tile_overlap=get_settings().tile_overlap,
            threads=threads,
            guard_max_clipped=get_settings().int8_guard.max_clipped_channels,
        )  # session created outside the timings
        upscaler.upscale(frames[:1])  # warm-up both engines on one frame
        run_ncnn(args.model, frames[:1], threads, precise=False, net=net)

        ncnn_before = bench_ncnn(args.model, frames, threads, net)
        report = upscale_file(
            clip, Path(tmp) / "out.mp4", model=str(model.path), tile=args.tile, progress=False, threads=threads
        )
        ncnn_after = bench_ncnn(args.model, frames, threads, net)

    n = info.frame_count
    t = report["timings"]
    ncnn_s = (ncnn_before + ncnn_after) / 2
    pipeline_s = t["wall_s"] - t["load_model_s"]
    rows = [
        ("(a) ncnn bare inference", ncnn_s, f"before {ncnn_before:.2f} s, after {ncnn_after:.2f} s"),
        ("(b) vsr upscale, whole", pipeline_s, f"{report['segments']} segment(s), warm ONNX session"),
        ("    probe", t["probe_s"], ""),
        ("    decode (background thread)", t["decode_s"], "overlaps inference"),
        ("    infer (ONNX Runtime)", t["infer_s"], ""),
        ("    encode (background thread)", t["encode_s"], "overlaps inference"),
        ("    join (remux)", t["join_s"], ""),
        ("    model lookup + session", t["load_model_s"], "excluded from (b)"),
    ]
    tile = "settings" if args.tile is None else args.tile
    print(
        f"{model.name} ({model.precision}) vs ncnn {args.model} fp32, {n} frames of bikes.mp4 at {info.width}x{info.height}, {threads} threads, tile {tile}"
    )
    print(f"{'stage':34} {'seconds':>9} {'ms/frame':>9}  note")
    for label, seconds, note in rows:
        print(f"{label:34} {seconds:9.2f} {1000 * seconds / n:9.1f}  {note}")
    ratio = pipeline_s / ncnn_s
    if model.precision == "int8":
        recomputed = report.get("recomputed_fraction")
        print(f"int8 variant: {status}; guard recomputed {recomputed or 0:.2%} of input pixels in fp32")
        print(f"ratio (b)/(a) = {ratio:.2f}  (int8 target <= 0.8: {'met' if ratio <= 0.8 else 'MISSED'})")
    else:
        print(f"ratio (b)/(a) = {ratio:.2f}  (target <= 1.0)")
    print(f"orchestration overhead over ONNX Runtime inference = {pipeline_s / t['infer_s'] - 1:.1%}")
    if args.json:
        print(
            json.dumps(
                {
                    "model": model.name,
                    "precision": model.precision,
                    "frames": n,
                    "size": f"{info.width}x{info.height}",
                    "threads": threads,
                    "ncnn_s": ncnn_s,
                    "pipeline_s": pipeline_s,
                    "ratio": ratio,
                    "recomputed_fraction": report.get("recomputed_fraction"),
                    "timings": t,
                    "fps_time_base": str(Fraction(info.time_base)),
                    "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                }
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
