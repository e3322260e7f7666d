"""RIFE HDv3 frame interpolation: its legacy torch pickle read without torch, and its graph built in ONNX."""
