"""Pure conversions from a world observation to the env's flat, SB3-friendly observation."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from gymnasium import spaces

from steve1_env.agent.conversion import resize_frame
from steve1_env.errors import ConfigurationError, InvalidObservationError
from steve1_env.precision import GOAL_DIM
from steve1_env.validation import string_list

DEFAULT_INVENTORY_ITEMS: tuple[str, ...] = (
    "oak_log", "birch_log", "spruce_log", "dirt", "cobblestone", "wheat_seeds", "dandelion",
    "poppy", "oak_sapling", "birch_sapling", "oak_planks", "stick",
)  # fmt: skip
"""Items counted in the observation's ``inventory`` vector unless the env is told otherwise."""


def validate_items(items: Sequence[str]) -> tuple[str, ...]:
    """Checks an inventory item list: non-empty, unique, non-empty strings."""
    result = tuple(string_list(items, "inventory_items"))
    if not all(result):
        raise ConfigurationError(f"inventory_items must not hold empty names, got {items!r}.")
    if len(set(result)) != len(result):
        raise ConfigurationError(f"inventory_items has duplicates: {items!r}.")
    return result


MAX_ITEM_COUNT = 36 * 64
"""A Minecraft inventory holds at most 36 stacks of 64."""
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def observation_space(pov_shape: tuple[int, int], items: Sequence[str]) -> spaces.Dict:
    """Returns the env's observation space: ``pov``, ``inventory`` and ``goal``.

    The goal's bounds are the finite float32 range: `precision.as_goal_embedding` rejects
    NaN and infinity.
    """
    return spaces.Dict(
        {
            "pov": spaces.Box(0, 255, (*pov_shape, 3), dtype=np.uint8),
            "inventory": spaces.Box(0.0, MAX_ITEM_COUNT, (len(items),), dtype=np.float32),
            "goal": spaces.Box(-_FLOAT32_MAX, _FLOAT32_MAX, (GOAL_DIM,), dtype=np.float32),
        }
    )


def inventory_vector(inventory: Mapping[str, Any], items: Sequence[str]) -> np.ndarray:
    """Returns the counts of `items` (0 when absent) as a float32 vector."""
    return np.array([float(inventory.get(item, 0)) for item in items], dtype=np.float32)


def inventory_counts(inventory: Mapping[str, Any]) -> dict[str, int]:
    """Returns the non-zero inventory entries as plain ``{name: int}``."""
    return {name: int(count) for name, count in inventory.items() if int(count) > 0}


def world_frame(world_obs: Mapping[str, Any]) -> np.ndarray:
    """Returns the world observation's ``pov``, checked to be an ``(H, W, 3)`` uint8 RGB frame.

    Raises:
        InvalidObservationError: If ``pov`` is missing or not such a frame; the message names
            what came instead.
    """
    if "pov" not in world_obs:
        raise InvalidObservationError(
            f"The world's observation has no 'pov' frame (keys: {', '.join(sorted(world_obs))}). "
            "A World must return MineRL-shaped observations."
        )
    frame = np.asarray(world_obs["pov"])
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise InvalidObservationError(
            f"The world's 'pov' must be an (H, W, 3) uint8 RGB frame, got shape {frame.shape} "
            f"dtype {frame.dtype}. Convert it in the World (e.g. (frame * 255).astype(np.uint8))."
        )
    return frame


def env_observation(
    world_obs: Mapping[str, Any],
    goal: np.ndarray,
    pov_shape: tuple[int, int],
    items: Sequence[str],
) -> dict[str, np.ndarray]:
    """Builds the env observation from a world observation and the current goal embedding."""
    return {
        "pov": resize_frame(world_frame(world_obs), pov_shape),
        "inventory": inventory_vector(world_obs.get("inventory", {}), items),
        "goal": np.array(goal, dtype=np.float32),
    }
