"""Scripted evaluation in plain Python: run each task N times, print success rates.

The core of ``steve1-env eval`` without the CLI (no results file, resume or executors), for
users who want the loop in their own code: load a task set, pursue each task's instructions
from each seed in the task's world until its detector fires or the budget runs out, and report
the success rate over judged trials with a 95% Wilson interval; world crashes are counted apart.

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
) -> tuple[str, int]:
    """Pursues `instruction` from `seed`; returns (outcome, low-level steps).

    The outcome is ``success``, ``failure`` or ``crash`` (the world failed: not the skill's
    fault, so it is counted apart, as ``steve1-env eval`` does).
    """
    env.unwrapped.max_low_level_steps = max_steps  # this trial's budget
    env.reset(seed=seed, options={"instruction": instruction, "success": detector})
    while True:
        _, _, terminated, truncated, info = env.step("")  # "" keeps pursuing it
        if info["is_success"] or terminated or truncated:
            outcome = "success" if info["is_success"] else "failure"
            return "crash" if info["reason"] == "crash" else outcome, int(info["total_steps"])


def make_env(policy: str, world_options: dict) -> gym.Env:
    """An env for one task's world options (a task may ask for, say, fewer trees)."""
    return gym.make(
        "Steve1Skill-v0",
        policy=policy,
        prompt_encoder="steve1" if policy == "steve1" else "hash",
        world_kwargs=world_options,
        terminate_on_success=True,
        max_episode_steps=None,
        k=200,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task-set", default="quick_harvest")
    parser.add_argument("--trials", type=int, help="trials per instruction (default: the set's)")
    parser.add_argument("--max-steps", type=int, help="override every task's budget")
    parser.add_argument("--policy", default="scripted", help="scripted (offline) or steve1")
    parser.add_argument(
        "--allow-imports",
        action="store_true",
        help="let the task file's custom detectors import modules (only for trusted files)",
    )
    args = parser.parse_args()

    tasks = load_task_set(args.task_set, allow_imports=args.allow_imports)
    print(f"{'task':12} {'success':>8} {'rate':>6}  95% CI          mean steps  crashed")
    for task in tasks.tasks:
        env = make_env(args.policy, dict(task.world_options))
        outcomes = []
        for spec in task.trial_specs(args.trials, args.max_steps):
            detector = build_detector(spec.detector, spec.instruction)
            outcomes.append(run_trial(env, spec.instruction, detector, spec.seed, spec.max_steps))
        env.close()
        wins = [steps for outcome, steps in outcomes if outcome == "success"]
        judged = sum(outcome != "crash" for outcome, _ in outcomes)
        low, high = wilson_interval(len(wins), judged)
        mean = f"{sum(wins) / len(wins):.0f}" if wins else "-"
        rate = f"{100 * len(wins) / judged:5.0f}%" if judged else "     -"
        print(
            f"{task.name:12} {len(wins):>4}/{judged:<3} {rate}"
            f"  [{100 * low:5.1f}, {100 * high:5.1f}]  {mean:>10}  {len(outcomes) - judged:>7}"
        )


if __name__ == "__main__":
    main()
