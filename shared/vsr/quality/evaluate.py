"""`vsr eval`: the standard super-resolution protocol on a high-resolution video.

Each of the first N frames of HR_VIDEO is cropped to a multiple of the model's scale s and downscaled by s
with area averaging (the mean of each s x s block); the model and a bicubic upscale (OpenCV, a = -0.75)
bring it back, and both are compared with the original before any encoding:
PSNR on RGB and on BT.601 luma, SSIM on luma (vsr.quality.metrics), warping error of the output, of the
bicubic upscale and of the original with the same low-resolution motion, and tOF against the original
(vsr.quality.temporal). `flicker_ratio` = output warping error / bicubic warping error.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from vsr.errors import InputError, PermanentError
from vsr.media.decode import decode_window
from vsr.media.probe import probe
from vsr.quality import metrics, preview, temporal

DEFAULT_FRAMES = 12


def box_downscale(image: np.ndarray, scale: int) -> np.ndarray:
    """Mean of each scale x scale block (image already cropped to a multiple of scale), rounded."""
    h, w = image.shape[0] // scale, image.shape[1] // scale
    blocks = image[: h * scale, : w * scale].reshape(h, scale, w, scale, 3).astype(np.float64)
    return np.rint(blocks.mean(axis=(1, 3))).astype(image.dtype)


def bicubic_upscale(image: np.ndarray, scale: int) -> np.ndarray:
    from vsr.quality.flow import _cv2

    cv2 = _cv2()
    return cv2.resize(image, (image.shape[1] * scale, image.shape[0] * scale), interpolation=cv2.INTER_CUBIC)


def _image_metrics(frames: list[np.ndarray], originals: list[np.ndarray]) -> dict[str, float]:
    pairs = list(zip(frames, originals, strict=True))
    return {
        "psnr": float(np.mean([metrics.psnr(a, b) for a, b in pairs])),
        "psnr_y": float(np.mean([metrics.psnr_y(a, b) for a, b in pairs])),
        "ssim": float(np.mean([metrics.ssim_y(a, b) for a, b in pairs])),
    }


def load_frames(path: Path, count: int, scale: int) -> tuple[list[np.ndarray], Any]:
    if not path.is_file():
        raise InputError(f"no such file: {path}")
    info = probe(path)
    if info.frame_count < 2 or count < 2:
        raise InputError(f"{path} needs at least 2 frames to measure flicker (it has {info.frame_count})")
    height, width = info.height // scale * scale, info.width // scale * scale
    if height // scale < 16 or width // scale < 16:
        raise InputError(f"{path} is {info.width}x{info.height}: too small to downscale by {scale} and measure")
    frames = [f.image[:height, :width] for f in decode_window(path, info.pts[0], min(count, info.frame_count))]
    return frames, info


def evaluate(
    path: str | Path, model: str | None = None, frames: int = DEFAULT_FRAMES, temporal_mode: str = "off"
) -> tuple[dict[str, Any], dict[str, list[np.ndarray]], Any]:
    """The metrics object (the `--json` shape), the frames compared, and the source's VideoInfo.

    `temporal_mode` "flow" runs the model's output through vsr.quality.stabilise (block-matching flow, what
    a Lambda worker could run) before measuring; the result then says `"temporal": "flow"`."""
    from vsr.engine import get_upscaler
    from vsr.models.registry import resolve_model
    from vsr.segment import from_float, to_float
    from vsr.settings import get_settings

    settings = get_settings()  # this is the `vsr eval` command's edge
    model_info = resolve_model(model or settings.model_name)
    scale = model_info.scale
    originals, info = load_frames(Path(path), frames, scale)
    low = [box_downscale(f, scale) for f in originals]
    upscaler = get_upscaler(
        model_info,
        tile=settings.tile,
        tile_overlap=settings.tile_overlap,
        guard_max_clipped=settings.int8_guard.max_clipped_channels,
    )
    started = time.perf_counter()
    output = [from_float(upscaler.upscale(to_float([f])), f.dtype)[0] for f in low]
    if temporal_mode == "flow":
        from vsr.quality.stabilise import stabilise

        output = stabilise(low, output, scale, method="block")
    model_ms = (time.perf_counter() - started) * 1000 / len(low)
    bicubic_upscale(low[0], scale)  # OpenCV's first call initialises; time the steady state
    started = time.perf_counter()
    bicubic = [bicubic_upscale(f, scale) for f in low]
    bicubic_ms = (time.perf_counter() - started) * 1000 / len(low)

    motions = [temporal.PairMotion.from_low_res(low[i - 1], low[i], scale) for i in range(1, len(low))]
    result: dict[str, Any] = {"model": model_info.name, "scale": scale, "frames": len(originals)}
    for name, seq, ms in (("output", output, model_ms), ("bicubic", bicubic, bicubic_ms)):
        result[name] = {
            **_image_metrics(seq, originals),
            "ewarp": temporal.warping_error(seq, motions),
            "tof": temporal.tof(seq, originals),
            "ms_per_frame": ms,
        }
    result["ground_truth"] = {"ewarp": temporal.warping_error(originals, motions)}
    bicubic_ewarp = result["bicubic"]["ewarp"]
    result["flicker_ratio"] = result["output"]["ewarp"] / bicubic_ewarp if bicubic_ewarp > 0 else None
    if temporal_mode != "off":
        result["temporal"] = temporal_mode
    return result, {"bicubic": bicubic, "output": output, "original": originals}, info


def write_side_by_side(target: Path, sequences: dict[str, list[np.ndarray]], info: Any, model: str) -> None:
    labels = ["bicubic", model, "original"]
    images = [
        preview.side_by_side([sequences["bicubic"][i], sequences["output"][i], sequences["original"][i]], labels)
        for i in range(len(sequences["output"]))
    ]
    if target.suffix.lower() == ".png":
        preview.write_png(target, images[len(images) // 2])
    else:
        preview.write_video(target, images, info.average_rate or info.base_rate or 25)


def command(args: argparse.Namespace) -> int:
    target = Path(args.side_by_side) if args.side_by_side else None
    if target is not None and target.suffix.lower() not in {".png", ".mp4"}:
        raise PermanentError(f"--side-by-side must end in .png or .mp4, got {target.name}")
    result, sequences, info = evaluate(args.input, args.model, args.frames, getattr(args, "temporal", "off"))
    if target is not None:
        write_side_by_side(target, sequences, info, result["model"])
    if args.json:
        print(json.dumps(result))
        return 0
    rows = [("output (" + result["model"] + ")", result["output"]), ("bicubic", result["bicubic"])]
    print(f"{args.input}: {result['frames']} frames, x{result['scale']}, box-downscaled then upscaled")
    print(f"{'':32s} {'PSNR':>7s} {'PSNR-Y':>7s} {'SSIM-Y':>7s} {'E_warp':>9s} {'tOF':>6s} {'ms/frame':>9s}")
    for name, m in rows:
        print(
            f"{name:32s} {m['psnr']:7.2f} {m['psnr_y']:7.2f} {m['ssim']:7.4f} {m['ewarp']:9.2e} "
            f"{m['tof']:6.3f} {m['ms_per_frame']:9.1f}"
        )
    print(f"{'original':32s} {'':7s} {'':7s} {'':7s} {result['ground_truth']['ewarp']:9.2e}")
    ratio = result["flicker_ratio"]
    print(f"flicker ratio (output / bicubic warping error): {ratio:.3f}" if ratio is not None else "")
    if target is not None:
        print(f"side by side: {target}")
    return 0
