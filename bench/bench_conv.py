"""Where the gap to ncnn comes from: one 64->64 3x3 convolution + ReLU, the layer animevideov3 repeats 16 times.

Times a stack of identical layers (the body of the model, real weights from the converted x2 model) at the frame
size of bikes.mp4, all variants in one process with the same thread count, and reports ms per layer:

- ONNX Runtime's Conv, as the engine runs it (MLAS direct NCHWc convolution);
- ncnn with Winograd off and on (its default; fp32, the same settings as the oracle and `bench-model`);
- a Winograd F(m,3) along the width written in plain ONNX ops, the best graph-level form we found: the
  activations stay in an m-phase layout (pixel column m*j+t at [t, c, y, j]) so the transforms are two MatMuls
  and the multiply stage is one grouped 3x1 Conv with no transposes; its per-op profile shows what the
  transforms and layout reorders cost against what the smaller convolution saves.

"nominal GFLOP/s" counts a direct convolution's 2 x 64 x 64 x 9 flop per pixel, so a Winograd variant can exceed
the CPU's FMA peak. `rel diff` is the largest difference from ORT's direct convolution over the largest output
value (repeating one layer makes the values grow, so an absolute difference would say little).

Last, the engine's whole model on one real frame, by op (ONNX Runtime's profiler): what is not a 3x3 convolution.

    python bench/bench_conv.py [--layers 4] [--threads N] [--width 640 --height 272]
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from vsr.engine import available_cpus, session_options
from vsr.models import registry, samples

CHANNELS = 64
REPEATS = 5
# Winograd interpolation points (plus infinity): small and dyadic, so the transforms are exact in fp32;
# F(m,3) uses the first m + 1
POINTS = [Fraction(p) for p in (0, 1, -1, 2, -2, Fraction(1, 2), Fraction(-1, 2))]


def body_layer_weights(model: str) -> tuple[np.ndarray, np.ndarray]:
    """The first 64->64 3x3 convolution's weights and bias in the engine's converted model."""
    graph = onnx.load(str(registry.resolve_model(model).path)).graph
    inits = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Conv" and len(node.input) == 3:
            weight = inits.get(node.input[1])
            if weight is not None and weight.shape == (CHANNELS, CHANNELS, 3, 3):
                return weight.astype(np.float32), inits[node.input[2]].astype(np.float32)
    sys.exit(f"{model} has no 64->64 3x3 convolution")


def winograd_1d(points: list[Fraction]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Toom-Cook matrices (A^T, G, B^T) of F(m,3) for finite interpolation points plus infinity, exact.

    y = A^T [(G g) * (B^T d)] is the correlation y_i = sum_k g_k d_(i+k) of a length-(m+2) window d.
    """
    m = len(points) - 1
    n = m + 2
    at = [[Fraction(0)] * n for _ in range(m)]
    g = [[Fraction(0)] * 3 for _ in range(n)]
    for j, p in enumerate(points):
        denominator = Fraction(1)
        for q in points:
            if q != p:
                denominator *= p - q
        for i in range(m):
            at[i][j] = p**i
        for k in range(3):
            g[j][k] = p**k / denominator
    at[m - 1][n - 1] = Fraction(1)
    g[n - 1][2] = Fraction(1)
    # B^T follows from A^T and G: the identity above is linear in B^T, so solve it over all (i, k, t) and
    # round to the small dyadic values it has for these points, then check it on a random window.
    rows, rhs = [], []
    for i in range(m):
        for k in range(3):
            for t in range(n):
                coefficients = np.zeros((n, n))
                for j in range(n):
                    coefficients[j, t] = float(at[i][j] * g[j][k])
                rows.append(coefficients.ravel())
                rhs.append(1.0 if t == i + k else 0.0)
    bt = np.linalg.lstsq(np.array(rows), np.array(rhs), rcond=None)[0].reshape(n, n)
    bt = np.round(bt * 64) / 64  # the exact solution has small dyadic entries for these points
    at_f, g_f = np.array(at, dtype=np.float64), np.array(g, dtype=np.float64)
    window, taps = np.random.default_rng(0).random(n), np.random.default_rng(1).random(3)
    direct = np.array([taps @ window[i : i + 3] for i in range(m)])
    if not np.allclose(at_f @ ((g_f @ taps) * (bt @ window)), direct, atol=1e-12):
        raise ValueError(f"no dyadic B^T for points {points}")
    return at_f, g_f, bt


def _model(nodes: list[onnx.NodeProto], inits: dict[str, np.ndarray], shape: list[int]) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "bench",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
        [numpy_helper.from_array(value, name) for name, value in inits.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def direct_stack(weight: np.ndarray, bias: np.ndarray, layers: int, shape: list[int]) -> onnx.ModelProto:
    nodes, current = [], "x"
    for layer in range(layers):
        out = "y" if layer == layers - 1 else f"r{layer}"
        nodes += [
            helper.make_node("Conv", [current, "w", "b"], [f"c{layer}"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", [f"c{layer}"], [out]),
        ]
        current = out
    return _model(nodes, {"w": weight, "b": bias}, shape)


def winograd_stack(weight: np.ndarray, bias: np.ndarray, layers: int, shape: list[int], m: int) -> onnx.ModelProto:
    """The same layers as Winograd F(m,3) along the width, in an m-phase layout (see the module docstring)."""
    points = POINTS[: m + 1]
    at, g, bt = winograd_1d(points)
    n = m + 2
    _, channels, height, width = shape
    blocks = width // m
    # Multiply stage: group p convolves transformed position p with kernel rows (G g)[p] (3 taps in height).
    grouped = np.einsum("ps,kcrs->pkcr", g, weight.astype(np.float64)).reshape(n * channels, channels, 3, 1)
    ones_column = points.index(Fraction(1))  # A^T's column for point 1 is all ones: the bias goes there only
    grouped_bias = np.zeros((n, channels))
    grouped_bias[ones_column] = bias
    ints = {
        "to_phases": [channels, height, blocks, m],
        "flat": [n, -1],
        "v_shape": [1, n * channels, height, blocks],
        "y_shape": [m, channels, height, blocks],
        "out_shape": [1, channels, height, width],
        "zero": [0],
        "one": [1],
        "minus_one": [-1],
        "last": [m - 1],
        "end": [m],
        "axis0": [0],
        "axis3": [3],
        "huge": [1 << 40],
        "pad_left": [0, 0, 0, 1, 0, 0, 0, 0],
        "pad_right": [0, 0, 0, 0, 0, 0, 0, 1],
    }
    inits: dict[str, np.ndarray] = {k: np.array(v, dtype=np.int64) for k, v in ints.items()}
    inits |= {
        "grouped": grouped.astype(np.float32),
        "grouped_bias": grouped_bias.ravel().astype(np.float32),
        "bt": bt.astype(np.float32),
        "at": at.astype(np.float32),
    }
    nodes = [
        helper.make_node("Reshape", ["x", "to_phases"], ["x4"]),
        helper.make_node("Transpose", ["x4"], ["phases"], perm=[3, 0, 1, 2]),
    ]
    current = "phases"
    for layer in range(layers):
        t = f"l{layer}_"
        nodes += [
            # the window of block j also needs column m*j-1 (phase m-1 of block j-1) and m*j+m (phase 0 of j+1)
            helper.make_node("Slice", [current, "last", "end", "axis0"], [t + "prev"]),
            helper.make_node("Slice", [t + "prev", "zero", "minus_one", "axis3"], [t + "prev_cut"]),
            helper.make_node("Pad", [t + "prev_cut", "pad_left"], [t + "left"]),
            helper.make_node("Slice", [current, "zero", "one", "axis0"], [t + "next"]),
            helper.make_node("Slice", [t + "next", "one", "huge", "axis3"], [t + "next_cut"]),
            helper.make_node("Pad", [t + "next_cut", "pad_right"], [t + "right"]),
            helper.make_node("Concat", [t + "left", current, t + "right"], [t + "window"], axis=0),
            helper.make_node("Reshape", [t + "window", "flat"], [t + "window_flat"]),
            helper.make_node("MatMul", ["bt", t + "window_flat"], [t + "v_flat"]),
            helper.make_node("Reshape", [t + "v_flat", "v_shape"], [t + "v"]),
            helper.make_node("Conv", [t + "v", "grouped", "grouped_bias"], [t + "m"], pads=[1, 0, 1, 0], group=n),
            helper.make_node("Reshape", [t + "m", "flat"], [t + "m_flat"]),
            helper.make_node("MatMul", ["at", t + "m_flat"], [t + "y_flat"]),
            helper.make_node("Reshape", [t + "y_flat", "y_shape"], [t + "y"]),
            helper.make_node("Relu", [t + "y"], [t + "relu"]),
        ]
        current = t + "relu"
    nodes += [
        helper.make_node("Transpose", [current], ["back"], perm=[1, 2, 3, 0]),
        helper.make_node("Reshape", ["back", "out_shape"], ["y"]),
    ]
    return _model(nodes, inits, shape)


def ort_runner(
    model: onnx.ModelProto, threads: int, profile_dir: Path | None = None
) -> tuple[Callable[[np.ndarray], np.ndarray], ort.InferenceSession]:
    options = session_options(threads)
    if profile_dir is not None:
        options.enable_profiling = True
        options.profile_file_prefix = str(profile_dir / "ort")
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return (lambda x: session.run(None, {"x": x})[0]), session


def kernel_times(session: ort.InferenceSession) -> list[tuple[str, str, float]]:
    """(node name, op type, microseconds) of every kernel run ONNX Runtime's profiler recorded; ends profiling."""
    return [
        (event["name"], event["args"]["op_name"], event["dur"])
        for event in json.loads(Path(session.end_profiling()).read_text())
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time")
    ]


def op_profile(session: ort.InferenceSession, runs: int, layers: int) -> dict[str, float]:
    """ms per layer and run spent in each op type."""
    totals: collections.Counter[str] = collections.Counter()
    for _, op, us in kernel_times(session):
        totals[op] += us
    return {op: us / 1000 / runs / layers for op, us in totals.most_common()}


def engine_profile(model: str, frame: np.ndarray, threads: int, runs: int = 3) -> dict[str, float]:
    """ms per frame by op type for the engine's model on one [1, H, W, 3] frame; PReLU's parts grouped."""
    options = session_options(threads)
    with tempfile.TemporaryDirectory() as tmp:
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "engine")
        session = ort.InferenceSession(
            str(registry.resolve_model(model).path), options, providers=["CPUExecutionProvider"]
        )
        feed = {session.get_inputs()[0].name: np.ascontiguousarray(frame.transpose(0, 3, 1, 2))}
        for _ in range(runs):
            session.run(None, feed)
        kernels = kernel_times(session)
    totals: collections.Counter[str] = collections.Counter()
    for name, op, us in kernels:
        if name.startswith("PRelu_"):  # the prelu_to_relu rewrite names its nodes after the PRelu
            op = "PReLU as Relu + per-channel affine"
        elif op == "Conv":
            op = "Conv (the model's convolutions)"
        totals[op] += us
    parts = {op: us / 1000 / runs for op, us in totals.most_common()}
    parts["total"] = sum(parts.values())
    return parts


def ncnn_runner(weight: np.ndarray, bias: np.ndarray, layers: int, threads: int, winograd: bool, workdir: Path):
    try:
        import ncnn
    except ImportError:
        sys.exit("the ncnn package is needed for this benchmark: run `make install` (it is in the test extras)")

    lines = ["7767517", f"{layers + 1} {layers + 1}", "Input data 0 1 data"]
    blob = "data"
    for layer in range(layers):
        out = f"b{layer}"
        lines.append(f"Convolution c{layer} 1 1 {blob} {out} 0={CHANNELS} 1=3 4=1 5=1 6={weight.size} 9=1")
        blob = out
    stem = workdir / f"stack_{int(winograd)}"
    stem.with_suffix(".param").write_text("\n".join(lines) + "\n")
    one_layer = np.zeros(1, np.uint32).tobytes() + weight.tobytes() + bias.tobytes()  # tag 0: raw fp32 weights
    stem.with_suffix(".bin").write_bytes(one_layer * layers)
    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    net.opt.num_threads = threads
    net.opt.use_fp16_storage = net.opt.use_fp16_packed = net.opt.use_fp16_arithmetic = False
    net.opt.use_winograd_convolution = winograd
    if net.load_param(str(stem.with_suffix(".param"))) != 0 or net.load_model(str(stem.with_suffix(".bin"))) != 0:
        sys.exit("ncnn could not load the benchmark layers")

    def run(x: np.ndarray) -> np.ndarray:
        extractor = net.create_extractor()
        extractor.input("data", ncnn.Mat(np.ascontiguousarray(x[0])))
        status, out = extractor.extract(blob)
        if status != 0:
            sys.exit(f"ncnn extract failed with status {status}")
        return np.array(out)[None]

    return run


def best_ms(run: Callable[[np.ndarray], np.ndarray], x: np.ndarray) -> tuple[float, np.ndarray]:
    out = run(x)  # warm-up: plans and allocates
    times = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        out = run(x)
        times.append(time.perf_counter() - started)
    return 1000 * min(times), out


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="realesr-animevideov3-x2")
    parser.add_argument("--layers", type=_positive, default=16, help="stacked layers (the model's body has 16)")
    parser.add_argument("--threads", type=_positive, default=available_cpus())
    parser.add_argument("--width", type=_positive, default=640)
    parser.add_argument("--height", type=_positive, default=272)
    parser.add_argument(
        "--phases", type=int, default=4, choices=range(2, len(POINTS)), help="m of the graph-level Winograd F(m,3)"
    )
    args = parser.parse_args(argv)
    if args.width % args.phases:
        sys.exit(f"--width must be a multiple of --phases ({args.phases})")

    weight, bias = body_layer_weights(args.model)
    shape = [1, CHANNELS, args.height, args.width]
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    flop_per_layer = 2 * CHANNELS * CHANNELS * 9 * args.height * args.width
    results: list[tuple[str, float, np.ndarray]] = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        direct, _ = ort_runner(direct_stack(weight, bias, args.layers, shape), args.threads)
        results.append(("ORT Conv (engine: direct, NCHWc)", *best_ms(direct, x)))
        for winograd in (False, True):
            run = ncnn_runner(weight, bias, args.layers, args.threads, winograd, workdir)
            results.append((f"ncnn, Winograd {'on (default)' if winograd else 'off'}", *best_ms(run, x)))
        wino_model = winograd_stack(weight, bias, args.layers, shape, args.phases)
        wino, session = ort_runner(wino_model, args.threads, profile_dir=workdir)
        results.append((f"ORT graph-level Winograd F({args.phases},3)", *best_ms(wino, x)))
        profile = op_profile(session, REPEATS + 1, args.layers)

    base_ms, base_out = results[0][1], results[0][2]
    print(
        f"{args.layers} x (Conv {CHANNELS}->{CHANNELS} 3x3 + ReLU) at {args.width}x{args.height}, "
        f"{args.threads} threads, best of {REPEATS}; {flop_per_layer / 1e9:.1f} GFLOP/layer nominal"
    )
    print(f"{'variant':40} {'ms/layer':>9} {'GFLOP/s':>8} {'vs ORT':>7} {'rel diff':>10}")
    scale = float(np.abs(base_out).max())
    for label, ms, out in results:
        per_layer = ms / args.layers
        diff = float(np.abs(out - base_out).max()) / scale
        print(f"{label:40} {per_layer:9.1f} {flop_per_layer / per_layer / 1e6:8.1f} {ms / base_ms:7.2f} {diff:10.1e}")
    n = args.phases + 2
    print(
        f"\nmultiplies per output pixel in the convolution: direct 9 x 64 x 64, F({args.phases},3) along the width "
        f"{3 * n}/{args.phases} x 64 x 64 ({9 * args.phases / (3 * n):.2f}x fewer)"
    )
    print(f"graph-level Winograd F({args.phases},3), ms per layer by op (ONNX Runtime profiler, includes warm-up):")
    for op, ms in profile.items():
        print(f"  {op:24} {ms:7.1f}")
    frame = samples.read_frames(samples.bikes_path(), 1)  # always the real frame, whatever --width/--height say
    print(f"\n{args.model} as the engine runs it, one real {frame.shape[2]}x{frame.shape[1]} frame, ms by op:")
    for part, ms in engine_profile(args.model, frame, args.threads).items():
        print(f"  {part:48} {ms:7.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
