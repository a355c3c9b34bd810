#!/usr/bin/env python3
"""Faults: how often does the engine step survive a signal or a kill at any point of a start?

Runs tests/fault_harness.py's tries (real processes, real SIGKILL/SIGTERM/SIGINT, the TensorRT
fakes of tests/fakes): every fault point (temp ONNX written, ONNX renamed, temp engine written,
engine renamed, sidecar renamed, timing cache renamed, labels renamed, config renamed, a random
moment of the build) x every signal, a third of the tries through entrypoint.sh (the signal then
goes to the shell, as `docker stop` does), half of them over an existing engine (--force).
After each faulted run: a normal start must succeed and `--check --deep` must be 0.

Reports tries, survived (no problem at all), temp files left behind after the next start,
engine/sidecar pairs that disagree, apps started after a signal, and the exit codes seen.

    python3 benchmarks/bench_faults.py [--tries 216] [--seed 12] [--json]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tries", type=int, default=216, help="number of faulted starts (default 216 = 8 x 27 point/signal pairs)")
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from fault_harness import run_tries, summary

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-faults-") as tmp:
        tries = run_tries(Path(tmp), args.tries, seed=args.seed, deep_check=True)
    report = summary(tries)
    report["wall_seconds"] = round(time.monotonic() - started, 1)
    report["problems"] = [{"try": t.index, "point": t.point, "signal": t.signal, "via": t.via, "problems": t.problems} for t in tries if t.problems]
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"tries {report['tries']}, survived {report['survived']}, temp files left behind {report['left_behind']}, "
              f"mismatched engine/sidecar pairs {report['mismatched_pairs']}, app started after a signal {report['app_started_after_signal']}")
        print(f"exit codes: {report['exit_codes']}; through the entrypoint: {report['through_entrypoint']}; "
              f"{report['seconds_per_try']} s per try, {report['wall_seconds']} s in all")
        print(f"random moments that came after the step had ended (not a fault of the step): {report['missed']} of "
              f"{report['by_point']['random']}")
        for problem in report["problems"]:
            print(f"  try {problem['try']} {problem['point']} SIG{problem['signal']} ({problem['via']}): {problem['problems']}")
    return 0 if not report["problems"] else 1


if __name__ == "__main__":
    sys.exit(main())
