"""The benchmark suite: one command, one table, one JSON file.

Measures in one run, on one device, each figure against its baseline from the same run:
- env overhead: microseconds the env adds per low-level step around a no-op policy on the
  synthetic world, and that overhead as a share of one tiny-policy step;
- native policy throughput with guidance (cond_scale 6, frames encoded once): N envs in one
  batched call against N sequential batch-1 calls, for every N asked (env steps/s, ratio);
- the vector env (tiny policy, synthetic world) against the same envs stepped one by one;
- prompt encoder: a new instruction (tokenizer, text tower, prior) against a cached one;
- peak memory: the process's maximum resident set size and, on CUDA, the peak allocated.

Run: python benchmarks/suite.py [--device cuda] [--dtype bfloat16] [--sizes 1,2,4,8,16,32,64]
     [--network full|tiny] [--json benchmark-results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from steve1_env.agent.native import NativeSteve1Policy
from steve1_env.agent.network import PRECISIONS
from steve1_env.prompt.steve1_encoder import Steve1PromptEncoder
from steve1_env.vector.env import Steve1SkillVectorEnv

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_synthetic import NoopPolicy

# The tiny policy of the golden fixtures; --golden or $STEVE1_GOLDEN_DIR point elsewhere.
GOLDEN = Path(
    os.environ.get("STEVE1_GOLDEN_DIR", Path(__file__).resolve().parents[2] / "shared" / "golden")
)


class StubWorld:
    """A world that returns one cached observation: the env's own cost is all that is left."""

    def __init__(self) -> None:
        from steve1_env.worlds.base import WorldStep
        from steve1_env.worlds.synthetic import SyntheticWorld

        world = SyntheticWorld(pov_shape=(360, 640))
        self.obs = world.reset(0)
        world.close()
        self.result = WorldStep(self.obs, False, {})

    def reset(self, seed=None):
        return self.obs

    def step(self, action):
        return self.result

    def close(self):
        pass


def bench_env_overhead_us(k=500, rounds=7):
    """Microseconds per low-level step the env adds around a no-op policy and a stub world.

    The baseline, the same policy and stub world called directly in a loop, runs in the same
    rounds; the difference is the env's bookkeeping, detector call and action checks.
    """
    from steve1_env.env import Steve1SkillEnv
    from steve1_env.success import custom

    world, policy = StubWorld(), NoopPolicy()
    never = custom(lambda start, obs, steps: False, name="never")
    env = Steve1SkillEnv(
        world=world, policy=policy, prompt_encoder="hash", k=k, instruction="go explore",
        success=never, max_low_level_steps=None,
    )  # fmt: skip
    env.reset(seed=0)
    through_env, direct = float("inf"), float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        env.step("")
        through_env = min(through_env, (time.perf_counter() - start) / k)
        start = time.perf_counter()
        state = None
        for _ in range(k):
            action, state = policy.act(world.obs, None, state)
            world.step(action)
        direct = min(direct, (time.perf_counter() - start) / k)
    env.close()
    return {"env_step_us": through_env * 1e6, "direct_step_us": direct * 1e6,
            "env_overhead_us": (through_env - direct) * 1e6}  # fmt: skip


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def policy_seconds(policy, frames, goals, states, repeats):
    """Best-of-`repeats` seconds of one batched forward + sampling."""
    best = float("inf")
    for _ in range(repeats):
        synchronize(policy.device)
        start = time.perf_counter()
        output, states = policy.forward(frames, goals, states)
        policy.sample(output, states)
        synchronize(policy.device)
        best = min(best, time.perf_counter() - start)
    return best, states


def bench_batching(policy, sizes, repeats):
    """Env steps/s batched against sequential batch-1 calls, per N."""
    rng = np.random.default_rng(0)
    largest = max(sizes)
    frames = list(rng.integers(0, 256, (largest, 360, 640, 3), dtype=np.uint8))
    goals = list(rng.standard_normal((largest, 512)).astype(np.float32))
    states = [policy.initial_state(i) for i in range(largest)]
    rows = {}
    for n in sizes:
        policy_seconds(policy, frames[:n], goals[:n], states[:n], 1)  # warm up this shape
        policy_seconds(policy, frames[:1], goals[:1], states[:1], 1)
        batched, _ = policy_seconds(policy, frames[:n], goals[:n], states[:n], repeats)
        single = [
            policy_seconds(policy, frames[i : i + 1], goals[i : i + 1], states[i : i + 1], repeats)[
                0
            ]
            for i in range(min(n, 4))  # batch-1 calls cost the same for every env
        ]
        sequential = n / (n * float(np.mean(single)))
        rows[n] = {
            "batched_env_steps_per_s": n / batched,
            "sequential_env_steps_per_s": sequential,
            "ratio": (n / batched) / sequential,
        }
    return rows


def tiny_policy(device, dtype):
    return NativeSteve1Policy(
        weights=GOLDEN / "policy_tiny.weights",
        model=GOLDEN / "policy_tiny.model",
        device=device,
        dtype=dtype,
    )


def bench_tiny_step_us(device, dtype, repeats):
    policy = tiny_policy(device, dtype)
    frame = [np.random.default_rng(0).integers(0, 256, (360, 640, 3), dtype=np.uint8)]
    goal = [np.zeros(512, dtype=np.float32)]
    seconds, _ = policy_seconds(policy, frame, goal, [policy.initial_state(0)], repeats)
    policy.close()
    return seconds * 1e6


def bench_vector_env(device, dtype, n, ticks, rounds=3):
    """Env steps/s of an N-env vector env against the same N envs stepped one by one.

    Best of `rounds`, the two ways interleaved so that machine noise hits both alike.
    """
    from steve1_env.env import Steve1SkillEnv

    kwargs = {
        "policy": "steve1",
        "prompt_encoder": "hash",
        "policy_kwargs": {
            "weights": str(GOLDEN / "policy_tiny.weights"),
            "model": str(GOLDEN / "policy_tiny.model"),
            "dtype": dtype,
        },
        "world_kwargs": {"pov_shape": (360, 640)},
        "device": device,
        "k": ticks,
        "instruction": "go explore",
        "max_low_level_steps": None,
    }
    vector = Steve1SkillVectorEnv(n, **kwargs)
    vector.reset(seed=0)
    envs = [Steve1SkillEnv(**kwargs) for _ in range(n)]
    for i, env in enumerate(envs):
        env.reset(seed=i)
    vector.step([""] * n)  # warm up both
    for env in envs:
        env.step("")
    batched = sequential = 0.0
    for _ in range(rounds):
        start = time.perf_counter()
        vector.step([""] * n)
        batched = max(batched, n * ticks / (time.perf_counter() - start))
        start = time.perf_counter()
        for env in envs:
            env.step("")
        sequential = max(sequential, n * ticks / (time.perf_counter() - start))
    vector.close()
    for env in envs:
        env.close()
    return {"vector_env_steps_per_s": batched, "single_envs_steps_per_s": sequential,
            "ratio": batched / sequential}  # fmt: skip


def bench_prompt(device, rounds=5):
    encoder = Steve1PromptEncoder(weights="random", device=device)
    encoder.encode("warm up")

    def ms(text):
        start = time.perf_counter()
        encoder.encode(text)
        return (time.perf_counter() - start) * 1e3

    cold = min(ms(f"chop tree number {i}") for i in range(rounds))
    cached = min(ms("chop tree number 0") for _ in range(rounds))
    encoder.close()
    return {"cold_ms": cold, "cached_ms": cached, "ratio": cold / cached}


def peak_memory(device):
    result = {"max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.type == "cuda":
        result["cuda_peak_allocated_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=list(PRECISIONS))
    parser.add_argument("--sizes", default="1,2,4,8", help="batch sizes N, comma-separated")
    parser.add_argument("--network", default="full", choices=["full", "tiny"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--vector-envs", type=int, default=4)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--golden", type=Path, help="golden-fixture directory (tiny policy)")
    parser.add_argument("--json", default="benchmark-results.json", help="results file")
    args = parser.parse_args()
    global GOLDEN
    GOLDEN = args.golden or GOLDEN
    if args.threads:
        torch.set_num_threads(args.threads)
    has_tiny = (GOLDEN / "policy_tiny.weights").is_file()
    if not has_tiny and args.network == "tiny":
        sys.exit(f"--network tiny needs the golden fixtures, not found in {GOLDEN} (--golden)")
    warnings.simplefilter("ignore")  # untrained-weights warnings
    device = torch.device(args.device)
    sizes = sorted({int(n) for n in args.sizes.split(",")})
    results = {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch "
        f"{torch.__version__}, {device}, {args.dtype}, {args.network} network",
    }
    results["env"] = bench_env_overhead_us()
    if has_tiny:
        tiny_us = bench_tiny_step_us(device, args.dtype, args.repeats * 3)
        results["env"]["tiny_policy_step_us"] = tiny_us
        results["env"]["overhead_share_of_tiny_step"] = results["env"]["env_overhead_us"] / tiny_us
    results["memory_after_env"] = peak_memory(device)

    if args.network == "tiny":
        policy = tiny_policy(device, args.dtype)
    else:
        policy = NativeSteve1Policy(weights="random", device=device, dtype=args.dtype)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    results["batching"] = bench_batching(policy, sizes, args.repeats)
    results["memory_after_policy"] = peak_memory(device)
    policy.close()
    if has_tiny:
        results["vector_env"] = bench_vector_env(device, args.dtype, args.vector_envs, 100)
    results["prompt"] = bench_prompt(device)
    results["memory_peak"] = peak_memory(device)

    env = results["env"]
    print(f"machine: {results['machine']}")
    share = (
        f" ({100 * env['overhead_share_of_tiny_step']:.2f}% of a tiny-policy step of "
        f"{env['tiny_policy_step_us'] / 1e3:.2f} ms)"
        if "tiny_policy_step_us" in env
        else ""
    )
    print(
        f"env overhead per low-level step: {env['env_overhead_us']:.1f} us "
        f"({env['env_step_us']:.1f} us through the env, {env['direct_step_us']:.1f} us direct)"
        + share
    )
    print(f"{'N':>4} {'batched steps/s':>16} {'sequential steps/s':>19} {'ratio':>7}")
    for n, row in results["batching"].items():
        print(
            f"{n:>4} {row['batched_env_steps_per_s']:16.2f} "
            f"{row['sequential_env_steps_per_s']:19.2f} {row['ratio']:7.2f}"
        )
    vec = results.get("vector_env")
    if vec:
        print(
            f"vector env, {args.vector_envs} envs, tiny policy: "
            f"{vec['vector_env_steps_per_s']:.0f} env steps/s vs "
            f"{vec['single_envs_steps_per_s']:.0f} one by one (x{vec['ratio']:.2f})"
        )
    prompt = results["prompt"]
    print(
        f"prompt encoder: new instruction {prompt['cold_ms']:.1f} ms, cached "
        f"{prompt['cached_ms']:.3f} ms (x{prompt['ratio']:.0f})"
    )
    memory = results["memory_peak"]
    cuda = memory.get("cuda_peak_allocated_mb")
    print(
        f"peak memory: {memory['max_rss_mb']:.0f} MB resident"
        + (f", {results['memory_after_policy']['cuda_peak_allocated_mb']:.0f} MB CUDA (policy)"
           if cuda is not None else "")
    )  # fmt: skip
    Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    print(f"results: {args.json}")


if __name__ == "__main__":
    main()
