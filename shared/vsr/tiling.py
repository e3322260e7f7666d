"""Pure tile planning: split a frame into overlapping windows whose cores cover it exactly once.

Each window is run through the model on its own; only its core (the window minus the overlap margin,
except where the window touches the frame edge) is kept. With an overlap at least as deep as the effect of
the model's zero padding that matters, the stitched result is seam-free.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Tile:
    """A window [y0, y1) x [x0, x1) of the input and the core [cy0, cy1) x [cx0, cx1) it is kept for."""

    y0: int
    y1: int
    x0: int
    x1: int
    cy0: int
    cy1: int
    cx0: int
    cx1: int

    @property
    def window_shape(self) -> tuple[int, int]:
        return self.y1 - self.y0, self.x1 - self.x0

    def core_in_window(self, scale: int = 1) -> tuple[slice, slice]:
        """Where the core lies inside the window's output (scaled by `scale`)."""
        return (
            slice((self.cy0 - self.y0) * scale, (self.cy1 - self.y0) * scale),
            slice((self.cx0 - self.x0) * scale, (self.cx1 - self.x0) * scale),
        )


def _split(length: int, parts: int) -> list[int]:
    """Boundaries of `parts` near-equal pieces of [0, length)."""
    return [round(i * length / parts) for i in range(parts + 1)]


def plan_tiles(height: int, width: int, tile: int | None, overlap: int) -> list[Tile]:
    """Windows of at most `tile` x `tile` input pixels (overlap included) covering a height x width frame.

    No tiling (one window, the whole frame) when `tile` is 0/None or the frame has no more pixels than one
    tile x tile window: a wide but short frame is cheaper to run whole than to recompute overlaps.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"frame size must be positive, got {height}x{width}")
    if overlap < 0:
        raise ValueError(f"tile overlap must be >= 0, got {overlap}")
    if not tile or height * width <= tile * tile:
        return [Tile(0, height, 0, width, 0, height, 0, width)]
    core = tile - 2 * overlap
    if core <= 0:
        raise ValueError(f"tile {tile} leaves no core inside an overlap of {overlap} on each side")
    ys = _split(height, max(1, math.ceil(height / core)))
    xs = _split(width, max(1, math.ceil(width / core)))
    tiles = []
    for cy0, cy1 in itertools.pairwise(ys):
        for cx0, cx1 in itertools.pairwise(xs):
            tiles.append(
                Tile(
                    y0=max(0, cy0 - overlap),
                    y1=min(height, cy1 + overlap),
                    x0=max(0, cx0 - overlap),
                    x1=min(width, cx1 + overlap),
                    cy0=cy0,
                    cy1=cy1,
                    cx0=cx0,
                    cx1=cx1,
                )
            )
    return tiles
