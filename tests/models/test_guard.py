"""The int8 saturation guard end to end on a tiny graph: the count the graph computes, and the engine taking
the fp32 output exactly where (and only where) activations clipped."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from vsr.engine import Upscaler
from vsr.guard import GUARD_OUTPUT, GuardStats
from vsr.models import guard
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
