"""The int8 quantiser's exact rewrites and graph shape, and how precision picks a model (fast: small crops)."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from vsr.errors import UnsupportedModelError
from vsr.models import quantize, registry, samples
from vsr.pipeline.modelstore import ModelRef
from vsr.settings import get_settings


@pytest.fixture(scope="module")
def x2(model_dir: Path) -> onnx.ModelProto:
    return onnx.load(str(registry.onnx_path("realesr-animevideov3-x2")))


@pytest.fixture(scope="module")
def crops(bikes_frames: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(bikes_frames[:2, 100:148, 200:248])


@pytest.mark.parametrize("form", ["to_flipped", "to_prelu"])
def test_activation_forms_compute_the_same_function(x2: onnx.ModelProto, crops: np.ndarray, form: str) -> None:
    graph = quantize.EngineGraph(x2)
    rewritten = getattr(graph, form)()
    assert quantize.run(rewritten, crops) == pytest.approx(quantize.run(x2, crops), abs=2e-4)
    ops = collections.Counter(n.op_type for n in rewritten.graph.node)
    assert ops["PRelu" if form == "to_prelu" else "Relu"] == 17


@pytest.mark.parametrize("activation", ["qlinear", "rewrite"])
def test_equalisation_is_exact_and_evens_the_channels(x2: onnx.ModelProto, crops: np.ndarray, activation: str) -> None:
    graph = quantize.EngineGraph(quantize.EngineGraph(x2).to_flipped() if activation == "qlinear" else x2)
    layers = quantize.quantisable(graph)
    before = quantize.calibrate(graph.model, graph, layers, crops, hessians=False)
    convs, gains = quantize.equalise(
        graph,
        {n: s.input_peaks for n, s in before.items()},  # type: ignore[misc]
        {n: s.output_peaks for n, s in before.items()},  # type: ignore[misc]
        use_gains=activation == "rewrite",
    )
    equalised = graph.with_weights(convs, gains)
    assert quantize.run(equalised, crops) == pytest.approx(quantize.run(x2, crops), abs=5e-4)
    eq_graph = quantize.EngineGraph(equalised)
    after = quantize.calibrate(equalised, eq_graph, quantize.quantisable(eq_graph), crops, hessians=False)
    # the rewrite's 1/a makes some conv inputs thousands of times the median channel; equalised, the spread is small
    spread = {n: float(s.output_peaks.max() / np.median(s.output_peaks)) for n, s in after.items()}  # type: ignore[union-attr]
    raw = {n: float(s.output_peaks.max() / np.median(s.output_peaks)) for n, s in before.items()}  # type: ignore[union-attr]
    assert max(spread.values()) < max(raw.values())
    assert max(spread.values()) < 1.5


def test_uint8_grid_and_mse_range() -> None:
    scale, zero = quantize.uint8_params(-1.0, 3.0)
    assert zero == 64 and scale == pytest.approx(4 / 255)
    rng = np.random.default_rng(0)
    values = rng.laplace(0, 1, 100_000).astype(np.float32)  # heavy tails, like conv activations
    mse = quantize.choose_range(values, "mse")
    minmax = quantize.choose_range(values, "minmax")
    err = {
        k: float(np.mean((quantize.fake_uint8(values, *p) - values) ** 2)) for k, p in (("mse", mse), ("mm", minmax))
    }
    assert err["mse"] < 0.9 * err["mm"]


def test_gptq_rounding_reconstructs_the_layer_output_better_than_nearest() -> None:
    rng = np.random.default_rng(1)
    weight = rng.normal(0, 0.05, (8, 4, 3, 3)).astype(np.float32)
    x = rng.normal(0, 1, (4, 24, 24)).astype(np.float32)
    x[1] = 0.7 * x[0] + 0.3 * x[1]  # correlated inputs: where error feedback pays
    cols = quantize.im2col(x, 3, 3, (1, 1, 1, 1), step=(1, 1)).astype(np.float64)
    scales = quantize.weight_scales(weight)
    exact = cols @ weight.reshape(8, -1).T
    errors = {}
    for name, q in (
        ("nearest", quantize.round_nearest(weight, scales)),
        ("gptq", quantize.round_gptq(weight, scales, cols.T @ cols)),
    ):
        assert q.dtype == np.int8 and np.abs(q).max() <= 127
        approx = cols @ (q.reshape(8, -1) * scales[:, None]).T
        errors[name] = float(np.mean((approx - exact) ** 2))
    assert errors["gptq"] < 0.8 * errors["nearest"]


def test_quantised_graph_runs_as_int8_kernels(x2: onnx.ModelProto, crops: np.ndarray, tmp_path: Path) -> None:
    """Every conv becomes a QLinearConv and every activation a uint8 op: no float pass between convs."""
    recipe = quantize.Recipe(weights="nearest", bias_correct=False)
    q = quantize.quantise(x2, crops, recipe)
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimised.onnx")
    ort.InferenceSession(q.model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    ops = collections.Counter(n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node)
    assert ops["QLinearConv"] == 18 and ops["QLinearLeakyRelu"] == 17
    assert ops["QLinearMul"] == 17 and ops["QLinearAdd"] == 17
    assert ops["DequantizeLinear"] <= 3 and ops["Relu"] == 0 and ops["Mul"] == 0
    psnr = 10 * np.log10(
        1 / np.mean((np.clip(quantize.run(q.model, crops), 0, 1) - np.clip(quantize.run(x2, crops), 0, 1)) ** 2)
    )
    assert psnr > 35  # fidelity is the gate's job (test_int8_gate.py); this only catches a broken graph


# --- precision -----------------------------------------------------------------------------------------------
def _fake_variant(model_dir: Path, name: str, gate: str) -> None:
    variant = model_dir / f"{name}{registry.INT8_SUFFIX}.onnx"
    variant.write_bytes(registry.onnx_path(name).read_bytes())
    meta = json.loads(registry.onnx_path(name).with_suffix(".json").read_text())
    meta |= {"name": variant.stem, "precision": "int8", "gate": gate}
    variant.with_suffix(".json").write_text(json.dumps(meta))


def test_precision_picks_a_variant_only_if_it_passed_the_gate(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    for suffix in (".onnx", ".json"):
        source = registry.onnx_path("realesr-animevideov3-x3").with_suffix(suffix)
        (folder / source.name).write_bytes(source.read_bytes())
    monkeypatch.setenv("VSR_MODEL_DIR", str(folder))
    name = "realesr-animevideov3-x3"
    _fake_variant(folder, name, "fail")
    with pytest.raises(UnsupportedModelError, match="passed the fidelity gate"):
        registry.resolve_model(name, None, "int8")
    assert registry.resolve_model(name, None, "int8", strict=False).precision == "fp32"  # default: falls back
    _fake_variant(folder, name, "pass")
    info = registry.resolve_model(name, None, "int8")
    assert (info.name, info.precision) == (f"{name}-int8", "int8")
    assert registry.resolve_model(info.name, None, "fp32").name == name
    assert registry.resolve_model(None, 3, "int8").name == f"{name}-int8"
    listed = {m.name: m.precision for m in registry.list_models()}
    assert listed[f"{name}-int8"] == "int8" and listed[name] == "fp32"


def test_settings_precision_and_the_deployed_model(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = get_settings()
    assert settings.precision in registry.PRECISIONS
    expected = settings.model_name
    if settings.precision == "int8" and registry.int8_variant(settings.model_name) is not None:
        expected += registry.INT8_SUFFIX
    s = get_settings()
    assert registry.deployed_model_name(s.model_name, s.precision) == expected
    ref = ModelRef("b", "models/x-int8.onnx", "x-int8", 2, 1, "", "")
    assert ref.to_message()["precision"] == "int8"
    assert ModelRef("b", "models/x.onnx", "x", 2, 1, "", "").to_message()["precision"] == "fp32"


def test_status_shows_the_precision_a_job_ran_with(capsys: pytest.CaptureFixture[str]) -> None:
    from vsr import ops

    job = {"job_id": "j", "status": "DONE", "input": {"bucket": "b", "key": "k"}, "done_count": 1}
    job |= {"segment_count": 1, "remaining": 0, "segments": []}
    ops._print_job({**job, "model": {"name": "m-int8", "scale": 2, "precision": "int8"}})
    assert "m-int8 x2 (int8)" in capsys.readouterr().out
    ops._print_job({**job, "model": {"name": "m", "scale": 2}})  # jobs recorded before precision existed
    assert "m x2 (fp32)" in capsys.readouterr().out
    assert "guard" not in capsys.readouterr().out


def test_status_shows_the_share_the_int8_guard_recomputed(capsys: pytest.CaptureFixture[str]) -> None:
    from vsr import ops

    job = {"job_id": "j", "status": "DONE", "input": {"bucket": "b", "key": "k"}, "done_count": 2}
    job |= {"segment_count": 2, "remaining": 0, "segments": [], "model": {"name": "m-int8", "scale": 2}}
    ops._print_job({**job, "segment_totals": {"guard_px": 4000.0, "guard_recomputed_px": 1000.0, "frames": 8}})
    assert "guard    25.00% of input pixels recomputed in fp32" in capsys.readouterr().out
    ops._print_job({**job, "segment_totals": {"frames": 8}})  # fp32, or a model without a guard
    assert "recomputed" not in capsys.readouterr().out


def test_upscale_cli_refuses_int8_without_a_passed_variant(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from vsr import cli

    for suffix in (".onnx", ".json"):
        source = registry.onnx_path("realesr-animevideov3-x2").with_suffix(suffix)
        (tmp_path / source.name).write_bytes(source.read_bytes())
    monkeypatch.setenv("VSR_MODEL_DIR", str(tmp_path))  # no int8 variant here
    clip = str(samples.bikes_path())
    code = cli.main(["upscale", clip, "-o", str(tmp_path / "o.mp4"), "--precision", "int8", "--no-progress"])
    assert code == 2 and "no int8 variant that passed the fidelity gate" in capsys.readouterr().err
    assert not (tmp_path / "o.mp4").exists()
