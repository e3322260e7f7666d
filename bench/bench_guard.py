"""The int8 saturation guard, top of the range only vs top and bottom (docs/int8.md, Round 2).

Quantises the shipped recipe without a guard once, then adds the guard both ways and reports:
1. the optimised graph as ONNX Runtime runs it: QLinearConv, NhwcMaxPool, MaxPool, QLinearMul and the
   transposes of whole activations (not of the per-cell maps);
2. per gate frame, the per-cell count of clipped (layer, channel) pairs, top and bottom side apart: the
   maximum, the 90th percentile, and the maximum over the cells on the frame border;
3. bare inference time per frame (fp32 engine, int8 without guard, top guard, top + bottom guard) on the same
   real 640x272 bikes frames, interleaved, `--threads` threads (default 1: the machine is shared).

    python bench/bench_guard.py [--model realesr-animevideov3-x2] [--frames 12] [--rounds 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import collections
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from vsr.guard import GUARD_OUTPUT
from vsr.models import fidelity, guard, int8, quantize, registry, samples
from vsr.settings import get_settings


def session(model: onnx.ModelProto, threads: int, optimised: Path | None = None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    if optimised is not None:
        options.optimized_model_filepath = str(optimised)
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def graph_ops(model: onnx.ModelProto, folder: Path, tag: str) -> dict[str, int]:
    path = folder / f"{tag}.onnx"
    session(model, 1, path)
    graph = onnx.load(str(path)).graph
    producer = {o: n.op_type for n in graph.node for o in n.output}
    ops = collections.Counter(n.op_type for n in graph.node)
    whole = sum(
        1
        for n in graph.node
        if n.op_type == "Transpose" and producer.get(n.input[0]) not in ("NhwcMaxPool", "ReduceSum")
    )
    kept = ("QLinearConv", "Conv", "NhwcMaxPool", "MaxPool", "QLinearMul")
    return {**{k: ops[k] for k in kept}, "full-size Transpose": whole}


def describe(counts: np.ndarray) -> str:
    border = np.concatenate([counts[0], counts[-1], counts[:, 0], counts[:, -1]])
    return f"max {counts.max():4.0f} p90 {np.percentile(counts, 90):4.0f} border max {border.max():4.0f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="realesr-animevideov3-x2")
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    settings = get_settings()
    source, _ = registry.convert_bundled(args.model)
    fp32 = onnx.load(str(source))
    frames, _ = fidelity.calibration_frames()
    recipe = int8.shipped_recipe(settings.int8_guard)
    unguarded = quantize.Recipe(ranges=recipe.ranges, fp32_most_sensitive=recipe.fp32_most_sensitive)
    bare = quantize.quantise(fp32, frames, unguarded, threads=args.threads).model
    cell = settings.int8_guard.cell
    tensors = guard.conv_output_quantisers(bare)
    variants = {
        "fp32 engine": fp32,
        "int8, no guard": bare,
        "int8 + top guard": guard.add_guard(bare, cell, tensors),
        "int8 + top+bottom guard": guard.add_guard(bare, cell, tensors, bottom=True),
    }
    print(f"{args.model}: {unguarded.describe()}; guard on {len(tensors)} conv outputs, cells of {cell} px")

    print("\n1. optimised graph (ONNX Runtime", ort.__version__ + ")")
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, model) in enumerate(list(variants.items())[1:]):
            print(f"  {name:26s} {graph_ops(model, Path(tmp), str(i))}")

    print("\n2. clipped (layer, channel) pairs per cell, top | bottom")
    top = session(variants["int8 + top guard"], args.threads)
    both = session(variants["int8 + top+bottom guard"], args.threads)
    for label, frame in fidelity.gate_frames():
        x = np.ascontiguousarray(frame.transpose(2, 0, 1)[None])
        hi = top.run([GUARD_OUTPUT], {"input": x})[0][0, 0]
        lo = both.run([GUARD_OUTPUT], {"input": x})[0][0, 0] - hi
        print(f"  {label:18s} top {describe(hi)} | bottom {describe(lo)}")

    print(
        f"\n3. bare inference, {args.frames} bikes frames, {args.threads} thread(s), {args.rounds} rounds interleaved"
    )
    sessions = {name: session(model, args.threads) for name, model in variants.items()}
    inputs = [
        np.ascontiguousarray(f.transpose(2, 0, 1)[None]) for f in samples.read_frames(samples.bikes_path(), args.frames)
    ]
    for s in sessions.values():
        s.run(None, {"input": inputs[0]})  # warm-up
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(args.rounds):
        for x in inputs:
            for name, s in sessions.items():
                started = time.perf_counter()
                s.run(None, {"input": x})
                times[name].append(time.perf_counter() - started)
    base = statistics.median(times["int8, no guard"])
    for name, t in times.items():
        median = statistics.median(t)
        print(f"  {name:26s} median {median * 1000:6.0f} ms/frame ({median / base:.3f}x int8 without guard)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
