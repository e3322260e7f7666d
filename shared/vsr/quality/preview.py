"""Side-by-side pictures: panels next to each other with a label bar, written as PNG or a video.

NumPy and PyAV only (PNG through FFmpeg's encoder), so a Lambda can draw one; labels use OpenCV's
Hershey font when OpenCV is installed, and are left out otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import av
import numpy as np

LABEL_BAR = 24  # pixels above each panel
GAP = 4  # pixels between panels


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return (image >> 8).astype(np.uint8) if image.dtype == np.uint16 else image


def _label(bar: np.ndarray, text: str) -> None:
    try:
        import cv2
    except ImportError:
        return
    cv2.putText(bar, text, (6, LABEL_BAR - 7), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 1, cv2.LINE_AA)


def side_by_side(panels: Sequence[np.ndarray], labels: Sequence[str]) -> np.ndarray:
    """Panels (same height) left to right, each under a dark bar with its label; uint8 RGB."""
    if len(panels) != len(labels) or not panels:
        raise ValueError("one label per panel, at least one panel")
    height = panels[0].shape[0]
    if any(p.shape[0] != height for p in panels):
        raise ValueError("panels must have the same height")
    width = sum(p.shape[1] for p in panels) + GAP * (len(panels) - 1)
    canvas = np.zeros((height + LABEL_BAR, width, 3), dtype=np.uint8)
    canvas[:] = 32
    x = 0
    for panel, text in zip(panels, labels, strict=True):
        w = panel.shape[1]
        canvas[LABEL_BAR:, x : x + w] = _to_uint8(panel)
        bar = np.ascontiguousarray(canvas[:LABEL_BAR, x : x + w])
        _label(bar, text)
        canvas[:LABEL_BAR, x : x + w] = bar
        x += w + GAP
    return canvas


def detail_crop(image: np.ndarray, reference: np.ndarray, size: tuple[int, int]) -> tuple[int, int]:
    """Top-left (y, x) of the `size` (h, w) window of `reference` with the most detail (gradient energy),
    on a coarse grid; where a viewer can see what the upscaler did."""
    h, w = size
    if reference.shape[0] <= h or reference.shape[1] <= w:
        return 0, 0
    gray = reference.astype(np.float32).mean(axis=2)
    energy = np.abs(np.diff(gray, axis=0))[:, :-1] + np.abs(np.diff(gray, axis=1))[:-1, :]
    best, where = -1.0, (0, 0)
    for y in range(0, reference.shape[0] - h, max(1, h // 4)):
        for x in range(0, reference.shape[1] - w, max(1, w // 4)):
            score = float(energy[y : y + h - 1, x : x + w - 1].mean())
            if score > best:
                best, where = score, (y, x)
    return where


def png_bytes(image: np.ndarray) -> bytes:
    """Encode an RGB uint8 image as PNG."""
    ctx: Any = av.CodecContext.create("png", "w")
    ctx.width, ctx.height, ctx.pix_fmt = image.shape[1], image.shape[0], "rgb24"
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
    data = b"".join(bytes(p) for p in ctx.encode(frame))
    data += b"".join(bytes(p) for p in ctx.encode(None))
    return data


def write_png(path: str | os.PathLike[str], image: np.ndarray) -> None:
    with open(path, "wb") as handle:
        handle.write(png_bytes(image))


def write_video(path: str | os.PathLike[str], images: Sequence[np.ndarray], rate: Fraction) -> None:
    """H.264 MP4 of `images` (padded to even sizes) at `rate` frames per second."""
    height, width = images[0].shape[:2]
    even_h, even_w = height + height % 2, width + width % 2
    with av.open(os.fspath(path), "w") as out:
        stream: Any = out.add_stream("libx264", rate=rate, options={"crf": "16", "preset": "veryfast"})
        stream.width, stream.height, stream.pix_fmt = even_w, even_h, "yuv420p"
        for image in images:
            padded = np.zeros((even_h, even_w, 3), dtype=np.uint8)
            padded[:height, :width] = image
            out.mux(stream.encode(av.VideoFrame.from_ndarray(padded, format="rgb24")))
        out.mux(stream.encode(None))
