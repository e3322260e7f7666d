"""`make bench-load`: `vsr serve` under many uploads at once with injected faults, and fair sharing between jobs.

Part 1 (load and faults, tests/support/load.py): N uploads at once (default 100: real clips in 8 container /
codec kinds and about 10% bad files), about 10% of worker invocations SIGKILLed mid-segment, about 10% raising
a transient error, duplicate S3 events for every tenth upload, one assembler SIGKILLed mid-join; then one
`vsr redrive`. Prints the invariants (lost, duplicated, DLQ left, frame-exact outputs) and the rates.

Part 2 (fairness): 5 one-segment clips on an idle stack, then the same 5 uploaded 2 s after a 40-segment job,
each with the segment window (settings.json) and without it (window 0: every segment enqueued at once, the
design before). Latency = upload done -> job COMPLETE. Target: loaded p95 <= 2x idle p95.

Part 3 (hostile keys, tests/support/fuzz.py): a large seeded draw of keys S3 accepts (unicode, spaces, `%`,
`+`, `..`, leading and repeated slashes, control characters, up to 1024 bytes; default 2 per upload) with a
few ordinary uploads, all at once into `vsr serve --outbox`: every key must end delivered or with an error file
giving a reason, no job unseen, and the ordinary ones delivered on serve's first look.

Usage: python bench/bench_load.py [--uploads 100] [--workers N] [--fuzz-keys N] [--fuzz-seed S]
       [--skip-load] [--skip-fairness] [--skip-fuzz] [--json]
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

from tests.support.fuzz import run_fuzz  # noqa: E402
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
    parser.add_argument("--fuzz-keys", type=int, help="hostile keys in part 3 (default: 2 per upload)")
    parser.add_argument("--fuzz-seed", type=int, default=22)
    parser.add_argument("--skip-fuzz", action="store_true")
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
        if not args.skip_fuzz:
            count = args.fuzz_keys if args.fuzz_keys is not None else 2 * args.uploads
            _say(f"hostile keys: {count} (seed {args.fuzz_seed})")
            fuzzed, first_look = run_fuzz(work / "fuzz", count, seed=args.fuzz_seed, workers=args.workers, report=_say)
            problems = fuzzed.problems()
            ordinary = fuzzed.counts()["ordinary"]
            print(f"hostile keys (seed {args.fuzz_seed}) with {ordinary} ordinary uploads, all at once:")
            for name, value in fuzzed.counts().items():
                print(f"  {name:<28} {value}")
            print(f"  {'ordinary on first look':<28} {first_look}/{ordinary}")
            print(f"  {'keys not as they must end':<28} {len(problems)}")
            print(f"  {'wall (s)':<28} {fuzzed.wall_s:.0f}")
            for key, problem in sorted(problems.items()):
                print(f"    {key!r}: {problem}")
            summary["fuzz"] = {**fuzzed.counts(), "first_look": first_look, "problems": len(problems)}
    if args.json:
        print(json.dumps(summary, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
