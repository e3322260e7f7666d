"""vsr: serverless AI video super-resolution (ONNX Runtime + PyAV on AWS Lambda)."""

import os

__version__ = "0.1.0"

# ONNX Runtime 1.32 starts its telemetry when imported and tries to persist a device id under $HOME: a write
# outside /tmp, where a Lambda can write nothing (found by `make lambda-smoke`). Opt out before anything here
# imports it; an explicit setting in the environment still wins.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
