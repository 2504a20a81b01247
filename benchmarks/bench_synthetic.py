"""Synthetic-world and env-overhead benchmark.

Measures, in one run on this machine:
- the synthetic world's frame render at 128x128 and 360x640 (the MineRL size), against the
  cost of copying a frame of the same size (the floor any renderer pays);
- one low-level world step (physics, ray cast, render, observation dict);
- the env's overhead per low-level step around a no-op policy, against calling the world
  directly with the same actions.

Run: python benchmarks/bench_synthetic.py [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np

from steve1_env.env import Steve1SkillEnv
from steve1_env.success import custom
from steve1_env.worlds.actions import noop_action
from steve1_env.worlds.synthetic import EYE_HEIGHT, SyntheticWorld


def per_call_us(function, repeat=5, number=200):
    """Best-of-`repeat` mean time of `function` in microseconds."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            function()
        best = min(best, (time.perf_counter() - start) / number)
    return best * 1e6


class NoopPolicy:
    device = "cpu"

    def initial_state(self, seed):
        return None

    def act(self, obs, goal, state):
        return noop_action(), state

    def close(self):
        pass


def bench_render(shape):
    world = SyntheticWorld(pov_shape=shape)
    world.reset(0)
    eye = (world.x, world.y + EYE_HEIGHT, world.z)
    sprites = world._sprites[world._sprite_alive]
    frame = np.zeros((*shape, 3), dtype=np.uint8)
    render = per_call_us(lambda: world.renderer.render(eye, 10.0, 30.0, sprites))
    copy = per_call_us(frame.copy)
    step = per_call_us(lambda: world.step(noop_action()))
    return {"render_us": render, "frame_copy_us": copy, "world_step_us": step}


def bench_env_overhead(k=200):
    never = custom(lambda start, obs, steps: False, name="never")
    env = Steve1SkillEnv(policy=NoopPolicy(), prompt_encoder="hash", instruction="go explore",
                         k=k, success=never, max_low_level_steps=None)  # fmt: skip
    env.reset(seed=0)
    # Same world, same (standing still) situation: the difference is what the env adds.
    env_step = per_call_us(lambda: env.step(""), repeat=5, number=3) / k
    direct = per_call_us(lambda: env.world.step(noop_action()), repeat=5, number=3 * k)
    env.close()
    return {"env_per_low_level_step_us": env_step, "world_direct_step_us": direct}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    results = {
        "machine": f"{platform.processor() or platform.machine()}, {platform.python_version()}"
    }
    for shape in ((128, 128), (360, 640)):
        results[f"{shape[0]}x{shape[1]}"] = bench_render(shape)
    results["env"] = bench_env_overhead()
    print(f"machine: {results['machine']}")
    print(f"{'frame':>8} {'render us':>10} {'copy us':>8} {'ratio':>6} {'world step us':>14}")
    for key in ("128x128", "360x640"):
        r = results[key]
        print(f"{key:>8} {r['render_us']:10.1f} {r['frame_copy_us']:8.1f} "
              f"{r['render_us'] / r['frame_copy_us']:6.1f} {r['world_step_us']:14.1f}")  # fmt: skip
    env = results["env"]
    overhead = env["env_per_low_level_step_us"] - env["world_direct_step_us"]
    with_env, alone = env["env_per_low_level_step_us"], env["world_direct_step_us"]
    print(
        f"env per low-level step: {with_env:.1f} us; world alone: {alone:.1f} us; "
        f"env overhead: {overhead:.1f} us (ratio {with_env / alone:.2f})"
    )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
