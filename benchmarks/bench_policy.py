"""Native STEVE-1 policy throughput (full-size network, random weights, CPU by default).

Measures, in one run and on the same network:
- batch 1 with guidance (cond_scale 6), each frame encoded once and shared by both branches,
  against the upstream way (the frame encoded for both branches): steps/s and the ratio;
- the same, against the upstream computation as a whole: the frame encoded for both branches
  and every linear layer as `x @ W.T` (`nn.Linear`'s form, which upstream uses);
- N envs in one batched call against N sequential batch-1 calls: steps/s per env and the ratio.

Run: python benchmarks/bench_policy.py [--device cuda] [--dtype bfloat16] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import warnings

import numpy as np
import torch

from steve1_env.agent.native import NativeSteve1Policy


def steps_per_second(policy, frames, goals, states, repeats):
    """Best-of-`repeats` calls per second of one batched forward + sampling."""
    best = float("inf")
    for _ in range(repeats):
        if policy.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        output, states = policy.forward(frames, goals, states)
        policy.sample(output, states)
        if policy.device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 1.0 / best, states


def breakdown_ms(policy, frame, repeats):
    """Best milliseconds of: encoding one frame, encoding it twice (as upstream), and the
    trunk + heads on the two guided rows."""
    network = policy.network
    pixels = torch.from_numpy(frame[None, :128, :128]).to(policy.device)
    state = network.initial_state(2)
    goal = torch.zeros(2, 1, 512, device=policy.device, dtype=policy.dtype)
    first = torch.zeros(2, 1, dtype=torch.bool, device=policy.device)
    best = {"encode_1": float("inf"), "encode_2": float("inf"), "rest": float("inf")}
    with torch.inference_mode():
        for _ in range(repeats + 1):
            for key, batch in (("encode_1", pixels), ("encode_2", pixels.repeat(2, 1, 1, 1))):
                start = time.perf_counter()
                features = network.encode_frames(batch)
                best[key] = min(best[key], time.perf_counter() - start)
            features = features[:, None]
            start = time.perf_counter()
            latent, _ = network.trunk(features, goal, first, state)
            network.heads(latent[:, 0])
            best["rest"] = min(best["rest"], time.perf_counter() - start)
    return {key: value * 1e3 for key, value in best.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--batch", type=int, default=4, help="N for the batched comparison")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    warnings.simplefilter("ignore")  # the untrained-weights warning
    policy = NativeSteve1Policy(weights="random", device=args.device, dtype=args.dtype)
    rng = np.random.default_rng(0)
    frames = list(rng.integers(0, 256, (args.batch, 360, 640, 3), dtype=np.uint8))
    goals = list(rng.standard_normal((args.batch, 512)).astype(np.float32))
    results = {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch "
        f"{torch.__version__}, {args.device}, {args.dtype}",
    }

    # Warm up (allocator, kernels), then interleave the two ways so drift hits both alike.
    state = [policy.initial_state(0)]
    for share in (True, False, True):
        policy.share_frame_encoding = share
        _, state = steps_per_second(policy, frames[:1], goals[:1], state, 1)
    shared, upstream, upstream_linear = [], [], []
    for _ in range(2):
        policy.share_frame_encoding = True
        rate, state = steps_per_second(policy, frames[:1], goals[:1], state, args.repeats)
        shared.append(rate)
        policy.share_frame_encoding = False
        rate, state = steps_per_second(policy, frames[:1], goals[:1], state, args.repeats)
        upstream.append(rate)
        policy.network.use_cpu_kernels(small_batch_matmul=False, batch_invariant_norm=True)
        rate, state = steps_per_second(policy, frames[:1], goals[:1], state, args.repeats)
        upstream_linear.append(rate)
        policy.network.use_cpu_kernels(small_batch_matmul=True, batch_invariant_norm=True)
    policy.share_frame_encoding = True
    results["batch1_guided_shared_steps_per_s"] = max(shared)
    results["batch1_guided_upstream_way_steps_per_s"] = max(upstream)
    results["shared_vs_upstream_ratio"] = max(shared) / max(upstream)
    results["batch1_guided_upstream_computation_steps_per_s"] = max(upstream_linear)
    results["ours_vs_upstream_computation_ratio"] = max(shared) / max(upstream_linear)
    parts = breakdown_ms(policy, frames[0], args.repeats)
    results.update({f"{key}_ms": value for key, value in parts.items()})
    results["ratio_bound_from_breakdown"] = (parts["encode_2"] + parts["rest"]) / (
        parts["encode_1"] + parts["rest"]
    )

    states = [policy.initial_state(i) for i in range(args.batch)]
    batched, states = steps_per_second(policy, frames, goals, states, args.repeats)
    # The same statistic for both: the best of `repeats` rounds of N single-env calls.
    single_states = [policy.initial_state(i) for i in range(args.batch)]
    best_round = float("inf")
    for _ in range(args.repeats):
        start = time.perf_counter()
        for i in range(args.batch):
            output, (single_states[i],) = policy.forward(
                frames[i : i + 1], goals[i : i + 1], [single_states[i]]
            )
            policy.sample(output, [single_states[i]])
        best_round = min(best_round, time.perf_counter() - start)
    sequential = args.batch / best_round
    results[f"batch{args.batch}_env_steps_per_s"] = batched * args.batch
    results[f"sequential{args.batch}_env_steps_per_s"] = sequential
    results["batched_vs_sequential_ratio"] = batched * args.batch / sequential

    print(f"machine: {results['machine']}")
    print(f"batch 1, guided, frame encoded once : {max(shared):7.2f} steps/s")
    print(f"batch 1, guided, upstream way       : {max(upstream):7.2f} steps/s")
    print(f"  ratio                             : {results['shared_vs_upstream_ratio']:7.2f}x")
    print(f"batch 1, guided, upstream computation: {max(upstream_linear):6.2f} steps/s")
    overall = results["ours_vs_upstream_computation_ratio"]
    print(f"  ratio, ours vs that               : {overall:7.2f}x")
    print(
        f"  encoding 1 frame {parts['encode_1']:.0f} ms, 2 frames {parts['encode_2']:.0f} ms, "
        f"trunk + heads (2 rows) {parts['rest']:.0f} ms: sharing can give at most "
        f"{results['ratio_bound_from_breakdown']:.2f}x here"
    )
    print(f"{args.batch} envs in one batch             : {batched * args.batch:7.2f} env-steps/s")
    print(f"{args.batch} envs one after another        : {sequential:7.2f} env-steps/s")
    print(f"  ratio                             : {results['batched_vs_sequential_ratio']:7.2f}x")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
