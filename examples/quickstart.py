"""A planner-style loop on the text face: pursue instructions one after another.

Run: python examples/quickstart.py
"""

import gymnasium as gym

import steve1_env  # noqa: F401  (registers the env ids)

PLAN = ["chop a tree", "chop a tree", "get dirt", "look at the sky", "go explore"]


def main() -> None:
    with gym.make(
        "Steve1Skill-v0",
        policy="scripted",  # the synthetic world's oracle: runs offline, no weights
        prompt_encoder="hash",
        instruction=PLAN[0],
        k=300,
    ) as env:
        obs, info = env.reset(seed=42)
        for instruction in PLAN:
            obs, _, terminated, truncated, info = env.step(instruction)
            print(
                f"{instruction!r:20} -> {info['reason']:10} in {info['steps']:3} ticks; "
                f"inventory {info['inventory']}"
            )
            if terminated or truncated:
                break
        print(f"goal embedding: {obs['goal'].dtype} {obs['goal'].shape}; pov {obs['pov'].shape}")


if __name__ == "__main__":
    main()
