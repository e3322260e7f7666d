"""`vsr upscale`: one video on this machine, through the same code path as the serverless workers.

probe -> plan segments (the ingest Lambda's planner, vsr.admission.plan_for, unless --segment-frames) -> process_segment per
segment into a temporary folder -> join_segments into the output (written atomically), in the delivery codec
and container `--codec` asks for (vsr.media.profiles).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from vsr.admission import delivery_for, model_cost, plan_for
from vsr.errors import InputError, PermanentError
from vsr.guard import recomputed_fraction
from vsr.logs import get_logger
from vsr.media import interlace
from vsr.media.concat import join_segments
from vsr.media.encode import SEGMENT_FORMAT
from vsr.media.probe import VideoInfo, probe
from vsr.media.profiles import Delivery, Hdr10, choose_delivery, requested_codec
from vsr.planning import Segment, plan_segments
from vsr.quality.stabilise import Stabiliser
from vsr.segment import process_segment
from vsr.settings import TEMPORAL_MODES, Settings, get_settings

log = get_logger(__name__)


def plan(info: VideoInfo, model: Any, segment_frames: int | None) -> list[Segment]:
    """Segments by the one planner ingest uses (the cheapest plan: one machine runs them in turn), or of a
    fixed size when asked."""
    settings = get_settings()
    if segment_frames:
        return plan_segments(info.pts, segment_frames, settings.segment_policy.context_frames)
    cost = model_cost(model.name, model.scale, model.macs_per_input_pixel, model.precision, settings.int8_guard)
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
    codec: str | None = None,
    deinterlace: str | None = None,
) -> dict[str, Any]:
    """Upscale `input` into `output` in the delivery `codec` (auto when None; the output's extension becomes
    its container's); returns a report (frames, segments, per-stage seconds, delivery)."""
    from vsr.engine import get_upscaler  # ONNX Runtime: loaded only when a video is upscaled
    from vsr.models.registry import resolve_model

    started = time.perf_counter()
    source, target = Path(input), Path(output)
    if not source.is_file():
        raise InputError(f"no such file: {source}")
    if target.exists() and target.resolve() == source.resolve():
        raise PermanentError("the output file would overwrite the input; choose another output name")
    settings = get_settings()
    try:
        mode, rate = interlace.resolve_request(deinterlace, settings.deinterlace, settings.deinterlace_rate)
    except ValueError as exc:
        raise InputError(f"--deinterlace {exc}") from exc
    info = probe(source, mode, settings.idet_frames, rate)
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
        guard_max_clipped=settings.int8_guard.max_clipped_channels,
    )
    load_s = time.perf_counter() - clock

    delivery = _delivery(info, model_info.scale, requested_codec(codec), settings)
    encode = settings.encode_settings_for(delivery.profile.codec)
    if delivery.profile.codec != "h264":  # no Lambda clock here: the one delivery encode fits any length
        encode = encode.replace(reencode_max_mpix=float("inf"))
    if target.suffix.lower() != delivery.profile.extension:
        target = target.with_suffix(delivery.profile.extension)
        log.info("upscale.output_renamed", output=str(target), container=delivery.profile.container)

    segments = plan(info, model_info, segment_frames)
    log.info(
        "upscale.planned",
        model=model_info.name,
        scale=model_info.scale,
        frames=info.frame_count,
        segments=len(segments),
    )
    totals = {"decode_s": 0.0, "infer_s": 0.0, "encode_s": 0.0, "temporal_s": 0.0}
    guard = {"guard_px": 0.0, "guard_recomputed_px": 0.0}
    per_segment: list[float | None] = []
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
                encode=encode,
                on_frames=bar.update if bar else None,
                # one stabiliser per segment, warmed up on its context frames, exactly as a worker runs it
                stabiliser=Stabiliser(model_info.scale) if temporal_mode == "flow" else None,
                geometry_changes=settings.geometry_changes,
            )
            for key in totals:
                totals[key] += getattr(result, key)
            for key in guard:
                guard[key] += getattr(result, key)
            per_segment.append(result.recomputed_fraction if result.guard_px else None)
            parts.append(part)
        clock = time.perf_counter()
        partial = work / f"output{delivery.profile.extension}"
        joined = join_segments(parts, source, info, partial, encode, delivery)
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
        # int8 with the saturation guard: share of input pixels recomputed in fp32, per job and per segment
        "recomputed_fraction": recomputed_fraction(guard),
        "segments_recomputed_fraction": per_segment if guard["guard_px"] else None,
        "temporal": temporal_mode,
        "scale": model_info.scale,
        "frames": info.frame_count,  # output frames: twice the source's when deinterlaced at field rate
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
        "delivery": {**delivery.profile.to_dict(), **joined.report()},
        "interlace": info.interlace,  # what was detected and done (vsr.media.interlace)
    }
    log.info(
        "upscale.done", **{k: v for k, v in report.items() if k not in ("timings", "delivery")}, **report["timings"]
    )
    return report


def _delivery(info: VideoInfo, scale: int, requested: str, settings: Settings) -> Delivery:
    profile = delivery_for(info, scale, requested, settings)
    return choose_delivery(
        profile,
        settings.delivery_codec(profile.codec),
        info.width * scale,
        info.height * scale,
        hdr10=Hdr10.from_dict(info.hdr10),
        prefer_nvenc=settings.delivery_nvenc == "auto",
    )


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
        codec=args.codec,
        deinterlace=args.deinterlace,
    )
    t = report["timings"]
    print(
        f"{report['output']}: {report['frames']} frames {report['size_in']} -> {report['size_out']} "
        f"({report['model']}, {report['precision']}, {report['segments']} segments) in {t['wall_s']:.1f} s "
        f"[probe {t['probe_s']:.2f}, model {t['load_model_s']:.2f}, decode {t['decode_s']:.2f}, "
        f"infer {t['infer_s']:.2f}, encode {t['encode_s']:.2f}, join {t['join_s']:.2f}]; "
        f"{report['delivery']['codec']} in {report['delivery']['container']} by {report['delivery']['encoder']}"
    )
    if report["recomputed_fraction"] is not None:
        print(f"int8 guard: {report['recomputed_fraction']:.2%} of input pixels recomputed in fp32")
    return 0
