"""Evaluation throughput: trials per second of each executor, against the local one.

Runs the same plan (the early_game set, scripted policy on the synthetic world at MineRL's
360x640 frame size) with the local executor (the baseline), worker processes and Ray, each into
a fresh directory, and reports wall time, trials per second and the ratio to the baseline.
Worker start-up is included: it is what a user waits for. Also checks that every executor
recorded the same per-trial outcomes.

Run: python benchmarks/bench_evaluation.py [--trials 4] [--workers 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from steve1_env.evaluation.runner import evaluate
from steve1_env.evaluation.trial import RunSettings


def outcomes(records):
    return sorted((r.key, r.outcome, r.steps) for r in records)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    settings = RunSettings(policy="scripted", prompt_encoder="hash")
    results = {}
    reference = None
    with tempfile.TemporaryDirectory() as scratch:
        for executor in ("local", "processes", "ray"):
            workers = None if executor == "local" else args.workers
            start = time.perf_counter()
            result = evaluate(
                "early_game",
                Path(scratch) / executor,
                settings,
                trials=args.trials,
                executor=executor,
                workers=workers,
                progress=False,
            )
            seconds = time.perf_counter() - start
            steps = sum(r.steps for r in result.records)
            if reference is None:
                reference = outcomes(result.records)
            results[executor] = {
                "seconds": round(seconds, 2),
                "trials": len(result.records),
                "low_level_steps": steps,
                "trials_per_s": round(len(result.records) / seconds, 2),
                "steps_per_s": round(steps / seconds),
                "same_outcomes_as_local": outcomes(result.records) == reference,
            }
    base = results["local"]["seconds"]
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    print(f"early_game x {args.trials} trials, scripted policy, 360x640 synthetic world")
    for name, row in results.items():
        row["speedup_vs_local"] = round(base / row["seconds"], 2)
        print(
            f"  {name:9} {row['seconds']:7.2f} s  {row['trials_per_s']:6.2f} trials/s  "
            f"{row['steps_per_s']:7d} steps/s  x{row['speedup_vs_local']:.2f}  "
            f"same outcomes: {row['same_outcomes_as_local']}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
