"""NumPy-only optical flow and warping, for the in-job flicker check inside Lambda.

OpenCV (DIS flow, used by `vsr eval`) is 90 MB unzipped on arm64 and the Lambda layer is already about
220 MB of the 250 MB limit, so the job check uses this instead: coarse-to-fine block matching (8x8 blocks,
sum of absolute differences over a +-4 pixel search per pyramid level, sub-pixel by a parabola through the
best cost and its neighbours), spread to a dense field. It is cruder than DIS, but the job only compares
two upscales (the output and bicubic) under the same motion and mask, which is what the flicker ratio needs;
tests/quality compares it with the DIS-based ratio on real footage.
"""

from __future__ import annotations

import numpy as np

BLOCK = 8
RADIUS = 4
LEVELS = 3


def gray(image: np.ndarray) -> np.ndarray:
    peak = 255.0 if image.dtype == np.uint8 else 65535.0
    return (image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)) * np.float32(255.0 / peak)


def _half(plane: np.ndarray) -> np.ndarray:
    h, w = plane.shape[0] // 2 * 2, plane.shape[1] // 2 * 2
    return plane[:h, :w].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))


def _match(a: np.ndarray, b: np.ndarray, guess: np.ndarray) -> np.ndarray:
    """Per-block displacement (dy, dx) from a to b searched around `guess` (nby x nbx x 2)."""
    nby, nbx = a.shape[0] // BLOCK, a.shape[1] // BLOCK
    ys = (np.arange(nby) * BLOCK)[:, None, None, None] + np.arange(BLOCK)[None, None, :, None]
    xs = (np.arange(nbx) * BLOCK)[None, :, None, None] + np.arange(BLOCK)[None, None, None, :]
    blocks = a[ys, xs]  # nby x nbx x B x B
    base_y = ys + np.rint(guess[..., 0])[:, :, None, None].astype(np.int64)
    base_x = xs + np.rint(guess[..., 1])[:, :, None, None].astype(np.int64)
    side = 2 * RADIUS + 1
    costs = np.empty((side, side, nby, nbx), np.float32)
    h, w = b.shape
    flat_b = b.ravel()
    blocks = blocks.reshape(nby, nbx, BLOCK * BLOCK)
    # Flat int32 offsets, clipped once per row shift and per column shift: a 1-D take per candidate is
    # several times faster than 2-D fancy indexing with fresh int64 index arrays.
    row_offsets = [(np.clip(base_y + dy, 0, h - 1) * w).astype(np.int32) for dy in range(-RADIUS, RADIUS + 1)]
    columns = [np.clip(base_x + dx, 0, w - 1).astype(np.int32) for dx in range(-RADIUS, RADIUS + 1)]
    for i, row_offset in enumerate(row_offsets):
        for j, column in enumerate(columns):
            candidate = flat_b.take((row_offset + column).reshape(nby, nbx, BLOCK * BLOCK))
            costs[i, j] = np.abs(blocks - candidate).sum(axis=-1)
    costs += 1e-3 * (np.arange(side) - RADIUS)[:, None, None, None] ** 2  # ties: prefer the guess
    costs += 1e-3 * (np.arange(side) - RADIUS)[None, :, None, None] ** 2
    flat = costs.reshape(side * side, nby, nbx).argmin(axis=0)
    bi, bj = flat // side, flat % side
    rows, cols = np.mgrid[0:nby, 0:nbx]

    def refine(index: np.ndarray, minus: np.ndarray, centre: np.ndarray, plus: np.ndarray) -> np.ndarray:
        inside = (index > 0) & (index < side - 1)
        denominator = minus - 2 * centre + plus
        offset = np.where(inside & (denominator > 0), 0.5 * (minus - plus) / np.maximum(denominator, 1e-6), 0.0)
        return np.clip(offset, -0.5, 0.5)

    centre = costs[bi, bj, rows, cols]
    sub_y = refine(
        bi,
        costs[np.clip(bi - 1, 0, side - 1), bj, rows, cols],
        centre,
        costs[np.clip(bi + 1, 0, side - 1), bj, rows, cols],
    )
    sub_x = refine(
        bj,
        costs[bi, np.clip(bj - 1, 0, side - 1), rows, cols],
        centre,
        costs[bi, np.clip(bj + 1, 0, side - 1), rows, cols],
    )
    dy = np.rint(guess[..., 0]) + bi - RADIUS + sub_y
    dx = np.rint(guess[..., 1]) + bj - RADIUS + sub_x
    return np.stack([dy, dx], axis=-1).astype(np.float32)


def block_flow(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Dense flow (H x W x 2, (dx, dy) as OpenCV) from `first` to `second` (RGB images or grey planes)."""
    a = first if first.ndim == 2 else gray(first)
    b = second if second.ndim == 2 else gray(second)
    pyramid = [(a.astype(np.float32), b.astype(np.float32))]
    for _ in range(LEVELS - 1):
        pa, pb = pyramid[-1]
        if min(pa.shape) < 4 * BLOCK:
            break
        pyramid.append((_half(pa), _half(pb)))
    field: np.ndarray | None = None
    for pa, pb in reversed(pyramid):
        nby, nbx = pa.shape[0] // BLOCK, pa.shape[1] // BLOCK
        if field is None:
            guess = np.zeros((nby, nbx, 2), np.float32)
        else:  # the coarser level's vectors, doubled, on this level's block grid
            rows = np.minimum(np.arange(nby) // 2, field.shape[0] - 1)
            cols = np.minimum(np.arange(nbx) // 2, field.shape[1] - 1)
            guess = 2 * field[rows][:, cols]
        field = _match(pa, pb, guess)
    assert field is not None
    h, w = a.shape
    rows = np.minimum(np.arange(h) // BLOCK, field.shape[0] - 1)
    cols = np.minimum(np.arange(w) // BLOCK, field.shape[1] - 1)
    dense = field[rows][:, cols]
    return np.ascontiguousarray(dense[..., ::-1])  # (dx, dy)


class Sampler:
    """Bilinear sampling at (x, y) + flow[y, x], edges replicated (as vsr.quality.flow.warp), prepared once per
    flow: the job check pulls back two images (output and bicubic) under each motion."""

    def __init__(self, flow: np.ndarray) -> None:
        h, w = flow.shape[:2]
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        x = np.clip(xs + flow[..., 0], 0, w - 1).ravel()
        y = np.clip(ys + flow[..., 1], 0, h - 1).ravel()
        x0, y0 = np.floor(x).astype(np.int32), np.floor(y).astype(np.int32)
        x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
        fx, fy = x - x0, y - y0
        self.shape = (h, w)
        self.index = (y0 * w + x0, y0 * w + x1, y1 * w + x0, y1 * w + x1)
        self.weight = ((1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        h, w = self.shape
        if image.shape[:2] != (h, w):
            raise ValueError(f"image is {image.shape[:2]}, the flow is for {(h, w)}")
        flat = image.reshape(h * w, -1).astype(np.float32, copy=False)
        out = np.zeros(flat.shape, np.float32)
        for index, weight in zip(self.index, self.weight, strict=True):
            out += flat.take(index, axis=0) * weight[:, None]
        return out.reshape(image.shape)


def warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """`image` sampled bilinearly at (x, y) + flow[y, x], edges replicated (as vsr.quality.flow.warp)."""
    return Sampler(flow)(image)
