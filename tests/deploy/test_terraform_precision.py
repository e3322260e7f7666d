"""Terraform uploads the model file that settings' model.precision selects: the int8 variant only where it
passed the fidelity gate (its sidecar says so), else the fp32 model (same rule as registry.deployed_model_name)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from vsr.settings import get_settings


@pytest.mark.parametrize(
    ("gate", "precision", "int8"), [("pass", "int8", True), ("fail", "int8", False), ("pass", "fp32", False)]
)
def test_model_file_follows_precision_and_gate(
    tf_eval: Callable[..., dict[str, Any]], tmp_path: Path, gate: str, precision: str, int8: bool
) -> None:
    name = get_settings().model_name
    sidecar = {"name": name, "scale": "2", "macs_per_input_pixel": "619200"}
    (tmp_path / f"{name}.json").write_text(json.dumps(sidecar))
    (tmp_path / f"{name}-int8.json").write_text(json.dumps({**sidecar, "precision": "int8", "gate": gate}))
    key = tf_eval({"key": "local.model_key"}, [f"model_dir={tmp_path}", f"model_precision={precision}"])["key"]
    assert key == f"models/{name}{'-int8' if int8 else ''}.onnx"
