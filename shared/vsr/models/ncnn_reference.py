"""Run the original ncnn models (PyPI `ncnn`, CPU) as the numerical and speed reference.

Used by the oracle tests and the benchmarks only; `ncnn` is imported lazily so the runtime never needs it.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from vsr.errors import ModelError
from vsr.models import registry

INPUT_BLOB = "data"
OUTPUT_BLOB = "output"


def load_net(model_name: str, threads: int, precise: bool = True) -> Any:
    """An ncnn.Net for a bundled model. `precise` turns off fp16 storage/arithmetic (ncnn's CPU default on)."""
    import ncnn

    if model_name not in registry.BUNDLED:
        raise ModelError(f"no ncnn source for {model_name!r}; bundled: {', '.join(registry.BUNDLED)}")
    folder = registry.source_dir()
    if folder is None:
        raise ModelError(f"{registry.SOURCE_PACKAGE} is not installed")
    stem = registry.BUNDLED[model_name][0]
    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    net.opt.num_threads = threads
    if precise:
        net.opt.use_fp16_storage = False
        net.opt.use_fp16_packed = False
        net.opt.use_fp16_arithmetic = False
    if net.load_param(str(folder / f"{stem}.param")) != 0 or net.load_model(str(folder / f"{stem}.bin")) != 0:
        raise ModelError(f"ncnn could not load {stem}")
    return net


def run_ncnn(
    model_name: str, frames: np.ndarray, threads: int, precise: bool = True, net: Any = None
) -> tuple[np.ndarray, float]:
    """Upscale [N, H, W, 3] float32 0..1 frames with ncnn; returns ([N, sH, sW, 3] unclipped, inference seconds).

    The seconds cover only ncnn's own work (input Mat, extract, output copy), not loading the model; pass a
    `net` from `load_net` to reuse one across calls.
    """
    import ncnn

    net = net or load_net(model_name, threads, precise)
    outputs = []
    seconds = 0.0
    for frame in frames:
        chw = np.ascontiguousarray(frame.transpose(2, 0, 1), dtype=np.float32)
        started = time.perf_counter()
        extractor = net.create_extractor()
        extractor.input(INPUT_BLOB, ncnn.Mat(chw))
        status, out = extractor.extract(OUTPUT_BLOB)
        result = np.array(out)
        seconds += time.perf_counter() - started
        if status != 0:
            raise ModelError(f"ncnn extract failed with status {status}")
        outputs.append(result.transpose(1, 2, 0))
    return np.stack(outputs), seconds
