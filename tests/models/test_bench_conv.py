"""The layer benchmark compares like with like: its Winograd graph and its ncnn stack compute ORT's layers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from bench import bench_conv

SHAPE = [1, bench_conv.CHANNELS, 12, 24]  # width a multiple of 4 and 6
LAYERS = 3


@pytest.fixture(scope="module")
def layer() -> tuple[np.ndarray, np.ndarray]:
    return bench_conv.body_layer_weights("realesr-animevideov3-x2")


def _run(model) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(3).random(SHAPE, dtype=np.float32)
    return session.run(None, {"x": x})[0]


@pytest.mark.parametrize("m", [2, 4, 6])
def test_winograd_matrices_compute_the_correlation(m: int) -> None:
    at, g, bt = bench_conv.winograd_1d(bench_conv.POINTS[: m + 1])
    rng = np.random.default_rng(m)
    window, taps = rng.random(m + 2), rng.random(3)
    expected = np.correlate(window, taps, mode="valid")
    np.testing.assert_allclose(at @ ((g @ taps) * (bt @ window)), expected, atol=1e-12)


@pytest.mark.parametrize("m", [4, 6])
def test_graph_level_winograd_equals_direct_convolution(layer, m: int) -> None:
    weight, bias = layer
    direct = _run(bench_conv.direct_stack(weight, bias, LAYERS, SHAPE))
    winograd = _run(bench_conv.winograd_stack(weight, bias, LAYERS, SHAPE, m))
    assert np.abs(winograd - direct).max() <= 1e-5 * np.abs(direct).max()
    assert np.abs(direct).max() > 1  # the layers did something


def test_ncnn_stack_matches_onnx_runtime(layer, tmp_path: Path) -> None:
    pytest.importorskip("ncnn")
    weight, bias = layer
    direct = _run(bench_conv.direct_stack(weight, bias, LAYERS, SHAPE))
    x = np.random.default_rng(3).random(SHAPE, dtype=np.float32)
    for winograd in (False, True):
        out = bench_conv.ncnn_runner(weight, bias, LAYERS, 1, winograd, tmp_path)(x)
        assert np.abs(out - direct).max() <= 1e-5 * np.abs(direct).max()


@pytest.mark.parametrize(
    "argv", [["--phases", "7"], ["--layers", "0"], ["--width", "642"]], ids=["phases", "layers", "width"]
)
def test_bad_arguments_are_refused_before_any_work(argv: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as refused:
        bench_conv.main(argv)
    assert refused.value.code != 0
    assert "Traceback" not in capsys.readouterr().err
