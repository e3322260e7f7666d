"""Tile planning: cores cover every pixel exactly once, windows stay within the tile size and the frame."""

from __future__ import annotations

import numpy as np
import pytest

from vsr.tiling import Tile, plan_tiles


def _coverage(tiles: list[Tile], height: int, width: int) -> np.ndarray:
    hits = np.zeros((height, width), dtype=int)
    for t in tiles:
        hits[t.cy0 : t.cy1, t.cx0 : t.cx1] += 1
    return hits


@pytest.mark.parametrize(
    ("height", "width", "tile", "overlap"),
    [(1080, 1920, 512, 16), (2160, 3840, 512, 16), (720, 1280, 256, 32), (1081, 1919, 300, 10), (600, 601, 512, 0)],
)
def test_cores_partition_the_frame_and_windows_fit(height: int, width: int, tile: int, overlap: int) -> None:
    tiles = plan_tiles(height, width, tile, overlap)
    assert len(tiles) > 1
    assert (_coverage(tiles, height, width) == 1).all()
    for t in tiles:
        assert 0 <= t.y0 <= t.cy0 < t.cy1 <= t.y1 <= height
        assert 0 <= t.x0 <= t.cx0 < t.cx1 <= t.x1 <= width
        wh, ww = t.window_shape
        assert wh <= tile and ww <= tile
        # the overlap is kept on every side that is not the frame edge
        assert t.cy0 - t.y0 == (overlap if t.cy0 > 0 else 0)
        assert t.y1 - t.cy1 == (overlap if t.cy1 < height else 0)
        assert t.cx0 - t.x0 == (overlap if t.cx0 > 0 else 0)
        assert t.x1 - t.cx1 == (overlap if t.cx1 < width else 0)


def test_tiles_are_near_equal_so_the_runtime_sees_few_shapes() -> None:
    tiles = plan_tiles(1080, 1920, 512, 16)
    core_heights = {t.cy1 - t.cy0 for t in tiles}
    core_widths = {t.cx1 - t.cx0 for t in tiles}
    assert max(core_heights) - min(core_heights) <= 1
    assert max(core_widths) - min(core_widths) <= 1


@pytest.mark.parametrize("tile", [None, 0])
def test_disabled_tiling_is_one_window(tile: int | None) -> None:
    assert plan_tiles(2160, 3840, tile, 16) == [Tile(0, 2160, 0, 3840, 0, 2160, 0, 3840)]


def test_frame_no_larger_than_one_tile_is_not_tiled() -> None:
    # 640x272 has fewer pixels than 512x512: running it whole is cheaper than recomputing overlaps
    assert len(plan_tiles(272, 640, 512, 16)) == 1
    assert len(plan_tiles(513, 513, 512, 16)) > 1


def test_core_in_window_scales() -> None:
    t = Tile(y0=10, y1=60, x0=0, x1=40, cy0=20, cy1=50, cx0=0, cx1=30)
    assert t.core_in_window(2) == (slice(20, 80), slice(0, 60))


@pytest.mark.parametrize(("height", "width", "tile", "overlap"), [(0, 10, 8, 1), (10, 10, 8, -1), (100, 100, 32, 16)])
def test_bad_arguments_are_refused(height: int, width: int, tile: int, overlap: int) -> None:
    with pytest.raises(ValueError):
        plan_tiles(height, width, tile, overlap)
