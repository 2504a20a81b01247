"""The ``steve1-env`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from steve1_env.errors import Steve1EnvError

DEMO_INSTRUCTIONS = ("chop a tree", "get dirt", "collect seeds")


def _demo(args: argparse.Namespace) -> int:
    import gymnasium as gym

    import steve1_env  # noqa: F401  (registers the env ids)

    instructions = args.instruction or list(DEMO_INSTRUCTIONS)
    env = gym.make(
        "Steve1Skill-v0",
        world=args.world,
        policy=args.policy,
        instruction=instructions[0],
        k=args.k,
        device=args.device,
    )
    solved = 0
    with env:
        _, info = env.reset(seed=args.seed)
        print(
            f"steve1-env demo: world={args.world} policy={args.policy} seed={args.seed} k={args.k}"
        )
        episode_over = False
        for instruction in instructions:
            for attempt in range(1, args.tries + 1):
                _, _, terminated, truncated, info = env.step(instruction)
                outcome = "success" if info["is_success"] else info["reason"]
                fired = f" ({info['detector']})" if info["detector"] else ""
                print(
                    f"  {instruction!r} try {attempt}: {outcome}{fired} after {info['steps']} "
                    f"low-level steps"
                )
                episode_over = terminated or truncated
                if info["is_success"] or episode_over:
                    break
            solved += bool(info["is_success"])
            if episode_over:
                print(f"  episode ended: {info['reason']}")
                break
        inventory = ", ".join(f"{k}={v}" for k, v in sorted(info["inventory"].items()))
        print(
            f"result: {solved}/{len(instructions)} skills succeeded in {info['total_steps']} "
            f"low-level steps; inventory: {inventory or 'empty'}"
        )
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """Returns the argument parser of ``steve1-env``."""
    from steve1_env import __version__

    parser = argparse.ArgumentParser(
        prog="steve1-env", description="STEVE-1 as a Gymnasium skill environment."
    )
    parser.add_argument("--version", action="version", version=f"steve1-env {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo",
        help="run a short episode on the synthetic world and print the result",
        description="Pursue a few instructions in one episode and print what happened.",
    )
    demo.add_argument(
        "--instruction",
        action="append",
        help=f"an instruction to pursue (repeatable; default: {', '.join(DEMO_INSTRUCTIONS)})",
    )
    demo.add_argument("--world", default="synthetic", help="world name (default: synthetic)")
    demo.add_argument("--policy", default="scripted", help="policy name (default: scripted)")
    demo.add_argument("--seed", type=int, default=0, help="episode seed (default: 0)")
    demo.add_argument(
        "--k", type=_positive, default=200, help="low-level steps per try (default: 200)"
    )
    demo.add_argument(
        "--tries", type=_positive, default=3, help="tries per instruction (default: 3)"
    )
    demo.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    demo.set_defaults(run=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``steve1-env``; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except Steve1EnvError as exc:
        print(f"steve1-env: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
