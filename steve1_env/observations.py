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
from steve1_env.world_state import as_count, world_state

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


MAX_COORDINATE = 30_000_000.0
"""Bound of each coordinate in the ``position`` vector: Minecraft's world border lies at
29,999,984 blocks."""

STATE_VECTORS: dict[str, tuple[tuple[str, float, float], ...]] = {
    "position": (
        ("x", -MAX_COORDINATE, MAX_COORDINATE),
        ("y", -MAX_COORDINATE, MAX_COORDINATE),
        ("z", -MAX_COORDINATE, MAX_COORDINATE),
        ("pitch", -90.0, 90.0),
        ("yaw", -180.0, 180.0),
    ),
    "life": (
        ("health", 0.0, 20.0),
        ("food", 0.0, 20.0),
        ("saturation", 0.0, 20.0),
        ("air", 0.0, 300.0),
    ),
}
"""The opt-in observation vectors (``obs_keys``): each entry's components in order, with their
bounds. Values come from `steve1_env.world_state.world_state` and are clipped to the bounds."""


def validate_obs_keys(obs_keys: Any) -> tuple[str, ...]:
    """Checks ``obs_keys``: a sequence of distinct names of `STATE_VECTORS`.

    Raises:
        ConfigurationError: If it is not such a sequence; the message names the valid keys.
    """
    valid = ", ".join(repr(key) for key in STATE_VECTORS)
    if isinstance(obs_keys, str):
        raise ConfigurationError(
            f"obs_keys must be a sequence of names such as ('position',), got the string "
            f"{obs_keys!r}; the keys are {valid}."
        )
    try:
        keys = tuple(obs_keys)
    except TypeError:
        raise ConfigurationError(
            f"obs_keys must be a sequence of names ({valid}), got {type(obs_keys).__name__}."
        ) from None
    unknown = [key for key in keys if not isinstance(key, str) or key not in STATE_VECTORS]
    if unknown:
        raise ConfigurationError(f"Unknown obs_keys {unknown!r}; the keys are {valid}.")
    if len(set(keys)) != len(keys):
        raise ConfigurationError(f"obs_keys has duplicates: {list(keys)!r}.")
    return keys


def observation_space(
    pov_shape: tuple[int, int], items: Sequence[str], obs_keys: Sequence[str] = ()
) -> spaces.Dict:
    """Returns the env's observation space: ``pov``, ``inventory``, ``goal`` and `obs_keys`.

    The goal's bounds are the finite float32 range: `precision.as_goal_embedding` rejects
    NaN and infinity. Each of `obs_keys` adds a float32 vector of `STATE_VECTORS`.
    """
    entries: dict[str, spaces.Space] = {
        "pov": spaces.Box(0, 255, (*pov_shape, 3), dtype=np.uint8),
        "inventory": spaces.Box(0.0, MAX_ITEM_COUNT, (len(items),), dtype=np.float32),
        "goal": spaces.Box(-_FLOAT32_MAX, _FLOAT32_MAX, (GOAL_DIM,), dtype=np.float32),
    }
    for key in obs_keys:
        components = STATE_VECTORS[key]
        low = np.array([c[1] for c in components], dtype=np.float32)
        high = np.array([c[2] for c in components], dtype=np.float32)
        entries[key] = spaces.Box(low, high, dtype=np.float32)
    return spaces.Dict(entries)


def state_vector(state: Mapping[str, Any], key: str) -> np.ndarray:
    """Returns the `STATE_VECTORS` vector `key` of a world state, clipped to its bounds.

    Args:
        state: What `steve1_env.world_state.world_state` returns.
        key: ``"position"`` (x, y, z, pitch, yaw) or ``"life"`` (health, food, saturation,
            air).

    Raises:
        InvalidObservationError: If the state lacks a component (the world does not report
            it, or reported an unusable value); the message names what is missing.
    """
    components = STATE_VECTORS[key]
    position = state.get("position")
    values = {
        "x": position[0] if position else None,
        "y": position[1] if position else None,
        "z": position[2] if position else None,
        **{name: state.get(name) for name, _, _ in components if name not in ("x", "y", "z")},
    }
    missing = [name for name, _, _ in components if values[name] is None]
    if missing:
        raise InvalidObservationError(
            f"obs_keys asks for {key!r} ({', '.join(c[0] for c in components)}), but this "
            f"world's observation lacks {', '.join(missing)} (it reports: "
            f"{', '.join(sorted(state)) or 'no state'}). Drop {key!r} from obs_keys, or use a "
            "world that reports location_stats (xpos, ypos, zpos, pitch, yaw) and life_stats "
            "(life, food, saturation, air) as MineRL does."
        )
    vector = np.array([values[name] for name, _, _ in components], dtype=np.float64)
    low = np.array([c[1] for c in components])
    high = np.array([c[2] for c in components])
    return np.clip(vector, low, high).astype(np.float32)


def inventory_vector(inventory: Mapping[str, Any], items: Sequence[str]) -> np.ndarray:
    """Returns the counts of `items` (0 when absent) as a float32 vector."""
    return np.array([float(inventory.get(item, 0)) for item in items], dtype=np.float32)


def inventory_counts(inventory: Mapping[str, Any]) -> dict[str, int]:
    """Returns the positive inventory entries as plain ``{name: int}``.

    A count that is not a finite number (`steve1_env.world_state.as_count`) is left out.
    """
    counts = {name: as_count(count) for name, count in inventory.items()}
    return {name: count for name, count in counts.items() if count is not None and count > 0}


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
    obs_keys: Sequence[str] = (),
) -> dict[str, np.ndarray]:
    """Builds the env observation from a world observation and the current goal embedding.

    Raises:
        InvalidObservationError: If the frame is unusable, or the world does not report what
            one of `obs_keys` needs (see `state_vector`).
    """
    observation = {
        "pov": resize_frame(world_frame(world_obs), pov_shape),
        "inventory": inventory_vector(world_obs.get("inventory", {}), items),
        "goal": np.array(goal, dtype=np.float32),
    }
    if obs_keys:
        state = world_state(world_obs)
        for key in obs_keys:
            observation[key] = state_vector(state, key)
    return observation
