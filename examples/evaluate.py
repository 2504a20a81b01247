"""Scripted evaluation in plain Python: run each task N times, print success rates.

The same job as ``steve1-env eval`` without the CLI, for users who want the loop in their own
code: load a task set, pursue each task's instruction from each seed until its detector fires
or the budget runs out, and report the success rate with a 95% Wilson interval.

Run: python examples/evaluate.py [--task-set quick_harvest] [--trials 3] [--max-steps 2000]
"""

from __future__ import annotations

import argparse

import gymnasium as gym

import steve1_env  # noqa: F401  (registers the env ids)
from steve1_env.evaluation.report import wilson_interval
from steve1_env.tasks.detectors import build_detector
from steve1_env.tasks.spec import load_task_set


def run_trial(
    env: gym.Env, instruction: str, detector, seed: int, max_steps: int
) -> tuple[bool, int]:
    """Pursues `instruction` from `seed`; returns (success, low-level steps)."""
    env.unwrapped.max_low_level_steps = max_steps  # this trial's budget
    env.reset(seed=seed, options={"instruction": instruction, "success": detector})
    while True:
        _, _, terminated, truncated, info = env.step("")  # "" keeps pursuing it
        if info["is_success"] or terminated or truncated:
            return bool(info["is_success"]), int(info["total_steps"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task-set", default="quick_harvest")
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--max-steps", type=int, help="override every task's budget")
    parser.add_argument("--policy", default="scripted", help="scripted (offline) or steve1")
    args = parser.parse_args()

    tasks = load_task_set(args.task_set)
    env = gym.make(
        "Steve1Skill-v0",
        policy=args.policy,
        prompt_encoder="steve1" if args.policy == "steve1" else "hash",
        terminate_on_success=True,
        max_episode_steps=None,
        k=200,
    )
    print(f"{'task':12} {'success':>8} {'rate':>6}  95% CI          mean steps")
    for task in tasks.tasks:
        outcomes = []
        for spec in task.trial_specs(args.trials, args.max_steps):
            detector = build_detector(spec.detector, spec.instruction)
            outcomes.append(run_trial(env, spec.instruction, detector, spec.seed, spec.max_steps))
        wins = [steps for success, steps in outcomes if success]
        low, high = wilson_interval(len(wins), len(outcomes))
        mean = f"{sum(wins) / len(wins):.0f}" if wins else "-"
        rate = 100 * len(wins) / len(outcomes)
        print(
            f"{task.name:12} {len(wins):>4}/{len(outcomes):<3} {rate:5.0f}%"
            f"  [{100 * low:5.1f}, {100 * high:5.1f}]  {mean:>6}"
        )
    env.close()


if __name__ == "__main__":
    main()
