"""Parse ncnn model files: the `.param` text graph and the `.bin` weight blobs.

Only what the Real-ESRGAN models use is implemented; anything else raises `UnsupportedModelError` so a
converter never silently produces a wrong graph. The `.bin` file has no header and no names: blobs follow
layer order, so the reader must know, per layer type, which blobs it reads. It must end exactly at the end
of the file, which is the check that the layer list and the weight layout agree.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vsr.errors import UnsupportedModelError

PARAM_MAGIC = 7767517
ARRAY_KEY_BASE = -23300  # key -23300-k holds the array value of parameter k

# Weight tags in front of a tagged blob (ncnn ModelBinFromDataReader::load with type 0).
TAG_FP16 = 0x01306B47
TAG_INT8 = 0x000D4B38
TAG_FP32_SCALED = 0x0002C056

# Layer types the parser understands, with the converter-relevant meaning documented in convert.py.
SUPPORTED_LAYERS = frozenset(
    {"Input", "Split", "Convolution", "PReLU", "ReLU", "PixelShuffle", "Interp", "BinaryOp", "Eltwise", "Concat"}
)

ParamValue = int | float | list[int] | list[float]


@dataclass
class Layer:
    type: str
    name: str
    inputs: list[str]
    outputs: list[str]
    params: dict[int, ParamValue] = field(default_factory=dict)
    weights: dict[str, np.ndarray] = field(default_factory=dict)

    def get(self, key: int, default: ParamValue) -> ParamValue:
        return self.params.get(key, default)

    def int_param(self, key: int, default: int) -> int:
        value = self.params.get(key, default)
        if not isinstance(value, int):
            raise UnsupportedModelError(f"layer {self.name}: parameter {key} should be an integer, got {value!r}")
        return value


@dataclass
class NcnnModel:
    layers: list[Layer]
    blob_count: int

    @property
    def input_names(self) -> list[str]:
        return [out for layer in self.layers if layer.type == "Input" for out in layer.outputs]

    @property
    def output_names(self) -> list[str]:
        """Blobs produced but never consumed."""
        consumed = {name for layer in self.layers for name in layer.inputs}
        return [out for layer in self.layers for out in layer.outputs if out not in consumed]


def _parse_scalar(text: str) -> int | float:
    # ncnn's rule: a value written with '.' or an exponent is a float, otherwise an integer.
    if any(ch in text for ch in ".eE"):
        return float(text)
    return int(text)


def _parse_value(key: int, text: str) -> tuple[int, ParamValue]:
    if key <= ARRAY_KEY_BASE:
        parts = text.split(",")
        count = int(parts[0])
        values = [_parse_scalar(part) for part in parts[1:]]
        if len(values) != count:
            raise UnsupportedModelError(f"array parameter {key}: declared {count} values, found {len(values)}")
        return ARRAY_KEY_BASE - key, values  # type: ignore[return-value]
    return key, _parse_scalar(text)


def parse_param(text: str) -> NcnnModel:
    """Parse the text form of a `.param` file (CRLF or LF)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines or lines[0] != str(PARAM_MAGIC):
        raise UnsupportedModelError(f"not an ncnn text .param file (magic {lines[0] if lines else ''!r})")
    try:
        layer_count, blob_count = (int(v) for v in lines[1].split())
    except ValueError as exc:
        raise UnsupportedModelError(f"bad ncnn .param header line: {lines[1]!r}") from exc
    layers: list[Layer] = []
    for line in lines[2:]:
        tokens = line.split()
        if len(tokens) < 4:
            raise UnsupportedModelError(f"bad ncnn layer line: {line!r}")
        layer_type, name = tokens[0], tokens[1]
        n_in, n_out = int(tokens[2]), int(tokens[3])
        blobs = tokens[4 : 4 + n_in + n_out]
        if len(blobs) != n_in + n_out:
            raise UnsupportedModelError(f"layer {name}: expected {n_in + n_out} blob names")
        if layer_type not in SUPPORTED_LAYERS:
            raise UnsupportedModelError(
                f"layer {name}: ncnn layer type {layer_type!r} is not implemented by this converter "
                f"(supported: {', '.join(sorted(SUPPORTED_LAYERS))})"
            )
        params: dict[int, ParamValue] = {}
        for token in tokens[4 + n_in + n_out :]:
            key_text, _, value_text = token.partition("=")
            key, value = _parse_value(int(key_text), value_text)
            params[key] = value
        layers.append(Layer(layer_type, name, blobs[:n_in], blobs[n_in:], params))
    if len(layers) != layer_count:
        raise UnsupportedModelError(f".param declares {layer_count} layers, found {len(layers)}")
    return NcnnModel(layers=layers, blob_count=blob_count)


class _BinReader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, size: int, what: str) -> bytes:
        if self.pos + size > len(self.data):
            raise UnsupportedModelError(f"weight file ends early while reading {what} ({size} bytes at {self.pos})")
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def raw_fp32(self, count: int, what: str) -> np.ndarray:
        return np.frombuffer(self.take(4 * count, what), dtype="<f4").astype(np.float32)

    def tagged(self, count: int, what: str) -> np.ndarray:
        (tag,) = struct.unpack("<I", self.take(4, f"{what} tag"))
        if tag == TAG_FP16:
            nbytes = 2 * count
            blob = self.take(nbytes + (-nbytes % 4), what)  # fp16 data is padded to 4 bytes
            return np.frombuffer(blob[:nbytes], dtype="<f2").astype(np.float32)
        if tag == 0:
            return self.raw_fp32(count, what)
        encoding = {TAG_INT8: "int8", TAG_FP32_SCALED: "scaled fp32"}.get(tag, "256-entry quantisation table")
        raise UnsupportedModelError(f"{what}: {encoding} weight encoding (tag 0x{tag:08x}) is not implemented")


def _read_layer_weights(layer: Layer, reader: _BinReader) -> None:
    if layer.type == "Convolution":
        if layer.int_param(8, 0):
            raise UnsupportedModelError(f"layer {layer.name}: int8 convolution (8=int8_scale_term) is not implemented")
        if layer.int_param(19, 0):
            raise UnsupportedModelError(f"layer {layer.name}: dynamic-weight convolution is not implemented")
        num_output = layer.int_param(0, 0)
        size = layer.int_param(6, 0)
        layer.weights["weight"] = reader.tagged(size, f"layer {layer.name} weights")
        if layer.int_param(5, 0):
            layer.weights["bias"] = reader.raw_fp32(num_output, f"layer {layer.name} bias")
    elif layer.type == "PReLU":
        layer.weights["slope"] = reader.raw_fp32(layer.int_param(0, 0), f"layer {layer.name} slopes")


def load_model(param_path: Path, bin_path: Path) -> NcnnModel:
    """Parse a `.param` / `.bin` pair; every weight blob is attached to its layer as float32."""
    model = parse_param(Path(param_path).read_text(encoding="utf-8"))
    reader = _BinReader(Path(bin_path).read_bytes())
    for layer in model.layers:
        _read_layer_weights(layer, reader)
    if reader.pos != len(reader.data):
        raise UnsupportedModelError(
            f"weight file {Path(bin_path).name} has {len(reader.data) - reader.pos} bytes left after the last layer: "
            "the .param and .bin do not match"
        )
    return model


def macs_per_input_pixel(model: NcnnModel) -> int:
    """Multiply-adds of every convolution per input pixel (from the .param alone).

    Tracks each blob's pixel count relative to the input through resizes, pixel shuffles and strides.
    """
    area: dict[str, float] = {}  # blob -> its pixels per input pixel
    total = 0.0
    for layer in model.layers:
        here = max((area.get(s, 1.0) for s in layer.inputs), default=1.0)
        if layer.type == "Convolution":
            stride_w = layer.int_param(3, 1)
            here /= stride_w * layer.int_param(13, stride_w)
            total += here * layer.int_param(6, 0)  # weight_data_size = cout*cin*kh*kw MACs per output pixel
        elif layer.type == "PixelShuffle":
            here *= layer.int_param(0, 1) ** 2
        elif layer.type == "Interp":
            here *= float(layer.get(1, 1.0)) * float(layer.get(2, 1.0))  # type: ignore[arg-type]
        for out in layer.outputs:
            area[out] = here
    return round(total)
