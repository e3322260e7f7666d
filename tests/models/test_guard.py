"""The int8 saturation guard end to end on a tiny graph: the count the graph computes, and the engine taking
the fp32 output exactly where (and only where) activations clipped."""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from vsr.engine import Upscaler
from vsr.guard import GUARD_OUTPUT, GuardStats
from vsr.models import guard, quantize
from vsr.models.registry import ModelInfo

CELL = 8
CLIP_AT = 0.5  # the conv output's uint8 range is [0, 0.5]


def tiny_model(gain: float, quantised: bool) -> onnx.ModelProto:
    """x2 nearest upscale as a 1x1 conv (3 -> 12 channels) and DepthToSpace; `quantised`: a uint8 QDQ pair on
    the conv output whose range clips at CLIP_AT, as the int8 variants have."""
    weight = np.zeros((12, 3, 1, 1), np.float32)
    for c in range(12):
        weight[c, c // 4] = gain
    inits = [numpy_helper.from_array(weight, "w")]
    nodes = [helper.make_node("Conv", ["input", "w"], ["y"], name="Conv_0")]
    source = "y"
    if quantised:
        inits += [
            numpy_helper.from_array(np.array(CLIP_AT / 255, np.float32), "s"),
            numpy_helper.from_array(np.array(0, np.uint8), "z"),
        ]
        nodes += [
            helper.make_node("QuantizeLinear", ["y", "s", "z"], ["y_q"], name="y_Q"),
            helper.make_node("DequantizeLinear", ["y_q", "s", "z"], ["y_dq"], name="y_DQ"),
        ]
        source = "y_dq"
    nodes.append(helper.make_node("DepthToSpace", [source], ["output"], blocksize=2, mode="CRD"))
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, None, None])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, None, None])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def frame_with_bright_spot() -> np.ndarray:
    frame = np.full((40, 56, 3), 0.2, np.float32)
    frame[17:20, 30:33] = 0.9  # above CLIP_AT: clips in the 4 channels of each colour
    return frame


def test_the_graph_counts_clipped_channels_per_cell() -> None:
    model = tiny_model(1.0, quantised=True)
    assert guard.conv_output_quantisers(model) == ["y_q"]
    guarded = guard.add_guard(model, CELL, guard.conv_output_quantisers(model))
    onnx.checker.check_model(guarded)
    guarded.graph.output.append(helper.make_tensor_value_info("y_q", TensorProto.UINT8, None))
    session = ort.InferenceSession(guarded.SerializeToString(), providers=["CPUExecutionProvider"])
    plain = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.ascontiguousarray(frame_with_bright_spot().transpose(2, 0, 1)[None])
    out, counts, q = session.run(["output", GUARD_OUTPUT, "y_q"], {"input": x})
    np.testing.assert_array_equal(out, plain.run(["output"], {"input": x})[0])  # the picture is untouched
    h, w = -(-40 // CELL), -(-56 // CELL)
    assert counts.shape == (1, 1, h, w)
    expected = np.zeros((h, w))
    for r in range(h):
        for c in range(w):
            block = q[0, :, r * CELL : (r + 1) * CELL, c * CELL : (c + 1) * CELL]
            expected[r, c] = (block == 255).any(axis=(1, 2)).sum()
    np.testing.assert_array_equal(counts[0, 0], expected)
    assert expected.max() == 12 and (expected > 0).sum() == 2  # the spot straddles two cells


LOW = -0.25  # the fully quantised conv's output range is [LOW, CLIP_AT]: zero point 85, clips at both ends
SHIFT = 0.3  # its bias: input 0 -> -0.3 (below LOW), 0.2 -> -0.1 (inside), 0.9 -> 0.6 (above CLIP_AT)


def qdq_conv_model() -> onnx.ModelProto:
    """The tiny x2 upscale as a fully quantised QDQ conv (uint8 input, int8 weights, int32 bias, uint8 output
    with a zero point inside the range), so that ONNX Runtime fuses it into one QLinearConv as it does the
    int8 variants' convs."""
    out_scale = (CLIP_AT - LOW) / 255
    out_zero = round(-LOW / out_scale)
    in_scale, w_scale = 1 / 255, 1 / 127
    weight = np.zeros((12, 3, 1, 1), np.int8)
    for c in range(12):
        weight[c, c // 4] = 127  # 1.0
    bias = np.full(12, round(-SHIFT / (in_scale * w_scale)), np.int32)
    inits = [
        numpy_helper.from_array(weight, "wq"),
        numpy_helper.from_array(np.full(12, w_scale, np.float32), "ws"),
        numpy_helper.from_array(np.zeros(12, np.int8), "wz"),
        numpy_helper.from_array(bias, "bq"),
        numpy_helper.from_array(np.full(12, in_scale * w_scale, np.float32), "bs"),
        numpy_helper.from_array(np.array(in_scale, np.float32), "xs"),
        numpy_helper.from_array(np.array(0, np.uint8), "xz"),
        numpy_helper.from_array(np.array(out_scale, np.float32), "s"),
        numpy_helper.from_array(np.array(out_zero, np.uint8), "z"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["input", "xs", "xz"], ["x_q"]),
        helper.make_node("DequantizeLinear", ["x_q", "xs", "xz"], ["x_dq"]),
        helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["w"], axis=0),
        helper.make_node("DequantizeLinear", ["bq", "bs"], ["b"], axis=0),
        helper.make_node("Conv", ["x_dq", "w", "b"], ["y"], name="Conv_0"),
        helper.make_node("QuantizeLinear", ["y", "s", "z"], ["y_q"], name="y_Q"),
        helper.make_node("DequantizeLinear", ["y_q", "s", "z"], ["y_dq"], name="y_DQ"),
        helper.make_node("DepthToSpace", ["y_dq"], ["output"], blocksize=2, mode="CRD"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny-qdq",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, None, None])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, None, None])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def frame_with_bright_and_dark_spots() -> np.ndarray:
    frame = frame_with_bright_spot()
    frame[3:6, 4:7] = 0.0  # below LOW after the bias: clips at the bottom, in the 4 channels of each colour
    return frame


def per_cell(q: np.ndarray, value: int) -> np.ndarray:
    """Channels of q [1, C, H, W] with `value` somewhere in each CELL x CELL cell."""
    h, w = -(-q.shape[2] // CELL), -(-q.shape[3] // CELL)
    counts = np.zeros((h, w))
    for r in range(h):
        for c in range(w):
            block = q[0, :, r * CELL : (r + 1) * CELL, c * CELL : (c + 1) * CELL]
            counts[r, c] = (block == value).any(axis=(1, 2)).sum()
    return counts


def optimised(model: onnx.ModelProto, path: Path) -> tuple[ort.InferenceSession, onnx.ModelProto]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.optimized_model_filepath = str(path)
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session, onnx.load(str(path))


def full_size_transposes(graph: onnx.ModelProto) -> int:
    """Transposes of whole activations (not of the per-cell pooled maps or counts)."""
    producer = {o: n.op_type for n in graph.graph.node for o in n.output}
    return sum(
        1
        for n in graph.graph.node
        if n.op_type == "Transpose" and producer.get(n.input[0]) not in ("NhwcMaxPool", "ReduceSum")
    )


def test_the_bottom_guard_counts_zeros_and_the_top_guard_still_counts_255s(tmp_path: Path) -> None:
    model = qdq_conv_model()
    tensors = guard.conv_output_quantisers(model)
    assert tensors == ["y_q"]
    top = guard.add_guard(model, CELL, tensors)
    both = guard.add_guard(model, CELL, tensors, bottom=True)
    onnx.checker.check_model(both)
    assert {p.key: p.value for p in both.metadata_props}[guard.META_SIDES] == "top+bottom"
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.append(helper.make_tensor_value_info("y_q", TensorProto.UINT8, None))
    x = np.ascontiguousarray(frame_with_bright_and_dark_spots().transpose(2, 0, 1)[None])
    plain_out, q = optimised(probe, tmp_path / "plain.onnx")[0].run(["output", "y_q"], {"input": x})
    top_out, top_counts = optimised(top, tmp_path / "top.onnx")[0].run(["output", GUARD_OUTPUT], {"input": x})
    both_out, both_counts = optimised(both, tmp_path / "both.onnx")[0].run(["output", GUARD_OUTPUT], {"input": x})
    np.testing.assert_array_equal(top_out, plain_out)  # the picture is untouched
    np.testing.assert_array_equal(both_out, plain_out)
    hi, lo = per_cell(q, 255), per_cell(q, 0)
    assert hi.max() == 12 and (hi > 0).sum() == 2  # the bright spot, straddling two cells
    assert lo.max() == 12 and (lo > 0).sum() == 1  # the dark spot, in the first cell
    assert not (q[0, :, 20:30, 40:50] == 0).any()  # the background (-0.1) does not reach the bottom
    np.testing.assert_array_equal(top_counts[0, 0], hi)
    np.testing.assert_array_equal(both_counts[0, 0], hi + lo)


def test_the_bottom_guard_keeps_the_conv_fused_and_adds_no_full_size_transpose(tmp_path: Path) -> None:
    model = qdq_conv_model()
    tensors = guard.conv_output_quantisers(model)
    _, plain = optimised(model, tmp_path / "plain.onnx")
    _, top = optimised(guard.add_guard(model, CELL, tensors), tmp_path / "top.onnx")
    _, both = optimised(guard.add_guard(model, CELL, tensors, bottom=True), tmp_path / "both.onnx")
    ops = {name: collections.Counter(n.op_type for n in g.graph.node) for name, g in (("top", top), ("both", both))}
    assert ops["top"]["QLinearConv"] == ops["both"]["QLinearConv"] == 1 and ops["both"]["Conv"] == 0
    assert ops["both"]["QLinearMul"] == 1  # 255 - q, in uint8
    assert ops["top"]["NhwcMaxPool"] == 1 and ops["both"]["NhwcMaxPool"] == 2 and ops["both"]["MaxPool"] == 0
    assert full_size_transposes(both) == full_size_transposes(top) == full_size_transposes(plain)


def test_no_bottom_count_where_zero_is_the_zero_point() -> None:
    model = tiny_model(1.0, quantised=True)  # zero point 0: a 0 there is the value 0, not a clip
    both = guard.add_guard(model, CELL, ["y_q"], bottom=True)
    assert not any(n.op_type in ("Mul", "NhwcMaxPool") for n in both.graph.node)


def test_the_recipe_names_the_guarded_sides() -> None:
    """The description keys the recorded gate result: a bottom guard must not reuse a top-only record."""
    assert quantize.Recipe(guard_cell=16).describe().endswith("guard=conv-out-top/16px")
    assert quantize.Recipe(guard_cell=16, guard_bottom=True).describe().endswith("guard=conv-out-top+bottom/16px")


def save(model: onnx.ModelProto, path: Path, precision: str) -> ModelInfo:
    onnx.save_model(model, str(path))
    return ModelInfo(path.stem, 2, path, 12, str(path), sha256=path.stem, precision=precision)


@pytest.mark.parametrize("tile", [0, 24])
def test_the_engine_takes_fp32_exactly_where_activations_clipped(tmp_path: Path, tile: int) -> None:
    int8 = guard.add_guard(tiny_model(1.0, quantised=True), CELL, ["y_q"])
    variant = save(int8, tmp_path / f"tiny-int8-{tile}.onnx", "int8")
    # the fp32 "original" differs everywhere by a gain, so each output pixel says which model made it
    fp32 = save(tiny_model(1.01, quantised=False), tmp_path / f"tiny-{tile}.onnx", "fp32")
    frame = frame_with_bright_spot()
    upscaler = Upscaler(variant, tile, 4 if tile else 0, threads=1, parallel=False, guard_max_clipped=6, fallback=fp32)
    assert upscaler.guard is not None and upscaler.guard.cell == CELL
    stats = GuardStats()
    out = upscaler.upscale(frame[None], stats)[0]
    from_fp32 = np.isclose(out, np.clip(np.kron(frame, np.ones((2, 2, 1))) * 1.01, 0, 1), atol=1e-6).all(axis=-1)
    spot = np.zeros((40, 56), bool)
    spot[17:20, 30:33] = True
    # the clipped spot and its receptive field come from fp32 ...
    assert from_fp32[np.kron(spot, np.ones((2, 2), bool))].all()
    assert np.isclose(out[34:40, 60:66], 0.9 * 1.01).all()  # not clipped at 0.5 as int8 would
    # ... and the rest, far from it, from int8
    assert not from_fp32[:16].any() and not from_fp32[:, :32].any()
    assert 0 < stats.recomputed < stats.pixels == 40 * 56
    assert stats.fraction == pytest.approx(from_fp32.mean(), abs=0.02)


def test_a_higher_threshold_keeps_int8_everywhere(tmp_path: Path) -> None:
    variant = save(guard.add_guard(tiny_model(1.0, quantised=True), CELL, ["y_q"]), tmp_path / "t-int8.onnx", "int8")
    fp32 = save(tiny_model(1.01, quantised=False), tmp_path / "t.onnx", "fp32")
    upscaler = Upscaler(variant, 0, 0, threads=1, parallel=False, guard_max_clipped=12, fallback=fp32)
    stats = GuardStats()
    out = upscaler.upscale(frame_with_bright_spot()[None], stats)[0]
    assert stats.recomputed == 0 and np.isclose(out.max(), CLIP_AT, atol=1e-6)
