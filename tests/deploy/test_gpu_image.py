"""The GPU worker's Dockerfile, checked statically: these machines have no Docker daemon, so the image is not built
here (docker/gpu-worker/README.md says so). What can be checked without building it is checked: the CUDA runtime
base, onnxruntime-gpu replacing the CPU wheel, the project package (with PyAV) installed from this repository,
a non-root user, and an ENTRYPOINT that is a console script pyproject.toml declares, running `vsr worker`."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import tomllib

from tests.deploy.tfconfig import ROOT

DOCKERFILE = ROOT / "docker" / "gpu-worker" / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, with continuation lines joined and comments dropped."""
    joined = re.sub(
        r"\\\n",
        " ",
        "\n".join(line for line in DOCKERFILE.read_text().splitlines() if not line.lstrip().startswith("#")),
    )
    result = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, arguments = line.strip().partition(" ")
            result.append((keyword.upper(), arguments.strip()))
    return result


def _all(keyword: str) -> list[str]:
    return [arguments for name, arguments in instructions() if name == keyword]


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_base_is_a_pinned_cuda_runtime_with_cudnn() -> None:
    (base,) = _all("FROM")  # one stage
    match = re.fullmatch(r"nvidia/cuda:(\d+)\.(\d+)\.(\d+)-cudnn-runtime-ubuntu(\d+\.\d+)", base)
    assert match, f"not a pinned nvidia/cuda cudnn runtime tag: {base!r}"
    assert int(match.group(1)) == 12, "onnxruntime-gpu is pinned to a CUDA 12 build"


def test_onnxruntime_gpu_replaces_the_cpu_wheel_and_the_package_brings_pyav() -> None:
    runs = " && ".join(_all("RUN"))
    steps = [step.strip() for step in runs.split("&&")]
    install_package = steps.index("pip install .")
    uninstall_cpu = steps.index("pip uninstall -y onnxruntime")
    install_gpu = next(
        i for i, step in enumerate(steps) if step.startswith("pip install") and "onnxruntime-gpu==" in step
    )
    assert install_package < uninstall_cpu < install_gpu, steps
    (version,) = [a.split("=", 1)[1] for a in _all("ARG") if a.startswith("ONNXRUNTIME_GPU_VERSION=")]
    assert re.fullmatch(r"1\.(\d+)\.\d+", version) and int(version.split(".")[1]) <= 26, (
        "onnxruntime-gpu 1.27+ is built for CUDA 13; the base is CUDA 12"
    )
    # the package's own dependencies bring PyAV and the CPU wheel the step above replaces
    dependencies = [re.split(r"[<>=!~ \[]", d, maxsplit=1)[0] for d in _pyproject()["project"]["dependencies"]]
    assert "av" in dependencies and "onnxruntime" in dependencies
    # the build proves the CUDA provider is there and the package and PyAV import
    check = next(step for step in steps if step.startswith("python -c"))
    assert "CUDAExecutionProvider" in check and "import av" in check and "vsr" in check
    copied = {a.split()[0] for a in _all("COPY")} | {w for a in _all("COPY") for w in a.split()[:-1]}
    assert {"pyproject.toml", "shared"} <= copied, copied


def test_runs_as_a_non_root_user() -> None:
    users = _all("USER")
    assert users, "no USER: the worker would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), users


def test_entrypoint_is_the_vsr_worker_console_script() -> None:
    (entrypoint,) = _all("ENTRYPOINT")
    command = json.loads(entrypoint)  # exec form: the worker is PID 1's child of ECS's init, and gets SIGTERM
    assert command[:2] == ["vsr", "worker"], command
    scripts = _pyproject()["project"]["scripts"]
    assert command[0] in scripts, f"{command[0]} is not a console script of pyproject.toml"
    module, _, function = scripts[command[0]].partition(":")
    path = ROOT / "shared" / (module.replace(".", "/") + ".py")
    assert path.is_file() and re.search(rf"^def {function}\(", path.read_text(), flags=re.M), scripts[command[0]]


def test_build_context_keeps_out_everything_but_the_package() -> None:
    ignore = (DOCKERFILE.parent / "Dockerfile.dockerignore").read_text().splitlines()
    rules = [line.strip() for line in ignore if line.strip() and not line.startswith("#")]
    assert rules[0] == "*" and {"!pyproject.toml", "!shared/"} <= set(rules), rules
    copied = {w.rstrip("/") for a in _all("COPY") for w in a.split()[:-1]}
    allowed = {r.removeprefix("!").rstrip("/") for r in rules if r.startswith("!")}
    assert copied <= allowed, sorted(copied - allowed)


def test_make_image_and_push_use_this_dockerfile_and_the_terraform_repository() -> None:
    repo = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/vsr-gpu-worker"
    done = subprocess.run(
        ["make", "-n", "push", f"IMAGE_REPO={repo}", "IMAGE_TAG=abc123"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    text = done.stdout.replace("\\\n", " ")  # make -n prints the recipe's continuation lines as written
    lines = [shlex.split(line) for line in text.splitlines() if line.startswith(("docker", "aws"))]
    assert ["docker", "build", "-f", "docker/gpu-worker/Dockerfile", "-t", f"{repo}:abc123", "."] in lines
    login = next(line for line in lines if line[:3] == ["aws", "ecr", "get-login-password"])
    assert login[3:5] == ["--region", "eu-west-1"] and login[-1] == "123456789012.dkr.ecr.eu-west-1.amazonaws.com"
    assert ["docker", "push", f"{repo}:abc123"] in lines
