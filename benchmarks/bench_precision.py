"""Reduced precision against float32 on the golden rollout (the official agent's outputs).

Runs the tiny STEVE-1 policy of the golden fixtures over the 140-step rollout in float32,
bfloat16 and float16 (the whole network cast; no autocast) and reports, per dtype, against the
official float32 log-probabilities: the largest absolute log-probability difference (guided
buttons and camera, over the actions the official agent would take with probability >= 1e-4)
and how often the deterministic action (argmax) agrees.

Run: python benchmarks/bench_precision.py [--device cuda] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

from steve1_env.agent.native import NativeSteve1Policy

GOLDEN = Path(
    os.environ.get("STEVE1_GOLDEN_DIR", Path(__file__).resolve().parents[2] / "shared" / "golden")
)


def compare(
    dtype: str, device: str, golden: Path = GOLDEN, steps: int | None = None
) -> dict[str, float]:
    """Returns the differences of one dtype's rollout from the official float32 outputs.

    Args:
        dtype: ``float32``, ``bfloat16`` or ``float16``.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--golden", type=Path, default=GOLDEN)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    if not (args.golden / "policy_rollout.npz").is_file():
        sys.exit(f"golden fixtures not found in {args.golden}; pass --golden DIR")
    results = {
        dtype: compare(dtype, args.device, args.golden)
        for dtype in ("float32", "bfloat16", "float16")
    }
    print(f"golden rollout, 140 steps, tiny policy, {args.device}, torch {torch.__version__}")
    print("dtype      max|dlogp| buttons  camera   argmax agree buttons  camera")
    for dtype, row in results.items():
        print(
            f"{dtype:9}  {row['max_abs_logp_diff_buttons']:17.4f}  "
            f"{row['max_abs_logp_diff_camera']:6.4f}   "
            f"{100 * row['argmax_agreement_buttons']:19.1f}%  "
            f"{100 * row['argmax_agreement_camera']:5.1f}%"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
