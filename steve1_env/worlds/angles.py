"""Minecraft angle conventions: yaw 0 faces +z, yaw 90 faces -x; pitch -90 looks straight up."""

from __future__ import annotations

import math
from typing import TypeVar

import numpy as np

AngleT = TypeVar("AngleT", float, np.ndarray)


def wrap_degrees(angle: AngleT) -> AngleT:
    """Wraps degrees into [-180, 180)."""
    return (angle + 180.0) % 360.0 - 180.0


def direction_from_angles(pitch: float, yaw: float) -> np.ndarray:
    """Returns the unit view vector ``(x, y, z)`` for a pitch and yaw in degrees."""
    p, y = math.radians(pitch), math.radians(yaw)
    return np.array([-math.sin(y) * math.cos(p), -math.sin(p), math.cos(y) * math.cos(p)])
