"""The MineRL 1.0 action dict: its keys, a no-op, and validation into canonical form.

Pure functions only. The canonical form is what every world receives: all 24 keys present,
buttons as Python ints 0/1, ``camera`` as a float64 array ``[pitch, yaw]`` in degrees
(positive pitch looks down, positive yaw turns right).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

import numpy as np

from steve1_env.errors import InvalidActionError

AGENT_BUTTON_KEYS: tuple[str, ...] = (
    "attack", "back", "forward", "jump", "left", "right", "sneak", "sprint", "use", "drop",
    "inventory", "hotbar.1", "hotbar.2", "hotbar.3", "hotbar.4", "hotbar.5", "hotbar.6",
    "hotbar.7", "hotbar.8", "hotbar.9",
)  # fmt: skip
"""The 20 buttons STEVE-1 (VPT) can press, in the order of its button table."""

EXTRA_BUTTON_KEYS: tuple[str, ...] = ("ESC", "pickItem", "swapHands")
"""Buttons MineRL 1.0 expects that the agent never presses (always 0 from STEVE-1)."""

BUTTON_KEYS: tuple[str, ...] = AGENT_BUTTON_KEYS + EXTRA_BUTTON_KEYS
ACTION_KEYS: tuple[str, ...] = tuple(sorted((*BUTTON_KEYS, "camera")))
"""All 24 keys of a MineRL 1.0 action, sorted like MineRL's Dict space."""

CAMERA_LIMIT = 180.0


def noop_action() -> dict[str, Any]:
    """Returns a canonical action that does nothing."""
    action: dict[str, Any] = dict.fromkeys(BUTTON_KEYS, 0)
    action["camera"] = np.zeros(2, dtype=np.float64)
    return action


def _button_value(key: str, value: Any) -> int:
    array = np.asarray(value)
    if array.size != 1 or array.dtype.kind not in "biuf":
        raise InvalidActionError(
            f"Action key {key!r} must be 0 or 1 (a number, bool, or a one-element array), "
            f"got {value!r}."
        )
    number = array.reshape(()).item()
    if number not in (0, 1):
        raise InvalidActionError(f"Action key {key!r} must be 0 or 1, got {number!r}.")
    return int(number)


def _camera_value(value: Any) -> np.ndarray:
    try:
        camera = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise InvalidActionError(
            f"Action key 'camera' must be two numbers [pitch, yaw] in degrees, got {value!r}."
        ) from exc
    if camera.shape != (2,):
        raise InvalidActionError(
            "Action key 'camera' must hold exactly two numbers [pitch, yaw] in degrees "
            f"(shape (2,) or (1, 2)), got shape {np.shape(value)}."
        )
    if not np.isfinite(camera).all() or (np.abs(camera) > CAMERA_LIMIT).any():
        raise InvalidActionError(
            f"Action key 'camera' must be finite degrees within [-{CAMERA_LIMIT:g}, "
            f"{CAMERA_LIMIT:g}], got {camera.tolist()}."
        )
    return camera


def canonical_action(action: Mapping[str, Any]) -> dict[str, Any]:
    """Validates a MineRL action and returns it in canonical form.

    Missing keys mean "not pressed" (camera ``[0, 0]``). Values may be Python or numpy
    scalars or one-element arrays, as MineRL agents produce them (``array([1])``).

    Args:
        action: A mapping from MineRL action keys to values.

    Returns:
        A new dict with all 24 keys.

    Raises:
        InvalidActionError: On an unknown key (with close-name suggestions), a button value
            other than 0/1, or a camera that is not two finite numbers within +-180 degrees.
    """
    if not isinstance(action, Mapping):
        raise InvalidActionError(
            f"A low-level action must be a dict of MineRL keys, got {type(action).__name__}. "
            "Start from steve1_env.worlds.actions.noop_action()."
        )
    unknown = [key for key in action if key not in ACTION_KEYS]
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(str(key), ACTION_KEYS, n=1, cutoff=0.6)
            hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise InvalidActionError(
            f"Unknown MineRL action key(s): {', '.join(hints)}. Valid keys: "
            f"{', '.join(ACTION_KEYS)}."
        )
    canonical = noop_action()
    for key, value in action.items():
        if key == "camera":
            canonical["camera"] = _camera_value(value)
        else:
            canonical[key] = _button_value(key, value)
    return canonical
