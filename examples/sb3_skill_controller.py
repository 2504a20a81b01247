"""PPO (stable-baselines3) learns which skill to call: a controller over Steve1SkillLibrary-v0.

The goal spans several skills: gather logs, dirt and seeds, each at least once, in as few
high-level steps as possible. The controller sees which of the three it has, picks one of six
skills (three of them useless here), and the skill runs for up to ``k`` low-level ticks. Skills
are the synthetic world's scripted oracle, so this runs offline in minutes on two CPU cores; swap
in ``policy="steve1"`` for the real agent.

Semi-MDP note: a skill step lasts ``info["steps"]`` ticks. PPO discounts every high-level step
alike (``gamma`` per decision); `steve1_env.wrappers.SemiMDPDiscount` adds the per-transition
discount ``gamma ** info["steps"]`` for algorithms that use it, and the script also reports the
return discounted over low-level time (`steve1_env.wrappers.semi_mdp_return`).

``--envs N`` trains on N envs at once through `steve1_env.sb3.Steve1VecEnv`: one vector env,
one batched skill-policy call per tick for all N (the STEVE-1 policy's case; the scripted oracle
here runs per world). The evaluation always runs on one env.

Run: python examples/sb3_skill_controller.py [--timesteps 3000] [--episodes 30] [--envs 1]
"""

from __future__ import annotations

import argparse
import fnmatch
import time

import gymnasium as gym
import numpy as np

import steve1_env  # noqa: F401  (registers the env ids)
from steve1_env.optional import import_optional
from steve1_env.wrappers import SemiMDPDiscount, semi_mdp_return

SKILLS = [
    "chop a tree",
    "get dirt",
    "collect seeds",
    "look at the sky",
    "go explore",
    "break a flower",
]
TARGETS = {"logs": "*_log", "dirt": "dirt", "seeds": "*seed*"}
STEP_COST = 0.1  # per high-level step: fewer skill calls is better
MAX_SKILL_CALLS = 6
LOW_LEVEL_GAMMA = 0.999


ENV_KWARGS = {
    "skills": SKILLS,
    "policy": "scripted",
    "prompt_encoder": "hash",
    "world_kwargs": {"size": 48, "pov_shape": (64, 64)},
    "pov_shape": (32, 32),
    "k": 150,
}
FLAGS = gym.spaces.Box(0.0, 1.0, (len(TARGETS),), np.float32)


class GatherProgress:
    """One episode of the multi-skill task: +1 per target first gathered.

    Observation: three flags (has logs, dirt, seeds). The episode ends when all three are held
    (terminated) or after `MAX_SKILL_CALLS` skill calls (truncated).
    """

    def __init__(self) -> None:
        self.held = np.zeros(len(TARGETS), dtype=np.float32)
        self.calls = 0

    @staticmethod
    def flags(inventory: dict[str, int]) -> np.ndarray:
        return np.array(
            [
                any(count > 0 and fnmatch.fnmatchcase(item, pattern)
                    for item, count in inventory.items())
                for pattern in TARGETS.values()
            ],
            dtype=np.float32,
        )  # fmt: skip

    def start(self, inventory: dict[str, int]) -> np.ndarray:
        self.held = self.flags(inventory)
        self.calls = 0
        return self.held.copy()

    def step(self, inventory: dict[str, int]) -> tuple[np.ndarray, float, bool, bool]:
        held = self.flags(inventory)
        reward = float((held - self.held).clip(0).sum()) - STEP_COST
        self.held = held
        self.calls += 1
        done = bool(held.all())
        return held.copy(), reward, done, not done and self.calls >= MAX_SKILL_CALLS


class GatherGoal(gym.Wrapper):
    """Turns the skill library into the multi-skill task (`GatherProgress`)."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.observation_space = FLAGS
        self.progress = GatherProgress()

    def reset(self, **kwargs):
        _, info = self.env.reset(**kwargs)
        return self.progress.start(info["inventory"]), info

    def step(self, action):
        _, _, terminated, truncated, info = self.env.step(action)
        held, reward, done, out_of_calls = self.progress.step(info["inventory"])
        return held, reward, terminated or done, truncated or out_of_calls, info


def make_env(seed: int = 0) -> gym.Env:
    env = gym.make("Steve1SkillLibrary-v0", **ENV_KWARGS)
    env = SemiMDPDiscount(env, gamma=LOW_LEVEL_GAMMA)
    env = GatherGoal(env)
    env.reset(seed=seed)
    return env


def make_vec_env(envs: int, seed: int = 0):
    """`envs` copies of the task on one `Steve1VecEnv` (SB3's VecEnv over one vector env)."""
    from stable_baselines3.common.vec_env import VecEnvWrapper

    from steve1_env.sb3 import Steve1VecEnv

    class VecGatherGoal(VecEnvWrapper):
        """`GatherGoal` for every env of a Steve1VecEnv, with SB3's same-step autoreset."""

        def __init__(self, venv: Steve1VecEnv) -> None:
            super().__init__(venv, observation_space=FLAGS)
            self.progress = [GatherProgress() for _ in range(venv.num_envs)]

        def reset(self):
            self.venv.reset()
            pairs = zip(self.progress, self.venv.reset_infos, strict=True)
            return np.stack([progress.start(info["inventory"]) for progress, info in pairs])

        def step_wait(self):
            _, _, skill_dones, infos = self.venv.step_wait()
            observations = np.zeros((self.num_envs, len(TARGETS)), dtype=np.float32)
            rewards = np.zeros(self.num_envs, dtype=np.float32)
            dones = np.zeros(self.num_envs, dtype=bool)
            for i, (progress, info) in enumerate(zip(self.progress, infos, strict=True)):
                held, rewards[i], done, out_of_calls = progress.step(info["inventory"])
                dones[i] = done or out_of_calls or skill_dones[i]
                observations[i] = held
                if dones[i]:
                    # This wrapper ends the episode itself: the skill env starts its next one.
                    info["TimeLimit.truncated"] = not done and (
                        out_of_calls or info["TimeLimit.truncated"]
                    )
                    info["terminal_observation"] = held
                    if not skill_dones[i]:
                        self.venv.reset_envs(i)
                    observations[i] = progress.start(self.venv.reset_infos[i]["inventory"])
            return observations, rewards, dones, infos

    venv = Steve1VecEnv(envs, **ENV_KWARGS)
    venv.seed(seed)
    return VecGatherGoal(venv)


def evaluate(env: gym.Env, choose, episodes: int, seed: int) -> dict[str, float]:
    """Mean return, skill calls, success rate and low-level-discounted return."""
    returns, calls, solved, smdp = [], [], [], []
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        rewards, infos, done = [], [], False
        while not done:
            obs, reward, terminated, truncated, info = env.step(choose(obs))
            rewards.append(reward)
            infos.append(info)
            done = terminated or truncated
        returns.append(sum(rewards))
        calls.append(len(rewards))
        solved.append(bool(obs.all()))
        smdp.append(semi_mdp_return(rewards, infos, LOW_LEVEL_GAMMA))
    return {
        "mean_return": float(np.mean(returns)),
        "std_return": float(np.std(returns)),
        "mean_skill_calls": float(np.mean(calls)),
        "success_rate": float(np.mean(solved)),
        "mean_semi_mdp_return": float(np.mean(smdp)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timesteps", type=int, default=3000, help="PPO training budget")
    parser.add_argument("--episodes", type=int, default=30, help="evaluation episodes each")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--envs", type=int, default=1, help="train on this many envs at once (Steve1VecEnv)"
    )
    args = parser.parse_args()
    if args.envs < 1:
        parser.error(f"--envs must be at least 1, got {args.envs}")
    sb3 = import_optional("stable_baselines3", "sb3", "The SB3 example")

    env = make_env(args.seed)
    rng = np.random.default_rng(args.seed)
    random_result = evaluate(
        env, lambda obs: int(rng.integers(len(SKILLS))), args.episodes, seed=10_000
    )

    started = time.perf_counter()
    # One env trains as before (SB3 wraps it in a DummyVecEnv); several share one vector env.
    # Each rollout holds about 128 skill calls either way.
    train_env = env if args.envs == 1 else make_vec_env(args.envs, args.seed)
    model = sb3.PPO(
        "MlpPolicy",
        train_env,
        n_steps=max(128 // args.envs, 8),
        batch_size=64,
        n_epochs=10,
        learning_rate=3e-3,
        gamma=0.9,
        ent_coef=0.01,
        seed=args.seed,
        device="cpu",
        verbose=0,
    )
    model.learn(total_timesteps=args.timesteps)
    seconds = time.perf_counter() - started
    trained = evaluate(
        env, lambda obs: int(model.predict(obs, deterministic=True)[0]), args.episodes, 10_000
    )
    env.close()
    if train_env is not env:
        train_env.close()

    on = "" if args.envs == 1 else f" on {args.envs} envs"
    print(f"PPO trained for {args.timesteps} skill calls{on} in {seconds:.0f} s")
    for name, result in (("random chooser", random_result), ("trained PPO", trained)):
        print(
            f"{name:15} mean return {result['mean_return']:5.2f} +- {result['std_return']:.2f}, "
            f"{result['mean_skill_calls']:.1f} skill calls, success "
            f"{100 * result['success_rate']:.0f}%, low-level-discounted return "
            f"{result['mean_semi_mdp_return']:.2f}"
        )
    margin = trained["mean_return"] - random_result["mean_return"]
    print(f"margin over the random chooser: {margin:+.2f}")


if __name__ == "__main__":
    main()
