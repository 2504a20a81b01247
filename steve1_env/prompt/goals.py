"""`GoalEncoder`: instructions to goals, the one owner of the goal-embedding cache.

Every caller that turns text into a goal (the env, the vector env, an evaluation worker) goes
through a `GoalEncoder`. It is the encoder boundary: the encoder runs with autocast disabled,
its output becomes a finite float32 ``(512,)`` read-only array once, and the result is kept
per instruction. An encoder whose embeddings change with each episode (a prior sampling its
latent, ``varies_per_episode``) gets its seed at `start_episode`, which also forgets the
previous episode's goals.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np

from steve1_env import precision
from steve1_env.agent.base import Goal
from steve1_env.prompt.base import PromptEncoder

GOAL_CACHE_SIZE = 1024
"""Instructions whose goals a `GoalEncoder` keeps (least recently used dropped first)."""


class GoalEncoder:
    """Computes each instruction's goal once per episode (once for good, for fixed encoders).

    Args:
        encoder: The prompt encoder.
        device: The encoder's torch device: autocast is disabled for its type around `encode`.
        cache_size: Instructions kept.
    """

    def __init__(
        self, encoder: PromptEncoder, device: Any = "cpu", cache_size: int = GOAL_CACHE_SIZE
    ) -> None:
        self.encoder = encoder
        self.device = device
        self.cache_size = cache_size
        self._goals: OrderedDict[str, Goal] = OrderedDict()
        self._pinned: dict[str, Goal] = {}

    @property
    def varies_per_episode(self) -> bool:
        """True when the encoder draws new embeddings for every episode."""
        return bool(getattr(self.encoder, "varies_per_episode", False))

    def pin(self, goal: Goal) -> None:
        """Makes `goal` its instruction's goal until the next `start_episode` (a visual goal)."""
        self._pinned[goal.instruction] = goal

    def start_episode(self, seed: int) -> None:
        """Gives the encoder this episode's seed; a varying encoder's goals are recomputed.

        Goals pinned for the previous episode are dropped.
        """
        self._pinned.clear()
        start = getattr(self.encoder, "start_episode", None)
        if start is None:
            return
        start(seed)
        if self.varies_per_episode:
            self._goals.clear()

    def goal(self, instruction: str) -> Goal:
        """Returns the goal of `instruction`, computing its embedding on first use."""
        pinned = self._pinned.get(instruction)
        if pinned is not None:
            return pinned
        cached = self._goals.get(instruction)
        if cached is not None:
            self._goals.move_to_end(instruction)
            return cached
        with precision.autocast_disabled(self.device):
            raw = self.encoder.encode(instruction)
        goal = Goal(instruction, raw)  # converted once, to a read-only float32 array
        self._goals[instruction] = goal
        if len(self._goals) > self.cache_size:
            self._goals.popitem(last=False)
        return goal

    def embedding(self, instruction: str) -> np.ndarray:
        """Returns the float32 ``(512,)`` read-only goal embedding of `instruction`."""
        return self.goal(instruction).embedding
