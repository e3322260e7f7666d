"""Estimate the AWS cost of upscaling one minute of video, from the settings and the model's cost.

    python tools/cost.py [--width 640 --height 360 --fps 25] [--arch arm64|x86_64] [--model NAME]
                         [--precision fp32|int8] [--json]

Formula (every term printed):
    inference FLOPs / minute = fps x 60 x width x height x 2 x macs_per_input_pixel
    worker vCPU-seconds      = FLOPs / (gflops_per_vcpu x 1e9)          (settings: segments.gflops_per_vcpu)
                               / INT8_SPEEDUP for an int8 variant   (an assumption, stated below)
    worker GB-seconds        = vCPU-seconds / vcpus x memory_GB         (vcpus = min(max_vcpus, memory / mb_per_vcpu))
    + decode/encode overhead, ingest and assembly, requests (Lambda, SQS, DynamoDB, S3, KMS).
Prices are AWS list prices for us-east-1 (no free tier); they change: check https://aws.amazon.com/lambda/pricing/.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass
from typing import Any

from vsr.planning import frames_per_segment, seconds_per_frame
from vsr.settings import Settings, get_settings

# us-east-1 list prices (USD), checked 2025: Lambda per GB-second by architecture and per request,
# SQS standard per request, DynamoDB on-demand per write/read request unit, S3 Standard PUT/GET, KMS request.
LAMBDA_GB_S = {"arm64": 0.0000133334, "x86_64": 0.0000166667}
LAMBDA_REQUEST = 0.20 / 1e6
SQS_REQUEST = 0.40 / 1e6
DDB_WRITE = 1.25 / 1e6
DDB_READ = 0.25 / 1e6
S3_PUT = 0.005 / 1000
S3_GET = 0.0004 / 1000
KMS_REQUEST = 0.03 / 10000
# Assumptions for what is not inference (measured locally: decode + encode are a few % of inference time for
# animevideov3; see `make bench-pipeline`). Kept explicit so the estimate is easy to challenge.
WORKER_OVERHEAD_FRACTION = 0.10  # decode, colour conversion, encode, upload, cold start share
INGEST_SECONDS = 5.0  # one probe per job (ranged GETs, demux pass)
ASSEMBLY_SECONDS_PER_MINUTE = 10.0  # packet remux of the segments + audio copy, upload
S3_GETS_PER_SEGMENT = 40  # ranged 1 MiB reads of the source window + probe + model (warm containers skip it)
# int8 variants do the same multiply-adds faster. Assumed speed-up over fp32: rounded down from what
# `make bench-int8` measured for bare ONNX Runtime inference of realesr-animevideov3-x2-int8 vs our fp32 engine
# model on this team's x86-64 machine (AVX-512 VNNI, 2 threads): 2.3x to 5x on a shared, noisy machine.
# Graviton (Lambda arm64) speed is NOT measured here: arm64 has int8 dot-product instructions (sdot/udot),
# but this factor is an x86 measurement applied to it.
INT8_SPEEDUP = 2.0


@dataclass(frozen=True)
class Estimate:
    arch: str
    width: int
    height: int
    fps: float
    model: str
    macs_per_input_pixel: int
    frames: int
    tflop: float
    vcpus: float
    precision: str
    speedup_assumed: float
    seconds_per_frame: float
    frames_per_segment: int
    segments: int
    worker_gb_s: float
    other_gb_s: float
    lambda_compute_usd: float
    requests_usd: float
    total_usd: float


def model_macs(name: str) -> int:
    from vsr.models.registry import list_models

    for info in list_models():
        if info.name == name:
            return int(info.macs_per_input_pixel)
    raise SystemExit(f"model {name} unknown; see `vsr models list`")


def estimate(
    width: int,
    height: int,
    fps: float,
    arch: str,
    macs: int,
    model: str,
    settings: Settings | None = None,
    precision: str = "fp32",
) -> Estimate:
    s = settings or get_settings()
    seg = s.segments
    vcpus = s.worker_vcpus()
    frames = round(fps * 60)
    speedup = INT8_SPEEDUP if precision == "int8" else 1.0
    per_frame = (
        seconds_per_frame(
            width, height, macs_per_input_pixel=macs, gflops_per_vcpu=float(seg["gflops_per_vcpu"]), vcpus=vcpus
        )
        / speedup
    )
    worker = s.function("worker")
    per_segment = frames_per_segment(
        seconds_per_frame=per_frame,
        timeout_s=worker.timeout_s,
        work_budget_fraction=float(seg["work_budget_fraction"]),
        context_frames=int(seg["context_frames"]),
        min_frames=int(seg["min_frames"]),
        max_frames=int(seg["max_frames"]),
    )
    segments = math.ceil(frames / per_segment)
    worker_seconds = frames * per_frame * (1 + WORKER_OVERHEAD_FRACTION)
    worker_gb_s = worker_seconds * worker.memory_mb / 1024
    other_gb_s = (
        INGEST_SECONDS * s.function("ingest").memory_mb / 1024
        + ASSEMBLY_SECONDS_PER_MINUTE * s.function("assemble").memory_mb / 1024
    )
    compute = (worker_gb_s + other_gb_s) * LAMBDA_GB_S[arch]
    requests = (
        (segments + 2) * LAMBDA_REQUEST
        + (segments * 3 + 3) * SQS_REQUEST  # send, receive, delete (+ visibility extensions, ignored)
        + (segments * 2 + 6) * DDB_WRITE  # job item, one update per segment, lease, complete
        + (segments + 4) * DDB_READ
        + (segments + 6) * S3_PUT
        + (segments * (S3_GETS_PER_SEGMENT + 1)) * S3_GET
        + (segments * 6 + 10) * KMS_REQUEST  # bucket keys keep this small
    )
    return Estimate(
        arch=arch,
        width=width,
        height=height,
        fps=fps,
        model=model,
        macs_per_input_pixel=macs,
        frames=frames,
        tflop=frames * width * height * 2 * macs / 1e12,
        vcpus=vcpus,
        precision=precision,
        speedup_assumed=speedup,
        seconds_per_frame=per_frame,
        frames_per_segment=per_segment,
        segments=segments,
        worker_gb_s=worker_gb_s,
        other_gb_s=other_gb_s,
        lambda_compute_usd=compute,
        requests_usd=requests,
        total_usd=compute + requests,
    )


def describe(e: Estimate) -> str:
    return "\n".join(
        [
            f"{e.width}x{e.height} @ {e.fps:g} fps, {e.model} ({e.macs_per_input_pixel:,} MAC/px, {e.precision}), "
            f"Lambda {e.arch}",
            *(
                [
                    f"  int8 assumed {e.speedup_assumed:g}x fp32 speed (measured on x86-64 AVX-512 VNNI by "
                    "`make bench-int8`; Graviton speed not measured)"
                ]
                if e.precision == "int8"
                else []
            ),
            f"  frames/minute            {e.frames}",
            f"  inference                {e.tflop:,.1f} TFLOP",
            f"  worker                   {e.vcpus:.2f} vCPUs -> {e.seconds_per_frame:.2f} s/frame, "
            f"{e.frames_per_segment} frames/segment, {e.segments} segments",
            f"  Lambda GB-s              worker {e.worker_gb_s:,.0f} + ingest/assembly {e.other_gb_s:,.0f}",
            f"  Lambda compute           ${e.lambda_compute_usd:.3f}",
            f"  requests (Lambda, SQS, DynamoDB, S3, KMS)  ${e.requests_usd:.4f}",
            f"  total per minute of video  ${e.total_usd:.2f}",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--fps", type=float, default=25.0)
    parser.add_argument("--arch", choices=sorted(LAMBDA_GB_S), default="arm64")
    parser.add_argument("--model", help="model name (default: settings model.name)")
    parser.add_argument("--macs", type=int, help="multiply-adds per input pixel (default: from the model)")
    parser.add_argument("--precision", choices=("fp32", "int8"), default="fp32", help="int8: the model's int8 variant")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    model = args.model or get_settings().model_name
    macs = args.macs or model_macs(model)
    precision = "int8" if model.endswith("-int8") else args.precision
    if precision == "int8" and not model.endswith("-int8"):
        model += "-int8"
    result = estimate(args.width, args.height, args.fps, args.arch, macs, model, precision=precision)
    output: Any = json.dumps(asdict(result)) if args.json else describe(result)
    print(output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
