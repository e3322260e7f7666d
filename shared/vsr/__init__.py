"""vsr: serverless AI video super-resolution (ONNX Runtime + PyAV on AWS Lambda)."""

__version__ = "0.1.0"
