"""GPU check: the upstream dtype bug, our guard, precision and throughput on one CUDA device.

1. Reproduces upstream's crash: a prompt embedding computed inside ``torch.cuda.amp.autocast``
   (float16) reaches the float32 policy's ``nn.Linear`` -> ``RuntimeError: mat1 and mat2 must
   have the same dtype, but got Half and Float``.
2. Shows the guarded path passes: the env, stepped inside the caller's autocast region, hands
   the policy a float32 goal and acts.
3. Compares bfloat16 and float16 with float32 on the golden rollout (tiny policy).
4. Throughput of the full-size policy with guidance in float32, bfloat16 and float16 for batch
   sizes up to 64, with the ratio of N=64 to batch 1 (the target: >= 20x on a GPU).

Finishes in a few minutes on one GPU. ``--device cpu --quick`` runs the same steps on CPU with
small sizes (CI uses it to keep the script working).

Run: bash benchmarks/gpu_check.sh   (or python benchmarks/gpu_check.py --json gpu.json)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_precision import compare
from suite import GOLDEN, bench_batching

from steve1_env.agent.native import NativeSteve1Policy
from steve1_env.env import Steve1SkillEnv
from steve1_env.prompt.steve1_encoder import Steve1PromptEncoder


def autocast(device: torch.device):
    """The autocast region upstream computes the prompt embedding in."""
    if device.type == "cuda":
        return torch.cuda.amp.autocast()  # upstream's call (deprecated alias, float16)
    return torch.autocast("cpu", dtype=torch.float16)


def reproduce_upstream_error(device: torch.device) -> dict[str, str]:
    """Upstream's path: text tower and prior under autocast, the result handed on as it is.

    The float16 embedding goes into the policy's first goal layer (the weights of our
    network's ``mineclip_embed_linear``, the layer the official agent feeds) as upstream's
    ``nn.Linear`` computes it, bypassing the guard. (Our own `Linear` would cast it.)
    """
    encoder = Steve1PromptEncoder(weights="random", device=device)
    policy = NativeSteve1Policy(weights="random", device=device)
    tokens = torch.from_numpy(encoder.tokenizer.tokenize("chop a tree"))[None].to(device)
    with torch.no_grad(), autocast(device):
        text = encoder.text_tower(tokens)
        embedding = encoder.prior.decode(text)  # float16 under CUDA autocast
    error = ""
    layer = policy.network.net.mineclip_embed_linear
    try:
        with torch.no_grad():
            torch.nn.functional.linear(embedding, layer.weight, layer.bias)
    except RuntimeError as exc:
        error = str(exc)
    finally:
        encoder.close()
        policy.close()
    return {"embedding_dtype": str(embedding.dtype), "error": error}


def guarded_path(device: torch.device) -> dict[str, object]:
    """Our path under the caller's autocast: float32 goals, and the very same outputs."""
    policy = NativeSteve1Policy(weights="random", device=device)
    frame = [np.random.default_rng(0).integers(0, 256, (360, 640, 3), dtype=np.uint8)]
    with autocast(device):
        goal = torch.randn(512, device=device)  # made under autocast, as upstream's is
        inside, _ = policy.forward(frame, [goal.half()], [policy.initial_state(0)])
    outside, _ = policy.forward(frame, [goal.half()], [policy.initial_state(0)])
    identical = bool(torch.equal(inside.buttons, outside.buttons)) and bool(
        torch.equal(inside.camera, outside.camera)
    )
    policy.close()
    env = Steve1SkillEnv(
        policy="steve1",
        prompt_encoder="steve1",
        policy_kwargs={"weights": "random"},
        prompt_encoder_kwargs={"weights": "random"},
        world_kwargs={"pov_shape": (128, 128)},
        instruction="chop a tree",
        k=5,
        device=str(device),
    )
    with autocast(device):
        obs, _ = env.reset(seed=0)
        _, _, _, _, info = env.step("")
    env.close()
    return {
        "goal_dtype": str(obs["goal"].dtype),
        "low_level_steps": int(info["steps"]),
        "outputs_identical_under_autocast": identical,
        "logits_dtype": str(inside.buttons.dtype),
    }


def save(path: str, report: dict[str, object]) -> None:
    """Writes what is known so far, so a run cut short still leaves its results."""
    Path(path).write_text(json.dumps(report, indent=2, default=str))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="small sizes (CPU smoke test)")
    parser.add_argument("--json", default="gpu-check.json", help="written after each part")
    parser.add_argument(
        "--budget",
        type=float,
        default=240.0,
        help="seconds after which throughput parts are skipped",
    )
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # untrained-weights warnings
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("CUDA is not available: run on a GPU machine, or pass --device cpu --quick")
    started = time.perf_counter()
    report: dict[str, object] = {"device": str(device), "torch": torch.__version__}
    if device.type == "cuda":
        report["gpu"] = torch.cuda.get_device_name(device)

    upstream = reproduce_upstream_error(device)
    report["upstream"] = upstream
    reproduced = "must have the same dtype" in upstream["error"]
    print(f"1. upstream path: embedding {upstream['embedding_dtype']}; error reproduced: "
          f"{reproduced}\n   {upstream['error'] or '(no error)'}")  # fmt: skip
    save(args.json, report)
    guarded = guarded_path(device)
    report["guarded"] = guarded
    guard_ok = (
        guarded["goal_dtype"] == "float32"
        and guarded["low_level_steps"] == 5
        and guarded["outputs_identical_under_autocast"] is True
        and guarded["logits_dtype"] == "torch.float32"
    )
    verdict = "PASS" if guard_ok else "FAIL"
    print(f"2. guarded path under autocast: goal {guarded['goal_dtype']}, logits "
          f"{guarded['logits_dtype']}, outputs identical to no autocast: "
          f"{guarded['outputs_identical_under_autocast']}, stepped {guarded['low_level_steps']} "
          f"low-level steps: {verdict}")  # fmt: skip
    save(args.json, report)

    precision = {}
    if (GOLDEN / "policy_rollout.npz").is_file():
        for dtype in ("bfloat16", "float16", "bfloat16-mixed"):
            precision[dtype] = compare(dtype, str(device), steps=20 if args.quick else None)
            row = precision[dtype]
            print(f"3. {dtype:14} vs official float32: max|dlogp| buttons "
                  f"{row['max_abs_logp_diff_buttons']:.4f} camera "
                  f"{row['max_abs_logp_diff_camera']:.4f}; argmax agreement "
                  f"{100 * row['argmax_agreement_buttons']:.1f}% / "
                  f"{100 * row['argmax_agreement_camera']:.1f}%")  # fmt: skip
    else:
        print(f"3. skipped: golden fixtures not found in {GOLDEN}")
    report["precision"] = precision
    save(args.json, report)

    sizes = [1, 2, 4] if args.quick else [1, 4, 16, 64]
    throughput = {}
    for dtype in ("float32", "bfloat16", "float16", "bfloat16-mixed"):
        if time.perf_counter() - started > args.budget:
            print(f"4. {dtype}: skipped, the {args.budget:g} s budget is spent")
            continue
        if args.quick:
            policy = NativeSteve1Policy(
                weights=GOLDEN / "policy_tiny.weights",
                model=GOLDEN / "policy_tiny.model",
                device=device,
                dtype=dtype,
            )
        else:
            policy = NativeSteve1Policy(weights="random", device=device, dtype=dtype)
        rows = bench_batching(policy, sizes, repeats=2 if args.quick else 5)
        policy.close()
        base = rows[1]["batched_env_steps_per_s"]
        largest = max(sizes)
        scale = rows[largest]["batched_env_steps_per_s"] / base
        throughput[dtype] = {"rows": rows, f"n{largest}_vs_batch1": scale}
        cells = "  ".join(
            f"N={n}: {row['batched_env_steps_per_s']:8.1f}" for n, row in rows.items()
        )
        print(f"4. {dtype:14} env steps/s  {cells}  (N={largest} / N=1: x{scale:.1f})")
        if device.type == "cuda":
            torch.cuda.empty_cache()
        report["throughput"] = throughput
        save(args.json, report)
    report["seconds"] = round(time.perf_counter() - started, 1)
    target = throughput["float32"][f"n{max(sizes)}_vs_batch1"]
    report["n_largest_vs_batch1_float32"] = target
    if device.type == "cuda":
        print(f"N=64 vs batch 1 in float32: x{target:.1f} (target >= 20x): "
              f"{'PASS' if target >= 20 else 'FAIL'}")  # fmt: skip
    print(f"finished in {report['seconds']} s; results in {args.json}")
    save(args.json, report)
    if not (reproduced and guard_ok):
        sys.exit(1)


if __name__ == "__main__":
    main()
