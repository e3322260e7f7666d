"""Terraform uploads the model file that settings' model.precision selects: the int8 variant only where it
passed the fidelity gate (its sidecar says so), else the fp32 model (same rule as registry.deployed_model_name)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.deploy import tfconfig
from tests.deploy.conftest import terraform_env
from vsr.settings import get_settings


def _model_key(terraform_bin: str, data_dir: Path, *variables: str) -> str:
    done = subprocess.run(
        [terraform_bin, "console", *(f"-var={v}" for v in variables)],
        input="local.model_key\n",
        cwd=tfconfig.TERRAFORM,
        env=terraform_env(data_dir),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    ("gate", "precision", "int8"), [("pass", "int8", True), ("fail", "int8", False), ("pass", "fp32", False)]
)
def test_model_file_follows_precision_and_gate(
    terraform_bin: str, terraform_init: Path, tmp_path: Path, gate: str, precision: str, int8: bool
) -> None:
    name = get_settings().model_name
    sidecar = {"name": name, "scale": "2", "macs_per_input_pixel": "619200"}
    (tmp_path / f"{name}.json").write_text(json.dumps(sidecar))
    (tmp_path / f"{name}-int8.json").write_text(json.dumps({**sidecar, "precision": "int8", "gate": gate}))
    key = _model_key(terraform_bin, terraform_init, f"model_dir={tmp_path}", f"model_precision={precision}")
    assert key == f"models/{name}{'-int8' if int8 else ''}.onnx"
