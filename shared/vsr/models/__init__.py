"""Super-resolution models: ncnn parsing and conversion to ONNX (operator side), registry (runtime side)."""

# Bump when the converter's output graph changes, so cached conversions are redone on next use.
CONVERTER_VERSION = "2"
