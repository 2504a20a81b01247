"""The cost of the MineCLIP score per tick, against the policy's step (same run, same machine).

For N envs, one tick of scoring is what the engine does with `mineclip_score=True`: encode the N
new frames (one batched `encode_frames`), pool every env's 16-frame window and compare it with
the instruction and the negative prompts. The baseline is one tick of the full-size STEVE-1
policy (`NativeSteve1Policy`, random weights, float32, guidance) for the same N envs, measured in
the same run. Both use random full-size weights (the official files are not needed for speed):
MineCLIP's video tower (ViT-B/16 at 160x256, temporal pooling, reward head) and text tower, in
float32 and bfloat16. Frames are 360x640, MineRL's size. Also counts the frames encoded per env
per tick (the target: exactly one).

Run: python benchmarks/bench_mineclip.py [--envs 1,4] [--repeats 3] [--device cpu] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from steve1_env.agent.base import Goal
from steve1_env.agent.native import NativeSteve1Policy
from steve1_env.prompt.mineclip import TextTowerConfig
from steve1_env.prompt.mineclip_score import CLIP_FRAMES, MineCLIPScorer
from steve1_env.prompt.mineclip_video import MineCLIPVideo, VideoTowerConfig


def frames(n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (360, 640, 3), dtype=np.uint8) for _ in range(n)]


def best(seconds: list[float]) -> float:
    return min(seconds)


def time_policy(n: int, repeats: int, device: str) -> float:
    policy = NativeSteve1Policy(weights="random", device=device)
    goal = Goal("chop a tree", np.zeros(512, np.float32))
    states = [policy.initial_state(i) for i in range(n)]
    observations = [{"pov": f} for f in frames(n, 0)]
    policy.act_batch(observations, [goal] * n, states)  # warm-up
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        _, states = policy.act_batch(observations, [goal] * n, states)
        seconds.append(time.perf_counter() - start)
    policy.close()
    return best(seconds)


def time_scoring(n: int, repeats: int, device: str, dtype: torch.dtype) -> tuple[float, float]:
    torch.manual_seed(0)
    model = MineCLIPVideo(VideoTowerConfig(), TextTowerConfig(), device=device, dtype=dtype)
    scorer = MineCLIPScorer(model, model.encode_text)
    windows = [scorer.window() for _ in range(n)]
    for tick in range(CLIP_FRAMES):  # full windows, as after the first 16 ticks
        scorer.push(windows, frames(n, tick))
    scorer.scores(windows, ["chop a tree"] * n)  # warm-up; caches the text features
    before = scorer.frames_encoded
    seconds = []
    for tick in range(repeats):
        new = frames(n, 100 + tick)
        start = time.perf_counter()
        scorer.push(windows, new)
        scorer.scores(windows, ["chop a tree"] * n)
        seconds.append(time.perf_counter() - start)
    per_env_tick = (scorer.frames_encoded - before) / (n * repeats)
    return best(seconds), per_env_tick


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", default="1,4")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    print("one tick for N envs; baseline: the full-size STEVE-1 policy's step (float32)")
    results = {}
    for n in (int(v) for v in args.envs.split(",")):
        policy_s = time_policy(n, args.repeats, args.device)
        row: dict = {"policy_step_ms": round(1000 * policy_s, 1)}
        for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
            score_s, per_env = time_scoring(n, args.repeats, args.device, dtype)
            row[f"score_{name}_ms"] = round(1000 * score_s, 1)
            row[f"score_{name}_vs_policy"] = round(score_s / policy_s, 2)
            row["frames_encoded_per_env_per_tick"] = per_env
        results[n] = row
        print(
            f"  N={n}: policy {row['policy_step_ms']} ms; score fp32 {row['score_float32_ms']} ms "
            f"(x{row['score_float32_vs_policy']}), bf16 {row['score_bfloat16_ms']} ms "
            f"(x{row['score_bfloat16_vs_policy']}); frames encoded per env per tick: "
            f"{row['frames_encoded_per_env_per_tick']:g}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
