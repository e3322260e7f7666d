"""The guarded int8 variant on arm64 ONNX Runtime: one small tile through the engine under qemu-aarch64.

What runs: the Lambda layer `make package ARCH=arm64` built (build/lambda/arm64/layer.zip: arm64 ONNX Runtime,
NumPy, structlog), unpacked under /opt; the project's own `vsr` package (this worktree's shared/) read-only;
on Debian's arm64 CPython of the Lambda runtime (tools/lambda_sysroot.py) under qemu-aarch64 as a Neoverse N1
(Graviton2), in the bubblewrap sandbox the Lambda smoke uses. The engine's `Upscaler` runs the guarded int8
variant on one 32x32 tile of the gate's text-and-edges case (its activations clip, so the fp32 recompute path
runs too) and on one 32x32 natural tile (bikes; nothing recomputed).

Checks (exit 1 when one fails): on arm64 the session loads (QLinearConv, the uint8 MaxPool of the guard), the
guard flags the text tile and not the natural one, as on x86-64; the output agrees with this machine's x86-64
run within 2/255 (int8 kernels differ between the two architectures; the fp32-recomputed part within 1e-4).
Graviton speed is NOT measured: times under emulation mean nothing for Lambda.

    python tools/int8_arm64.py [--model realesr-animevideov3-x2] [--layer build/lambda/arm64/layer.zip]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lambda_sysroot

ROOT = Path(__file__).resolve().parent.parent
EMULATED_CPU = "neoverse-n1"  # Graviton2, as tools/lambda_smoke.py
TILE = 32
INT8_TOLERANCE = 2 / 255
FP32_TOLERANCE = 1e-4

# runs inside the sandbox (arm64 CPython): the engine on both tiles, results to /out
CHILD = """
import json, sys
sys.path[:0] = ["/opt/python", "/src"]
import numpy as np
import onnxruntime
from vsr.engine import Upscaler
from vsr.guard import GuardStats
from vsr.models.registry import ModelInfo
spec = json.load(open("/work/spec.json"))
fp32 = ModelInfo("fp32", spec["scale"], "/work/fp32.onnx", 1, "fp32", sha256="fp32")
int8 = ModelInfo("int8", spec["scale"], "/work/int8.onnx", 1, "int8", sha256="int8", precision="int8")
up = Upscaler(int8, 0, 0, threads=1, parallel=False, guard_max_clipped=spec["max_clipped"], fallback=fp32)
tiles = np.load("/work/tiles.npy")
result = {"onnxruntime": onnxruntime.__version__, "machine": __import__("platform").machine(), "recomputed": []}
outs = []
for tile in tiles:
    stats = GuardStats()
    outs.append(up.upscale(tile[None], stats)[0])
    result["recomputed"].append(stats.fraction)
np.save("/out/outputs.npy", np.stack(outs))
json.dump(result, open("/out/result.json", "w"))
"""


def tiles() -> np.ndarray:
    from vsr.models import fidelity, samples

    text = fidelity._text_and_edges()[8 : 8 + TILE, 40 : 40 + TILE]  # glyphs: activations clip here
    natural = samples.read_frames(samples.bikes_path(), 1)[0][100 : 100 + TILE, 300 : 300 + TILE]
    return np.stack([text, natural]).astype(np.float32)


def models(name: str, folder: Path) -> tuple[Path, Path, str]:
    """(guarded int8, fp32) files and whether the int8 one is shipped or quantised here for the check."""
    import onnx

    from vsr.models import fidelity, int8, quantize, registry
    from vsr.settings import get_settings

    fp32 = registry.resolve_model(name)
    variant = registry.int8_variant(name)
    if variant is not None:
        return variant.path, fp32.path, "shipped"
    calib, _ = fidelity.calibration_frames()
    q = quantize.quantise(onnx.load(str(fp32.path)), calib, int8.shipped_recipe(get_settings().int8_guard), 2)
    path = folder / "int8.onnx"
    onnx.save_model(q.model, str(path))
    return path, fp32.path, "NOT shipped (its gate failed): quantised here with the shipped recipe"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="realesr-animevideov3-x2")
    parser.add_argument("--layer", type=Path, default=ROOT / "build/lambda/arm64/layer.zip")
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args()
    if not args.layer.is_file():
        sys.exit(f"{args.layer}: run `make package ARCH=arm64` first")
    from vsr.engine import Upscaler
    from vsr.guard import GuardStats
    from vsr.models.registry import ModelInfo, resolve_model
    from vsr.settings import get_settings

    settings = get_settings()
    scale = resolve_model(args.model).scale
    made = lambda_sysroot.sysroot("arm64")
    if made.qemu is None:
        sys.exit("this machine is arm64: run the engine natively instead")
    with tempfile.TemporaryDirectory(prefix="vsr-int8-arm64-") as tmp:
        work, out, opt = Path(tmp) / "work", Path(tmp) / "out", Path(tmp) / "opt"
        for folder in (work, out, opt):
            folder.mkdir()
        int8_path, fp32_path, status = models(args.model, work)
        if int8_path != work / "int8.onnx":
            (work / "int8.onnx").write_bytes(int8_path.read_bytes())
        (work / "fp32.onnx").write_bytes(fp32_path.read_bytes())
        batch = tiles()
        np.save(work / "tiles.npy", batch)
        max_clipped = settings.int8_guard.max_clipped_channels
        (work / "spec.json").write_text(json.dumps({"scale": scale, "max_clipped": max_clipped}))
        (work / "child.py").write_text(CHILD)
        with zipfile.ZipFile(args.layer) as layer:
            layer.extractall(opt)
        # x86-64 here, the same engine and files
        fp32 = ModelInfo("fp32", scale, work / "fp32.onnx", 1, "fp32", sha256="fp32-x86")
        int8 = ModelInfo("int8", scale, work / "int8.onnx", 1, "int8", sha256="int8-x86", precision="int8")
        up = Upscaler(int8, 0, 0, threads=1, parallel=False, guard_max_clipped=max_clipped, fallback=fp32)
        here, here_recomputed = [], []
        for tile in batch:
            stats = GuardStats()
            here.append(up.upscale(tile[None], stats)[0])
            here_recomputed.append(stats.fraction)
        command = lambda_sysroot.sandbox_base(made)
        command += ["--ro-bind", str(opt), "/opt", "--ro-bind", str(ROOT / "shared"), "/src"]
        command += ["--ro-bind", str(work), "/work", "--bind", str(out), "/out", "--tmpfs", "/tmp"]
        command += ["--ro-bind", str(made.qemu), "/var/emulator/qemu-aarch64", "--remount-ro", "/"]
        command += ["/var/emulator/qemu-aarch64", "-cpu", EMULATED_CPU, made.python, "-I", "/work/child.py"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout, check=False)
        if done.returncode != 0:
            print(done.stdout[-4000:], done.stderr[-4000:], sep="\n")
            print(f"arm64 run FAILED (exit {done.returncode})")
            return 1
        result = json.loads((out / "result.json").read_text())
        there = np.load(out / "outputs.npy")
    print(f"int8 variant: {status}")
    print(f"arm64: onnxruntime {result['onnxruntime']} on {result['machine']} (qemu-aarch64 -cpu {EMULATED_CPU})")
    failures = []
    for label, ours, theirs, r_here, r_there in zip(
        ("text and edges", "bikes"), here, there, here_recomputed, result["recomputed"], strict=True
    ):
        diff = float(np.abs(ours - theirs).max())
        print(f"  {label:15} recomputed x86-64 {r_here:.2%}, arm64 {r_there:.2%}; max |x86-64 - arm64| {diff:.5f}")
        limit = FP32_TOLERANCE if r_here == 1.0 else INT8_TOLERANCE
        if diff > limit:
            failures.append(f"{label}: outputs differ by {diff:.5f} > {limit:.5f}")
        if (r_here > 0) != (r_there > 0):
            failures.append(f"{label}: the guard decided differently on arm64")
    if not result["recomputed"][0] > 0:
        failures.append("the guard did not fire on the text tile")
    if result["recomputed"][1] > 0:
        failures.append("the guard fired on the natural tile")
    print("Graviton speed is not measured here: times under emulation say nothing about Lambda.")
    for failure in failures:
        print(f"FAILED: {failure}")
    print("arm64: ok" if not failures else "arm64: FAILED")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
