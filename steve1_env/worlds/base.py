"""The `World` protocol: what the env needs from a low-level Minecraft world.

A world speaks MineRL 1.0's language: observations are dicts with ``pov`` (H, W, 3) uint8 RGB,
``inventory`` (item -> count), ``location_stats``, ``life_stats`` and counters such as
``mine_block``; actions are the 24-key MineRL action dict (see `steve1_env.worlds.actions`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple, Protocol, runtime_checkable

WorldObs = dict[str, Any]
"""A MineRL-shaped observation dict."""


class WorldStep(NamedTuple):
    """What one low-level world step returns.

    Attributes:
        obs: The observation after the action.
        done: The world's episode ended (death, time limit, crash).
        info: Extra information; a non-empty ``info["error"]`` marks a crash, and the
            observation that came with it must not be trusted.
    """

    obs: WorldObs
    done: bool
    info: dict[str, Any]


@runtime_checkable
class World(Protocol):
    """A low-level Minecraft world (synthetic, MineRL, MineStudio, ...)."""

    def reset(self, seed: int | None = None) -> WorldObs:
        """Starts a new world episode; `seed` is the world seed."""
        ...

    def step(self, action: Mapping[str, Any]) -> WorldStep:
        """Applies one 24-key MineRL action for one tick."""
        ...

    def close(self) -> None:
        """Releases the world's resources; safe to call twice."""
        ...
