"""Each precision against float32: the golden rollout and the full-size network.

1. The tiny STEVE-1 policy of the golden fixtures over its 140-step rollout, per precision,
   against the official float32 log-probabilities: the largest absolute log-probability
   difference (guided buttons and camera, over the actions the official agent would take with
   probability >= 1e-4) and how often the deterministic action (argmax) agrees.
2. The full-size network (seeded random weights) over 140 consecutive synthetic-world frames,
   per precision, against our float32 (`steve1_env.agent.fidelity`): mean and max KL of the
   guided button and camera distributions, argmax agreement, max |dlogp|, and how many steps
   are near ties (float32's top two within 0.05 nats), where any rounding can flip an argmax,
   and the widest float32 margin among the steps whose argmax the precision changed.

Run: python benchmarks/bench_precision.py [--device cuda] [--modes bfloat16-mixed,bfloat16]
         [--skip-full] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

from steve1_env.agent import fidelity
from steve1_env.agent.native import NativeSteve1Policy
from steve1_env.agent.network import PRECISIONS

GOLDEN = Path(
    os.environ.get("STEVE1_GOLDEN_DIR", Path(__file__).resolve().parents[2] / "shared" / "golden")
)


def compare(
    dtype: str, device: str, golden: Path = GOLDEN, steps: int | None = None
) -> dict[str, float]:
    """Returns the differences of one dtype's rollout from the official float32 outputs.

    Args:
        dtype: A precision name (`steve1_env.agent.network.PRECISIONS`).
        device: Torch device.
        golden: The golden-fixture directory.
        steps: Compare only the first `steps` steps (default: all 140).
    """
    data = np.load(golden / "policy_rollout.npz")
    policy = NativeSteve1Policy(
        weights=golden / "policy_tiny.weights",
        model=golden / "policy_tiny.model",
        dtype=dtype,
        device=device,
    )
    state = policy.initial_state(0)
    worst = {"buttons": 0.0, "camera": 0.0}
    agree = {"buttons": 0, "camera": 0}
    steps = len(data["frames"]) if steps is None else min(steps, len(data["frames"]))
    for t in range(steps):
        output, (state,) = policy.forward([data["frames"][t]], [data["goal"][0]], [state])
        for head, logits in (("buttons", output.buttons), ("camera", output.camera)):
            ours = logits[0].float().cpu().numpy()
            official = data[f"logp_{head}_cfg"][t]
            # Compare where the official policy puts real mass: the far tail of a guided
            # distribution is dominated by rounding in any dtype.
            likely = data[f"logp_{head}_cond"][t] >= np.log(1e-4)
            worst[head] = max(worst[head], float(np.abs(ours - official)[likely].max()))
            agree[head] += int(ours.argmax() == data[f"argmax_{head}_cfg"][t])
    policy.close()
    return {
        "max_abs_logp_diff_buttons": worst["buttons"],
        "max_abs_logp_diff_camera": worst["camera"],
        "argmax_agreement_buttons": agree["buttons"] / steps,
        "argmax_agreement_camera": agree["camera"] / steps,
    }


def full_size(
    modes: list[str], device: str, steps: int = 140, seed: int = 0
) -> dict[str, dict[str, dict[str, float]]]:
    """Returns, per mode, each head's `fidelity.HeadDivergence` against float32 as a dict.

    The full-size network with seeded random weights (the same for every mode), over `steps`
    synthetic-world frames from a new episode, with a fixed random goal and guidance 6.
    """
    rollouts = fidelity.full_size_rollouts(
        ["float32", *[m for m in modes if m != "float32"]], steps, seed, device
    )
    reference = rollouts.pop("float32")
    return {
        mode: {
            head: vars(fidelity.divergence(reference[head], logits))
            for head, logits in rollout.items()
        }
        for mode, rollout in rollouts.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--golden", type=Path, default=GOLDEN)
    parser.add_argument(
        "--modes",
        default=",".join(PRECISIONS),
        help="comma-separated precisions (default: all; float32 is the reference)",
    )
    parser.add_argument("--skip-full", action="store_true", help="only the tiny golden rollout")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    modes = [mode.strip() for mode in args.modes.split(",") if mode.strip()]
    unknown = sorted(set(modes) - set(PRECISIONS))
    if unknown:
        sys.exit(f"unknown precision(s) {unknown}; choose from {', '.join(PRECISIONS)}")
    if not (args.golden / "policy_rollout.npz").is_file():
        sys.exit(f"golden fixtures not found in {args.golden}; pass --golden DIR")
    warnings.simplefilter("ignore")  # the untrained-weights warning
    results: dict[str, object] = {
        "golden": {mode: compare(mode, args.device, args.golden) for mode in modes}
    }
    print(f"1. golden rollout, 140 steps, tiny policy, {args.device}, torch {torch.__version__}")
    print("   against the official float32 outputs")
    print("   precision       max|dlogp| buttons  camera   argmax agree buttons  camera")
    for mode, row in results["golden"].items():  # type: ignore[attr-defined]
        print(
            f"   {mode:14}  {row['max_abs_logp_diff_buttons']:17.4f}  "
            f"{row['max_abs_logp_diff_camera']:6.4f}   "
            f"{100 * row['argmax_agreement_buttons']:19.1f}%  "
            f"{100 * row['argmax_agreement_camera']:5.1f}%"
        )
    if not args.skip_full:
        full = full_size([m for m in modes if m != "float32"], args.device)
        results["full_size"] = full
        print("2. full-size network (random weights), 140 synthetic-world frames, guidance 6")
        print("   against our float32 on the same frames")
        print(
            "   precision       head     mean KL   max KL   argmax agree  max|dlogp|  near ties"
            "  widest flip"
        )
        for mode, heads in full.items():
            for head, row in heads.items():
                print(
                    f"   {mode:14}  {head:7}  {row['mean_kl']:.2e}  {row['max_kl']:.2e}  "
                    f"{100 * row['argmax_agreement']:11.1f}%  {row['max_abs_logp']:10.4f}  "
                    f"{row['near_ties']:9d}  {row['widest_flip_margin']:11.3f}"
                )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
