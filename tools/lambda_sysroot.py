"""A clean CPython of the Lambda runtime's version, from Debian packages, for `make lambda-smoke`.

Lambda's python3.13 runtime is CPython 3.13 on Amazon Linux 2023 (glibc 2.34). Debian trixie ships CPython 3.13
(glibc 2.41) for arm64 and amd64, so its packages, unpacked with `dpkg -x` into a sysroot, give an interpreter
with nothing installed beside its standard library: the layer and the runtime's own boto3 are all it sees.
arm64 runs under trixie's `qemu-aarch64` (qemu-user 10, a static-pie binary that runs straight from its
unpacked .deb; bookworm's qemu 7.2 segfaults importing onnxruntime).

Everything is fetched with apt's own client into a private state directory (the host's apt state is not
touched) and cached under `~/.cache/vsr/lambda/` (`VSR_LAMBDA_CACHE`); a fresh machine needs only the Debian
archive keyring, apt and dpkg. When the packages cannot be fetched this fails with SysrootError naming the
mirror and the command that failed; it never falls back to the host's Python.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from vsr.settings import get_settings

SUITE = "trixie"
MIRROR = os.environ.get("VSR_DEBIAN_MIRROR", "http://deb.debian.org/debian")
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
DEBIAN_ARCH = {"arm64": "arm64", "x86_64": "amd64"}
# Beside the interpreter's own closure: the C++ runtime that onnxruntime's and av's libraries take from the
# system (manylinux_2_28 wheels do). libgomp is what the first emulated trial unpacked; readelf shows no library
# of the current layer needing it.
EXTRA_PACKAGES = ("libstdc++6", "libgcc-s1", "libgomp1")
QEMU_PACKAGE = "qemu-user"  # the host (amd64) build; its usr/bin/qemu-aarch64 is static-pie
LINKS = {"lib": "usr/lib", "lib64": "usr/lib64", "bin": "usr/bin", "sbin": "usr/sbin"}  # merged /usr, as base-files


class SysrootError(RuntimeError):
    """The Debian packages the smoke needs could not be fetched or unpacked."""


@dataclass(frozen=True)
class Sysroot:
    arch: str  # Lambda's name: arm64 | x86_64
    root: Path  # the unpacked packages (usr/, etc/, and the merged-/usr links)
    python: str  # the interpreter inside the root, e.g. /usr/bin/python3.13
    python_version: str  # "3.13"
    packages: tuple[str, ...]
    qemu: Path | None  # the host's emulator for this arch, None when it runs natively


def cache_dir() -> Path:
    return Path(os.environ.get("VSR_LAMBDA_CACHE") or Path.home() / ".cache" / "vsr" / "lambda")


def python_package(version: str) -> str:
    return f"python{version}"


def _run(command: Sequence[str], what: str, cwd: Path | None = None) -> str:
    done = subprocess.run(list(command), cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SysrootError(
            f"{what} failed (exit {done.returncode}); the Lambda smoke needs Debian {SUITE} packages from {MIRROR} "
            f"(set VSR_DEBIAN_MIRROR for another mirror).\n$ {' '.join(command)}\n{(done.stderr or done.stdout)[-2000:]}"
        )
    return done.stdout


class Apt:
    """apt-get/apt-cache on a private state directory for one Debian architecture and the trixie suite."""

    def __init__(self, state: Path, debian_arch: str) -> None:
        self.state = state
        self.debian_arch = debian_arch
        for sub in ("lists/partial", "cache/archives/partial", "etc/preferences.d", "etc/apt.conf.d"):
            (state / sub).mkdir(parents=True, exist_ok=True)
        if not KEYRING.is_file():
            raise SysrootError(f"no Debian archive keyring at {KEYRING} (apt-get install debian-archive-keyring)")
        (state / "etc" / "sources.list").write_text(
            f"deb [arch={debian_arch} signed-by={KEYRING}] {MIRROR} {SUITE} main\n"
        )

    def options(self) -> list[str]:
        s = self.state
        return [
            f"-oAPT::Architecture={self.debian_arch}",
            f"-oAPT::Architectures::={self.debian_arch}",
            f"-oDir::State::Lists={s / 'lists'}",
            f"-oDir::Etc::SourceList={s / 'etc' / 'sources.list'}",
            "-oDir::Etc::SourceParts=/dev/null",
            f"-oDir::Etc::Preferences={s / 'etc' / 'preferences'}",
            f"-oDir::Etc::PreferencesParts={s / 'etc' / 'preferences.d'}",
            f"-oDir::Cache={s / 'cache'}",
            "-oDir::State::status=/dev/null",
            "-oDebug::NoLocking=1",
            "-oAPT::Sandbox::User=root",
            "-oAcquire::Retries=3",
        ]

    def update(self) -> None:
        _run(
            ["apt-get", "-q", "--error-on=any", *self.options(), "update"],
            f"apt-get update ({SUITE} {self.debian_arch})",
        )

    def closure(self, packages: Sequence[str]) -> list[str]:
        """The packages with everything they depend on (no recommends), real packages only."""
        output = _run(
            [
                "apt-cache",
                *self.options(),
                "depends",
                "--recurse",
                "--no-recommends",
                "--no-suggests",
                "--no-conflicts",
                "--no-breaks",
                "--no-replaces",
                "--no-enhances",
                *packages,
            ],
            f"apt-cache depends ({self.debian_arch})",
        )
        names = {line.strip() for line in output.splitlines() if line and not line.startswith(" ")}
        return sorted(name for name in names if not name.startswith("<"))  # <virtual> packages have no .deb

    def download(self, packages: Sequence[str], into: Path) -> list[Path]:
        into.mkdir(parents=True, exist_ok=True)
        _run(["apt-get", "-q", *self.options(), "download", *packages], f"apt-get download ({self.debian_arch})", into)
        debs = sorted(into.glob("*.deb"))
        missing = [p for p in packages if not any(d.name.startswith(f"{p}_") for d in debs)]
        if missing:
            raise SysrootError(f"apt-get download left out {', '.join(missing)} ({self.debian_arch})")
        return debs


def _unpack(debs: Sequence[Path], root: Path) -> None:
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    for deb in debs:
        _run(["dpkg-deb", "-x", str(deb), str(root)], f"dpkg -x {deb.name}")
    for link, target in LINKS.items():
        if not (root / link).exists() and not (root / link).is_symlink():
            (root / link).symlink_to(target)


def _fresh(stamp: Path, wanted: dict[str, object]) -> bool:
    try:
        return json.loads(stamp.read_text()) == wanted
    except (OSError, ValueError):
        return False


def qemu_for(arch: str, cache: Path | None = None) -> Path:
    """trixie's qemu-aarch64 for this (amd64) host, unpacked from qemu-user's .deb and cached."""
    if arch != "arm64":
        raise SysrootError(f"no emulator is set up for {arch}")
    base = (cache or cache_dir()) / "qemu-amd64"
    binary = base / "qemu-aarch64"
    stamp = base / "stamp.json"
    wanted: dict[str, object] = {"suite": SUITE, "mirror": MIRROR, "packages": [QEMU_PACKAGE]}
    if binary.is_file() and _fresh(stamp, wanted):
        return binary
    apt = Apt(base / "apt", "amd64")
    apt.update()
    shutil.rmtree(base / "debs", ignore_errors=True)
    debs = apt.download([QEMU_PACKAGE], base / "debs")
    _unpack(debs, base / "root")
    unpacked = base / "root" / "usr" / "bin" / "qemu-aarch64"
    if not unpacked.is_file():
        raise SysrootError(f"{QEMU_PACKAGE} from {SUITE} has no usr/bin/qemu-aarch64")
    shutil.copy2(unpacked, binary)  # the one emulator needed; the package holds dozens (475 MB unpacked)
    shutil.rmtree(base / "root")
    shutil.rmtree(base / "debs")
    stamp.write_text(json.dumps(wanted))
    return binary


def sandbox_base(made: Sysroot) -> list[str]:
    """bubblewrap with the sysroot as the whole system, read-only, own namespaces (the network shared), a
    read-only /dev; callers add their binds, a /tmp, and the command."""
    root = made.root
    command = ["bwrap", "--unshare-all", "--share-net", "--die-with-parent", "--new-session"]
    command += ["--ro-bind", str(root / "usr"), "/usr", "--ro-bind", str(root / "etc"), "/etc"]
    for link, target in LINKS.items():
        command += ["--symlink", target, f"/{link}"]
    # /sys read-only as Lambda has it (ONNX Runtime's cpuinfo reads /sys/devices/system/cpu)
    command += ["--ro-bind", "/sys", "/sys", "--proc", "/proc", "--dev", "/dev", "--remount-ro", "/dev"]
    return command


def native_python(version: str | None = None) -> tuple[list[str], dict[str, str]]:
    """A command (and its environment) that runs CPython `version` (default: the Lambda runtime's) on this
    machine without a sandbox: `python3.13` from PATH if there is one, else the cached Debian x86_64 sysroot's,
    started through its own dynamic loader."""
    version = version or get_settings().lambda_python_version
    found = shutil.which(f"python{version}")
    if found:  # a shim (pyenv) may exist without a working interpreter behind it: ask it
        check = [found, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"]
        answer = subprocess.run(check, capture_output=True, text=True, check=False)
        if answer.returncode == 0 and answer.stdout.strip() == version:
            return [found, "-s"], {}
    made = sysroot("x86_64")
    usr = made.root / "usr"
    loader = usr / "lib64" / "ld-linux-x86-64.so.2"
    command = [
        str(loader),
        "--library-path",
        str(usr / "lib" / "x86_64-linux-gnu"),
        str(usr / "bin" / f"python{version}"),
    ]
    return [*command, "-s"], {"PYTHONHOME": str(usr)}


def compile_tree(tree: Path, prefix: str, version: str | None = None) -> None:
    """Byte-compile every module below `tree` for CPython `version`, recording `prefix` as its location (where
    Lambda will see it: /opt/python, /var/task). Bytecode does not depend on the architecture, so the x86_64
    interpreter compiles for arm64 too. Unchecked-hash .pyc files: valid whatever the files' timestamps
    (zips store 1980), never rewritten, and reproducible."""
    python, env = native_python(version)
    command = [*python, "-m", "compileall", "-q", "--invalidation-mode", "unchecked-hash"]
    command += ["-s", str(tree), "-p", prefix, str(tree)]
    done = subprocess.run(command, capture_output=True, text=True, check=False, env={**os.environ, **env})
    if done.returncode != 0:
        raise SysrootError(f"compileall of {tree} failed:\n{(done.stdout + done.stderr)[-2000:]}")


def precompile_stdlib(made: Sysroot) -> None:
    """The standard library as Lambda's runtime has it: compiled (Debian compiles it in postinst, which
    `dpkg -x` does not run; without it every cold start would compile the stdlib it imports)."""
    stdlib = f"/usr/lib/python{made.python_version}"
    # Debian's own addition, a link into /etc/python3.x: Lambda's CPython has no sitecustomize
    (made.root / stdlib.lstrip("/") / "sitecustomize.py").unlink(missing_ok=True)
    stamp = made.root / ".stdlib-compiled"
    if stamp.is_file():
        return
    compile_tree(made.root / stdlib.lstrip("/"), stdlib, made.python_version)
    stamp.write_text("ok\n")


def host_debian_arch() -> str:
    return _run(["dpkg", "--print-architecture"], "dpkg --print-architecture").strip()


def sysroot(arch: str, cache: Path | None = None) -> Sysroot:
    """The cached sysroot of Lambda's CPython version for `arch`, fetched and unpacked on first use."""
    if arch not in DEBIAN_ARCH:
        raise SysrootError(f"unknown architecture {arch!r} (arm64 or x86_64)")
    version = get_settings().lambda_python_version
    debian_arch = DEBIAN_ARCH[arch]
    host = host_debian_arch()
    if host != "amd64":
        raise SysrootError(f"the Lambda smoke runs on amd64 hosts (x86_64 natively, arm64 emulated); this is {host}")
    base = (cache or cache_dir()) / f"python{version}-{debian_arch}"
    root = base / "root"
    requested = [python_package(version), *EXTRA_PACKAGES]
    stamp = base / "stamp.json"
    wanted: dict[str, object] = {"suite": SUITE, "mirror": MIRROR, "requested": requested}
    interpreter = f"/usr/bin/python{version}"
    if not (root / interpreter.lstrip("/")).is_file() or not _fresh(stamp, wanted):
        apt = Apt(base / "apt", debian_arch)
        apt.update()
        packages = apt.closure(requested)
        shutil.rmtree(base / "debs", ignore_errors=True)
        _unpack(apt.download(packages, base / "debs"), root)
        if not (root / interpreter.lstrip("/")).is_file():
            raise SysrootError(f"{python_package(version)} from {SUITE} has no {interpreter}")
        shutil.rmtree(base / "debs")
        (base / "packages.txt").write_text("\n".join(packages) + "\n")
        stamp.write_text(json.dumps(wanted))
    packages = tuple((base / "packages.txt").read_text().split())
    qemu = qemu_for(arch, cache) if debian_arch != host else None
    return Sysroot(arch, root, interpreter, version, packages, qemu)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=sorted(DEBIAN_ARCH), required=True)
    args = parser.parse_args()
    try:
        made = sysroot(args.arch)
    except SysrootError as exc:
        raise SystemExit(f"lambda_sysroot: error: {exc}") from None
    print(f"{made.arch}: {made.root} ({len(made.packages)} packages), python {made.python}, qemu {made.qemu}")
