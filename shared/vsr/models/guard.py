"""The saturation guard of an int8 variant: a per-cell count of activations that left their uint8 range.

Operator side only (imports `onnx`); the engine reads the result (vsr.guard). The guarded tensors are the uint8
outputs of the QuantizeLinear right after each conv (`conv_output_quantisers`): a value at 255 there (255 not
being the zero point) was clipped at the top of the range. Reading the uint8 output adds no consumer to a float
conv output, so ONNX Runtime still fuses DQ -> Conv -> Q into one QLinearConv (an extra consumer of a float
tensor would stop that), and the pooling runs on QLinearConv's NHWC output with no transpose. Clipping at the
bottom (a count of zeros) is not read: it needs a full-tensor BitwiseNot that ONNX Runtime runs in NCHW, two
transposes per layer; on the gate frames the top-side count alone separates text (hundreds of clipped channels
per cell) from natural frames (at most a few dozen).

Per guarded tensor [1, C, H, W] uint8 the graph computes
    MaxPool(q, cell x cell, stride cell, ceil)            -> per channel and cell: did any value reach 255?
    ReduceSum over C of Relu(Cast(that) - 254)            -> channels with a clipped value, per cell
and the sum over all guarded tensors is the graph output `GUARD_OUTPUT`, [1, 1, ceil(H/cell), ceil(W/cell)]
float: how many (layer, channel) pairs clipped in each cell of the input. The engine recomputes in fp32 the
cells (dilated by the receptive field) whose count exceeds a threshold (settings `model.int8_guard`).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from vsr.guard import GUARD_OUTPUT, META_CELL, META_RADIUS

META_TENSORS = "guard_tensors"


def activation_quantisers(model: onnx.ModelProto) -> list[tuple[str, int]]:
    """(uint8 output, zero point) of every QuantizeLinear on an activation (not the model input)."""
    inits = {i.name: i for i in model.graph.initializer}
    found = []
    for node in model.graph.node:
        if node.op_type != "QuantizeLinear" or node.input[0] == "input" or len(node.input) < 3:
            continue
        zero = inits.get(node.input[2])
        if zero is None or zero.data_type != TensorProto.UINT8:
            continue
        found.append((node.output[0], int(numpy_helper.to_array(zero))))
    return found


def conv_output_quantisers(model: onnx.ModelProto) -> list[str]:
    """The activation quantisers right after a Conv: in the optimised graph they are QLinearConv outputs, in
    ONNX Runtime's NHWC layout, so a MaxPool there runs as NhwcMaxPool with no transpose (the quantisers after
    the uint8 activation ops would each cost two full-tensor transposes)."""
    producer = {o: n for n in model.graph.node for o in n.output}
    names = {name for name, _ in activation_quantisers(model)}
    found = []
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear" and node.output[0] in names:
            source = producer.get(node.input[0])
            if source is not None and source.op_type == "Conv":
                found.append(node.output[0])
    return found


def receptive_radius(model: onnx.ModelProto) -> int:
    """Input pixels an activation can reach in the output: one per 3x3 conv after the first (a bound: the sum
    of every conv's kernel half-width), plus 2 for the bicubic x0.5/x0.75 tail."""
    radius = 2
    for node in model.graph.node:
        if node.op_type == "Conv":
            kernel = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "kernel_shape"), [1])
            radius += (int(kernel[0]) - 1) // 2
    return radius


def add_guard(model: onnx.ModelProto, cell: int, tensors: list[str] | None = None) -> onnx.ModelProto:
    """A copy of the quantised `model` with output `GUARD_OUTPUT` (see the module doc). `tensors`: the uint8
    tensors to guard (None: every activation quantiser)."""
    guarded = onnx.ModelProto()
    guarded.CopyFrom(model)
    g = guarded.graph
    chosen = [(name, zero) for name, zero in activation_quantisers(model) if tensors is None or name in tensors]
    if not chosen:
        raise ValueError("no activation quantiser to guard")
    g.initializer.append(numpy_helper.from_array(np.array(254.0, np.float32), "guard_254"))
    g.initializer.append(numpy_helper.from_array(np.array([1], np.int64), "guard_axes"))
    counts: list[str] = []

    def count(source: str, tag: str) -> None:
        pooled, as_float, over, hit, total = (f"{source}_guard{tag}_{s}" for s in ("pool", "f", "sub", "hit", "n"))
        g.node.extend(
            [
                helper.make_node(
                    "MaxPool", [source], [pooled], kernel_shape=[cell, cell], strides=[cell, cell], ceil_mode=1
                ),
                helper.make_node("Cast", [pooled], [as_float], to=TensorProto.FLOAT),
                helper.make_node("Sub", [as_float, "guard_254"], [over]),
                helper.make_node("Relu", [over], [hit]),
                helper.make_node("ReduceSum", [hit, "guard_axes"], [total], keepdims=1),
            ]
        )
        counts.append(total)

    for name, zero in chosen:
        if zero < 255:  # 255 is a clipped value unless it is the zero point
            count(name, "hi")
    g.node.append(helper.make_node("Sum", counts, [GUARD_OUTPUT]))
    g.output.append(helper.make_tensor_value_info(GUARD_OUTPUT, TensorProto.FLOAT, [1, 1, None, None]))
    meta = {
        META_CELL: str(cell),
        META_RADIUS: str(receptive_radius(model)),
        META_TENSORS: str(len(chosen)),
    }
    existing = {p.key: p for p in guarded.metadata_props}
    for key, value in meta.items():
        if key in existing:
            existing[key].value = value
        else:
            guarded.metadata_props.add(key=key, value=value)
    return guarded
