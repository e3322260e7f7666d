"""checkov (zero failed checks, skips only inline with a reason), `terraform fmt -check`, `terraform validate`."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.deploy import tfconfig
from tests.deploy.conftest import terraform_env

CHECKOV = tfconfig.ROOT / ".venv-tools" / "bin" / "checkov"
SKIP_COMMENT = re.compile(r"#checkov:skip=(CKV2?_AWS_\d+)(:?)(.*)")


def _checkov() -> Path:
    if CHECKOV.is_file():
        return CHECKOV
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"checkov is missing at {CHECKOV}: `make install` creates .venv-tools")
    pytest.skip(f"checkov is not installed at {CHECKOV} (run `make install`)")


def test_checkov_reports_no_failed_checks() -> None:
    command = [str(_checkov()), "-d", str(tfconfig.TERRAFORM), "--framework", "terraform", "--compact"]
    done = subprocess.run(
        [*command, "-o", "json", "--skip-download"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.stdout.strip(), done.stderr
    reports = json.loads(done.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    failed = [
        f"{check['check_id']} {check['resource']} ({check['file_path']}:{check['file_line_range'][0]}): {check['check_name']}"
        for report in reports
        for check in report.get("results", {}).get("failed_checks", [])
    ]
    summaries = [report.get("summary", {}) for report in reports]
    assert summaries and all(s.get("parsing_errors", 0) == 0 for s in summaries), summaries
    assert sum(s.get("resource_count", 0) for s in summaries) > 30, summaries  # it really scanned the stack
    # the opt-in GPU tier (count 0 by default) is scanned too
    scanned = {
        check["resource"]
        for report in reports
        for kind in ("passed_checks", "failed_checks", "skipped_checks")
        for check in report.get("results", {}).get(kind, [])
    }
    gpu = {"aws_ecs_task_definition.gpu_worker", "aws_launch_template.gpu", "aws_security_group.gpu"}
    assert gpu <= scanned, sorted(gpu - scanned)
    assert not failed, "\n".join(failed)


def test_checkov_skips_are_inline_with_a_reason() -> None:
    skips = []
    for path in sorted(tfconfig.TERRAFORM.glob("*.tf")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if "checkov:skip" in line:
                match = SKIP_COMMENT.search(line)
                assert match and match.group(2) == ":" and len(match.group(3).strip()) > 15, (
                    f"{path.name}:{number}: a skip needs a check id and a one-line reason"
                )
                skips.append(match.group(1))
    assert not (tfconfig.TERRAFORM / ".checkov.yaml").exists(), "skips belong inline, not in a config file"
    assert len(skips) < 30  # each with its reason; the GPU fleet, the API and the Lambdas each need a few


def test_terraform_fmt(terraform_bin: str) -> None:
    done = subprocess.run(
        [terraform_bin, "fmt", "-check", "-recursive", "-diff", "-no-color", str(tfconfig.TERRAFORM)],
        env=terraform_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"run `terraform fmt -recursive terraform`:\n{done.stdout}{done.stderr}"


def test_terraform_validate(terraform_bin: str, terraform_init: Path) -> None:
    done = subprocess.run(
        [terraform_bin, "validate", "-json", "-no-color"],
        cwd=tfconfig.TERRAFORM,
        env=terraform_env(terraform_init),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    result = json.loads(done.stdout)
    assert result["valid"], json.dumps(result["diagnostics"], indent=2)
    assert result["error_count"] == 0 and result["warning_count"] == 0, result["diagnostics"]
