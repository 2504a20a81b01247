"""Prompt-encoder cost: a new instruction (cold) against one seen before (cached).

Full-size MineCLIP text tower and prior with random weights (speed does not depend on the
values), CPU. Measures, in one run:
- `Steve1PromptEncoder.encode` cold (tokenize + text tower + prior) and warm from the
  in-memory LRU;
- a new encoder (as in a new process: load the weights, then encode once) with and without the
  on-disk cache;
- `env.reset` on the synthetic world with the scripted policy, for a new instruction against
  the same one again (the env's own per-instruction cache).

Run: python benchmarks/bench_prompt.py [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
import warnings
from pathlib import Path

import torch

from steve1_env.env import Steve1SkillEnv
from steve1_env.prompt.steve1_encoder import Steve1PromptEncoder


def timed_ms(function):
    start = time.perf_counter()
    function()
    return (time.perf_counter() - start) * 1e3


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # the untrained-weights warning

    encoder = Steve1PromptEncoder(weights="random")
    encoder.encode("warm up the kernels")
    cold = min(
        timed_ms(lambda i=i: encoder.encode(f"chop tree number {i}")) for i in range(args.rounds)
    )
    warm = min(timed_ms(lambda: encoder.encode("chop tree number 0")) for _ in range(args.rounds))

    # The disk cache is keyed by weight-file hashes, so it needs weight files: save the random
    # networks in the official layout.
    with tempfile.TemporaryDirectory() as folder:
        directory = Path(folder)
        state = {
            "model.clip_model.text_model." + k: v
            for k, v in encoder.text_tower.state_dict().items()
        }
        torch.save({"state_dict": state}, directory / "mineclip.pth")
        torch.save(encoder.prior.state_dict(), directory / "steve1_prior.pt")
        kwargs = {
            "weights": directory,
            "mineclip": directory / "mineclip.pth",
            "cache_dir": directory / "cache",
        }
        Steve1PromptEncoder(**kwargs).encode("chop a tree")  # fills the disk cache

        def fresh_process(cached):
            # A new encoder as a new process would build it: construct, then encode once.
            encoder = Steve1PromptEncoder(
                **{**kwargs, "cache_dir": kwargs["cache_dir"] if cached else None}
            )
            encoder.encode("chop a tree")
            return encoder

        fresh_cold = min(timed_ms(lambda: fresh_process(False)) for _ in range(3))
        fresh_disk = min(timed_ms(lambda: fresh_process(True)) for _ in range(3))
        assert fresh_process(True)._tower is None  # the tower was never loaded

    env = Steve1SkillEnv(
        policy="scripted", prompt_encoder=encoder, instructions=None, instruction="x"
    )
    reset_cold = min(
        timed_ms(lambda i=i: env.reset(seed=0, options={"instruction": f"dig hole {i}"}))
        for i in range(args.rounds)
    )
    reset_warm = min(
        timed_ms(lambda: env.reset(seed=0, options={"instruction": "dig hole 0"}))
        for _ in range(args.rounds)
    )
    env.close()

    results = {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}",
        "encode_cold_ms": cold,
        "encode_lru_ms": warm,
        "fresh_encoder_cold_ms": fresh_cold,
        "fresh_encoder_disk_cached_ms": fresh_disk,
        "encode_cold_vs_lru_ratio": cold / warm,
        "reset_cold_ms": reset_cold,
        "reset_cached_ms": reset_warm,
        "reset_cold_vs_cached_ratio": reset_cold / reset_warm,
    }
    print(f"machine: {results['machine']}")
    print(f"encode, new instruction     : {cold:8.2f} ms")
    print(f"encode, in-memory cache     : {warm:8.3f} ms  ({cold / warm:.0f}x faster)")
    print(f"new encoder + encode, no disk cache : {fresh_cold:8.2f} ms (loads the tower)")
    print(f"new encoder + encode, disk cache    : {fresh_disk:8.2f} ms (tower never loaded)")
    print(f"env.reset, new instruction  : {reset_cold:8.2f} ms")
    faster = reset_cold / reset_warm
    print(f"env.reset, same instruction : {reset_warm:8.2f} ms  ({faster:.1f}x faster)")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
