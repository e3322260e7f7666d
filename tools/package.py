"""Build the Lambda layer and the three function zips for one architecture (`make package ARCH=arm64|x86_64`).

The layer holds `python/vsr` (shared/vsr) and vsr's runtime dependencies from pyproject.toml, installed for
the Lambda runtime in settings (`lambda.runtime`, the one Terraform deploys) on the target architecture with pip's `--platform`/`--only-binary` (no compiler, no Docker),
then pruned of what Lambda never imports and stripped. Each function zip holds only its thin `handler.py`.
Zips are reproducible (sorted entries, fixed timestamps and modes), so an unchanged tree gives the same
`source_code_hash` and Terraform does not redeploy.

Fails (exit 1) when the unzipped layer plus the largest function exceeds Lambda's 250 MB limit.
Outputs `<out>/<arch>/{layer,ingest,worker,assemble}.zip` and `manifest.json` (sizes, sha256, versions).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import platform
import re
import shutil
import struct
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lambda_sysroot  # a sibling tool: a CPython of the runtime's version to compile bytecode with

from vsr.hashing import sha256_file
from vsr.settings import get_settings

ROOT = Path(__file__).resolve().parent.parent
PACKAGE_SRC = ROOT / "shared" / "vsr"
SERVICES = ROOT / "services"
FUNCTIONS = ("ingest", "worker", "assemble", "api")  # api: the upload API (terraform/api.tf, opt-in)

# Lambda: function code + all layers, unzipped, at most 250 MB (AWS counts 262,144,000 bytes).
LAMBDA_UNZIPPED_LIMIT = 262_144_000
# Above this a zip cannot be uploaded to Lambda directly; Terraform sends the layer through S3.
DIRECT_UPLOAD_LIMIT = 50 * 1024 * 1024
# The CPython of the Lambda runtime Terraform deploys (settings lambda.runtime, e.g. python3.13 -> "3.13").
PYTHON_VERSION = get_settings().lambda_python_version
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest timestamp a zip can store: fixed for reproducible archives

# Runtime dependencies that Lambda's Python runtime already provides.
PROVIDED_BY_RUNTIME = {"boto3", "botocore", "s3transfer", "jmespath", "urllib3", "python-dateutil", "six"}

PLATFORMS = {"arm64": "manylinux_2_28_aarch64", "x86_64": "manylinux_2_28_x86_64"}
ELF_MACHINE = {"arm64": 183, "x86_64": 62}  # e_machine: EM_AARCH64, EM_X86_64
ARCH_TRIPLES = {"arm64": "aarch64-linux-gnu", "x86_64": "x86_64-linux-gnu"}

# What Lambda never imports, relative to the layer's python/ folder. Directories match by path glob;
# licences are always kept (they travel with the binaries we redistribute).
PRUNE_DIRS = (
    "bin",  # console scripts (f2py, pyav, onnxruntime_test): no shell in Lambda
    "**/__pycache__",
    "**/tests",  # test suites of numpy, onnxruntime, ...
    "numpy/_pyinstaller",
    "numpy/f2py",  # Fortran wrapper generator, never imported by numpy itself
    "numpy/_core/include",  # C headers for building extensions
    "onnxruntime/transformers",  # model optimisation scripts (need torch/onnx), not inference
    "onnxruntime/tools",
    "onnxruntime/quantization",
    "onnxruntime/datasets",
    "av/include",
)
PRUNE_FILES = (
    "*.pyc",
    "*.pyi",  # type stubs
    "*.pxd",  # Cython declarations
    "*.pyx",
    "*.h",
    "*.dist-info/RECORD",  # only pip's uninstall reads it; METADATA stays (onnxruntime queries versions)
    "*.dist-info/INSTALLER",
    "*.dist-info/REQUESTED",
    "*.dist-info/direct_url.json",
)
KEEP_ALWAYS = re.compile(r"(^|/)(LICEN[CS]E|COPYING|NOTICE|ThirdPartyNotices)[^/]*$", re.IGNORECASE)


@dataclass
class StripResult:
    tool: str | None
    stripped: int = 0
    skipped: int = 0
    bytes_saved: int = 0
    note: str = ""


@dataclass
class Artefact:
    name: str
    path: str
    unzipped_bytes: int
    zipped_bytes: int
    sha256: str
    files: int


@dataclass
class Manifest:
    arch: str
    python_version: str
    platform: str
    artefacts: list[Artefact] = field(default_factory=list)
    dependencies: dict[str, str] = field(default_factory=dict)
    pruned_bytes: int = 0
    strip: StripResult | None = None
    bytecode: str = ""  # how the .pyc files were made, or why there are none
    total_unzipped_bytes: int = 0
    limit_bytes: int = LAMBDA_UNZIPPED_LIMIT


class PackageError(Exception):
    """Packaging cannot produce a deployable result (dependency install failed, over the size limit)."""


# --- dependencies -------------------------------------------------------------------------------------------
def runtime_requirements(pyproject: Path = ROOT / "pyproject.toml") -> list[str]:
    """vsr's runtime dependencies from pyproject.toml, minus what the Lambda runtime provides (boto3)."""
    project = tomllib.loads(pyproject.read_text())["project"]
    requirements = []
    for requirement in project["dependencies"]:
        name = re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0].lower()
        if name not in PROVIDED_BY_RUNTIME:
            requirements.append(requirement)
    return requirements


def tested_versions() -> list[str]:
    """`name==version` of every distribution installed where the packager runs: the project's venv, the versions
    its tests ran. The layer is resolved under these constraints, so Lambda gets what was tested rather than
    whatever is newest for its Python (the python3.13 layer once got av 19, which dropped `av.open`'s
    `metadata_errors`, while the tests ran av 18: every ingest failed; found by `make lambda-smoke`)."""
    pins = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name and name.lower() != "vsr":
            pins[name.lower()] = f"{name}=={dist.version}"
    return sorted(pins.values())


def pip_install(
    requirements: Sequence[str],
    target: Path,
    arch: str,
    python_version: str = PYTHON_VERSION,
    constraints: Sequence[str] | None = None,
) -> None:
    """Install wheels for the Lambda platform into target (binary wheels only: nothing is compiled here), each at
    the version in `constraints` where it names one (default: tested_versions())."""
    constraints_file = target.parent / f".constraints-{arch}.txt"
    constraints_file.parent.mkdir(parents=True, exist_ok=True)
    constraints_file.write_text("\n".join(tested_versions() if constraints is None else constraints) + "\n")
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--no-compile",
        "--platform",
        PLATFORMS[arch],
        "--only-binary=:all:",
        "--python-version",
        python_version,
        "--implementation",
        "cp",
        "--target",
        str(target),
        "--constraint",
        str(constraints_file),
        *requirements,
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    constraints_file.unlink()
    if result.returncode != 0:
        raise PackageError(
            f"pip install for {PLATFORMS[arch]}, CPython {python_version}, at the versions installed here (the "
            f"tested ones) failed:\n{result.stderr.strip()}"
        )


def installed_versions(site: Path) -> dict[str, str]:
    versions = {}
    for dist_info in sorted(site.glob("*.dist-info")):
        name, _, version = dist_info.name.removesuffix(".dist-info").partition("-")
        versions[name] = version
    return versions


# Parts of the vsr package that only run on an operator's or developer's machine, never in a Lambda: the local
# runtime, the command line and operations commands, the model converter and its graph rewrites (they import
# onnx), the ncnn oracle and the sample frames. Relative to shared/vsr.
DEV_ONLY = (
    "local",
    "cli.py",
    "ops.py",
    "plan_command.py",
    "models/convert.py",
    "models/rewrite.py",
    "models/ncnn_reference.py",
    "models/samples.py",
    "quality/evaluate.py",  # `vsr eval` (OpenCV's DIS flow); the in-job check and stabilisation ship
    "web/local.py",  # `vsr serve --web-port`; the API's Lambda runs vsr.web.lambda_api
    "web/static",  # the page: served by `vsr serve`, never by a Lambda
)


def copy_package(destination: Path, source: Path = PACKAGE_SRC) -> None:
    """Copy shared/vsr's runtime code (with its config JSON) into the layer: no DEV_ONLY module, no bytecode, no
    editable-install metadata."""
    target = destination / source.name
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for relative in DEV_ONLY:
        path = target / relative
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        else:
            raise PackageError(f"DEV_ONLY names {relative}, which shared/vsr does not have (renamed?)")


# --- pruning ------------------------------------------------------------------------------------------------
def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _dir_matches(relative: str, pattern: str) -> bool:
    if pattern.startswith("**/"):
        tail = pattern[3:]
        return (
            relative == tail or relative.endswith("/" + tail) or fnmatch.fnmatchcase(relative.rsplit("/", 1)[-1], tail)
        )
    return fnmatch.fnmatchcase(relative, pattern)


def tree_size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def prune(root: Path, dir_patterns: Iterable[str] = PRUNE_DIRS, file_patterns: Iterable[str] = PRUNE_FILES) -> int:
    """Delete what Lambda never needs below root (licences always stay); returns the bytes removed."""
    dir_patterns, file_patterns = tuple(dir_patterns), tuple(file_patterns)
    removed = 0
    # deepest first, so a matched directory is removed whole before its parent is considered
    for directory in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        if not directory.exists():
            continue
        relative = _relative(directory, root)
        if any(_dir_matches(relative, pattern) for pattern in dir_patterns):
            licences = [p for p in directory.rglob("*") if p.is_file() and KEEP_ALWAYS.search(_relative(p, root))]
            if licences:
                continue  # never drop a licence silently; such folders are kept whole
            removed += tree_size(directory)
            shutil.rmtree(directory)
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        relative = _relative(file, root)
        if KEEP_ALWAYS.search(relative):
            continue
        if any(
            fnmatch.fnmatchcase(relative, pattern) or fnmatch.fnmatchcase(file.name, pattern)
            for pattern in file_patterns
        ):
            removed += file.stat().st_size
            file.unlink()
    return removed


# --- stripping ----------------------------------------------------------------------------------------------
def elf_machine(path: Path) -> int | None:
    """The ELF e_machine of a file, or None when it is not an ELF file."""
    with path.open("rb") as handle:
        header = handle.read(20)
    if len(header) < 20 or header[:4] != b"\x7fELF":
        return None
    byteorder = "little" if header[5] == 1 else "big"
    return int.from_bytes(header[18:20], byteorder)


def load_segments_aligned(path: Path) -> bool:
    """True when every PT_LOAD segment of a 64-bit ELF file keeps offset == address modulo its alignment.

    strip rewrites the file layout; on libraries that auditwheel already rewrote with patchelf (most of
    numpy.libs, av.libs) llvm-strip in particular can break this rule, and the dynamic loader then refuses
    the library ("ELF load command address/offset not page-aligned"). Measured on the x86_64 wheels:
    llvm-strip broke 71 of 103 libraries, GNU strip 2.
    """
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2:  # only ELFCLASS64 is shipped for Lambda's arches
        return False
    order = "<" if data[5] == 1 else ">"
    (phoff,) = struct.unpack_from(order + "Q", data, 32)
    entry_size, count = struct.unpack_from(order + "HH", data, 54)
    for index in range(count):
        p_type, _flags, offset, vaddr, _paddr, _filesz, _memsz, align = struct.unpack_from(
            order + "IIQQQQQQ", data, phoff + index * entry_size
        )
        if p_type == 1 and align > 1 and (vaddr - offset) % align:
            return False
    return True


def find_strip_tool(arch: str) -> str | None:
    """A strip that understands the target: the cross binutils, the host's own, else llvm-strip (every arch)."""
    candidates = [f"{ARCH_TRIPLES[arch]}-strip", *(["strip"] if host_arch() == arch else []), "llvm-strip"]
    return next((c for c in candidates if shutil.which(c)), None)


def strip_binaries(root: Path, arch: str, tool: str | None = None) -> StripResult:
    """Strip symbol tables from the target's shared libraries (not code: --strip-unneeded keeps dynamic symbols).

    Every stripped library is checked (`load_segments_aligned`) and restored byte for byte when strip broke it.
    """
    tool = tool or find_strip_tool(arch)
    if tool is None:
        return StripResult(tool=None, note=f"no strip tool for {arch} on this machine (install llvm); not stripped")
    result = StripResult(tool=tool)
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
        if ".so" not in path.name or elf_machine(path) != ELF_MACHINE[arch]:
            continue
        original = path.read_bytes()
        before = len(original)
        done = subprocess.run([tool, "--strip-unneeded", str(path)], capture_output=True, text=True, check=False)
        if done.returncode != 0 or not load_segments_aligned(path):
            path.write_bytes(original)  # leave a library strip cannot rewrite safely exactly as it was shipped
            result.skipped += 1
            continue
        result.stripped += 1
        result.bytes_saved += before - path.stat().st_size
    return result


# --- bytecode ------------------------------------------------------------------------------------------------
# Lambda's /opt and /var/task are read-only: without .pyc files every cold start compiles every module it
# imports, and the runtime's attempts to cache bytecode next to the code fail. Measured with `make lambda-smoke
# ARCH=x86_64`: each handler's import took 2.1-2.9 s from source, 0.8-1.1 s compiled (+8 MB unzipped).
def compile_bytecode(tree: Path, prefix: str) -> str:
    """Compile `tree` for the runtime's CPython (whose .pyc the runtime would look for), as `prefix` on Lambda."""
    try:
        lambda_sysroot.compile_tree(tree, prefix, PYTHON_VERSION)
    except lambda_sysroot.SysrootError as exc:
        raise PackageError(
            f"cannot compile bytecode for CPython {PYTHON_VERSION} (install python{PYTHON_VERSION}, or let "
            f"tools/lambda_sysroot.py fetch Debian's, or pass --no-bytecode): {exc}"
        ) from exc
    return f"cpython-{PYTHON_VERSION.replace('.', '')} .pyc (unchecked-hash) for {prefix}"


# --- reproducible zips ----------------------------------------------------------------------------------------
def _file_mode(path: Path) -> int:
    executable = path.stat().st_mode & 0o111 or ".so" in path.name
    return 0o755 if executable else 0o644


def write_zip(source: Path, destination: Path, arc_prefix: str = "") -> int:
    """Zip source's files (sorted, fixed timestamps and modes) under arc_prefix; returns the unzipped bytes."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    files = sorted((p for p in source.rglob("*") if p.is_file()), key=lambda p: _relative(p, source))
    total = 0
    tmp = destination.with_suffix(destination.suffix + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as archive:
        for path in files:
            info = zipfile.ZipInfo(arc_prefix + _relative(path, source), date_time=ZIP_EPOCH)
            info.external_attr = (0o100000 | _file_mode(path)) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            data = path.read_bytes()
            total += len(data)
            archive.writestr(info, data, compresslevel=6)
    tmp.replace(destination)
    return total


def artefact(name: str, zip_path: Path, unzipped: int) -> Artefact:
    with zipfile.ZipFile(zip_path) as archive:
        count = len(archive.infolist())
    return Artefact(name, str(zip_path), unzipped, zip_path.stat().st_size, sha256_file(zip_path), count)


def check_size(layer_unzipped: int, function_unzipped: Iterable[int], limit: int = LAMBDA_UNZIPPED_LIMIT) -> int:
    """Lambda's limit applies to each function plus its layers: the largest function decides. Returns the total."""
    total = layer_unzipped + max(function_unzipped, default=0)
    if total > limit:
        raise PackageError(
            f"unzipped layer + largest function is {total / 1e6:.1f} MB, over Lambda's {limit / 1e6:.1f} MB limit"
        )
    return total


# --- the whole build --------------------------------------------------------------------------------------------
def build_functions(out: Path, staging: Path, bytecode: bool = True) -> list[Artefact]:
    built = []
    for name in FUNCTIONS:
        source = SERVICES / name
        stage = staging / name
        shutil.rmtree(stage, ignore_errors=True)
        shutil.copytree(source, stage, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "tests", "test_*.py"))
        if not (stage / "handler.py").is_file():
            raise PackageError(f"{source}/handler.py is missing")
        if bytecode:
            compile_bytecode(stage, "/var/task")
        zip_path = out / f"{name}.zip"
        built.append(artefact(name, zip_path, write_zip(stage, zip_path)))
    return built


def host_arch() -> str | None:
    return {"aarch64": "arm64", "arm64": "arm64", "x86_64": "x86_64", "amd64": "x86_64"}.get(platform.machine().lower())


def should_strip(mode: str, arch: str, unstripped_total: int, limit: int = LAMBDA_UNZIPPED_LIMIT) -> tuple[bool, str]:
    """auto: strip when building for this machine's arch (tests/deploy runs the stripped libraries, so the exact
    procedure is proven) or when the layer would not fit otherwise; leave a cross build that fits as shipped."""
    if mode == "never":
        return False, "disabled (--strip never)"
    if mode == "always" or arch == host_arch():
        return True, ""
    if unstripped_total > limit:
        return True, ""
    return False, f"cross build for {arch} fits unstripped; left as shipped (--strip always to force)"


def build(
    arch: str, out_root: Path, *, strip: str = "auto", limit: int = LAMBDA_UNZIPPED_LIMIT, bytecode: bool = True
) -> Manifest:
    out = out_root / arch
    staging = out_root / f".staging-{arch}"
    shutil.rmtree(staging, ignore_errors=True)
    site = staging / "layer" / "python"
    site.mkdir(parents=True)
    manifest = Manifest(arch=arch, python_version=PYTHON_VERSION, platform=PLATFORMS[arch])

    pip_install(runtime_requirements(), site, arch)
    manifest.dependencies = installed_versions(site)
    copy_package(site)
    manifest.pruned_bytes = prune(site)
    largest_function = max(tree_size(SERVICES / name) for name in FUNCTIONS)
    do_strip, why_not = should_strip(strip, arch, tree_size(site) + largest_function, limit)
    manifest.strip = strip_binaries(site, arch) if do_strip else StripResult(tool=None, note=why_not)
    manifest.bytecode = compile_bytecode(site, "/opt/python") if bytecode else "none (--no-bytecode)"

    out.mkdir(parents=True, exist_ok=True)
    layer_zip = out / "layer.zip"
    layer = artefact("layer", layer_zip, write_zip(site.parent, layer_zip))
    functions = build_functions(out, staging / "functions", bytecode)
    manifest.artefacts = [layer, *functions]
    manifest.total_unzipped_bytes = layer.unzipped_bytes + max(f.unzipped_bytes for f in functions)
    (out / "manifest.json").write_text(json.dumps(asdict(manifest), indent=2) + "\n")
    shutil.rmtree(staging, ignore_errors=True)
    check_size(layer.unzipped_bytes, [f.unzipped_bytes for f in functions], limit)
    return manifest


def size_table(manifest: Manifest) -> str:
    rows = [f"{'artefact':10} {'unzipped MB':>12} {'zipped MB':>10} {'files':>7}  sha256"]
    for item in manifest.artefacts:
        rows.append(
            f"{item.name:10} {item.unzipped_bytes / 1e6:12.1f} {item.zipped_bytes / 1e6:10.1f} {item.files:7d}  {item.sha256[:16]}"
        )
    share = manifest.total_unzipped_bytes / manifest.limit_bytes
    rows.append(
        f"layer + largest function: {manifest.total_unzipped_bytes / 1e6:.1f} MB of Lambda's "
        f"{manifest.limit_bytes / 1e6:.1f} MB unzipped limit ({share:.0%})"
    )
    strip = manifest.strip
    if strip is not None:
        if strip.tool:
            rows.append(
                f"stripped {strip.stripped} libraries with {strip.tool} (-{strip.bytes_saved / 1e6:.1f} MB); "
                f"{strip.skipped} left as shipped (strip would have broken their load segments)"
            )
        else:
            rows.append(f"not stripped: {strip.note}")
    rows.append(f"pruned {manifest.pruned_bytes / 1e6:.1f} MB (tests, headers, stubs, unused onnxruntime tools)")
    rows.append(f"bytecode: {manifest.bytecode}")
    layer = manifest.artefacts[0]
    if layer.zipped_bytes > DIRECT_UPLOAD_LIMIT:
        rows.append("layer.zip is over Lambda's 50 MB direct upload limit: Terraform uploads it through S3")
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=sorted(PLATFORMS), default="arm64")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "lambda")
    parser.add_argument(
        "--strip",
        choices=["auto", "always", "never"],
        default="auto",
        help="strip shared libraries: auto = for this machine's arch, or when the layer would not fit otherwise",
    )
    parser.add_argument(
        "--no-bytecode", action="store_true", help="ship sources only (every cold start then compiles them)"
    )
    args = parser.parse_args(argv)
    try:
        manifest = build(args.arch, args.out, strip=args.strip, bytecode=not args.no_bytecode)
    except PackageError as exc:
        manifest_path = args.out / args.arch / "manifest.json"
        if manifest_path.is_file():
            print(f"sizes: {manifest_path}", file=sys.stderr)
        print(f"package: error: {exc}", file=sys.stderr)
        return 1
    print(size_table(manifest))
    print(f"wrote {args.out / args.arch}/{{layer,{','.join(FUNCTIONS)}}}.zip and manifest.json")
    return 0


if __name__ == "__main__":
    os.umask(0o022)
    sys.exit(main())
