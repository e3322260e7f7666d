"""`vsr` command line. Argument parsing only; each command lives in the module that owns the work."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence

from vsr import logs
from vsr.errors import VsrError
from vsr.settings import DELIVERY_CODECS, TEMPORAL_MODES, TIERS

CODEC_CHOICES = (*DELIVERY_CODECS, "auto")

# command name -> "module:function"; functions take the parsed namespace and return an exit code.
COMMANDS: dict[str, str] = {
    "upscale": "vsr.upscale:command",
    "plan": "vsr.plan_command:command",
    "eval": "vsr.quality.evaluate:command",
    "models.list": "vsr.models.registry:list_command",
    "models.convert": "vsr.models.registry:convert_command",
    "run": "vsr.local.runtime:run_command",
    "serve": "vsr.local.serve:serve_command",
    "status": "vsr.ops:status_command",
    "redrive": "vsr.ops:redrive_command",
    "worker": "vsr.pipeline.poller:command",
}


def _deinterlace_request(text: str) -> str:
    """A deinterlace mode, rate or mode:rate (vsr.media.interlace.parse_request), as given."""
    from vsr.media.interlace import parse_request  # FFmpeg only when the flag is used

    try:
        parse_request(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    return text.strip().lower()


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _add_endpoint(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--endpoint",
        help="AWS endpoint URL (a moto server, e.g. http://127.0.0.1:5000); default: real AWS with "
        "standard credentials, or VSR_ENDPOINT_URL",
    )


def _add_time_request(parser: argparse.ArgumentParser) -> None:
    """--interpolate/--fps/--slowmo: frame interpolation (RIFE), parsed into one vsr.request.TimeRequest."""
    group = parser.add_argument_group("frame interpolation (RIFE HDv3; see docs/interpolation.md)")
    group.add_argument("--interpolate", metavar="N", help="N (2, 4, 8) times the frame rate, same duration")
    group.add_argument("--fps", metavar="F", help="a target frame rate such as 50, 59.94 or 60")
    group.add_argument("--slowmo", metavar="N", help="slow motion: N (2, 4, 8) times longer at the source rate")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vsr", description="AI video super-resolution (ONNX Runtime + PyAV).")
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("upscale", help="upscale one video on this machine (no AWS)")
    up.add_argument("input", help="input video file")
    up.add_argument("-o", "--output", required=True, help="output video file (.mp4, or .mov for ProRes)")
    up.add_argument("--model", help="model name (see `vsr models list`) or path to an .onnx file")
    up.add_argument(
        "--scale",
        type=_positive_int,
        help="output scale; picks the model variant of that scale (1 with --interpolate etc.: no super-resolution)",
    )
    up.add_argument(
        "--precision",
        choices=("fp32", "int8"),
        help="int8: the model's quantised variant (only if it passed the fidelity gate); default: settings",
    )
    up.add_argument("--segment-frames", type=_positive_int, help="frames per segment (default: planned)")
    up.add_argument("--tile", type=int, help="tile size in input pixels; 0 disables tiling")
    up.add_argument(
        "--temporal",
        choices=TEMPORAL_MODES,
        help="flow: flow-guided stabilisation, across segments too (default: settings model.temporal)",
    )
    up.add_argument(
        "--codec",
        choices=CODEC_CHOICES,
        default=None,
        help="delivery codec: h264, hevc (Main 10), av1 (MP4) or prores (422 HQ, MOV); auto (default): H.264 for "
        "8-bit SDR sources, HEVC Main 10 for 10-bit or HDR ones. The output's extension follows the container.",
    )
    up.add_argument(
        "--deinterlace",
        type=_deinterlace_request,
        metavar="MODE[:RATE]",
        help="auto: deinterlace (bwdif) when idet confirms interlacing; on; off; rate frame (25i -> 25p) or field "
        "(25i -> 50p), e.g. on:field or field (default: settings input.deinterlace, input.deinterlace_rate)",
    )
    up.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    _add_time_request(up)
    up.set_defaults(command_key="upscale")

    plan = sub.add_parser("plan", help="predict a job's segments, wall time and cost before uploading it")
    plan.add_argument("input", help="input video: a local file or s3://bucket/key")
    plan.add_argument("--concurrency", type=_positive_int, help="worker concurrency (default: settings)")
    plan.add_argument("--arch", choices=["arm64", "x86_64"], help="Lambda architecture (default: settings)")
    plan.add_argument("--model", help="model name (default: settings model.name)")
    plan.add_argument("--tier", choices=TIERS, help="plan only this worker tier (as vsr-tier metadata forces it)")
    plan.add_argument("--gpu-fleet", action="store_true", help="plan as if the GPU fleet were enabled")
    plan.add_argument(
        "--codec", choices=CODEC_CHOICES, help="delivery codec, as vsr-codec metadata asks (default auto)"
    )
    plan.add_argument("--json", action="store_true", help="print one JSON object")
    plan.add_argument("--scale", type=_positive_int, help="1: interpolation without super-resolution")
    _add_time_request(plan)
    _add_endpoint(plan)
    plan.set_defaults(command_key="plan")
    ev = sub.add_parser("eval", help="PSNR/SSIM/flicker of a model on a downscaled high-resolution video")
    ev.add_argument("input", help="high-resolution video (the ground truth)")
    ev.add_argument("--model", help="model name (see `vsr models list`) or path to an .onnx file")
    ev.add_argument("--frames", type=_positive_int, default=12, help="frames to compare from the start (default 12)")
    ev.add_argument("--side-by-side", metavar="OUT", help="write bicubic | model | original to OUT.png or OUT.mp4")
    ev.add_argument("--json", action="store_true", help="print one JSON object")
    ev.add_argument("--temporal", choices=TEMPORAL_MODES, default="off", help="flow-guided stabilisation first")
    ev.set_defaults(command_key="eval")

    models = sub.add_parser("models", help="list or convert super-resolution models")
    models_sub = models.add_subparsers(dest="models_command", required=True)
    ml = models_sub.add_parser("list", help="list available models")
    ml.add_argument("--json", action="store_true", help="print a JSON list")
    ml.set_defaults(command_key="models.list")
    mc = models_sub.add_parser("convert", help="convert the bundled ncnn models to ONNX")
    mc.add_argument("names", nargs="*", help="model names (default: all with --all)")
    mc.add_argument("--all", action="store_true", help="convert every bundled model (and build its int8 variant)")
    mc.add_argument("--no-int8", action="store_true", help="with --all: skip quantising the int8 variants")
    mc.add_argument("--force", action="store_true", help="convert again even if the ONNX file is current")
    mc.set_defaults(command_key="models.convert")

    run = sub.add_parser("run", help="run the whole serverless pipeline locally on an embedded AWS (moto)")
    run.add_argument("input", help="input video file")
    run.add_argument("-o", "--output-dir", default="out", help="where to download the result (default: out)")
    run.add_argument("--workers", type=_positive_int, help="worker concurrency (default: reserved concurrency)")
    run.add_argument("--gpu-workers", type=int, default=0, help="also run N GPU-tier `vsr worker` processes")
    run.add_argument("--tier", choices=TIERS, help="force the job's tier (vsr-tier metadata on the upload)")
    run.add_argument("--codec", choices=CODEC_CHOICES, help="delivery codec (vsr-codec metadata on the upload)")
    run.add_argument(
        "--deinterlace",
        type=_deinterlace_request,
        metavar="MODE[:RATE]",
        help="auto|on|off, frame|field or both as on:field (vsr-deinterlace metadata on the upload)",
    )
    run.add_argument("--json", action="store_true", help="print one JSON summary line last")
    run.add_argument("--scale", type=_positive_int, help="1: interpolation without super-resolution (vsr-scale)")
    _add_time_request(run)
    _add_endpoint(run)
    run.set_defaults(command_key="run")

    serve = sub.add_parser("serve", help="run the local pipeline as an S3 drop box until Ctrl-C (embedded AWS)")
    serve.add_argument("--host", default="127.0.0.1", help="address of the embedded AWS (default: 127.0.0.1)")
    serve.add_argument("--port", type=_positive_int, default=4566, help="its port (default: 4566)")
    serve.add_argument("--workers", type=_positive_int, help="worker concurrency (default: from the CPUs)")
    serve.add_argument("--inbox", help="folder whose fully written files are uploaded to the input bucket")
    serve.add_argument("--outbox", help="folder that receives outputs, reports and <name>.error.json")
    serve.add_argument(
        "--web-port",
        type=int,
        default=8080,
        help="the upload page and its API on 127.0.0.1 (default: 8080; 0: a free port; -1: off)",
    )
    serve.add_argument("--events-to", metavar="URL", help="POST every job event (JSON) to this local endpoint")
    serve.add_argument("--gpu-workers", type=int, default=0, help="also run N GPU-tier `vsr worker` processes")
    serve.add_argument("--log-dir", help="where the function containers' logs go (default: a temp folder)")
    serve.add_argument("--fault-plan", help=argparse.SUPPRESS)  # JSON file, vsr.local.faults: load tests only
    serve.set_defaults(command_key="serve")

    status = sub.add_parser("status", help="show jobs, or one job's segments")
    status.add_argument("job_id", nargs="?", help="job id (default: list recent jobs)")
    status.add_argument("--json", action="store_true", help="print JSON")
    _add_endpoint(status)
    status.set_defaults(command_key="status")

    worker = sub.add_parser("worker", help="poll a segment queue and upscale its segments (the GPU fleet's task)")
    worker.add_argument("--tier", choices=TIERS, default="gpu", help="worker tier: its ONNX Runtime providers")
    worker.add_argument("--queue-url", help="segment queue (default: VSR_SEGMENT_QUEUE_URL)")
    worker.add_argument("--wait-s", type=int, help="SQS long-poll seconds (default: settings gpu.poll_wait_s)")
    _add_endpoint(worker)
    worker.set_defaults(command_key="worker")

    redrive = sub.add_parser("redrive", help="return dead-letter messages to their source queues")
    redrive.add_argument("--queue", choices=["ingest", "segments", "segments-gpu", "all"], default="all")
    _add_endpoint(redrive)
    redrive.set_defaults(command_key="redrive")
    return parser


def _resolve(target: str) -> Callable[[argparse.Namespace], int]:
    module_name, function_name = target.split(":")
    return getattr(importlib.import_module(module_name), function_name)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # A person is watching a progress display: only warnings unless asked. Lambda keeps INFO (logs.configure).
    logs.configure(level=os.environ.get("VSR_LOG_LEVEL", "WARNING"))
    if args.command_key == "models.convert":  # the int8 build's guard and delivery encode, resolved here
        from vsr.settings import get_settings

        args.settings = get_settings()
    try:
        return int(_resolve(COMMANDS[args.command_key])(args) or 0)
    except VsrError as exc:
        print(f"vsr: error: {exc.reason}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
