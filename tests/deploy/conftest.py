"""Fixtures for the deployment checks: the parsed Terraform, and Terraform itself where it is installed.

`terraform init` needs the AWS provider, which cannot be downloaded here; a local provider mirror
(`VSR_TF_PLUGIN_DIR`, default /opt/tf-plugins) is used when present, and the checks that evaluate the
configuration are skipped without one (the static checks always run).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.deploy import tfconfig

DEFAULT_PLUGIN_DIR = "/opt/tf-plugins"


def terraform_env(data_dir: Path | None = None) -> dict[str, str]:
    env = {**os.environ, "TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1", "TF_INPUT": "0"}
    # a CLI config that does not exist (here TF_CLI_CONFIG_FILE names a missing ~/.terraformrc) only warns;
    # an empty one silences that without touching a real user config
    if not Path(env.get("TF_CLI_CONFIG_FILE") or Path.home() / ".terraformrc").is_file():
        env["TF_CLI_CONFIG_FILE"] = os.devnull
    if data_dir is not None:
        env["TF_DATA_DIR"] = str(data_dir)
    return env


@pytest.fixture(scope="session")
def tf() -> tfconfig.TerraformConfig:
    return tfconfig.load()


@pytest.fixture(scope="session")
def terraform_bin() -> str:
    path = shutil.which("terraform")
    if path is None:
        pytest.skip("no terraform binary on PATH")
    return path


@pytest.fixture(scope="session")
def plugin_dir() -> Path:
    path = Path(os.environ.get("VSR_TF_PLUGIN_DIR", DEFAULT_PLUGIN_DIR))
    if not (path / "registry.terraform.io" / "hashicorp" / "aws").is_dir():
        pytest.skip(f"no local AWS provider mirror at {path} (providers cannot be downloaded here)")
    return path


@pytest.fixture(scope="session")
def terraform_init(terraform_bin: str, plugin_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """`terraform init` from the local provider mirror, with its state dir outside the source tree."""
    data_dir = tmp_path_factory.mktemp("tf-data")
    done = subprocess.run(
        [terraform_bin, "init", "-backend=false", "-input=false", "-no-color", f"-plugin-dir={plugin_dir}"],
        cwd=tfconfig.TERRAFORM,
        env=terraform_env(data_dir),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    yield data_dir


@pytest.fixture(scope="session")
def tf_eval(terraform_bin: str, terraform_init: Path) -> Callable[..., dict[str, Any]]:
    """Evaluate named Terraform expressions (locals that need no AWS call) with `terraform console`, optionally
    with `-var` assignments ("name=value")."""

    def evaluate(expressions: dict[str, str], variables: Sequence[str] = ()) -> dict[str, Any]:
        body = ", ".join(f"{name} = {expr}" for name, expr in expressions.items())
        done = subprocess.run(
            [terraform_bin, "console", *(f"-var={v}" for v in variables)],
            input=f"jsonencode({{ {body} }})\n",
            cwd=tfconfig.TERRAFORM,
            env=terraform_env(terraform_init),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        # console prints the JSON string as an HCL string literal: decode it twice
        return json.loads(json.loads(done.stdout.strip().splitlines()[-1]))

    return evaluate
