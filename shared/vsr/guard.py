"""Run-time side of the int8 saturation guard: which parts of a frame to recompute in fp32, and how much was.

A guarded int8 model (built by vsr.models.guard) has a second output: per cell of `cell` x `cell` input pixels,
how many (conv layer, channel) pairs clipped at the top of their uint8 range. A cell whose count exceeds
`max_clipped_channels` (settings `model.int8_guard`) is unreliable, and so is every output pixel within the
receptive field of it: the flagged cells are dilated by `radius` pixels, grouped into connected regions, and each
region's bounding box is recomputed by the fp32 model (with `radius` pixels of context) and replaces the int8
output there. No blending: the fp32 core is taken as it is. The decision comes from the activations only.

No ONNX import here (the Lambda layer has ONNX Runtime only): the cell and radius come from the model file's
metadata (`spec_from_metadata`).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field

import numpy as np

GUARD_OUTPUT = "guard_clipped"  # the same name vsr.models.guard gives the graph output
META_CELL = "guard_cell"
META_RADIUS = "guard_radius"


@dataclass(frozen=True)
class GuardSpec:
    cell: int  # input pixels per side of one count cell
    radius: int  # input pixels a clipped activation can reach in the output (and fp32 context taken)
    max_clipped_channels: float  # a cell with more clipped (layer, channel) pairs is recomputed


def spec_from_metadata(meta: dict[str, str], max_clipped_channels: float) -> GuardSpec | None:
    """The guard of a model from its ONNX metadata, or None when the model has no guard."""
    if META_CELL not in meta:
        return None
    return GuardSpec(int(meta[META_CELL]), int(meta.get(META_RADIUS, "0")), float(max_clipped_channels))


@dataclass(frozen=True)
class Region:
    """A rectangle [y0, y1) x [x0, x1) of input pixels to recompute in fp32."""

    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def pixels(self) -> int:
        return (self.y1 - self.y0) * (self.x1 - self.x0)


def _dilate(mask: np.ndarray, reach: int) -> np.ndarray:
    out = mask.copy()
    h, w = mask.shape
    for dy in range(-reach, reach + 1):
        for dx in range(-reach, reach + 1):
            out[max(0, dy) : h + min(0, dy), max(0, dx) : w + min(0, dx)] |= mask[
                max(0, -dy) : h + min(0, -dy), max(0, -dx) : w + min(0, -dx)
            ]
    return out


def _components(mask: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Bounding boxes (r0, r1, c0, c1) of the 4-connected True regions of a small cell grid."""
    seen = np.zeros_like(mask)
    boxes = []
    for r, c in zip(*np.nonzero(mask), strict=True):
        if seen[r, c]:
            continue
        stack, r0, r1, c0, c1 = [(int(r), int(c))], int(r), int(r), int(c), int(c)
        seen[r, c] = True
        while stack:
            y, x = stack.pop()
            r0, r1, c0, c1 = min(r0, y), max(r1, y), min(c0, x), max(c1, x)
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1] and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    stack.append((ny, nx))
        boxes.append((r0, r1 + 1, c0, c1 + 1))
    return boxes


def _merge(boxes: list[tuple[int, int, int, int]]) -> list[tuple[int, int, int, int]]:
    """Merge overlapping bounding boxes until none overlap (so no pixel is recomputed twice)."""
    merged = list(boxes)
    changed = True
    while changed:
        changed = False
        for i in range(len(merged)):
            for j in range(i + 1, len(merged)):
                a, b = merged[i], merged[j]
                if a[0] < b[1] and b[0] < a[1] and a[2] < b[3] and b[2] < a[3]:
                    merged[i] = (min(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), max(a[3], b[3]))
                    del merged[j]
                    changed = True
                    break
            if changed:
                break
    return merged


def regions_to_recompute(counts: np.ndarray, spec: GuardSpec, height: int, width: int) -> list[Region]:
    """Input-pixel rectangles (not overlapping) of a height x width window whose output must come from fp32,
    given the guard output `counts` ([h, w] cells, or with leading axes of size 1) of that window."""
    grid = np.asarray(counts).reshape(counts.shape[-2:])
    flagged = grid > spec.max_clipped_channels
    if not flagged.any():
        return []
    flagged = _dilate(flagged, math.ceil(spec.radius / spec.cell))
    regions = []
    for r0, r1, c0, c1 in _merge(_components(flagged)):
        y0, y1 = r0 * spec.cell, min(height, r1 * spec.cell)
        x0, x1 = c0 * spec.cell, min(width, c1 * spec.cell)
        if y1 > y0 and x1 > x0:
            regions.append(Region(y0, y1, x0, x1))
    return regions


def recomputed_fraction(totals: dict[str, float]) -> float | None:
    """A job's share of input pixels recomputed in fp32, from its summed segment counters (`guard_px`,
    `guard_recomputed_px`); None when no segment ran a guarded model."""
    pixels = float(totals.get("guard_px", 0) or 0)
    return float(totals.get("guard_recomputed_px", 0) or 0) / pixels if pixels else None


@dataclass
class GuardStats:
    """Output pixels produced, and how many of them the guard recomputed in fp32 (thread-safe counters)."""

    pixels: int = 0
    recomputed: int = 0
    regions: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, pixels: int, recomputed: int, regions: int) -> None:
        with self._lock:
            self.pixels += pixels
            self.recomputed += recomputed
            self.regions += regions

    @property
    def fraction(self) -> float:
        return self.recomputed / self.pixels if self.pixels else 0.0
