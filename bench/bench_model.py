"""ONNX Runtime vs ncnn on real frames: ms/frame, achieved GFLOP/s, and what each rewrite / option buys.

Runs realesr-animevideov3-x2 on the first frames of bikes.mp4 (640x272) in one process, frame by frame,
interleaving the variants so machine noise hits them alike (the machine may be shared: the best frame
of each variant is the comparable figure). GFLOP/s is nominal: 2 x the model's multiply-adds
(as a direct convolution) per second; ncnn's Winograd convolutions do fewer real operations, so its figure can
exceed the CPU's FMA peak.

    python bench/bench_model.py [--frames 8] [--threads N] [--model realesr-animevideov3-x2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

from vsr.engine import Upscaler, available_cpus, session_options
from vsr.models import convert, registry, rewrite, samples
from vsr.models.ncnn_reference import load_net, run_ncnn


@dataclass
class Variant:
    label: str
    run: Callable[[np.ndarray], tuple[np.ndarray, float]]  # [N,H,W,3] -> (NHWC output, seconds)
    batch: int = 1
    clipped: bool = False  # output already clipped to [0, 1] (the engine): compare with the clipped reference
    per_frame: list[float] = field(default_factory=list)
    max_diff: float = 0.0
    outputs: list[np.ndarray] = field(default_factory=list)


def _ort_runner(path: Path, options: ort.SessionOptions) -> Callable[[np.ndarray], tuple[np.ndarray, float]]:
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run(frames: np.ndarray) -> tuple[np.ndarray, float]:
        nchw = np.ascontiguousarray(frames.transpose(0, 3, 1, 2))
        started = time.perf_counter()
        out = session.run(None, {name: nchw})[0]
        return out.transpose(0, 2, 3, 1), time.perf_counter() - started

    return run


def _engine_runner(model: str, threads: int) -> Callable[[np.ndarray], tuple[np.ndarray, float]]:
    upscaler = Upscaler(registry.resolve_model(model), tile=0, threads=threads, parallel=True)

    def run(frames: np.ndarray) -> tuple[np.ndarray, float]:
        started = time.perf_counter()
        out = upscaler.upscale(frames)
        return out, time.perf_counter() - started

    return run


def _build_variants(model: str, workdir: Path, threads: int) -> list[Variant]:
    import onnx

    source = registry.source_dir()
    if source is None:
        sys.exit(f"{registry.SOURCE_PACKAGE} is not installed")
    stem, scale = registry.BUNDLED[model]
    plain_path = workdir / "plain.onnx"
    convert.convert(
        source / f"{stem}.param",
        source / f"{stem}.bin",
        plain_path,
        name=model,
        scale=scale,
        source=stem,
        optimise=False,
    )
    plain = onnx.load(str(plain_path))
    fold_path = workdir / "fold.onnx"
    onnx.save(rewrite.optimise(plain, ["fold_downscale", "fold_skip_add"])[0], str(fold_path))
    optimised_path = registry.resolve_model(model).path  # exactly what the engine runs

    def options(**changes: object) -> ort.SessionOptions:
        opts = session_options(threads)
        for key, value in changes.items():
            setattr(opts, key, value)
        return opts

    net = load_net(model, threads, precise=True)
    extended = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    return [
        Variant("ORT plain conversion", _ort_runner(plain_path, options())),
        Variant("ORT + fold downscale (no x4 tensor)", _ort_runner(fold_path, options())),
        Variant("ORT optimised (+ PReLU->Relu), engine", _ort_runner(optimised_path, options())),
        Variant(
            "ORT optimised, no NCHWc (EXTENDED)",
            _ort_runner(optimised_path, options(graph_optimization_level=extended)),
        ),
        Variant("ORT optimised, memory arena off", _ort_runner(optimised_path, options(enable_cpu_mem_arena=False))),
        Variant("ORT optimised, batch of 2 frames", _ort_runner(optimised_path, options()), batch=2),
        Variant("engine: 2 frames at once, 1 thread each", _engine_runner(model, threads), batch=2, clipped=True),
        Variant("ncnn (fp32, same threads)", lambda frames: run_ncnn(model, frames, threads, net=net)),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="realesr-animevideov3-x2")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--threads", type=int, default=available_cpus())
    args = parser.parse_args(argv)

    frames = samples.read_frames(samples.bikes_path(), args.frames)
    n, height, width, _ = frames.shape
    info = registry.resolve_model(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        variants = _build_variants(args.model, Path(tmp), args.threads)
        for v in variants:  # warm-up: first runs allocate and plan
            v.run(frames[: v.batch])
        for start in range(0, n, 2):  # interleave: each variant sees the same frames at about the same time
            chunk = frames[start : start + 2]
            for v in variants:
                pieces = [chunk] if v.batch > 1 else [chunk[i : i + 1] for i in range(len(chunk))]
                for piece in pieces:
                    out, seconds = v.run(piece)
                    v.per_frame.append(seconds / len(piece))
                    v.outputs.append(out)
    reference = np.concatenate(variants[-1].outputs)
    ncnn_ms = 1000 * min(variants[-1].per_frame)
    flop_per_frame = 2 * info.macs_per_input_pixel * height * width
    print(
        f"{args.model} on {n} real {width}x{height} frames (bikes.mp4), {args.threads} threads, "
        f"{flop_per_frame / 1e9:.0f} GFLOP/frame nominal"
    )
    print("ms/frame: best frame (least disturbed by other processes) and median; GFLOP/s and ratio from the best")
    print(f"{'variant':40} {'best ms':>8} {'median':>8} {'GFLOP/s':>8} {'vs ncnn':>8} {'max|diff|':>10}")
    for v in variants:
        ms = 1000 * min(v.per_frame)
        median = 1000 * float(np.median(v.per_frame))
        expected = np.clip(reference, 0, 1) if v.clipped else reference
        diff = float(np.abs(np.concatenate(v.outputs) - expected).max())
        print(f"{v.label:40} {ms:8.1f} {median:8.1f} {flop_per_frame / ms / 1e6:8.1f} {ms / ncnn_ms:8.2f} {diff:10.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
