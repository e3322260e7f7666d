"""Exact graph rewrites that make the converted Real-ESRGAN graphs cheaper to run in ONNX Runtime.

Each rewrite replaces a subgraph by one computing the same linear function (only float rounding differs,
~1e-6), so the oracle tolerance against ncnn (1e-4) holds for the optimised graph too.

1. `fold_downscale`: animevideov3 x2/x3 end with
       c (conv, C*r*r channels) -> DepthToSpace(r) -> Add(nearest-r upsample of the input) -> cubic Resize(q/r)
   i.e. they compute the x4 image and throw 3/4 (x2) or 7/16 (x3) of it away. Everything after the conv is
   linear, and a half-pixel cubic downscale by q/r has q periodic phases whose 4 taps lie within one input
   pixel of the source pixel. So it equals a 3x3 convolution at *input* resolution from c (and the input x)
   to C*q*q channels followed by DepthToSpace(q). The edge clamping of the x4 grid becomes an edge pad of one
   input pixel whose channels are permuted (sub-row -1 of the x4 grid is sub-row 0 of row 0, and so on).
   No tensor at x4 resolution is ever materialised.
2. `fold_skip_add`: x4 models add the nearest-upsampled input after DepthToSpace(r) at output resolution;
   adding the input to each of the r*r sub-pixel channels before DepthToSpace is the same sum, done on
   tensors r*r times smaller in count of nodes-passes (one pass instead of an upsample plus an add).
3. `prelu_to_relu`: onnxruntime's PRelu is slow (about 13x a Relu on a 64x640x272 tensor) and is not an
   NCHWc operator, so each one also forces two layout reorders around it. PReLU_a(y) = y + k*Relu(y) scaled
   by a per channel, with k = (1 - a) / a; the per-channel factor a moves into the next convolution's weights
   (conv is linear and its zero padding scales to zero). What is left, Relu and a per-channel Mul + Add,
   stays in NCHWc (the Mul + Add become one depthwise conv accumulating into y). Without a following conv
   (or with a zero slope) the form is a*y + (1 - a)*Relu(y).
4. `fold_scaled_residual`: Mul(conv(x), k) with a constant k and a conv used only there -> conv with weights
   and bias multiplied by k (RRDBNet's `0.2 * x` residual scaling).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import onnx
from onnx import helper, numpy_helper

from vsr.logs import get_logger

log = get_logger(__name__)

CUBIC_A = -0.75


def _cubic(x: float, a: float = CUBIC_A) -> float:
    x = abs(x)
    if x <= 1:
        return (a + 2) * x**3 - (a + 3) * x**2 + 1
    if x < 2:
        return a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a
    return 0.0


def downscale_taps(r: int, q: int) -> np.ndarray:
    """W[phase, row_offset + 1, sub] for a half-pixel cubic resize by q/r of an r-times upsampled grid.

    Output pixel q*k + phase reads x-r grid rows r*k + d; d maps to input row k + d // r, sub-row d % r.
    Raises ValueError when a tap falls more than one input pixel away (then a 3x3 kernel cannot hold it).
    """
    taps = np.zeros((q, 3, r), dtype=np.float64)
    scale = q / r
    for phase in range(q):
        u = (phase + 0.5) / scale - 0.5
        f = math.floor(u)
        t = u - f
        for d, weight in zip(
            range(f - 1, f + 3), (_cubic(t + 1), _cubic(t), _cubic(1 - t), _cubic(2 - t)), strict=True
        ):
            offset = d // r
            if not -1 <= offset <= 1:
                raise ValueError(f"tap {d} of phase {phase} is outside one input pixel")
            taps[phase, offset + 1, d % r] += weight
    return taps


class _Graph:
    """Index of a graph's producers, consumers and constant initialisers."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.graph = model.graph
        self.inits = {init.name: init for init in self.graph.initializer}
        self.counter = 0
        self.reindex()

    def reindex(self) -> None:
        self.producer: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in self.graph.node:
            for out in node.output:
                self.producer[out] = node
            for inp in node.input:
                self.consumers.setdefault(inp, []).append(node)
        self.outputs = {o.name for o in self.graph.output}

    def const(self, name: str) -> np.ndarray | None:
        init = self.inits.get(name)
        return None if init is None else numpy_helper.to_array(init)

    def add_const(self, prefix: str, array: np.ndarray) -> str:
        self.counter += 1
        name = f"{prefix}_rw{self.counter}"
        init = numpy_helper.from_array(np.ascontiguousarray(array), name)
        self.graph.initializer.append(init)
        self.inits[name] = init
        return name

    def only_consumer(self, tensor: str) -> onnx.NodeProto | None:
        users = self.consumers.get(tensor, [])
        return users[0] if len(users) == 1 and tensor not in self.outputs else None

    def replace(self, old: list[onnx.NodeProto], new: list[onnx.NodeProto]) -> None:
        """Put `new` where the first of `old` was (inputs of `new` are all produced earlier)."""
        # match by name: protobuf hands out fresh wrapper objects, so identity is not reliable
        names = {n.name for n in old}
        nodes = list(self.graph.node)
        position = min(i for i, n in enumerate(nodes) if n.name in names)
        kept = [n for n in nodes if n.name not in names]
        kept[position:position] = new
        del self.graph.node[:]
        self.graph.node.extend(kept)
        self.reindex()

    def prune_initializers(self) -> None:
        used = {i for n in self.graph.node for i in n.input}
        keep = [init for init in self.graph.initializer if init.name in used]
        del self.graph.initializer[:]
        self.graph.initializer.extend(keep)
        self.inits = {init.name: init for init in keep}


def _attrs(node: onnx.NodeProto) -> dict[str, object]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _resize_scale(g: _Graph, node: onnx.NodeProto) -> float | None:
    """The uniform spatial scale of a Resize given by constant scales [1, 1, s, s], else None."""
    if node.op_type != "Resize" or len(node.input) < 3:
        return None
    scales = g.const(node.input[2])
    if scales is None or scales.shape != (4,) or scales[0] != 1 or scales[1] != 1 or scales[2] != scales[3]:
        return None
    return float(scales[2])


def _is_nearest_up(g: _Graph, node: onnx.NodeProto | None, r: int) -> bool:
    if node is None or _resize_scale(g, node) != float(r):
        return False
    a = _attrs(node)
    return (
        _text(a.get("mode", "nearest")) == "nearest"
        and _text(a.get("coordinate_transformation_mode", "half_pixel")) == "asymmetric"
        and _text(a.get("nearest_mode", "round_prefer_floor")) == "floor"
    )


def _is_cubic_half_pixel(node: onnx.NodeProto) -> bool:
    a = _attrs(node)
    return (
        _text(a.get("mode", "nearest")) == "cubic"
        and _text(a.get("coordinate_transformation_mode", "half_pixel")) == "half_pixel"
        and abs(float(a.get("cubic_coeff_a", -0.75)) - CUBIC_A) < 1e-9  # type: ignore[arg-type]
        and int(a.get("exclude_outside", 0)) == 0  # type: ignore[call-overload]
        and int(a.get("antialias", 0)) == 0  # type: ignore[call-overload]
    )


def _pixel_shuffle_with_skip(g: _Graph, add: onnx.NodeProto) -> tuple[onnx.NodeProto, onnx.NodeProto, int, int] | None:
    """Match Add(DepthToSpace_CRD(r)(conv), Resize_nearest(r)(x)); returns (d2s, upsample, r, channels)."""
    if add.op_type != "Add" or len(add.input) != 2:
        return None
    for d2s_name, up_name in (add.input, reversed(add.input)):
        d2s, up = g.producer.get(d2s_name), g.producer.get(up_name)
        if d2s is None or d2s.op_type != "DepthToSpace" or _text(_attrs(d2s).get("mode", "DCR")) != "CRD":
            continue
        r = int(_attrs(d2s)["blocksize"])  # type: ignore[call-overload]
        if not _is_nearest_up(g, up, r) or g.only_consumer(d2s.output[0]) is not add:
            continue
        conv = g.producer.get(d2s.input[0])
        weight = g.const(conv.input[1]) if conv is not None and conv.op_type == "Conv" else None
        if weight is None or weight.shape[0] % (r * r):
            continue
        return d2s, up, r, weight.shape[0] // (r * r)  # type: ignore[union-attr]
    return None


def _edge_pad_permuted(g: _Graph, src: str, channels: int, r: int, prefix: str) -> tuple[list[onnx.NodeProto], str]:
    """Pad a [N, C*r*r, H, W] sub-pixel tensor by one pixel so it equals an edge pad of the x-r grid."""
    index = np.arange(channels * r * r).reshape(channels, r, r)
    perms = {
        "top": index[:, :1, :].repeat(r, axis=1),
        "bottom": index[:, -1:, :].repeat(r, axis=1),
        "left": index[:, :, :1].repeat(r, axis=2),
        "right": index[:, :, -1:].repeat(r, axis=2),
    }
    nodes: list[onnx.NodeProto] = []
    current = src
    for axis, (first, last) in ((2, ("top", "bottom")), (3, ("left", "right"))):
        parts = []
        for side in (first, last):
            start, end = (0, 1) if side in ("top", "left") else (-1, np.iinfo(np.int64).max)
            sliced = f"{prefix}_{side}_slice"
            nodes.append(
                helper.make_node(
                    "Slice",
                    [
                        current,
                        g.add_const(f"{prefix}_s", np.array([start], np.int64)),
                        g.add_const(f"{prefix}_e", np.array([end], np.int64)),
                        g.add_const(f"{prefix}_a", np.array([axis], np.int64)),
                    ],
                    [sliced],
                    name=sliced,
                )
            )
            gathered = f"{prefix}_{side}"
            perm = g.add_const(f"{prefix}_perm", perms[side].reshape(-1).astype(np.int64))
            nodes.append(helper.make_node("Gather", [sliced, perm], [gathered], name=gathered, axis=1))
            parts.append(gathered)
        padded = f"{prefix}_pad{axis}"
        nodes.append(helper.make_node("Concat", [parts[0], current, parts[1]], [padded], name=padded, axis=axis))
        current = padded
    return nodes, current


def fold_downscale(g: _Graph) -> bool:
    for resize in list(g.graph.node):
        scale = _resize_scale(g, resize)
        if scale is None or scale >= 1 or not _is_cubic_half_pixel(resize):
            continue
        add = g.producer.get(resize.input[0])
        if add is None or g.only_consumer(add.output[0]) is not resize:
            continue
        match = _pixel_shuffle_with_skip(g, add)
        if match is None:
            continue
        d2s, up, r, channels = match
        q = round(r * scale)
        if abs(q - r * scale) > 1e-6 or not 1 <= q < r:
            continue
        try:
            taps = downscale_taps(r, q)  # [q, 3, r]
        except ValueError:
            continue
        # main[(c,a,b), (c,i,j), ky, kx] = taps[a,ky,i] * taps[b,kx,j]; skip[(c,a,b), c] sums over (i, j)
        sub = np.einsum("ayi,bxj->abijyx", taps, taps)  # [q, q, r, r, 3, 3]
        weight = np.zeros((channels * q * q, channels * r * r + channels, 3, 3), np.float64)
        for c in range(channels):
            rows = slice(c * q * q, (c + 1) * q * q)
            weight[rows, c * r * r : (c + 1) * r * r] = sub.reshape(q * q, r * r, 3, 3)
            weight[rows, channels * r * r + c] = sub.sum(axis=(2, 3)).reshape(q * q, 3, 3)
        prefix = f"{resize.name or 'resize'}_fold"
        nodes, padded = _edge_pad_permuted(g, d2s.input[0], channels, r, prefix)
        x_pad = f"{prefix}_xpad"
        pads = g.add_const(f"{prefix}_pads", np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64))
        nodes.append(helper.make_node("Pad", [up.input[0], pads], [x_pad], name=x_pad, mode="edge"))
        both = f"{prefix}_cat"
        nodes.append(helper.make_node("Concat", [padded, x_pad], [both], name=both, axis=1))
        phases = f"{prefix}_phases"
        w_name = g.add_const(f"{prefix}_W", weight.astype(np.float32))
        nodes.append(helper.make_node("Conv", [both, w_name], [phases], name=phases, kernel_shape=[3, 3]))
        nodes.append(
            helper.make_node("DepthToSpace", [phases], [resize.output[0]], name=prefix, blocksize=q, mode="CRD")
        )
        old = [d2s, add, resize]
        if g.only_consumer(up.output[0]) is add:
            old.append(up)
        g.replace(old, nodes)
        log.debug("rewrite_fold_downscale", node=resize.name, r=r, q=q)
        return True
    return False


def fold_skip_add(g: _Graph) -> bool:
    for add in list(g.graph.node):
        match = _pixel_shuffle_with_skip(g, add)
        if match is None:
            continue
        d2s, up, r, channels = match
        prefix = f"{add.name or 'add'}_skip"
        shape = f"{prefix}_shape"
        c5, x5, summed = f"{prefix}_c", f"{prefix}_x", f"{prefix}_sum"
        flat = f"{prefix}_flat"
        nodes = [
            helper.make_node("Shape", [d2s.input[0]], [shape], name=shape),
            helper.make_node(
                "Reshape",
                [d2s.input[0], g.add_const(prefix, np.array([0, channels, r * r, -1], np.int64))],
                [c5],
                name=c5,
            ),
            helper.make_node(
                "Reshape", [up.input[0], g.add_const(prefix, np.array([0, channels, 1, -1], np.int64))], [x5], name=x5
            ),
            helper.make_node("Add", [c5, x5], [summed], name=summed),
            helper.make_node("Reshape", [summed, shape], [flat], name=flat),
            helper.make_node("DepthToSpace", [flat], [add.output[0]], name=prefix, blocksize=r, mode="CRD"),
        ]
        old = [d2s, add]
        if g.only_consumer(up.output[0]) is add:
            old.append(up)
        g.replace(old, nodes)
        log.debug("rewrite_fold_skip_add", node=add.name, r=r)
        return True
    return False


def fold_scaled_residual(g: _Graph) -> bool:
    for mul in list(g.graph.node):
        if mul.op_type != "Mul" or len(mul.input) != 2:
            continue
        conv, k = g.producer.get(mul.input[0]), g.const(mul.input[1])
        if conv is None or conv.op_type != "Conv" or k is None or k.size != 1:
            continue
        if g.only_consumer(conv.output[0]) is not mul or len(g.consumers.get(conv.input[1], [])) != 1:
            continue
        weight = g.const(conv.input[1])
        bias = g.const(conv.input[2]) if len(conv.input) > 2 else None
        if weight is None or (len(conv.input) > 2 and bias is None):
            continue
        factor = np.float32(k.reshape(()))
        conv.input[1] = g.add_const(f"{conv.name}_W", (weight * factor).astype(np.float32))
        if bias is not None:
            conv.input[2] = g.add_const(f"{conv.name}_B", (bias * factor).astype(np.float32))
        conv.output[0] = mul.output[0]
        g.replace([mul], [])
        return True
    return False


def _conv_consumers(g: _Graph, tensor: str) -> list[onnx.NodeProto] | None:
    """The convs reading `tensor` as data input with constant, unshared weights; None if anything else reads it."""
    users = g.consumers.get(tensor, [])
    if not users or tensor in g.outputs:
        return None
    for user in users:
        if user.op_type != "Conv" or user.input[0] != tensor or list(user.input).count(tensor) != 1:
            return None
        weight = g.const(user.input[1])
        group = int(_attrs(user).get("group", 1))  # type: ignore[call-overload]
        if weight is None or group != 1 or len(g.consumers.get(user.input[1], [])) != 1:
            return None
    return users


def prelu_to_relu(g: _Graph) -> bool:
    for prelu in list(g.graph.node):
        if prelu.op_type != "PRelu":
            continue
        slope = g.const(prelu.input[1])
        if slope is None or slope.ndim != 3 or slope.shape[1:] != (1, 1):
            continue
        a = slope.astype(np.float64).reshape(-1)
        y, z = prelu.input[0], prelu.output[0]
        convs = _conv_consumers(g, z)
        relu = f"{prelu.name}_relu"
        nodes = [helper.make_node("Relu", [y], [relu], name=relu)]
        shape = slope.shape
        if convs is not None and np.all(np.abs(a) > 1e-12):
            k = ((1.0 - a) / a).astype(np.float32).reshape(shape)
            scaled = f"{prelu.name}_kr"
            nodes.append(helper.make_node("Mul", [relu, g.add_const(f"{prelu.name}_k", k)], [scaled], name=scaled))
            nodes.append(helper.make_node("Add", [y, scaled], [z], name=f"{prelu.name}_add"))
            for conv in convs:
                weight = g.const(conv.input[1])
                assert weight is not None  # checked by _conv_consumers
                factor = a.reshape(1, -1, 1, 1)
                conv.input[1] = g.add_const(f"{conv.name}_W", (weight.astype(np.float64) * factor).astype(np.float32))
        else:
            ay, kr = f"{prelu.name}_ay", f"{prelu.name}_kr"
            nodes += [
                helper.make_node("Mul", [y, g.add_const(f"{prelu.name}_a", slope)], [ay], name=ay),
                helper.make_node(
                    "Mul",
                    [relu, g.add_const(f"{prelu.name}_1ma", (1 - a).astype(np.float32).reshape(shape))],
                    [kr],
                    name=kr,
                ),
                helper.make_node("Add", [ay, kr], [z], name=f"{prelu.name}_add"),
            ]
        g.replace([prelu], nodes)
        return True
    return False


REWRITES: dict[str, Callable[[_Graph], bool]] = {
    "fold_downscale": fold_downscale,
    "fold_skip_add": fold_skip_add,
    "fold_scaled_residual": fold_scaled_residual,
    "prelu_to_relu": prelu_to_relu,
}


def optimise(model: onnx.ModelProto, names: list[str] | None = None) -> tuple[onnx.ModelProto, list[str]]:
    """Apply the rewrites (all by default) until none matches; returns the new model and what was applied."""
    result = onnx.ModelProto()
    result.CopyFrom(model)
    g = _Graph(result)
    applied: list[str] = []
    for name in names or list(REWRITES):
        count = 0
        while REWRITES[name](g):
            count += 1
        if count:
            applied.append(name)
    g.prune_initializers()
    return result, applied
