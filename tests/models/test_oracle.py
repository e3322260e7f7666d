"""Our ONNX conversions against ncnn running the original files, on real footage (crops of bikes.mp4)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from vsr.models import registry
from vsr.models.ncnn_reference import run_ncnn

pytest.importorskip("ncnn")

TOLERANCE = 1e-4
# x4plus is ~29x the cost of animevideov3 per pixel: a smaller crop keeps it fast
CROP = {"realesrgan-x4plus": 32, "realesrgan-x4plus-anime": 48}
DEFAULT_CROP = 64


def _crop(frames: np.ndarray, size: int) -> np.ndarray:
    # a textured region (wheels and bodies), two frames, odd offset so nothing is aligned by luck
    return np.ascontiguousarray(frames[:2, 101 : 101 + size, 301 : 301 + size])


def _onnx(path: Path, frames: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = session.run(None, {"input": np.ascontiguousarray(frames.transpose(0, 3, 1, 2))})[0]
    return out.transpose(0, 2, 3, 1)


@pytest.mark.parametrize("name", list(registry.BUNDLED))
@pytest.mark.parametrize("variant", ["plain", "optimised"])
def test_matches_ncnn(name: str, variant: str, model_dir: Path, plain_dir: Path, bikes_frames: np.ndarray) -> None:
    frames = _crop(bikes_frames, CROP.get(name, DEFAULT_CROP))
    path = (plain_dir if variant == "plain" else model_dir) / f"{name}.onnx"
    reference, _ = run_ncnn(name, frames, threads=2)
    ours = _onnx(path, frames)
    scale = registry.BUNDLED[name][1]
    assert ours.shape == (2, frames.shape[1] * scale, frames.shape[2] * scale, 3)
    assert reference.shape == ours.shape
    assert float(np.abs(ours - reference).max()) <= TOLERANCE
    # the comparison means something: the output is an image, not a constant
    assert float(ours.std()) > 0.05


def test_optimised_graphs_use_the_rewrites(model_dir: Path) -> None:
    meta = {n: registry._read_sidecar(model_dir / f"{n}.onnx") for n in registry.BUNDLED}
    assert "fold_downscale" in meta["realesr-animevideov3-x2"]["rewrites"]
    assert "fold_downscale" in meta["realesr-animevideov3-x3"]["rewrites"]
    assert "fold_skip_add" in meta["realesr-animevideov3-x4"]["rewrites"]
    assert "fold_scaled_residual" in meta["realesrgan-x4plus"]["rewrites"]
    onnx = pytest.importorskip("onnx")
    for name in ("realesr-animevideov3-x2", "realesr-animevideov3-x3"):
        # no tensor at x4 resolution is left in the x2/x3 graphs: no Resize at all
        ops = {node.op_type for node in onnx.load(str(model_dir / f"{name}.onnx")).graph.node}
        assert "Resize" not in ops
        assert {"Conv", "Relu", "DepthToSpace"} <= ops
        assert "PRelu" not in ops  # rewritten to Relu + per-channel affine (see rewrite.prelu_to_relu)
