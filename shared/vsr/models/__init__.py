"""Super-resolution models: ncnn parsing and conversion to ONNX (operator side), registry (runtime side)."""
