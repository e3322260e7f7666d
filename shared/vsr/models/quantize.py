"""Post-training int8 quantisation of the converted (engine) graphs, with ONNX QDQ nodes ONNX Runtime fuses.

Operator-side only, like `convert`: it imports `onnx` (absent from the Lambda layer). The engine graph of
animevideov3 is Conv -> [Relu, Mul k, Add] -> Conv ... (the rewrite of PReLU: z = y + k*relu(y) = prelu_a(y)/a
with a folded into the next conv). Each quantised Conv gets
    z -> Q(uint8, per tensor) -> DQ -> Conv(DQ(int8 weight, per output channel), DQ(int32 bias)) -> Q -> DQ -> y
which ONNX Runtime turns into one QLinearConv (u8 x s8, VNNI); the activation between convs stays float.

The techniques, each a separate switch so `bench/bench_int8.py` can measure them one at a time:
- equalise: cross-layer equalisation. Scale conv_i's output channel c by t_c and conv_j's input channel c by
  1/t_c; exact because relu and y + k*relu(y) are positively homogeneous. t_c brings every channel of the
  activation to the same range (the rewrite's 1/a makes some channels thousands of times the median).
- ranges "mse": per-tensor activation range minimising the tensor's quantisation MSE, not min/max.
- weights "gptq": weight rounding by layer-wise reconstruction (OBQ/GPTQ, Frantar et al. 2022: round one input
  column at a time and push its error onto the columns not yet rounded, using the calibration inputs' Hessian)
  instead of round-to-nearest.
- bias_correct: add the mean output shift the quantised layer causes on calibration data back into its bias.
- keep_fp32: convs left in float (mixed precision), chosen by a sensitivity scan.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from vsr.logs import get_logger

log = get_logger(__name__)

QUANTISER_VERSION = "1"
MSE_GRID = 64  # candidate clipping ranges tried per tensor by the MSE search
SAMPLE_VALUES = 200_000
GAIN_SUFFIX = "_EQ"  # name suffix of the per-channel Mul equalisation puts after a conv  # values per tensor used for range searches (enough for the 1e-4 tail)


@dataclass(frozen=True)
class Recipe:
    """Which techniques to apply; the defaults are the ones a shipped variant uses."""

    equalise: bool = True
    ranges: str = "mse"  # "minmax" | "percentile" | "mse"
    weights: str = "gptq"  # "nearest" | "gptq"
    bias_correct: bool = True
    per_channel: bool = True  # int8 weight scale per output channel (else one per tensor)
    keep_fp32: tuple[str, ...] = ()  # conv node names left in float
    quantise_outputs: bool = True  # Q after each conv (needed for ORT's QLinearConv fusion)
    # between convs: "qlinear": y' + (a-1)*relu(y') all in uint8 (ORT's QLinearMul/QLinearAdd); "prelu": float
    # DQ -> PRelu -> Q; "rewrite": float DQ -> the engine's y + k*relu(y) (with equalising gains) -> Q
    activation: str = "qlinear"
    # > 0: add the saturation guard (vsr.models.guard) with cells of this many input pixels: the engine then
    # recomputes in fp32 the parts where conv outputs clipped at the top of their uint8 range
    guard_cell: int = 0
    # with guard_cell: count the channels that reached the bottom (uint8 0) of their range too
    guard_bottom: bool = False
    # > 0: leave in float the convs whose quantisation alone costs most on the calibration frames (the scan in
    # `most_sensitive`), this many of them: int8 noise is temporally incoherent, and the delivered video's
    # flicker is what the gate judges
    fp32_most_sensitive: int = 0

    def describe(self) -> str:
        parts = ["per-channel-int8-weights" if self.per_channel else "per-tensor-int8-weights", "uint8-activations"]
        if self.equalise:
            parts.append("equalise")
        parts.append(f"activation={self.activation}")
        parts.append(f"ranges={self.ranges}")
        parts.append(f"weights={self.weights}")
        if self.bias_correct:
            parts.append("bias-correction")
        if self.keep_fp32:
            parts.append("fp32=" + "+".join(self.keep_fp32))
        if self.fp32_most_sensitive:
            parts.append(f"fp32-most-sensitive={self.fp32_most_sensitive}")
        if self.guard_cell:
            sides = "top+bottom" if self.guard_bottom else "top"
            parts.append(f"guard=conv-out-{sides}/{self.guard_cell}px")
        return ",".join(parts)


@dataclass
class ConvLayer:
    """One Conv of the engine graph with its constant weights."""

    name: str
    input: str
    output: str
    weight: np.ndarray  # [O, I, kh, kw] float32
    bias: np.ndarray  # [O]
    pads: tuple[int, int, int, int]
    attrs: dict[str, object] = field(default_factory=dict)


class EngineGraph:
    """The fp32 engine graph, its convs, and which activation links two convs (for equalisation)."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = onnx.ModelProto()
        self.model.CopyFrom(model)
        g = self.model.graph
        self.inits = {i.name: i for i in g.initializer}
        self.producer = {o: n for n in g.node for o in n.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for n in g.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        self.convs: dict[str, ConvLayer] = {}
        for n in g.node:
            if n.op_type != "Conv" or n.input[1] not in self.inits:
                continue
            attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
            if int(attrs.get("group", 1)) != 1:  # type: ignore[call-overload]
                continue
            weight = numpy_helper.to_array(self.inits[n.input[1]]).astype(np.float32)
            bias = (
                numpy_helper.to_array(self.inits[n.input[2]]).astype(np.float32)
                if len(n.input) > 2 and n.input[2]
                else np.zeros(weight.shape[0], np.float32)
            )
            pads = tuple(int(p) for p in attrs.get("pads", [0, 0, 0, 0]))  # type: ignore[union-attr]
            self.convs[n.name] = ConvLayer(n.name, n.input[0], n.output[0], weight, bias, pads, attrs)  # type: ignore[arg-type]

    def activation_link(self, conv: ConvLayer) -> tuple[ConvLayer, list[onnx.NodeProto]] | None:
        """(previous conv, activation nodes) when `conv`'s input is a PReLU (as PRelu, or the engine's rewrite
        y + k*relu(y)) of exactly one conv's output, possibly through an equalising gain."""
        z = conv.input
        act = self.producer.get(z)
        if act is None or len(self.consumers.get(z, [])) != 1:
            return None
        outputs = {c.output: c for c in self.convs.values()}

        def source(name: str) -> str:
            gain = self.producer.get(name)
            return gain.input[0] if gain is not None and gain.name.endswith(GAIN_SUFFIX) else name

        if act.op_type == "PRelu" and source(act.input[0]) in outputs:
            return outputs[source(act.input[0])], [act]
        if act.op_type != "Add":
            return None
        for name in act.input:
            if source(name) not in outputs:
                continue
            relu = next((u for u in self.consumers.get(name, []) if u.op_type == "Relu"), None)
            mul = self.consumers.get(relu.output[0], [None])[0] if relu is not None else None
            if mul is None or mul.op_type != "Mul" or mul.output[0] not in act.input:
                return None
            return outputs[source(name)], [relu, mul, act]  # type: ignore[list-item]
        return None

    def to_flipped(self) -> onnx.ModelProto:
        """The same function with each rewrite y + k*relu(y) turned into y' + (a - 1)*relu(y') on y' = -y, which
        is -prelu_a(y) (a = 1/(1+k)): the per-channel constants a - 1 then share one narrow range (an 8-bit
        per-tensor grid holds them within 0.01), while k = (1-a)/a spans hundreds. The previous conv is negated
        and the next conv's input channels take -1/a."""
        model = onnx.ModelProto()
        model.CopyFrom(self.model)
        g = model.graph
        inits = {i.name: i for i in g.initializer}
        by_name = {n.name: n for n in g.node}

        def scale_init(name: str, factor: np.ndarray, axis: int) -> None:
            value = numpy_helper.to_array(inits[name]).astype(np.float64)
            shape = [1] * value.ndim
            shape[axis] = -1
            inits[name].CopyFrom(numpy_helper.from_array((value * factor.reshape(shape)).astype(np.float32), name))

        for layer in self.chain():
            link = self.activation_link(layer)
            if link is None or len(link[1]) != 3:
                continue
            prev, (_, mul, _) = link
            k = numpy_helper.to_array(inits[mul.input[1]]).astype(np.float64).reshape(-1)
            a = 1.0 / (1.0 + k)
            constant = f"{mul.name}_flip"
            g.initializer.append(numpy_helper.from_array((a - 1.0).astype(np.float32).reshape(-1, 1, 1), constant))
            by_name[mul.name].input[1] = constant
            prev_node = by_name[prev.name]
            minus = -np.ones(k.shape)
            scale_init(prev_node.input[1], minus, 0)
            if len(prev_node.input) > 2 and prev_node.input[2]:
                scale_init(prev_node.input[2], minus, 0)
            scale_init(by_name[layer.name].input[1], -(1.0 + k), 1)
        return model

    def to_prelu(self) -> onnx.ModelProto:
        """The same function with each rewrite y + k*relu(y) (= prelu_a(y)/a, a = 1/(1+k)) turned back into
        PRelu(y, a) and 1/a moved into the next conv's input channels: the activation then has y's range."""
        model = onnx.ModelProto()
        model.CopyFrom(self.model)
        g = model.graph
        inits = {i.name: i for i in g.initializer}
        replaced: dict[str, onnx.NodeProto] = {}
        drop: set[str] = set()
        for layer in self.chain():
            link = self.activation_link(layer)
            if link is None or len(link[1]) != 3:
                continue
            relu, mul, add = link[1]
            k = numpy_helper.to_array(inits[mul.input[1]]).astype(np.float64).reshape(-1)
            a = 1.0 / (1.0 + k)
            slope = f"{add.name}_slope"
            g.initializer.append(numpy_helper.from_array(a.astype(np.float32).reshape(-1, 1, 1), slope))
            replaced[add.name] = helper.make_node("PRelu", [relu.input[0], slope], [add.output[0]], name=add.name)
            drop |= {relu.name, mul.name}
            w_name = next(n for n in g.node if n.name == layer.name).input[1]
            w = numpy_helper.to_array(inits[w_name]).astype(np.float64) * (1.0 + k)[None, :, None, None]
            inits[w_name].CopyFrom(numpy_helper.from_array(w.astype(np.float32), w_name))
        nodes = [replaced.get(n.name, n) for n in g.node if n.name not in drop]
        del g.node[:]
        g.node.extend(nodes)
        return model

    def chain(self) -> list[ConvLayer]:
        """Convs in graph order."""
        order = [n.name for n in self.model.graph.node if n.name in self.convs]
        return [self.convs[name] for name in order]

    def with_weights(self, convs: dict[str, ConvLayer], gains: dict[str, np.ndarray] | None = None) -> onnx.ModelProto:
        """A copy of the fp32 model with these conv weights and biases, and a per-channel Mul (`gains`, by conv
        output) between a conv and its activation (used by equalisation)."""
        model = onnx.ModelProto()
        model.CopyFrom(self.model)
        inits = {i.name: i for i in model.graph.initializer}
        nodes: list[onnx.NodeProto] = []
        for node in model.graph.node:
            for i, name in enumerate(node.input):  # consumers of a gained tensor read the gained copy
                if gains and name in gains and node.op_type in ("Relu", "Add", "PRelu") and i == 0:
                    node.input[i] = f"{name}_eq"
            nodes.append(node)
            layer = convs.get(node.name)
            if layer is None:
                continue
            inits[node.input[1]].CopyFrom(numpy_helper.from_array(layer.weight.astype(np.float32), node.input[1]))
            if len(node.input) > 2 and node.input[2]:
                inits[node.input[2]].CopyFrom(numpy_helper.from_array(layer.bias.astype(np.float32), node.input[2]))
            else:
                name = f"{node.name}_B_q"
                model.graph.initializer.append(numpy_helper.from_array(layer.bias.astype(np.float32), name))
                node.input.append(name)
            y = node.output[0]
            if gains and y in gains:
                gain = f"{y}_gain"
                model.graph.initializer.append(
                    numpy_helper.from_array(gains[y].astype(np.float32).reshape(1, -1, 1, 1), gain)
                )
                nodes.append(helper.make_node("Mul", [y, gain], [f"{y}_eq"], name=f"{y}{GAIN_SUFFIX}"))
        del model.graph.node[:]
        model.graph.node.extend(nodes)
        return model


# --- running graphs ------------------------------------------------------------------------------------------
def session(model: onnx.ModelProto, threads: int = 1) -> ort.InferenceSession:
    from vsr.engine import session_options

    return ort.InferenceSession(model.SerializeToString(), session_options(threads), providers=["CPUExecutionProvider"])


def with_outputs(model: onnx.ModelProto, names: Iterable[str]) -> onnx.ModelProto:
    """A copy of `model` that also outputs these intermediate tensors."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    present = {o.name for o in copy.graph.output}
    for name in names:
        if name not in present:
            copy.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    return copy


def run(model: onnx.ModelProto, frames: np.ndarray, threads: int = 1) -> np.ndarray:
    """[N, H, W, 3] 0..1 -> [N, 3, sH, sW] raw model output, one frame per call."""
    sess = session(model, threads)
    return np.concatenate([sess.run(["output"], {"input": _nchw(f)})[0] for f in frames])


def _nchw(frame: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(frame.transpose(2, 0, 1)[None], np.float32)


def capture(model: onnx.ModelProto, frames: np.ndarray, tensors: Sequence[str], threads: int = 1) -> dict[str, list]:
    """Intermediate tensors per frame: name -> list of [C, H, W] arrays."""
    names = list(dict.fromkeys(tensors))
    sess = session(with_outputs(model, names), threads)
    found: dict[str, list] = {n: [] for n in names}
    for frame in frames:
        for name, value in zip(names, sess.run(names, {"input": _nchw(frame)}), strict=True):
            found[name].append(value[0])
    return found


# --- ranges ------------------------------------------------------------------------------------------------
def _sample(values: np.ndarray, count: int = SAMPLE_VALUES) -> np.ndarray:
    flat = values.reshape(-1)
    if flat.size <= count:
        return flat
    step = flat.size / count
    return flat[(np.arange(count) * step).astype(np.int64)]  # deterministic, spread over the tensor


def uint8_params(lo: float, hi: float) -> tuple[float, int]:
    """(scale, zero point) of an asymmetric uint8 grid covering [lo, hi] with zero exactly representable."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = max((hi - lo) / 255.0, 1e-8)
    zero_point = int(np.clip(round(-lo / scale), 0, 255))
    return float(scale), zero_point


def fake_uint8(values: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    q = np.clip(np.round(values / scale) + zero_point, 0, 255)
    return ((q - zero_point) * scale).astype(np.float32)


def choose_range(values: np.ndarray, method: str) -> tuple[float, int]:
    """uint8 (scale, zero point) for an activation tensor (already sampled)."""
    lo, hi = float(values.min()), float(values.max())
    if method == "minmax":
        return uint8_params(lo, hi)
    if method == "percentile":
        return uint8_params(float(np.quantile(values, 1e-4)), float(np.quantile(values, 1 - 1e-4)))
    if method != "mse":
        raise ValueError(f"unknown range method {method!r}")
    best, best_err = uint8_params(lo, hi), np.inf
    for shrink in np.linspace(1.0, 0.15, MSE_GRID):
        for lo_shrink in (shrink, 1.0):
            params = uint8_params(lo * lo_shrink, hi * shrink)
            err = float(np.mean((fake_uint8(values, *params) - values) ** 2))
            if err < best_err:
                best, best_err = params, err
    return best


# --- weights -------------------------------------------------------------------------------------------------
def weight_scales(weight: np.ndarray) -> np.ndarray:
    """Per-output-channel symmetric int8 scales."""
    peak = np.abs(weight.reshape(weight.shape[0], -1)).max(axis=1)
    return np.maximum(peak / 127.0, 1e-12).astype(np.float32)


def round_nearest(weight: np.ndarray, scales: np.ndarray) -> np.ndarray:
    return np.clip(np.round(weight / scales[:, None, None, None]), -127, 127).astype(np.int8)


def round_gptq(weight: np.ndarray, scales: np.ndarray, hessian: np.ndarray, damp: float = 0.01) -> np.ndarray:
    """OBQ/GPTQ rounding of [O, I, kh, kw] with H = X^T X over im2col columns (I*kh*kw square)."""
    o = weight.shape[0]
    w = weight.reshape(o, -1).astype(np.float64).copy()
    h = hessian.astype(np.float64).copy()
    dead = np.diag(h) == 0
    h[dead, dead] = 1.0
    h += damp * np.mean(np.diag(h)) * np.eye(h.shape[0])
    hinv = np.linalg.cholesky(np.linalg.inv(h)).T  # upper Cholesky factor of H^-1
    s = scales.astype(np.float64)[:, None]
    q = np.zeros_like(w)
    for col in range(w.shape[1]):
        column = w[:, col : col + 1]
        qcol = np.clip(np.round(column / s), -127, 127)
        q[:, col : col + 1] = qcol
        err = (column - qcol * s) / hinv[col, col]
        w[:, col + 1 :] -= err @ hinv[col : col + 1, col + 1 :]
    return q.reshape(weight.shape).astype(np.int8)


def im2col(
    x: np.ndarray, kh: int, kw: int, pads: tuple[int, int, int, int], step: tuple[int, int] = (4, 3)
) -> np.ndarray:
    """[C, H, W] -> [pixels, C*kh*kw] for every step[0]-th row and step[1]-th column (bounded memory)."""
    top, left, bottom, right = pads
    padded = np.pad(x, ((0, 0), (top, bottom), (left, right)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (kh, kw), axis=(1, 2))[:, :: step[0], :: step[1]]
    c, oh, ow = windows.shape[:3]
    return windows.transpose(1, 2, 0, 3, 4).reshape(oh * ow, c * kh * kw)


# --- equalisation ---------------------------------------------------------------------------------------------
def equalise(
    graph: EngineGraph, in_peaks: dict[str, np.ndarray], out_peaks: dict[str, np.ndarray], use_gains: bool = True
) -> tuple[dict[str, ConvLayer], dict[str, np.ndarray]]:
    """Per-channel scales that give every channel of each quantised tensor the same peak; exact.

    For a pair conv_i -> y -> act -> z -> conv_j: conv_i's output channel c is scaled by t_c (equal peaks of y,
    quantised at conv_i's output), a gain u_c after it equalises z (quantised at conv_j's input), and conv_j's
    input channel c takes 1/(t_c u_c). Positive scales commute with relu and y + k*relu(y).
    in_peaks / out_peaks: per-channel robust peaks of each conv's input and output on calibration frames.
    """
    convs = {name: replace(layer) for name, layer in graph.convs.items()}
    gains: dict[str, np.ndarray] = {}
    for layer in graph.chain():
        link = graph.activation_link(layer)
        z_peaks, y_peaks = in_peaks.get(layer.name), None
        if link is None or z_peaks is None:
            continue
        prev, cur = convs[link[0].name], convs[layer.name]
        y_peaks = out_peaks.get(prev.name)
        if y_peaks is None:
            continue
        t = _equalising(y_peaks)
        u = _equalising(z_peaks * t) if use_gains else np.ones_like(t)
        prev.weight = (prev.weight.astype(np.float64) * t[:, None, None, None]).astype(np.float32)
        prev.bias = (prev.bias.astype(np.float64) * t).astype(np.float32)
        cur.weight = (cur.weight.astype(np.float64) / (t * u)[None, :, None, None]).astype(np.float32)
        if use_gains:
            gains[prev.output] = u
    return convs, gains


def _equalising(peaks: np.ndarray) -> np.ndarray:
    """Positive factors that bring every channel's peak to the median peak (dead channels keep 1)."""
    alive = peaks > 1e-12
    target = float(np.median(peaks[alive])) if np.any(alive) else 1.0
    return np.where(alive, target / np.maximum(peaks, 1e-12), 1.0).astype(np.float64)


# --- building the QDQ graph -------------------------------------------------------------------------------------
@dataclass
class ConvQuant:
    input_scale: float
    input_zero: int
    weight_q: np.ndarray  # int8 [O, I, kh, kw]
    weight_scales: np.ndarray  # [O]
    bias: np.ndarray  # float bias to quantise into int32
    output_scale: float | None
    output_zero: int | None


def build_qdq(
    graph: EngineGraph,
    convs: dict[str, ConvLayer],
    plan: dict[str, ConvQuant],
    act_plan: dict[str, tuple[float, int]] | None = None,
) -> onnx.ModelProto:
    """The fp32 graph with `convs`' weights, QDQ around each conv in `plan`, and around the Relu/Mul outputs
    named in `act_plan` (uint8 scale, zero point) with the Mul's constant quantised too."""
    act_plan = act_plan or {}
    model = graph.with_weights(convs)
    g = model.graph
    gain_of = {
        n.input[0]: numpy_helper.to_array(next(i for i in g.initializer if i.name == n.input[1])).reshape(-1)
        for n in g.node
        if n.name.endswith(GAIN_SUFFIX)
    }
    folded: set[str] = set()
    new_nodes: list[onnx.NodeProto] = []
    quantised_inputs: dict[str, str] = {}
    inits = g.initializer

    def const(name: str, array: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(array, name))
        return name

    const_values = {i.name: i for i in g.initializer}
    for node in g.node:
        q = plan.get(node.name)
        if node.op_type in ("Relu", "Mul") and node.output[0] in act_plan:
            out = node.output[0]
            if node.op_type == "Mul":  # the per-channel constant on a uint8 grid of its own
                k = numpy_helper.to_array(const_values[node.input[1]]).astype(np.float64)
                k_scale, k_zero = uint8_params(float(k.min()), float(k.max()))
                k_q = np.clip(np.round(k / k_scale) + k_zero, 0, 255).astype(np.uint8)
                ks, kz = (
                    const(f"{out}_ks", np.array(k_scale, np.float32)),
                    const(f"{out}_kz", np.array(k_zero, np.uint8)),
                )
                new_nodes.append(
                    helper.make_node(
                        "DequantizeLinear", [const(f"{out}_kq", k_q), ks, kz], [f"{out}_k"], name=f"{out}_KDQ"
                    )
                )
                node.input[1] = f"{out}_k"
            node.output[0] = f"{out}_f"
            if node.op_type == "Relu":  # ORT fuses DQ -> LeakyRelu -> Q into one uint8 lookup pass; Relu it
                # drops but leaves a DQ -> Q requantisation (two float passes)
                node = helper.make_node("LeakyRelu", [node.input[0]], [node.output[0]], name=node.name, alpha=0.0)
            new_nodes.append(node)
            scale_value, zero_value = act_plan[out]
            if node.op_type == "Relu":
                zero_value = 0  # relu output is never negative: the whole grid above zero
            scale, zero = (
                const(f"{out}_os", np.array(scale_value, np.float32)),
                const(f"{out}_oz", np.array(zero_value, np.uint8)),
            )
            new_nodes.append(
                helper.make_node("QuantizeLinear", [f"{out}_f", scale, zero], [f"{out}_q"], name=f"{out}_Q")
            )
            new_nodes.append(helper.make_node("DequantizeLinear", [f"{out}_q", scale, zero], [out], name=f"{out}_DQ"))
            continue
        if node.op_type != "Conv" or q is None:
            new_nodes.append(node)
            continue
        src = node.input[0]
        if src not in quantised_inputs:
            scale = const(f"{src}_qs", np.array(q.input_scale, np.float32))
            zero = const(f"{src}_qz", np.array(q.input_zero, np.uint8))
            new_nodes.append(helper.make_node("QuantizeLinear", [src, scale, zero], [f"{src}_q"], name=f"{src}_Q"))
            new_nodes.append(
                helper.make_node("DequantizeLinear", [f"{src}_q", scale, zero], [f"{src}_dq"], name=f"{src}_DQ")
            )
            quantised_inputs[src] = f"{src}_dq"
        w_scale = const(f"{node.name}_ws", q.weight_scales.astype(np.float32))
        w_q = const(f"{node.name}_wq", q.weight_q.astype(np.int8))
        w_zero = const(f"{node.name}_wz", np.zeros(q.weight_scales.shape, np.int8))
        new_nodes.append(
            helper.make_node(
                "DequantizeLinear", [w_q, w_scale, w_zero], [f"{node.name}_wdq"], name=f"{node.name}_WDQ", axis=0
            )
        )
        b_scales = (q.weight_scales.astype(np.float64) * q.input_scale).astype(np.float32)
        b_q = np.clip(np.round(q.bias / b_scales), -(2**31) + 1, 2**31 - 1).astype(np.int32)
        new_nodes.append(
            helper.make_node(
                "DequantizeLinear",
                [const(f"{node.name}_bq", b_q), const(f"{node.name}_bs", b_scales)],
                [f"{node.name}_bdq"],
                name=f"{node.name}_BDQ",
                axis=0,
            )
        )
        out = node.output[0]
        conv_out = f"{out}_f" if q.output_scale is not None else out
        conv = helper.make_node(
            "Conv", [quantised_inputs[src], f"{node.name}_wdq", f"{node.name}_bdq"], [conv_out], name=node.name
        )
        conv.attribute.extend(node.attribute)
        new_nodes.append(conv)
        if q.output_scale is not None:
            scale = const(f"{out}_os", np.array(q.output_scale, np.float32))
            zero = const(f"{out}_oz", np.array(q.output_zero, np.uint8))
            new_nodes.append(helper.make_node("QuantizeLinear", [conv_out, scale, zero], [f"{out}_q"], name=f"{out}_Q"))
            gain = gain_of.get(out)
            if gain is None:
                new_nodes.append(
                    helper.make_node("DequantizeLinear", [f"{out}_q", scale, zero], [out], name=f"{out}_DQ")
                )
            else:  # the equalising gain rides on a per-channel dequantisation scale: no extra pass
                scales = const(f"{out}_gs", (q.output_scale * gain).astype(np.float32))
                zeros = const(f"{out}_gz", np.full(gain.shape, q.output_zero, np.uint8))
                new_nodes.append(
                    helper.make_node(
                        "DequantizeLinear", [f"{out}_q", scales, zeros], [f"{out}_eq"], name=f"{out}_DQ", axis=1
                    )
                )
                folded.add(f"{out}{GAIN_SUFFIX}")
    new_nodes = [n for n in new_nodes if n.name not in folded]
    del g.node[:]
    g.node.extend(new_nodes)
    used = {i for n in g.node for i in n.input}
    keep = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
    return model


def save(model: onnx.ModelProto, path: Path) -> None:
    onnx.checker.check_model(model)
    onnx.save_model(model, str(path))


# --- calibration and the whole recipe ------------------------------------------------------------------------
@dataclass
class LayerStats:
    """What calibration keeps of one conv: sampled input/output values, per-channel input peaks, the input
    Hessian of its im2col columns and the mean im2col column (for bias correction)."""

    input_samples: list[np.ndarray] = field(default_factory=list)
    output_samples: list[np.ndarray] = field(default_factory=list)
    input_peaks: np.ndarray | None = None
    output_peaks: np.ndarray | None = None
    hessian: np.ndarray | None = None
    column_mean: np.ndarray | None = None
    columns: int = 0


def quantisable(graph: EngineGraph) -> list[ConvLayer]:
    """Convs fed by the model input or by a conv through the PReLU rewrite (the fold conv at the end is not)."""
    return [c for c in graph.chain() if c.input == "input" or graph.activation_link(c) is not None]


def calibrate(
    model: onnx.ModelProto,
    graph: EngineGraph,
    layers: Sequence[ConvLayer],
    frames: np.ndarray,
    *,
    hessians: bool,
    threads: int = 1,
) -> dict[str, LayerStats]:
    """Run `model` on the calibration frames once, keeping per-layer statistics (one frame at a time)."""
    stats = {layer.name: LayerStats() for layer in layers}
    names = [t for layer in layers for t in (layer.input, layer.output)]
    sess = session(with_outputs(model, names), threads)
    per_frame = max(1, SAMPLE_VALUES // len(frames))
    for frame in frames:
        values = dict(zip(names, sess.run(names, {"input": _nchw(frame)}), strict=True))
        for layer in layers:
            s = stats[layer.name]
            x, y = values[layer.input][0], values[layer.output][0]
            s.input_samples.append(_sample(x, per_frame))
            s.output_samples.append(_sample(y, per_frame))
            peaks = np.abs(x).max(axis=(1, 2))
            s.input_peaks = peaks if s.input_peaks is None else np.maximum(s.input_peaks, peaks)
            peaks = np.abs(y).max(axis=(1, 2))
            s.output_peaks = peaks if s.output_peaks is None else np.maximum(s.output_peaks, peaks)
            if hessians:
                cols = im2col(x, layer.weight.shape[2], layer.weight.shape[3], layer.pads)
                h = (cols.T @ cols).astype(np.float64)
                s.hessian = h if s.hessian is None else s.hessian + h
                m = cols.sum(axis=0, dtype=np.float64)
                s.column_mean = m if s.column_mean is None else s.column_mean + m
                s.columns += cols.shape[0]
    for s in stats.values():
        if s.column_mean is not None:
            s.column_mean = s.column_mean / max(1, s.columns)
    return stats


def tensor_samples(model: onnx.ModelProto, frames: np.ndarray, names: Sequence[str], threads: int = 1) -> dict:
    """name -> sampled values of that intermediate tensor over the calibration frames."""
    found = capture(model, frames, names, threads)
    per_frame = max(1, SAMPLE_VALUES // len(frames))
    return {name: np.concatenate([_sample(v, per_frame) for v in values]) for name, values in found.items()}


@dataclass
class Quantised:
    model: onnx.ModelProto
    recipe: Recipe
    layers: list[str]  # quantised convs
    graph: EngineGraph
    convs: dict[str, ConvLayer]
    plan: dict[str, ConvQuant]
    act_plan: dict[str, tuple[float, int]]
    act_owner: dict[str, str]  # Relu/Mul output -> the conv whose output that activation reads

    def only(self, layers: Iterable[str]) -> onnx.ModelProto:
        """The same quantisation applied to `layers` only (and the activations after them); the rest in float.
        The sensitivity scan quantises one layer at a time this way."""
        keep = set(layers)
        plan = {name: q for name, q in self.plan.items() if name in keep}
        acts = {name: p for name, p in self.act_plan.items() if self.act_owner.get(name) in keep}
        return build_qdq(self.graph, self.convs, plan, acts)


@dataclass
class Prepared:
    """The calibrated float graph a recipe quantises: rewritten for its activation form, equalised or not, with
    statistics of every quantisable layer and activation (shared by recipes that differ only in the rest)."""

    graph: EngineGraph
    stats: dict[str, LayerStats]
    act_samples: dict[str, np.ndarray]
    act_owner: dict[str, str]


def prepare(
    model: onnx.ModelProto, frames: np.ndarray, activation: str, equalise_layers: bool, threads: int = 1
) -> Prepared:
    graph = EngineGraph(model)
    if activation == "prelu":
        graph = EngineGraph(graph.to_prelu())
    elif activation == "qlinear":
        graph = EngineGraph(graph.to_flipped())
    elif activation != "rewrite":
        raise ValueError(f"unknown activation form {activation!r}")
    if equalise_layers:
        first = calibrate(graph.model, graph, quantisable(graph), frames, hessians=False, threads=threads)
        convs, gains = equalise(
            graph,
            {n: s.input_peaks for n, s in first.items() if s.input_peaks is not None},
            {n: s.output_peaks for n, s in first.items() if s.output_peaks is not None},
            use_gains=activation == "rewrite",
        )
        graph = EngineGraph(graph.with_weights(convs, gains))
    layers = quantisable(graph)
    stats = calibrate(graph.model, graph, layers, frames, hessians=True, threads=threads)
    act_owner: dict[str, str] = {}
    if activation == "qlinear":
        for layer in layers:
            link = graph.activation_link(layer)
            if link is not None:
                for node in link[1][:2]:
                    act_owner[node.output[0]] = link[0].name
    samples = tensor_samples(graph.model, frames, list(act_owner), threads) if act_owner else {}
    return Prepared(graph, stats, samples, act_owner)


def most_sensitive(q: Quantised, fp32: onnx.ModelProto, frames: np.ndarray, threads: int = 1) -> list[str]:
    """q's quantised convs, the costliest first: the mean squared error against the fp32 output on `frames`
    (the calibration frames: the gate's frames are never used to choose) with that conv alone quantised."""
    reference = run(fp32, frames, threads)
    cost = {}
    for layer in q.layers:
        out = run(q.only([layer]), frames, threads)
        cost[layer] = float(np.mean((np.clip(out, 0, 1) - np.clip(reference, 0, 1)) ** 2))
    ranked = sorted(cost, key=cost.__getitem__, reverse=True)
    log.info(
        "quantise.sensitivity", ranked=[(name, round(10 * np.log10(1 / max(cost[name], 1e-20)), 2)) for name in ranked]
    )
    return ranked


def quantise(
    model: onnx.ModelProto, frames: np.ndarray, recipe: Recipe, threads: int = 1, prepared: Prepared | None = None
) -> Quantised:
    """Quantise the fp32 engine graph `model` following `recipe`, calibrated on `frames` ([N, H, W, 3] 0..1).
    `prepared`: a `prepare` result for the same model, frames, activation form and equalisation (reused)."""
    prepared = prepared or prepare(model, frames, recipe.activation, recipe.equalise, threads)
    graph, stats = prepared.graph, prepared.stats
    convs = {name: replace(layer) for name, layer in graph.convs.items()}
    layers = [c for c in quantisable(graph) if c.name not in recipe.keep_fp32]
    plan: dict[str, ConvQuant] = {}
    for layer in layers:
        s = stats[layer.name]
        conv = graph.convs[layer.name]
        if layer.input == "input":
            in_scale, in_zero = 1.0 / 255.0, 0  # frames are 8-bit video: this grid is exact
        else:
            in_scale, in_zero = choose_range(np.concatenate(s.input_samples), recipe.ranges)
        scales = weight_scales(conv.weight)
        if not recipe.per_channel:
            scales = np.full_like(scales, scales.max())
        if recipe.weights == "gptq":
            assert s.hessian is not None
            w_q = round_gptq(conv.weight, scales, s.hessian)
        else:
            w_q = round_nearest(conv.weight, scales)
        bias = conv.bias.astype(np.float64)
        if recipe.bias_correct:
            assert s.column_mean is not None
            # E[W x] - E[Wq x] per output channel: the mean shift the weight rounding causes
            mean_q = s.column_mean
            wf = conv.weight.reshape(conv.weight.shape[0], -1).astype(np.float64)
            wq = (w_q.reshape(w_q.shape[0], -1) * scales[:, None]).astype(np.float64)
            bias = bias + wf @ s.column_mean - wq @ mean_q
        out_scale: float | None = None
        out_zero: int | None = None
        if recipe.quantise_outputs:
            out_scale, out_zero = choose_range(np.concatenate(s.output_samples), recipe.ranges)
        plan[layer.name] = ConvQuant(in_scale, in_zero, w_q, scales, bias.astype(np.float32), out_scale, out_zero)
    act_owner = {name: owner for name, owner in prepared.act_owner.items() if owner in plan}
    act_plan = {name: choose_range(prepared.act_samples[name], recipe.ranges) for name in act_owner}
    if recipe.fp32_most_sensitive:
        full = Quantised(
            build_qdq(graph, convs, plan, act_plan), recipe, list(plan), graph, convs, plan, act_plan, act_owner
        )
        floated = set(most_sensitive(full, model, frames, threads)[: recipe.fp32_most_sensitive])
        plan = {name: q for name, q in plan.items() if name not in floated}
        act_owner = {name: owner for name, owner in act_owner.items() if owner in plan}
        act_plan = {name: p for name, p in act_plan.items() if name in act_owner}
        layers = [layer for layer in layers if layer.name in plan]
    qmodel = build_qdq(graph, convs, plan, act_plan)
    if recipe.guard_cell:
        from vsr.models import guard

        qmodel = guard.add_guard(
            qmodel, recipe.guard_cell, guard.conv_output_quantisers(qmodel), bottom=recipe.guard_bottom
        )
    return Quantised(qmodel, recipe, [layer.name for layer in layers], graph, convs, plan, act_plan, act_owner)
