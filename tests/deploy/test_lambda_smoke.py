"""The built Lambda packages run as Lambda runs them (tools/lambda_smoke.py, `make lambda-smoke`).

The fast tests check the smoke's own parts: the syscall trace reading that decides "nothing written outside
/tmp", the frame check. The slow ones build each architecture's package the way `make package` does and drive
one tiny real clip through the three packaged handlers in the bubblewrap sandbox against moto: x86_64 natively
(about a minute), arm64 under qemu-aarch64 (several minutes on 2 cores). Both fetch Debian trixie packages on a
fresh machine and fail, never skip, when they cannot.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.deploy.tfconfig import ROOT
from vsr.models.registry import deployed_model_name, resolve_model
from vsr.settings import get_settings


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


smoke = _load("vsr_lambda_smoke", ROOT / "tools" / "lambda_smoke.py")
PYTHON = "/usr/bin/python3.13"

TRACE = """\
100 execve("/usr/bin/bwrap", ["bwrap"], 0x7ffd /* 9 vars */) = 0
101 mkdir("/newroot/usr", 0755)       = 0
101 openat(5, "uid_map", O_RDWR|O_CLOEXEC) = 6
102 execve("{python}", ["{python}", "-I"], 0x55 /* 20 vars */) = 0
102 openat(AT_FDCWD, "/opt/python/vsr/__init__.py", O_RDONLY|O_CLOEXEC) = 3</opt/python/vsr/__init__.py>
102 openat(AT_FDCWD, "/tmp/vsr-models/m.onnx.part", O_WRONLY|O_CREAT|O_TRUNC|O_CLOEXEC, 0666) = 4</tmp/vsr-models/m.onnx.part>
102 rename("/tmp/vsr-models/m.onnx.part", "/tmp/vsr-models/m.onnx") = 0
103 unlinkat(4</tmp/tmpab12>, "00000.nut", 0) = 0
102 openat(AT_FDCWD, "/dev/null", O_WRONLY|O_CLOEXEC) = 5</dev/null>
102 mkdir("/opt/python/vsr/__pycache__", 0777) = -1 EROFS (Read-only file system)
104 openat(AT_FDCWD, "cache.json", O_WRONLY|O_CREAT, 0644) = -1 EROFS (Read-only file system)
103 unlinkat(7</var/task>, "x", 0) = -1 EROFS (Read-only file system)
"""


def test_only_writes_outside_tmp_after_the_sandbox_started_are_reported(tmp_path: Path) -> None:
    trace = tmp_path / "fn.strace"
    trace.write_text(TRACE.format(python=PYTHON))
    found = smoke.writes_outside_tmp(trace, PYTHON)
    # bubblewrap's own set-up, reads, /tmp (by path or through a directory fd) and /dev/null are not writes
    assert [line.split("(", 1)[0] for line in found] == ["mkdir", "openat", "unlinkat"]
    assert '"/opt/python/vsr/__pycache__"' in found[0]
    assert '"cache.json"' in found[1]  # relative to the cwd, /var/task
    assert "7</var/task>" in found[2]


def test_a_missing_trace_is_a_failure_not_a_pass(tmp_path: Path) -> None:
    assert smoke.writes_outside_tmp(tmp_path / "never-started.strace", PYTHON)


def test_frame_check_compares_times_count_and_size(tmp_path: Path) -> None:
    clip = smoke.make_clip(tmp_path / "a.mp4", frames=4, width=32, height=24)
    same_size = smoke.make_clip(tmp_path / "b.mp4", frames=4, width=32, height=24)
    fewer = smoke.make_clip(tmp_path / "c.mp4", frames=3, width=64, height=48)
    double = smoke.make_clip(tmp_path / "d.mp4", frames=4, width=64, height=48)
    assert smoke.frame_problem(clip, double, 2) is None
    assert "expected 64x48" in smoke.frame_problem(clip, same_size, 2)
    assert "3 output frames for 4" in smoke.frame_problem(clip, fewer, 2)


@pytest.mark.slow
@pytest.mark.timeout(1800)  # a hang guard: emulated inference takes minutes
@pytest.mark.parametrize("arch", ["x86_64", "arm64"])
def test_the_packaged_handlers_run_a_job_in_a_lambda_sandbox(arch: str, tmp_path: Path) -> None:
    package = _load("vsr_package_tool_for_smoke", ROOT / "tools" / "package.py")
    manifest = package.build(arch, tmp_path / "package")
    assert manifest.python_version == get_settings().lambda_python_version
    width, height = smoke.CLIP_SIZE
    result = smoke.run(arch, tmp_path / "package" / arch, tmp_path / "smoke", smoke.CLIP_FRAMES, width, height, 1500)
    print(smoke.summary(result))
    assert result.status == "COMPLETE", result.error
    assert result.frame_problem is None
    # the pixels are the model's: against `vsr upscale` of the same clip in the project's own environment
    assert len(result.reference_psnr_db) == smoke.CLIP_FRAMES
    assert min(result.reference_psnr_db) >= smoke.REFERENCE_MIN_PSNR_DB
    s = get_settings()
    model = resolve_model(deployed_model_name(s.model_name, s.precision))
    assert (result.segments, result.scale) == (1, model.scale)
    assert result.output_size == f"{model.scale * width}x{model.scale * height}"
    for report in result.functions.values():
        assert report.invocations >= 1, report.function  # the job went through every packaged handler
        assert report.writes_outside_tmp == [], report.function
        assert 0 <= report.tmp_peak_bytes <= report.tmp_limit_bytes
        assert report.tmp_limit_bytes == get_settings().function(report.function).ephemeral_storage_mb * smoke.MIB
    # the worker downloaded the model into its /tmp
    assert result.functions["worker"].tmp_peak_bytes >= Path(model.path).stat().st_size
    if result.emulated:  # emulated times are never reported as Lambda's
        assert all(report.init_s == [] for report in result.functions.values())
    else:
        assert all(len(report.init_s) == smoke.INIT_REPEATS for report in result.functions.values())
        assert all(min(report.init_s) > 0 for report in result.functions.values())
