"""`vsr upscale`: one video on this machine, through the same code path as the serverless workers.

probe -> plan segments (the ingest Lambda's planner, vsr.admission.plan_for, unless --segment-frames) -> process_segment per
segment into a temporary folder -> join_segments into the output MP4 (written atomically).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from vsr.admission import ModelCost, plan_for
from vsr.errors import InputError, PermanentError
from vsr.logs import get_logger
from vsr.media.concat import join_segments
from vsr.media.encode import SEGMENT_FORMAT
from vsr.media.probe import VideoInfo, probe
from vsr.planning import Segment, plan_segments
from vsr.quality.stabilise import Stabiliser
from vsr.segment import process_segment
from vsr.settings import TEMPORAL_MODES, get_settings

log = get_logger(__name__)


def plan(info: VideoInfo, model: Any, segment_frames: int | None) -> list[Segment]:
    """Segments by the one planner ingest uses (the cheapest plan: one machine runs them in turn), or of a
    fixed size when asked."""
    settings = get_settings()
    if segment_frames:
        return plan_segments(info.pts, segment_frames, settings.segment_policy.context_frames)
    cost = ModelCost(name=model.name, scale=model.scale, macs_per_input_pixel=model.macs_per_input_pixel)
    return plan_for(info, cost, settings, "cost", concurrency=1, tier="lambda").segments


def upscale_file(
    input: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    model: str | None = None,
    scale: int | None = None,
    precision: str | None = None,
    segment_frames: int | None = None,
    tile: int | None = None,
    progress: bool = True,
    threads: int | None = None,
    temporal: str | None = None,
) -> dict[str, Any]:
    """Upscale `input` into the MP4 `output`; returns a report (frames, segments, per-stage seconds)."""
    from vsr.engine import get_upscaler  # ONNX Runtime: loaded only when a video is upscaled
    from vsr.models.registry import resolve_model

    started = time.perf_counter()
    source, target = Path(input), Path(output)
    if not source.is_file():
        raise InputError(f"no such file: {source}")
    if target.exists() and target.resolve() == source.resolve():
        raise PermanentError("the output file would overwrite the input; choose another output name")
    info = probe(source)
    probe_s = time.perf_counter() - started

    clock = time.perf_counter()
    # the configured precision is a default (int8 only where the variant passed the gate); --precision insists
    settings = get_settings()
    temporal_mode = temporal or settings.temporal
    if temporal_mode not in TEMPORAL_MODES:
        raise InputError(f'temporal mode "{temporal_mode}": expected one of {", ".join(TEMPORAL_MODES)}')
    model_info = resolve_model(
        model or (None if scale else settings.model_name),
        scale,
        precision or settings.precision,
        strict=precision is not None,
        gflops_per_vcpu=settings.worker_capacity.gflops_per_vcpu,
    )
    upscaler = get_upscaler(
        model_info,
        tile=settings.tile if tile is None else tile,
        tile_overlap=settings.tile_overlap,
        threads=threads,
    )
    load_s = time.perf_counter() - clock

    segments = plan(info, model_info, segment_frames)
    log.info(
        "upscale.planned",
        model=model_info.name,
        scale=model_info.scale,
        frames=info.frame_count,
        segments=len(segments),
    )
    totals = {"decode_s": 0.0, "infer_s": 0.0, "encode_s": 0.0, "temporal_s": 0.0}
    bar = _progress_bar(info.frame_count, progress)
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="vsr-upscale-", dir=target.parent))
    try:
        parts = []
        for segment in segments:
            part = work / f"{segment.index:05d}.{SEGMENT_FORMAT}"
            result = process_segment(
                source,
                segment,
                upscaler,
                info,
                part,
                encode=settings.encode_settings,
                on_frames=bar.update if bar else None,
                # one stabiliser per segment, warmed up on its context frames, exactly as a worker runs it
                stabiliser=Stabiliser(model_info.scale) if temporal_mode == "flow" else None,
            )
            for key in totals:
                totals[key] += getattr(result, key)
            parts.append(part)
        clock = time.perf_counter()
        partial = work / "output.mp4"
        join_segments(parts, source, info, partial, settings.encode_settings)
        os.replace(partial, target)  # never leave a half-written output under the final name
        join_s = time.perf_counter() - clock
    finally:
        if bar is not None:
            bar.close()
        shutil.rmtree(work, ignore_errors=True)
    wall_s = time.perf_counter() - started
    report = {
        "input": str(source),
        "output": str(target),
        "model": model_info.name,
        "precision": model_info.precision,
        "temporal": temporal_mode,
        "scale": model_info.scale,
        "frames": info.frame_count,
        "segments": len(segments),
        "size_in": f"{info.width}x{info.height}",
        "size_out": f"{info.width * model_info.scale}x{info.height * model_info.scale}",
        "timings": {
            "probe_s": probe_s,
            "load_model_s": load_s,
            **totals,
            "join_s": join_s,
            "wall_s": wall_s,
        },
        "fps": info.frame_count / wall_s if wall_s else 0.0,
    }
    log.info("upscale.done", **{k: v for k, v in report.items() if k != "timings"}, **report["timings"])
    return report


def _progress_bar(total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is a tools extra; the CLI works without a bar
        return None
    return tqdm(total=total, unit="frame", desc="upscaling", dynamic_ncols=True)


def command(args: argparse.Namespace) -> int:
    from vsr.request import from_args

    request = from_args(args)
    if request.active:  # frame interpolation: the chain of vsr.chain, with super-resolution unless --scale 1
        from vsr.chain import interpolate_file, summary_line

        print(
            summary_line(
                interpolate_file(
                    args.input,
                    args.output,
                    request,
                    model=args.model,
                    precision=args.precision,
                    segment_frames=args.segment_frames,
                    tile=args.tile,
                    progress=not args.no_progress,
                )
            )
        )
        return 0
    report = upscale_file(
        args.input,
        args.output,
        model=args.model,
        scale=args.scale,
        precision=args.precision,
        segment_frames=args.segment_frames,
        tile=args.tile,
        progress=not args.no_progress,
        temporal=args.temporal,
    )
    t = report["timings"]
    print(
        f"{report['output']}: {report['frames']} frames {report['size_in']} -> {report['size_out']} "
        f"({report['model']}, {report['precision']}, {report['segments']} segments) in {t['wall_s']:.1f} s "
        f"[probe {t['probe_s']:.2f}, model {t['load_model_s']:.2f}, decode {t['decode_s']:.2f}, "
        f"infer {t['infer_s']:.2f}, encode {t['encode_s']:.2f}, join {t['join_s']:.2f}]"
    )
    return 0
