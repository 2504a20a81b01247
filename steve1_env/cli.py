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
    encoder = args.prompt_encoder or ("steve1" if args.policy == "steve1" else "hash")
    env = gym.make(
        "Steve1Skill-v0",
        world=args.world,
        policy=args.policy,
        prompt_encoder=encoder,
        policy_kwargs={"weights": args.weights} if args.policy == "steve1" else {},
        prompt_encoder_kwargs={"weights": args.weights} if encoder == "steve1" else {},
        instruction=instructions[0],
        k=args.k,
        device=args.device,
    )
    solved = 0
    with env:
        _, info = env.reset(seed=args.seed)
        print(
            f"steve1-env demo: world={args.world} policy={args.policy} "
            f"prompt_encoder={encoder} seed={args.seed} k={args.k}"
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


def _weights(args: argparse.Namespace) -> int:
    from steve1_env import download
    from steve1_env.weights import OFFICIAL_FILES, weights_dir

    directory = weights_dir(args.dir)
    if args.action == "where":
        print(directory)
        for name in OFFICIAL_FILES.values():
            path = directory / name
            state = f"{path.stat().st_size / 1e6:.1f} MB" if path.is_file() else "missing"
            print(f"  {name:18} {state}")
        return 0
    if args.action == "download":
        fetched = download.download_official(directory, args.only, progress=not args.quiet)
        for path in fetched:
            print(f"downloaded {path}")
        print(f"all official files are in {directory}")
        return 0
    statuses = download.verify(directory)
    for status in statuses:
        print(f"  {status.name:18} {status.detail}")
    bad = [s for s in statuses if not s.ok]
    print("all files verified" if not bad else f"{len(bad)} file(s) missing or corrupt")
    return 0 if not bad else 1


def _doctor(args: argparse.Namespace) -> int:
    from steve1_env.doctor import report, run_checks

    print(report(run_checks(args.dir)))
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
    demo.add_argument(
        "--policy", default="scripted", help="policy name: scripted (default), random, steve1"
    )
    demo.add_argument(
        "--prompt-encoder",
        help="prompt encoder name (default: steve1 with --policy steve1, else hash)",
    )
    demo.add_argument(
        "--weights",
        help="for the steve1 stack: a weights directory, or 'random' for untrained networks "
        "(default: $STEVE1_WEIGHTS_DIR, else ~/.cache/steve1_env/weights)",
    )
    demo.add_argument("--seed", type=int, default=0, help="episode seed (default: 0)")
    demo.add_argument(
        "--k", type=_positive, default=200, help="low-level steps per try (default: 200)"
    )
    demo.add_argument(
        "--tries", type=_positive, default=3, help="tries per instruction (default: 3)"
    )
    demo.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    demo.set_defaults(run=_demo)

    weights = commands.add_parser(
        "weights",
        help="download, verify or locate the official weight files",
        description="Manage the official STEVE-1 files (2x.model, steve1.weights, "
        "steve1_prior.pt, attn.pth) in the weights directory.",
    )
    weights.add_argument("action", choices=["download", "verify", "where"])
    weights.add_argument(
        "--dir",
        help="weights directory (default: $STEVE1_WEIGHTS_DIR, else ~/.cache/steve1_env/weights)",
    )
    weights.add_argument("--only", nargs="+", help="download only these file names")
    weights.add_argument("--quiet", action="store_true", help="no progress output")
    weights.set_defaults(run=_weights)

    doctor = commands.add_parser(
        "doctor", help="report what is installed and usable, with fixes for what is not"
    )
    doctor.add_argument("--dir", help="weights directory to check")
    doctor.set_defaults(run=_doctor)
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
