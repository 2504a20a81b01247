"""A random policy: the baseline any skill must beat."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from steve1_env.agent.base import Goal
from steve1_env.errors import ConfigurationError
from steve1_env.validation import real_number
from steve1_env.worlds.actions import AGENT_BUTTON_KEYS, noop_action


class RandomPolicy:
    """Random buttons and camera turns, ignoring the goal.

    Each tick it presses each of STEVE-1's 20 buttons with probability `press_probability`
    and turns the camera by up to `max_turn` degrees on each axis.

    Args:
        world: Ignored; accepted so every policy factory has the same signature.
        device: Ignored; nothing is computed on a device.
        press_probability: Per-tick probability of pressing each button.
        max_turn: Largest camera change per tick in degrees (STEVE-1's bins reach 10).
    """

    def __init__(
        self,
        world: Any = None,
        device: Any = "cpu",
        press_probability: float = 0.5,
        max_turn: float = 10.0,
    ) -> None:
        press_probability = real_number(press_probability, "press_probability")
        max_turn = real_number(max_turn, "max_turn")
        if not 0.0 <= press_probability <= 1.0:
            raise ConfigurationError(
                f"press_probability must be in [0, 1], got {press_probability!r}."
            )
        if not 0.0 <= max_turn <= 180.0:
            raise ConfigurationError(f"max_turn must be in [0, 180] degrees, got {max_turn!r}.")
        self.device = device
        self.press_probability = press_probability
        self.max_turn = max_turn

    def initial_state(self, seed: int) -> np.random.Generator:
        """Returns the episode's random generator."""
        return np.random.default_rng(seed)

    def act(
        self, obs: Mapping[str, Any], goal: Goal, state: np.random.Generator
    ) -> tuple[dict[str, Any], np.random.Generator]:
        """Returns a random action."""
        action = noop_action()
        pressed = state.random(len(AGENT_BUTTON_KEYS)) < self.press_probability
        for key, down in zip(AGENT_BUTTON_KEYS, pressed, strict=True):
            action[key] = int(down)
        action["camera"] = state.uniform(-self.max_turn, self.max_turn, size=2)
        return action, state

    def close(self) -> None:
        """Nothing to release."""
