"""Evaluation throughput: executors, and worlds per worker (the M axis).

Executors (``--axis executors``): the same plan (the early_game set, scripted policy on the
synthetic world at MineRL's 360x640 frame size) with the local executor (the baseline), worker
processes and Ray, each into a fresh directory: wall time, trials per second and the ratio to the
baseline. Worker start-up is included: it is what a user waits for. Also checks that every
executor recorded the same per-trial outcomes.

Worlds per worker (``--axis envs``): the full-size STEVE-1 network (random weights, float32) on
short trials, one worker hosting M worlds and ONE policy, for each M of ``--envs-per-worker``
(baseline: the first, 1). Each M runs in a fresh process, so its peak resident memory (the
worker's, ``ru_maxrss``) is its own. Reports trials per second, the ratio to M=1, the peak memory
and its ratio, and whether the records match M=1's.

Run: python benchmarks/bench_evaluation.py [--axis executors|envs|both] [--trials 4]
[--workers 2] [--envs-per-worker 1,4] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from steve1_env.evaluation.runner import evaluate
from steve1_env.evaluation.trial import RunSettings
from steve1_env.tasks.spec import parse_task_set

# Short trials; an untrained network rarely succeeds, so most trials run their whole budget. The
# records are compared across M, so every M does the same work.
ENVS_TASKS = """
name: m_axis
tasks:
  - {name: logs, instruction: chop a tree, max_steps: 24}
  - {name: dirt, instruction: get dirt, max_steps: 24}
"""


def outcomes(records):
    return sorted((r.key, r.outcome, r.steps) for r in records)


def envs_case(envs: int, trials: int) -> dict:
    """One M: runs here (a fresh process) and returns its figures."""
    settings = RunSettings(
        policy="steve1",
        prompt_encoder="hash",
        policy_kwargs={"weights": "random"},
        world_kwargs={"pov_shape": (128, 128)},
        k=8,
    )
    with tempfile.TemporaryDirectory() as scratch:
        start = time.perf_counter()
        result = evaluate(
            parse_task_set(ENVS_TASKS),
            Path(scratch) / "run",
            settings,
            trials=trials,
            envs_per_worker=envs,
            progress=False,
        )
        seconds = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {
        "envs_per_worker": envs,
        "seconds": round(seconds, 2),
        "trials": len(result.records),
        "low_level_steps": sum(r.steps for r in result.records),
        "trials_per_s": len(result.records) / seconds,
        "peak_rss_mb": round(peak_kib / 1024),
        "records": outcomes(result.records),
    }


def envs_axis(values: list[int], trials: int) -> dict:
    """Runs every M in its own process; the first M is the baseline."""
    results = {}
    for envs in values:
        command = [sys.executable, __file__, "--case", str(envs), "--trials", str(trials)]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        results[envs] = json.loads(output.strip().splitlines()[-1])
    records = {envs: row.pop("records") for envs, row in results.items()}
    base = results[values[0]]
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    print(
        f"full-size STEVE-1 (random weights, float32, guidance), 2 tasks x {trials} trials of "
        f"24 low-level steps, one worker; baseline M={values[0]} in the same run"
    )
    for envs, row in results.items():
        row["speedup_vs_first"] = round(row["trials_per_s"] / base["trials_per_s"], 2)
        row["peak_rss_vs_first"] = round(row["peak_rss_mb"] / base["peak_rss_mb"], 2)
        row["same_records_as_first"] = records[envs] == records[values[0]]
        row["trials_per_s"] = round(row["trials_per_s"], 3)
        print(
            f"  M={envs:<3} {row['seconds']:7.2f} s  {row['trials_per_s']:6.3f} trials/s  "
            f"x{row['speedup_vs_first']:.2f}  peak {row['peak_rss_mb']} MB "
            f"(x{row['peak_rss_vs_first']:.2f})  same records: {row['same_records_as_first']}"
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--axis", choices=["executors", "envs", "both"], default="both")
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--envs-per-worker", default="1,4", help="the M values, first = baseline")
    parser.add_argument("--case", type=int, help=argparse.SUPPRESS)  # one M, in a child
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    if args.case is not None:
        print(json.dumps(envs_case(args.case, args.trials)))
        return
    report: dict = {}
    if args.axis in ("envs", "both"):
        values = [int(v) for v in args.envs_per_worker.split(",")]
        report["envs_per_worker"] = envs_axis(values, args.trials)
    if args.axis in ("executors", "both"):
        report["executors"] = executors_axis(args.trials, args.workers)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


def executors_axis(trials: int, workers_asked: int) -> dict:
    """Every executor on the scripted plan; the local one is the baseline."""
    settings = RunSettings(policy="scripted", prompt_encoder="hash")
    results = {}
    reference = None
    with tempfile.TemporaryDirectory() as scratch:
        for executor in ("local", "processes", "ray"):
            workers = None if executor == "local" else workers_asked
            start = time.perf_counter()
            result = evaluate(
                "early_game",
                Path(scratch) / executor,
                settings,
                trials=trials,
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
    print(f"early_game x {trials} trials, scripted policy, 360x640 synthetic world")
    for name, row in results.items():
        row["speedup_vs_local"] = round(base / row["seconds"], 2)
        print(
            f"  {name:9} {row['seconds']:7.2f} s  {row['trials_per_s']:6.2f} trials/s  "
            f"{row['steps_per_s']:7d} steps/s  x{row['speedup_vs_local']:.2f}  "
            f"same outcomes: {row['same_outcomes_as_local']}"
        )
    return results


if __name__ == "__main__":
    main()
