"""int8 variants: speed and fidelity per quantisation technique, a layer sensitivity scan, and the speed target.

All fidelity is against the fp32 output of the same model (vsr.models.fidelity: PSNR on the held-out gate
frames, worst frame named; share of pixels within 8/255; temporal warping error ratio on a real clip).
Calibration frames are other frames of the same clips (vsr.models.fidelity.calibration_frames).

1. techniques: each row adds (or swaps) one technique; speed is bare ONNX Runtime inference on real 640x272
   bikes frames, relative to the fp32 engine model measured in the same run.
2. sensitivity: the shipped recipe applied to one conv (and the activation after it) at a time, PSNR vs fp32
   on the held-out clip frames (and the text case); then mixed precision keeping the worst layers in float.
3. speed target: ncnn fp32 bare inference vs our fp32 engine vs the int8 variant (bare), and the whole
   `vsr upscale` with the int8 variant, on the same N real frames, same threads. Target: whole / ncnn <= 0.8.

    python bench/bench_int8.py [--model realesr-animevideov3-x2] [--frames 12] [--sections techniques,sensitivity,speed]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from vsr.engine import available_cpus, get_upscaler
from vsr.media.decode import decode_window
from vsr.media.probe import probe
from vsr.models import fidelity, quantize, registry, samples
from vsr.models.ncnn_reference import load_net, run_ncnn
from vsr.settings import get_settings
from vsr.upscale import upscale_file

Recipe = quantize.Recipe
NAIVE = Recipe(equalise=False, ranges="minmax", weights="nearest", bias_correct=False, per_channel=False)
TECHNIQUES: list[tuple[str, Recipe]] = [
    ("naive: per-tensor weights, min/max ranges", NAIVE),
    ("+ per-channel symmetric weights", Recipe(equalise=False, ranges="minmax", weights="nearest", bias_correct=False)),
    ("+ cross-layer equalisation", Recipe(ranges="minmax", weights="nearest", bias_correct=False)),
    ("  (percentile ranges instead of MSE)", Recipe(ranges="percentile", weights="nearest", bias_correct=False)),
    ("+ MSE activation ranges", Recipe(weights="nearest", bias_correct=False)),
    ("+ bias correction", Recipe(weights="nearest")),
    ("+ GPTQ layer-wise weight rounding (shipped)", Recipe()),
    ("  (no bias correction)", Recipe(bias_correct=False)),
    ("  float DQ -> PReLU -> Q between convs", Recipe(activation="prelu")),
    ("  float DQ -> y + k*relu(y) (+gains) -> Q", Recipe(activation="rewrite")),
]


class Cached:
    """An fp32 upscaler whose outputs are remembered by frame content (the reference of every row)."""

    def __init__(self, upscale: Callable[[np.ndarray], np.ndarray]) -> None:
        self.upscale = upscale
        self.outputs: dict[str, np.ndarray] = {}

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        key = hashlib.sha1(frame.tobytes()).hexdigest() + str(frame.shape)
        if key not in self.outputs:
            self.outputs[key] = self.upscale(frame)
        return self.outputs[key]


def seconds_per_frame(upscale: Callable[[np.ndarray], np.ndarray], frames: np.ndarray) -> float:
    upscale(frames[0])  # warm-up
    started = time.perf_counter()
    for frame in frames:
        upscale(frame)
    return (time.perf_counter() - started) / len(frames)


def techniques(model: str, threads: int, speed_frames: np.ndarray, reference: Cached, out: list[dict]) -> None:
    source = registry.onnx_path(model)
    fp32 = onnx.load(str(source))
    calib, _ = fidelity.calibration_frames()
    fp32_s = seconds_per_frame(fidelity.onnx_upscaler(str(source), threads), speed_frames)
    print(f"\n1. techniques ({model}; speed: {len(speed_frames)} bikes frames 640x272, {threads} threads)")
    header = (
        f"{'recipe':46} {'quant s':>7} {'s/frame':>8} {'x fp32':>7} {'PSNR min':>9} {'worst frame':>16} "
        f"{'clips min':>9} {'<=8/255':>8} {'warp':>6} {'raw':>6}  gate"
    )
    print(header)
    print(f"{'fp32 engine model':46} {'':>7} {fp32_s:8.3f} {1.0:7.2f}")
    prepared: dict[tuple[str, bool], quantize.Prepared] = {}
    for label, recipe in TECHNIQUES:
        started = time.perf_counter()
        key = (recipe.activation, recipe.equalise)
        if key not in prepared:
            prepared[key] = quantize.prepare(fp32, calib, recipe.activation, recipe.equalise, threads)
        q = quantize.quantise(fp32, calib, recipe, threads, prepared=prepared[key])
        quant_s = time.perf_counter() - started
        upscale = fidelity.onnx_upscaler(q.model.SerializeToString(), threads)
        speed = seconds_per_frame(upscale, speed_frames)
        gate = fidelity.measure(reference, upscale, get_settings().encode_settings)
        row = {"recipe": label, "method": recipe.describe(), "quantise_s": quant_s, "s_per_frame": speed}
        row |= {"x_fp32": speed / fp32_s, **gate.summary()}
        out.append(row)
        clips_min = min(v for k, v in gate.frames.items() if "#" in k)  # real held-out frames only
        row["psnr_clips_min_db"] = clips_min
        print(
            f"{label:46} {quant_s:7.1f} {speed:8.3f} {speed / fp32_s:7.2f} {gate.min_psnr:8.2f}  {gate.worst_frame:>16} "
            f"{clips_min:9.2f} {gate.min_near:8.4%} {gate.warp_ratio:6.3f} {gate.warp_ratio_raw:6.3f}  "
            f"{'pass' if gate.passed else 'FAIL'}",
            flush=True,
        )


def sensitivity(model: str, threads: int, speed_frames: np.ndarray, reference: Cached, out: list[dict]) -> None:
    source = registry.onnx_path(model)
    fp32 = onnx.load(str(source))
    calib, _ = fidelity.calibration_frames()
    prepared = quantize.prepare(fp32, calib, "qlinear", True, threads)
    shipped = quantize.quantise(fp32, calib, Recipe(), threads, prepared=prepared)
    gate_frames = fidelity.gate_frames()
    frames = [f for label, f in gate_frames if "#" in label]  # the held-out real frames
    text = next(f for label, f in gate_frames if label == "text and edges")
    refs = [reference(f) for f in frames]
    text_ref = reference(text)

    def min_psnr(proto: onnx.ModelProto) -> float:
        upscale = fidelity.onnx_upscaler(proto.SerializeToString(), threads)
        return min(fidelity.psnr(r, upscale(f)) for r, f in zip(refs, frames, strict=True))

    print(
        "\n2. sensitivity: shipped recipe on one conv (+ the activation after it) at a time; PSNR vs fp32 on the"
        "\n   worst held-out clip frame, and on the text-and-edges case"
    )
    scores = {}
    for layer in shipped.layers:
        proto = shipped.only([layer])
        scores[layer] = min_psnr(proto)
        text_psnr = fidelity.psnr(text_ref, fidelity.onnx_upscaler(proto.SerializeToString(), threads)(text))
        out.append({"layer": layer, "psnr_clips_min_db": scores[layer], "psnr_text_db": text_psnr})
        print(f"  {layer:12} {scores[layer]:7.2f} dB   text {text_psnr:6.2f} dB", flush=True)
    ranked = sorted(scores, key=scores.__getitem__)
    print("mixed precision: the worst layers kept in float")
    for keep in (1, 3):
        recipe = Recipe(keep_fp32=tuple(ranked[:keep]))
        q = quantize.quantise(fp32, calib, recipe, threads, prepared=prepared)
        upscale = fidelity.onnx_upscaler(q.model.SerializeToString(), threads)
        gate = fidelity.measure(reference, upscale, get_settings().encode_settings)
        speed = seconds_per_frame(upscale, speed_frames)
        out.append({"mixed_fp32": list(recipe.keep_fp32), "s_per_frame": speed, **gate.summary()})
        print(
            f"  fp32: {', '.join(recipe.keep_fp32):30} PSNR min {gate.min_psnr:6.2f} dB ({gate.worst_frame}), "
            f"clips min {min(v for k, v in gate.frames.items() if '#' in k):6.2f} dB, {speed:.3f} s/frame, "
            f"gate {'pass' if gate.passed else 'FAIL'}",
            flush=True,
        )


def lossless_clip(source: Path, path: Path, frames: int) -> Path:
    from bench_pipeline import lossless_clip as make  # same clip as bench-pipeline

    return make(source, path, frames)


def int8_model(model: str, folder: Path, threads: int) -> tuple[registry.ModelInfo, str]:
    from bench_pipeline import int8_for_timing  # the same rule as bench-pipeline

    return int8_for_timing(model, folder, threads)


def text_clip(frames: np.ndarray, path: Path, rate: int = 25) -> tuple[Path, np.ndarray]:
    """The same frames with burned-in text (a two-line white subtitle with a black outline, and a small
    title), encoded losslessly; returns the clip and the frames as the pipeline decodes them."""
    import av
    import cv2

    images = []
    for i, frame in enumerate(frames):
        image = np.ascontiguousarray(np.round(frame * 255).astype(np.uint8))
        h = image.shape[0]
        for text, y, size in (
            ("VSR 2026 - bikes.mp4", 22, 0.55),
            ("Subtitles and titles are common in video:", h - 44, 0.75),
            (f"they must not turn to mush ({i:02d})", h - 14, 0.75),
        ):
            for colour, thick in (((0, 0, 0), 5), ((255, 255, 255), 2)):
                cv2.putText(image, text, (16, y), cv2.FONT_HERSHEY_SIMPLEX, size, colour, thick, cv2.LINE_AA)
        images.append(image)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=rate, options={"qp": "0", "preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = images[0].shape[1], images[0].shape[0], "yuv444p"
        for image in images:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        out.mux(stream.encode(None))
    info = probe(path)
    decoded = np.stack([f.image for f in decode_window(path, info.pts[0], info.frame_count)]).astype(np.float32)
    return path, decoded / 255.0


def speed(model: str, threads: int, count: int, out: list[dict]) -> float:
    """Section 3: the issue-17 speed table (one run, same frames, same threads for every row)."""
    from vsr.guard import GuardStats

    with tempfile.TemporaryDirectory(prefix="vsr-bench-int8-") as tmp:
        variant, status = int8_model(model, Path(tmp), threads)
        clip = lossless_clip(samples.bikes_path(), Path(tmp) / "bikes_first.mp4", count)
        info = probe(clip)
        frames = np.stack([f.image for f in decode_window(clip, info.pts[0], info.frame_count)]).astype(np.float32)
        frames /= 255.0
        texted, text_frames = text_clip(frames, Path(tmp) / "bikes_text.mp4")
        fp32_info = registry.resolve_model(model)
        net = load_net(model, threads, precise=False)
        fp32_up = get_upscaler(fp32_info, threads=threads)
        int8_up = get_upscaler(
            variant, threads=threads, guard_max_clipped=get_settings().int8_guard.max_clipped_channels
        )
        for upscaler in (fp32_up, int8_up):
            upscaler.upscale(frames[:1])
        run_ncnn(model, frames[:1], threads, precise=False, net=net)

        def engine(upscaler: Any, batch: np.ndarray) -> tuple[float, GuardStats]:
            stats = GuardStats()
            started = time.perf_counter()
            if getattr(upscaler, "guard", None) is not None:
                upscaler.upscale(batch, stats)
            else:
                upscaler.upscale(batch)
            return time.perf_counter() - started, stats

        ncnn_before = run_ncnn(model, frames, threads, precise=False, net=net)[1]
        fp32_s, _ = engine(fp32_up, frames)
        int8_s, bare_stats = engine(int8_up, frames)
        report = upscale_file(clip, Path(tmp) / "out.mp4", model=str(variant.path), progress=False, threads=threads)
        text_fp32_s, _ = engine(fp32_up, text_frames)
        text_int8_s, text_stats = engine(int8_up, text_frames)
        text_report = upscale_file(
            texted, Path(tmp) / "text.mp4", model=str(variant.path), progress=False, threads=threads
        )
        ncnn_after = run_ncnn(model, frames, threads, precise=False, net=net)[1]
    ncnn_s = (ncnn_before + ncnn_after) / 2
    whole_s = report["timings"]["wall_s"] - report["timings"]["load_model_s"]
    text_whole_s = text_report["timings"]["wall_s"] - text_report["timings"]["load_model_s"]
    recomputed = report.get("recomputed_fraction") or 0.0
    text_recomputed = text_report.get("recomputed_fraction") or 0.0
    n = len(frames)
    print(f"\n3. speed: {n} frames of bikes.mp4 {info.width}x{info.height}, {threads} threads, same frames for all")
    print(f"   {variant.name}: {status}; guard: {'yes' if int8_up.guard else 'no'}")
    print(f"{'':50} {'seconds':>8} {'ms/frame':>9} {'/ ncnn':>7} {'recomputed':>10}")
    rows = [
        ("(a) ncnn fp32 bare inference", ncnn_s, None, f"before {ncnn_before:.2f} s, after {ncnn_after:.2f} s"),
        ("(b) our fp32 engine, bare", fp32_s, None, ""),
        ("(c) int8 + guard, bare", int8_s, bare_stats.fraction, f"{int8_s / fp32_s:.2f} x our fp32 (b)"),
        ("(d) vsr upscale --precision int8, whole", whole_s, recomputed, "decode, infer, encode, join"),
        ("(e) burned-in text: our fp32 engine, bare", text_fp32_s, None, ""),
        (
            "(f) burned-in text: int8 + guard, bare",
            text_int8_s,
            text_stats.fraction,
            f"{text_int8_s / text_fp32_s:.2f} x (e)",
        ),
        ("(g) burned-in text: vsr upscale int8, whole", text_whole_s, text_recomputed, "same frames + text"),
    ]
    for label, seconds, fraction, note in rows:
        share = "" if fraction is None else f"{fraction:.2%}"
        print(f"{label:50} {seconds:8.2f} {1000 * seconds / n:9.1f} {seconds / ncnn_s:7.2f} {share:>10}  {note}")
    ratio = whole_s / ncnn_s
    print(f"ratio (d)/(a) = {ratio:.2f}  (target <= 0.8: {'met' if ratio <= 0.8 else 'MISSED'})")
    print(f"ratio (g)/(a) = {text_whole_s / ncnn_s:.2f}  (burned-in text; recomputed {text_recomputed:.2%})")
    print(f"ratio (c)/(b) = {int8_s / fp32_s:.2f}  (int8 + guard vs our fp32 engine, bare)")
    out.append(
        {
            "ncnn_s": ncnn_s,
            "fp32_s": fp32_s,
            "int8_s": int8_s,
            "whole_s": whole_s,
            "frames": n,
            "ratio": ratio,
            "recomputed_fraction": recomputed,
            "text_fp32_s": text_fp32_s,
            "text_int8_s": text_int8_s,
            "text_whole_s": text_whole_s,
            "text_recomputed_fraction": text_recomputed,
            "int8_status": status,
        }
    )
    return ratio


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="realesr-animevideov3-x2", choices=registry.INT8_SOURCES)
    parser.add_argument("--frames", type=int, default=12, help="frames for the speed target (section 3)")
    parser.add_argument("--speed-frames", type=int, default=3, help="frames timed per technique row")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--sections", default="techniques,sensitivity,speed")
    parser.add_argument("--json", action="store_true", help="also print all results as one JSON line")
    args = parser.parse_args()
    threads = args.threads or available_cpus()
    sections = set(args.sections.split(","))
    unknown = sections - {"techniques", "sensitivity", "speed"}
    if unknown:
        sys.exit(f"unknown sections: {', '.join(sorted(unknown))}")
    registry.convert_bundled(args.model)
    reference = Cached(fidelity.onnx_upscaler(str(registry.onnx_path(args.model)), threads))
    speed_frames = samples.read_frames(samples.bikes_path(), args.speed_frames)
    results: dict[str, list[dict]] = {"techniques": [], "sensitivity": [], "speed": []}
    print(f"gate: PSNR >= {fidelity.MIN_PSNR_DB} dB on every frame, >= {fidelity.MIN_NEAR_FRACTION:.1%} pixels within")
    print(f"8/255, warping error <= {fidelity.MAX_WARP_RATIO}x fp32's; all vs the fp32 output of {args.model}")
    if "techniques" in sections:
        techniques(args.model, threads, speed_frames, reference, results["techniques"])
    if "sensitivity" in sections:
        sensitivity(args.model, threads, speed_frames, reference, results["sensitivity"])
    if "speed" in sections:
        speed(args.model, threads, args.frames, results["speed"])
    if args.json:
        print(json.dumps({"model": args.model, "threads": threads, **results}, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
