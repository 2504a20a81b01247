"""Wrappers for learning over skills: the semi-MDP discount of variable-length skill steps.

A high-level step lasts ``info["steps"]`` low-level ticks (a skill that succeeds quickly takes
few, one that runs out of budget takes ``k``). Over low-level time, the right discount of a
high-level transition is therefore ``gamma ** info["steps"]``, not a constant (the semi-MDP
view of options). Algorithms with a fixed per-step discount, such as stable-baselines3's PPO,
treat every skill step alike; `SemiMDPDiscount` exposes the per-transition discount for those
that can use it, and `semi_mdp_return` computes returns with it.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any, SupportsFloat

import gymnasium as gym

from steve1_env.errors import ConfigurationError


def _checked_gamma(gamma: Any) -> float:
    if (
        isinstance(gamma, bool)
        or not isinstance(gamma, numbers.Real)
        or not 0.0 < float(gamma) <= 1
    ):
        raise ConfigurationError(f"gamma must be a number in (0, 1], got {gamma!r}.")
    return float(gamma)


def step_discount(steps: int, gamma: float) -> float:
    """Returns ``gamma ** steps``: the discount of a transition that lasted `steps` ticks."""
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 0:
        raise ConfigurationError(f"steps must be an integer >= 0, got {steps!r}.")
    return _checked_gamma(gamma) ** int(steps)


class SemiMDPDiscount(gym.Wrapper):
    """Adds ``info["discount"] = gamma ** info["steps"]`` to every step of a skill env.

    For one env; a vector env's ``info["steps"]`` is an array, whose discounts are
    ``gamma ** info["steps"]`` in one numpy expression.

    Args:
        env: A `Steve1SkillEnv` (or any env whose info carries ``steps``).
        gamma: The per-low-level-tick discount, e.g. 0.999 (0.99 per 10 ticks).

    Example:
        ```python
        env = SemiMDPDiscount(
            gym.make("Steve1SkillLibrary-v0", policy="scripted", prompt_encoder="hash"),
            gamma=0.999,
        )
        env.reset(seed=0)
        obs, reward, terminated, truncated, info = env.step(4)  # the paper's "wood" prompt
        info["discount"]  # 0.999 ** info["steps"]
        ```
    """

    def __init__(self, env: gym.Env, gamma: float = 0.999) -> None:
        super().__init__(env)
        self.gamma = _checked_gamma(gamma)

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        """Steps the env and adds the transition's discount to the info."""
        obs, reward, terminated, truncated, info = self.env.step(action)
        if "steps" not in info:
            raise ConfigurationError(
                "SemiMDPDiscount needs info['steps'] (the low-level steps of the transition); "
                f"the wrapped env reports {sorted(info)}."
            )
        info = dict(info)
        info["discount"] = self.gamma ** int(info["steps"])
        return obs, reward, terminated, truncated, info


def semi_mdp_return(
    rewards: Sequence[float], infos: Sequence[Mapping[str, Any]], gamma: float
) -> float:
    """Returns the discounted return of an episode of skill steps, over low-level time.

    The reward of the i-th transition is discounted by ``gamma`` to the power of the low-level
    steps taken before it: ``sum_i r_i * gamma ** (steps_0 + ... + steps_{i-1})``.

    Args:
        rewards: The rewards of the high-level steps.
        infos: Their infos, each with ``steps``.
        gamma: The per-low-level-tick discount.
    """
    gamma = _checked_gamma(gamma)
    if len(rewards) != len(infos):
        raise ConfigurationError(
            f"rewards and infos must have one entry per step, got {len(rewards)} and {len(infos)}."
        )
    total, elapsed = 0.0, 0
    for reward, info in zip(rewards, infos, strict=True):
        total += float(reward) * math.pow(gamma, elapsed)
        elapsed += int(info["steps"])
    return total
