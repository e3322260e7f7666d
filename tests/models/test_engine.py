"""The ORT engine on real frames: shapes, clipping, seam-free tiling, session reuse, CPU count."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vsr import engine
from vsr.models import registry


@pytest.fixture(scope="module")
def x2(model_dir: Path) -> registry.ModelInfo:
    return registry.resolve_model("realesr-animevideov3-x2")


def test_upscale_shape_range_and_agreement_with_the_raw_session(
    x2: registry.ModelInfo, bikes_frames: np.ndarray
) -> None:
    batch = bikes_frames[:2, :64, :96]
    up = engine.Upscaler(x2, tile=0)
    out = up.upscale(batch)
    assert up.scale == 2
    assert out.shape == (2, 128, 192, 3) and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    raw = up.session.run(None, {"input": np.ascontiguousarray(batch.transpose(0, 3, 1, 2))})[0]
    np.testing.assert_allclose(out, np.clip(raw, 0, 1).transpose(0, 2, 3, 1), atol=1e-6)
    # a super-resolved frame resembles its nearest-neighbour upscale (it is the same picture)
    nearest = batch.repeat(2, axis=1).repeat(2, axis=2)
    assert float(np.abs(out - nearest).mean()) < 0.05


def test_tiled_output_matches_untiled_on_a_real_frame(x2: registry.ModelInfo, bikes_frames: np.ndarray) -> None:
    frame = bikes_frames[:1]  # 640x272: with tile 160 that is 2 x 5 tiles with seams through the picture
    whole = engine.Upscaler(x2, tile=0).upscale(frame)
    tiled_upscaler = engine.Upscaler(x2, tile=160, tile_overlap=16)
    tiled = tiled_upscaler.upscale(frame)
    assert len(engine.plan_tiles(272, 640, 160, 16)) >= 6
    assert float(np.abs(tiled - whole).max()) <= 1 / 255


def test_get_upscaler_reuses_one_session_per_model(x2: registry.ModelInfo) -> None:
    a = engine.get_upscaler(x2, tile=0, tile_overlap=8)
    b = engine.get_upscaler(x2, tile=0, tile_overlap=8)
    c = engine.get_upscaler(x2, tile=256, tile_overlap=8)
    assert a is b
    assert c is not a and c.session is a.session


def test_bad_batches_are_refused(x2: registry.ModelInfo) -> None:
    with pytest.raises(ValueError):
        engine.get_upscaler(x2, tile=0).upscale(np.zeros((8, 8, 3), np.float32))


def test_available_cpus_follows_affinity() -> None:
    cpus = engine.available_cpus()
    assert 1 <= cpus <= len(os.sched_getaffinity(0))
    # a process pinned to one CPU gets one thread
    code = "import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); from vsr import engine; print(engine.available_cpus())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "1"


def test_runtime_modules_do_not_need_onnx(model_dir: Path, tmp_path: Path) -> None:
    """The Lambda layer has no `onnx`: resolving a converted model and upscaling must work without it."""
    code = (
        "import sys; sys.modules['onnx'] = None\n"
        "import numpy as np\n"
        "from vsr.models.registry import resolve_model\n"
        "from vsr.engine import get_upscaler\n"
        'm = resolve_model("realesr-animevideov3-x2")\n'
        "print(m.name, get_upscaler(m, tile=0).upscale(np.zeros((1, 16, 16, 3), np.float32)).shape)\n"
    )
    env = {**os.environ, "VSR_MODEL_DIR": str(model_dir)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    assert result.returncode == 0, result.stderr
    assert "(1, 32, 32, 3)" in result.stdout


def test_parallel_and_sequential_agree(x2: registry.ModelInfo, bikes_frames: np.ndarray) -> None:
    batch = bikes_frames[:3, 100:180, 200:320]  # 3 frames x 4 tiles: more work items than threads
    parallel = engine.Upscaler(x2, tile=64, tile_overlap=12, threads=2, parallel=True).upscale(batch)
    sequential = engine.Upscaler(x2, tile=64, tile_overlap=12, threads=2, parallel=False).upscale(batch)
    assert len(engine.plan_tiles(80, 120, 64, 12)) > 1
    np.testing.assert_allclose(parallel, sequential, atol=1e-5)
