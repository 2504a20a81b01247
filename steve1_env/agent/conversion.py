"""Pure conversions between MineRL's formats and the STEVE-1 (VPT) agent's.

- Observation: a MineRL ``pov`` frame -> the agent's 128x128 uint8 RGB input, resized with
  OpenCV's ``INTER_LINEAR`` exactly as the official agent does.
- Action: the agent's two indices (a joint button combination out of 8641 and a camera bin out
  of 121) <-> MineRL's action dict. Button combinations enumerate one choice per button group
  (``none`` or one of its buttons, the last group varying fastest) plus "inventory" alone; the
  camera is quantised per axis into 11 mu-law bins (bin size 2, max 10 degrees, mu 10).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from steve1_env.errors import InvalidActionError, InvalidObservationError
from steve1_env.worlds.actions import AGENT_BUTTON_KEYS, canonical_action, noop_action

AGENT_FRAME_SHAPE = (128, 128)
CAMERA_BINS = 11
CAMERA_BIN_SIZE = 2.0
CAMERA_MAX = 10.0
CAMERA_MU = 10.0
CAMERA_NULL_BIN = CAMERA_BINS // 2
NULL_CAMERA_INDEX = CAMERA_NULL_BIN * CAMERA_BINS + CAMERA_NULL_BIN
N_CAMERA_ACTIONS = CAMERA_BINS * CAMERA_BINS

BUTTON_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("hotbar", tuple(f"hotbar.{i}" for i in range(1, 10))),
    ("fore_back", ("forward", "back")),
    ("left_right", ("left", "right")),
    ("sprint_sneak", ("sprint", "sneak")),
    ("use", ("use",)),
    ("drop", ("drop",)),
    ("attack", ("attack",)),
    ("jump", ("jump",)),
    ("camera", ("camera",)),
)
"""Button groups of the joint button space, in enumeration order; each also has "none"."""

_BUTTON_COLUMN = {name: i for i, name in enumerate(AGENT_BUTTON_KEYS)}


def _build_button_table() -> tuple[np.ndarray, np.ndarray]:
    sizes = [len(options) + 1 for _, options in BUTTON_GROUPS]
    choices = np.indices(sizes).reshape(len(sizes), -1).T  # C order: the last group is fastest
    buttons = np.zeros((len(choices) + 1, len(AGENT_BUTTON_KEYS)), dtype=np.int8)
    camera_off = np.zeros(len(choices) + 1, dtype=bool)
    for group, (name, options) in enumerate(BUTTON_GROUPS):
        if name == "camera":
            camera_off[:-1] = choices[:, group] == 0
            continue
        for option, button in enumerate(options, start=1):
            buttons[:-1, _BUTTON_COLUMN[button]] |= (choices[:, group] == option).astype(np.int8)
    # The last combination is "inventory" alone; it leaves the camera on.
    buttons[-1, _BUTTON_COLUMN["inventory"]] = 1
    return buttons, camera_off


BUTTON_TABLE, CAMERA_OFF = _build_button_table()
"""``BUTTON_TABLE[i]``: the 20 button values (order `AGENT_BUTTON_KEYS`) of combination ``i``;
``CAMERA_OFF[i]``: combination ``i`` turns the camera off (its camera becomes ``[0, 0]``)."""
N_BUTTON_ACTIONS = len(BUTTON_TABLE)
INVENTORY_INDEX = N_BUTTON_ACTIONS - 1
for _table in (BUTTON_TABLE, CAMERA_OFF):
    _table.flags.writeable = False


def camera_bin_to_degrees(bins: np.ndarray) -> np.ndarray:
    """Returns the camera angle in degrees of mu-law bins ``0..10`` (element-wise)."""
    scaled = (np.asarray(bins, dtype=np.float64) * CAMERA_BIN_SIZE - CAMERA_MAX) / CAMERA_MAX
    # Evaluated in this order so the table is bit-identical to the official one.
    expanded = (1.0 + CAMERA_MU) ** np.abs(scaled) - 1.0
    return np.sign(scaled) * (1.0 / CAMERA_MU) * expanded * CAMERA_MAX


def camera_degrees_to_bin(degrees: np.ndarray) -> np.ndarray:
    """Returns the mu-law bin of camera angles in degrees (clipped to +-10; halves to even)."""
    scaled = np.clip(np.asarray(degrees, dtype=np.float64), -CAMERA_MAX, CAMERA_MAX) / CAMERA_MAX
    encoded = np.sign(scaled) * np.log1p(CAMERA_MU * np.abs(scaled)) / math.log1p(CAMERA_MU)
    return np.round((encoded * CAMERA_MAX + CAMERA_MAX) / CAMERA_BIN_SIZE).astype(np.int64)


CAMERA_TABLE = np.stack(
    [
        camera_bin_to_degrees(np.arange(N_CAMERA_ACTIONS) // CAMERA_BINS),
        camera_bin_to_degrees(np.arange(N_CAMERA_ACTIONS) % CAMERA_BINS),
    ],
    axis=1,
)
"""``CAMERA_TABLE[c]``: ``[pitch, yaw]`` in degrees of camera index ``c``."""
CAMERA_TABLE.flags.writeable = False


def agent_frame(pov: Any) -> np.ndarray:
    """Returns the agent's ``(128, 128, 3)`` uint8 input for a MineRL ``pov`` frame.

    Frames of another size are resized with OpenCV's ``INTER_LINEAR``, as the official agent
    does; a frame that already has the size is returned as is.

    Raises:
        InvalidObservationError: If `pov` is not an ``(H, W, 3)`` uint8 RGB frame.
    """
    frame = np.asarray(pov)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise InvalidObservationError(
            f"The agent needs an (H, W, 3) uint8 RGB 'pov', got shape {frame.shape} dtype "
            f"{frame.dtype}."
        )
    if frame.shape[:2] == AGENT_FRAME_SHAPE:
        return frame
    return resize_frame(frame, AGENT_FRAME_SHAPE)


def resize_frame(frame: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resizes an ``(H, W, 3)`` uint8 frame to ``shape`` with OpenCV's ``INTER_LINEAR``.

    Always returns a new array.

    Args:
        frame: The RGB frame.
        shape: ``(height, width)`` of the result.
    """
    if frame.shape[:2] == tuple(shape):
        return frame.copy()
    import cv2  # a core dependency, imported on first use: it is slow to import

    return cv2.resize(frame, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)


def agent_to_minerl(buttons: int, camera: int) -> dict[str, Any]:
    """Returns the canonical 24-key MineRL action for agent indices ``(buttons, camera)``.

    Raises:
        InvalidActionError: If an index is out of range.
    """
    if not 0 <= buttons < N_BUTTON_ACTIONS or not 0 <= camera < N_CAMERA_ACTIONS:
        raise InvalidActionError(
            f"Agent action indices must be buttons in [0, {N_BUTTON_ACTIONS}) and camera in "
            f"[0, {N_CAMERA_ACTIONS}), got ({buttons}, {camera})."
        )
    action = noop_action()
    for key, value in zip(AGENT_BUTTON_KEYS, BUTTON_TABLE[buttons], strict=True):
        action[key] = int(value)
    if not CAMERA_OFF[buttons]:
        action["camera"] = CAMERA_TABLE[camera].copy()
    return action


def minerl_to_agent(action: Mapping[str, Any]) -> tuple[int, int]:
    """Returns the agent indices ``(buttons, camera)`` closest to a MineRL action.

    Opposite buttons pressed together (forward and back, left and right) cancel; within a
    group the later button wins (sneak over sprint, hotbar.9 over hotbar.1); "inventory"
    overrides everything and nulls the camera. Camera angles are quantised to the nearest bin.
    """
    canonical = canonical_action(action)
    if canonical["inventory"]:
        return INVENTORY_INDEX, NULL_CAMERA_INDEX
    pitch_bin, yaw_bin = camera_degrees_to_bin(canonical["camera"])
    camera_on = not (pitch_bin == CAMERA_NULL_BIN and yaw_bin == CAMERA_NULL_BIN)
    index = 0
    for name, options in BUTTON_GROUPS:
        if name == "camera":
            choice = int(camera_on)
        else:
            pressed = [i for i, button in enumerate(options, start=1) if canonical[button]]
            cancel = name in ("fore_back", "left_right") and len(pressed) == 2
            choice = 0 if cancel or not pressed else pressed[-1]
        index = index * (len(options) + 1) + choice
    return index, int(pitch_bin) * CAMERA_BINS + int(yaw_bin)
