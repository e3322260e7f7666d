"""`make bench-load`: `vsr serve` under many uploads at once with injected faults, and fair sharing between jobs.

Part 1 (load and faults, tests/support/load.py): N uploads at once (default 100: real clips in 8 container /
codec kinds and about 10% bad files), about 10% of worker invocations SIGKILLed mid-segment, about 10% raising
a transient error, duplicate S3 events for every tenth upload, one assembler SIGKILLed mid-join; then one
`vsr redrive`. Prints the invariants (lost, duplicated, DLQ left, frame-exact outputs) and the rates.

Part 2 (fairness): 5 one-segment clips on an idle stack, then the same 5 uploaded 2 s after a 40-segment job,
each with the segment window (settings.json) and without it (window 0: every segment enqueued at once, the
design before). Latency = upload done -> job COMPLETE. Target: loaded p95 <= 2x idle p95.

Usage: python bench/bench_load.py [--uploads 100] [--workers N] [--skip-load] [--skip-fairness] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.support: the served stack, the clips and the checks the tests use

from tests.support.load import FairnessResult, measure_fairness, run_load  # noqa: E402


def _say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def _fairness_row(label: str, result: FairnessResult) -> str:
    idle = ", ".join(f"{v:.1f}" for v in result.idle_s)
    loaded = ", ".join(f"{v:.1f}" for v in result.loaded_s)
    long = f"{result.long_s:.1f}" if result.long_s else "n/a"
    return (
        f"  {label:<28} idle p95 {result.idle_p95:6.1f} s  loaded p95 {result.loaded_p95:6.1f} s  "
        f"ratio {result.ratio:5.2f}  (target <= 2.00)  long job {long} s\n"
        f"  {'':<28} idle [{idle}]  loaded [{loaded}]"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uploads", type=int, default=100)
    parser.add_argument("--workers", type=int, help="worker containers of vsr serve (default: from the CPUs)")
    parser.add_argument("--skip-load", action="store_true")
    parser.add_argument("--skip-fairness", action="store_true")
    parser.add_argument("--json", action="store_true", help="print one JSON line last")
    args = parser.parse_args()
    summary: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="vsr-bench-load-") as tmp:
        work = Path(tmp)
        if not args.skip_load:
            _say(f"load run: {args.uploads} uploads with faults")
            load = run_load(work / "load", args.uploads, workers=args.workers, report=_say)
            print(f"vsr serve, {args.uploads} uploads at once, with faults:")
            print(load.table())
            for key, reason in sorted(load.failed_reasons.items()):
                print(f"    FAILED {key}: {reason}")
            for problem in load.frame_mismatches:
                print(f"    NOT frame-exact: {problem}")
            print(f"  redrive: {load.extra['redrive_output']!r}")
            summary["load"] = {k: v for k, v in load.__dict__.items() if k != "failed_reasons"}
        if not args.skip_fairness:
            results = {}
            for label, window in (("window (settings.json)", None), ("no window (before)", 0)):
                _say(f"fairness: {label}")
                results[label] = measure_fairness(
                    work / f"fair-{window}", window_per_worker=window, workers=args.workers
                )
            print(
                "fairness: 5 one-segment jobs, idle vs uploaded 2 s after a 40-segment job (latency upload -> COMPLETE):"
            )
            for label, result in results.items():
                print(_fairness_row(label, result))
            summary["fairness"] = {
                label: {"idle_s": r.idle_s, "loaded_s": r.loaded_s, "ratio": r.ratio, "long_s": r.long_s}
                for label, r in results.items()
            }
    if args.json:
        print(json.dumps(summary, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
