"""Native STEVE-1 policy throughput: the fast CPU mode against float32, in one run.

Full-size network (seeded random weights), batch 1, guidance (cond_scale 6), on consecutive
synthetic-world frames from a new episode. Measured in the same run, in interleaved rounds so
that drift on a shared machine hits every mode alike:

- ``float32``: the exact default;
- ``float32, before issue 17``: the float32 of the previous release, re-created here with
  every change of issue 17 undone (`float32_before_issue_17`): its linear layers as
  ``W @ x.T`` at small batches (which this torch's MKL runs slower at two rows), the default
  convolution layout, the ReLU before the pooling, the memory copied by `torch.cat`;
- each fast mode asked (default ``bfloat16-mixed``): steps/s, the ratio to both float32 rows,
  and the mean KL(float32 || mode) of the guided button and camera distributions over the
  timed steps (the same frames for all);
- frame encoding shared by the two guidance branches against encoding it twice (the official
  agent's way), in float32;
- N envs in one batched call against N sequential batch-1 calls (float32).

Steps/s is 1 / the median step time after warm-up (the best step in brackets).

Run: python benchmarks/bench_policy.py [--modes bfloat16-mixed,bfloat16] [--steps 30]
         [--rounds 3] [--device cuda] [--threads N] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import time
import warnings

import numpy as np
import torch
import torch.nn.functional as F

from steve1_env.agent import fidelity
from steve1_env.agent import network as network_module
from steve1_env.agent.native import NativeSteve1Policy
from steve1_env.agent.network import PRECISIONS, DownStack, Linear

FLOAT32_BEFORE = "float32, before issue 17"


@contextlib.contextmanager
def float32_before_issue_17(policy):
    """Runs `policy` (float32) the way the previous release did, every change undone.

    Its linear layers as ``W @ x.T`` up to 16 rows; each ImpalaCNN stack's first ReLU before
    the max-pool; the convolutions in the default memory layout; the attention memory
    extended with `torch.cat` into a new tensor every step (no tape). The outputs are the
    previous release's bit for bit (checked against it on the tiny network).
    """
    current_linear, current_stack = Linear.forward, DownStack.forward
    current_extend = network_module._extend
    cnn = policy.network.net.img_process.cnn
    convolutions = [m for m in cnn.modules() if isinstance(m, torch.nn.Conv2d)]
    layout = cnn.channels_last

    def linear(self, x):
        rows = x.numel() // x.shape[-1]
        if x.device.type != "cpu" or rows > self.small_batch_rows or x.dtype != self.weight.dtype:
            return current_linear(self, x)
        flat = x.reshape(rows, x.shape[-1]).T
        out = (
            self.weight @ flat
            if self.bias is None
            else torch.addmm(self.bias[:, None], self.weight, flat)
        )
        return out.T.reshape(*x.shape[:-1], self.out_features)

    def stack(self, x):
        x = F.max_pool2d(F.relu(self.firstconv(x)), kernel_size=3, stride=2, padding=1)
        x = self.n(x)
        for block in self.blocks:
            x = block(x)
        return x

    def extend(memory, keys, values):
        joined = (
            torch.cat([old, new], dim=2)
            for old, new in ((memory.keys, keys), (memory.values, values))
        )
        return (*joined, None)

    def set_layout(channels_last):
        cnn.channels_last = channels_last
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        for conv in convolutions:
            conv.weight.data = conv.weight.data.contiguous(memory_format=fmt)

    Linear.forward, DownStack.forward, network_module._extend = linear, stack, extend
    set_layout(False)
    try:
        yield
    finally:
        Linear.forward, DownStack.forward = current_linear, current_stack
        network_module._extend = current_extend
        set_layout(layout)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed_rollout(policy, frames, goal, state):
    """Runs the frames from `state`; returns per-step seconds, guided logits and the state."""
    seconds, buttons, camera = [], [], []
    for frame in frames:
        sync(policy.device)
        start = time.perf_counter()
        output, state = policy.forward([frame], [goal], state)
        policy.sample(output, state)
        sync(policy.device)
        seconds.append(time.perf_counter() - start)
        buttons.append(output.buttons[0].double().cpu())
        camera.append(output.camera[0].double().cpu())
    return seconds, {"buttons": torch.stack(buttons), "camera": torch.stack(camera)}, state


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--modes", default="bfloat16-mixed", help="fast modes, comma-separated")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per mode and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=4, help="N for the batched comparison")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    fast_modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = sorted(set(fast_modes) - set(PRECISIONS))
    if unknown:
        parser.error(f"unknown precision(s) {unknown}; choose from {', '.join(PRECISIONS)}")
    warnings.simplefilter("ignore")  # the untrained-weights warning
    results = {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch "
        f"{torch.__version__}, {args.device}",
        "steps": args.steps,
        "rounds": args.rounds,
    }
    frames = fidelity.synthetic_frames(args.steps + 3, seed=0)
    goal = np.random.default_rng(1).standard_normal(512).astype(np.float32)
    names = ["float32", FLOAT32_BEFORE, *fast_modes]
    policies = {
        "float32": NativeSteve1Policy(weights="random", device=args.device),
        **{
            m: NativeSteve1Policy(weights="random", device=args.device, dtype=m) for m in fast_modes
        },
    }
    policies[FLOAT32_BEFORE] = policies["float32"]

    # Rounds: each mode runs the same frames from a new episode; the first 3 steps warm up.
    seconds = {name: [] for name in names}
    logits = {}
    for _ in range(args.rounds):
        for name in names:
            policy = policies[name]
            context = (
                float32_before_issue_17(policy)
                if name == FLOAT32_BEFORE
                else contextlib.nullcontext()
            )
            with context:
                _, _, state = timed_rollout(policy, frames[:3], goal, [policy.initial_state(0)])
                spent, heads, _ = timed_rollout(policy, frames[3:], goal, state)
            seconds[name].extend(spent)
            logits[name] = heads
    rate = {name: 1.0 / statistics.median(seconds[name]) for name in names}
    best = {name: 1.0 / min(seconds[name]) for name in names}
    results["steps_per_s"] = rate
    results["best_steps_per_s"] = best
    results["fast_modes"] = {}
    for mode in fast_modes:
        kl = {
            head: fidelity.divergence(logits["float32"][head], logits[mode][head]).mean_kl
            for head in ("buttons", "camera")
        }
        results["fast_modes"][mode] = {
            "vs_float32": rate[mode] / rate["float32"],
            "vs_float32_before": rate[mode] / rate[FLOAT32_BEFORE],
            "mean_kl_buttons": kl["buttons"],
            "mean_kl_camera": kl["camera"],
        }
    results["float32_vs_before"] = rate["float32"] / rate[FLOAT32_BEFORE]

    # float32: the frame encoded once for both branches against twice, as upstream does.
    policy = policies["float32"]
    shared = {}
    for share in (True, False, True, False):
        policy.share_frame_encoding = share
        _, _, state = timed_rollout(policy, frames[:3], goal, [policy.initial_state(0)])
        spent, _, _ = timed_rollout(policy, frames[3:13], goal, state)
        shared.setdefault(share, []).extend(spent)
    policy.share_frame_encoding = True
    results["float32_frame_once_vs_twice"] = statistics.median(shared[False]) / statistics.median(
        shared[True]
    )

    # float32: N envs in one batched call against N sequential batch-1 calls (best of rounds).
    rng = np.random.default_rng(0)
    batch_frames = list(rng.integers(0, 256, (args.batch, 360, 640, 3), dtype=np.uint8))
    batch_goals = list(rng.standard_normal((args.batch, 512)).astype(np.float32))
    states = [policy.initial_state(i) for i in range(args.batch)]
    singles = list(states)
    batched = sequential = float("inf")
    for _ in range(4):
        start = time.perf_counter()
        output, states = policy.forward(batch_frames, batch_goals, states)
        policy.sample(output, states)
        batched = min(batched, time.perf_counter() - start)
        start = time.perf_counter()
        for i in range(args.batch):
            output, (singles[i],) = policy.forward(
                batch_frames[i : i + 1], batch_goals[i : i + 1], [singles[i]]
            )
            policy.sample(output, [singles[i]])
        sequential = min(sequential, time.perf_counter() - start)
    results["batched_vs_sequential"] = sequential / batched
    results[f"batch{args.batch}_env_steps_per_s"] = args.batch / batched

    print(f"machine: {results['machine']}")
    print(f"full-size network, batch 1, guided; {args.rounds} rounds x {args.steps} steps per mode")
    print(
        "mode                        steps/s (best)     vs float32  vs float32 before"
        "  mean KL buttons  camera"
    )
    for name in names:
        row = f"{name:26}  {rate[name]:7.2f} ({best[name]:6.2f})"
        if name in results["fast_modes"]:
            fast = results["fast_modes"][name]
            row += (
                f"  {fast['vs_float32']:9.2f}x  {fast['vs_float32_before']:16.2f}x"
                f"  {fast['mean_kl_buttons']:15.1e}  {fast['mean_kl_camera']:.1e}"
            )
        elif name == "float32":
            row += f"  {1.0:9.2f}x  {results['float32_vs_before']:16.2f}x"
        print(row)
    once = results["float32_frame_once_vs_twice"]
    print(f"float32, frame encoded once vs twice (upstream's way): {once:.2f}x")
    print(
        f"float32, {args.batch} envs in one batch vs one after another: "
        f"{results['batched_vs_sequential']:.2f}x "
        f"({results[f'batch{args.batch}_env_steps_per_s']:.1f} env-steps/s)"
    )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
