"""The saturation guard of an int8 variant: a per-cell count of activations that left their uint8 range.

Operator side only (imports `onnx`); the engine reads the result (vsr.guard). The guarded tensors are the uint8
outputs of the QuantizeLinear right after each conv (`conv_output_quantisers`): a value at 255 there (255 not
being the zero point) was clipped at the top of the range. Reading the uint8 output adds no consumer to a float
conv output, so ONNX Runtime still fuses DQ -> Conv -> Q into one QLinearConv (an extra consumer of a float
tensor would stop that), and the pooling runs on QLinearConv's NHWC output with no transpose. With
`bottom=True` the channels that reached 0 (the bottom of the range) are counted too, from `255 - q` (a
QLinearMul by -1, exact) pooled by an explicit com.microsoft NhwcMaxPool: still no full-tensor transpose, about
1-7% more time on the mixed-precision variant (docs/int8.md, Round 2). A BitwiseNot or a plain MaxPool after the
QLinearMul would run in NCHW, with a full-tensor transpose per layer (+20%).

Per guarded tensor [1, C, H, W] uint8 the graph computes
    MaxPool(q, cell x cell, stride cell, ceil)            -> per channel and cell: did any value reach 255?
    ReduceSum over C of Relu(Cast(that) - 254)            -> channels with a clipped value, per cell
(the bottom side likewise on 255 - q) and the sum over all guarded tensors is the graph output `GUARD_OUTPUT`,
[1, 1, ceil(H/cell), ceil(W/cell)] float: how many (layer, channel) pairs clipped in each cell of the input. The engine recomputes in fp32 the
cells (dilated by the receptive field) whose count exceeds a threshold (settings `model.int8_guard`).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from vsr.guard import GUARD_OUTPUT, META_CELL, META_RADIUS

META_TENSORS = "guard_tensors"
META_SIDES = "guard_sides"
MS_DOMAIN = "com.microsoft"  # ONNX Runtime's contrib ops (NhwcMaxPool)


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


def _scale_of(model: onnx.ModelProto, quantised: str) -> tuple[str, str]:
    """(scale, zero point) initializer names of the QuantizeLinear whose output is `quantised`."""
    node = next(n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.output[0] == quantised)
    return node.input[1], node.input[2]


def add_guard(
    model: onnx.ModelProto, cell: int, tensors: list[str] | None = None, bottom: bool = False
) -> onnx.ModelProto:
    """A copy of the quantised `model` with output `GUARD_OUTPUT` (see the module doc). `tensors`: the uint8
    tensors to guard (None: every activation quantiser). `bottom`: count the channels that reached 0 (the bottom
    of the range, unless 0 is the zero point) too, through `255 - q` as a quantised Mul by -1 (see `_negated`)."""
    guarded = onnx.ModelProto()
    guarded.CopyFrom(model)
    g = guarded.graph
    chosen = [(name, zero) for name, zero in activation_quantisers(model) if tensors is None or name in tensors]
    if not chosen:
        raise ValueError("no activation quantiser to guard")
    g.initializer.append(numpy_helper.from_array(np.array(254.0, np.float32), "guard_254"))
    g.initializer.append(numpy_helper.from_array(np.array([1], np.int64), "guard_axes"))
    if bottom:  # -1 as a quantised constant: uint8 0 with zero point 1, scale 1
        g.initializer.extend(
            [
                numpy_helper.from_array(np.array(0, np.uint8), "guard_minus1_q"),
                numpy_helper.from_array(np.array(1.0, np.float32), "guard_minus1_s"),
                numpy_helper.from_array(np.array(1, np.uint8), "guard_minus1_z"),
                numpy_helper.from_array(np.array([3], np.int64), "guard_axes_nhwc"),
            ]
        )
        if not any(o.domain == MS_DOMAIN for o in guarded.opset_import):
            guarded.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    counts: list[str] = []

    def negated(source: str, zero: int) -> str:
        """`255 - source` in uint8, exactly: DQ(source) * DQ(-1) -> Q with the same scale and zero point
        255 - zero, so a 0 of `source` becomes 255. ONNX Runtime fuses DQ -> Mul -> Q into one QLinearMul,
        which its layout transformer runs in NHWC on QLinearConv's output."""
        scale, zero_name = _scale_of(guarded, source)
        flipped_zero = f"{source}_guardlo_z"
        g.initializer.append(numpy_helper.from_array(np.array(255 - zero, np.uint8), flipped_zero))
        value, minus1, product, out = (f"{source}_guardlo_{s}" for s in ("dq", "m1", "mul", "q"))
        g.node.extend(
            [
                helper.make_node("DequantizeLinear", [source, scale, zero_name], [value], name=f"{value}_DQ"),
                helper.make_node(
                    "DequantizeLinear",
                    ["guard_minus1_q", "guard_minus1_s", "guard_minus1_z"],
                    [minus1],
                    name=f"{minus1}_DQ",
                ),
                helper.make_node("Mul", [value, minus1], [product], name=f"{product}_Mul"),
                helper.make_node("QuantizeLinear", [product, scale, flipped_zero], [out], name=f"{out}_Q"),
            ]
        )
        return out

    def count_nhwc(source: str, tag: str) -> None:
        """`count` for a tensor that is not a QuantizeLinear output: ONNX Runtime's layout transformer turns a
        MaxPool into NhwcMaxPool only right after a QuantizeLinear/QLinearConv; after the QLinearMul it keeps
        an NCHW MaxPool and moves the whole chain back to NCHW (a full-tensor transpose per layer, +20% time
        measured). So the NHWC pooling is written out: Transpose to NHWC (cancelled by the optimiser against
        its own transpose after QLinearConv), com.microsoft NhwcMaxPool, the count over the last axis, and a
        transpose of the per-cell counts (1/256 of a channel) back."""
        nhwc, pooled, as_float, over, hit, total, out = (
            f"{source}_guard{tag}_{s}" for s in ("nhwc", "pool", "f", "sub", "hit", "sum", "n")
        )
        g.node.extend(
            [
                helper.make_node("Transpose", [source], [nhwc], perm=[0, 2, 3, 1]),
                helper.make_node(
                    "NhwcMaxPool",
                    [nhwc],
                    [pooled],
                    domain=MS_DOMAIN,
                    kernel_shape=[cell, cell],
                    strides=[cell, cell],
                    ceil_mode=1,
                ),
                helper.make_node("Cast", [pooled], [as_float], to=TensorProto.FLOAT),
                helper.make_node("Sub", [as_float, "guard_254"], [over]),
                helper.make_node("Relu", [over], [hit]),
                helper.make_node("ReduceSum", [hit, "guard_axes_nhwc"], [total], keepdims=1),
                helper.make_node("Transpose", [total], [out], perm=[0, 3, 1, 2]),
            ]
        )
        counts.append(out)

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
        if bottom and zero > 0:  # and 0 likewise
            count_nhwc(negated(name, zero), "lo")
    g.node.append(helper.make_node("Sum", counts, [GUARD_OUTPUT]))
    g.output.append(helper.make_tensor_value_info(GUARD_OUTPUT, TensorProto.FLOAT, [1, 1, None, None]))
    meta = {
        META_CELL: str(cell),
        META_RADIUS: str(receptive_radius(model)),
        META_TENSORS: str(len(chosen)),
        META_SIDES: "top+bottom" if bottom else "top",
    }
    existing = {p.key: p for p in guarded.metadata_props}
    for key, value in meta.items():
        if key in existing:
            existing[key].value = value
        else:
            guarded.metadata_props.add(key=key, value=value)
    return guarded
