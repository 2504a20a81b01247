"""A numpy renderer for the synthetic world's ``pov``: sky, ground, billboards, block in view.

It is a picture a learned policy can react to (sky when looking up, a tree trunk ahead, the
block under the crosshair cracking while it is attacked), not a Minecraft look-alike, and it is
cheap: one precomputed sky/ground column per frame plus a few rectangles.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from steve1_env.errors import ConfigurationError
from steve1_env.validation import frame_shape, real_number
from steve1_env.worlds.angles import wrap_degrees
from steve1_env.worlds.blocks import BLOCKS

SPRITE_RANGE = 24.0
"""Billboards farther than this many blocks are not drawn."""
PLANT_RANGE = 12.0
"""Plants (sprites shorter than a block) farther than this are not drawn."""
MAX_SPRITES = 48
"""At most this many billboards, the nearest, are drawn per frame."""
_COLORS = np.array([block.color for block in BLOCKS], dtype=np.uint8)

_SKY_TOP = np.array([70, 120, 230], dtype=np.float64)
_SKY_HORIZON = np.array([170, 205, 255], dtype=np.float64)
_GROUND_NEAR = np.array([70, 130, 40], dtype=np.float64)
_GROUND_HORIZON = np.array([120, 160, 90], dtype=np.float64)
_WATER_TINT = np.array([20, 40, 115], dtype=np.uint8)
"""Added to a third of each pixel's value under water."""


def _paint(frame: np.ndarray, r0: int, r1: int, c0: int, c1: int, color: np.ndarray) -> None:
    if r0 >= r1 or c0 >= c1:
        return
    if (r1 - r0) * (c1 - c0) < 4096:
        frame[r0:r1, c0:c1] = color
    else:  # one channel at a time: faster than broadcasting a 3-vector over a large region
        for channel in range(3):
            frame[r0:r1, c0:c1, channel] = color[channel]


SPRITE_FIELDS = ("x", "z", "base_y", "height", "width", "block_id", "canopy_id")
"""Columns of a sprite table: one row per billboard standing on the ground (a tree trunk, whose
canopy is drawn around its top when ``canopy_id >= 0``, or a plant). Positions are in blocks."""


def sprite_row(
    x: float,
    z: float,
    base_y: float,
    height: float,
    width: float,
    block_id: int,
    canopy_id: int = -1,
) -> list[float]:
    """Returns one sprite-table row (see `SPRITE_FIELDS`)."""
    return [x, z, base_y, height, width, float(block_id), float(canopy_id)]


class FrameRenderer:
    """Renders frames of one size.

    Args:
        shape: ``(height, width)`` of the frames in pixels.
        fov: Vertical field of view in degrees.
    """

    def __init__(self, shape: Sequence[int], fov: float = 70.0) -> None:
        self.height, self.width = frame_shape(shape, "pov_shape", minimum=16)
        fov = real_number(fov, "fov")
        if not 10.0 <= fov <= 150.0:
            raise ConfigurationError(f"fov must be in [10, 150] degrees, got {fov!r}.")
        self.fov = fov
        self.rows_per_degree = self.height / fov
        self.half_tan_h = math.tan(math.radians(fov / 2)) * self.width / self.height
        self.fov_h = math.degrees(2 * math.atan(self.half_tan_h))
        self._panorama = self._build_panorama()

    def _build_panorama(self) -> np.ndarray:
        # One column covering every elevation the camera can show, top (looking up) first.
        rows = round((180 + self.fov) * self.rows_per_degree) + self.height
        elevation = 90 + self.fov / 2 - np.arange(rows) / self.rows_per_degree
        sky = np.clip(elevation / 90.0, 0.0, 1.0)[:, None]
        ground = np.clip(-elevation / 90.0, 0.0, 1.0)[:, None] ** 0.5
        colors = np.where(
            elevation[:, None] >= 0,
            _SKY_HORIZON + (_SKY_TOP - _SKY_HORIZON) * sky,
            _GROUND_HORIZON + (_GROUND_NEAR - _GROUND_HORIZON) * ground,
        )
        # Stored at full width: a frame then starts as one contiguous copy.
        return np.ascontiguousarray(
            np.broadcast_to(colors.astype(np.uint8)[:, None, :], (rows, self.width, 3))
        )

    def _row(self, elevation: np.ndarray, view_up: float) -> np.ndarray:
        return self.height / 2 - (elevation - view_up) * self.rows_per_degree

    def render(
        self,
        eye: tuple[float, float, float],
        pitch: float,
        yaw: float,
        sprites: np.ndarray | None = None,
        target: tuple[int, float, float] | None = None,
        underwater: bool = False,
        gui_open: bool = False,
    ) -> np.ndarray:
        """Renders one frame.

        Args:
            eye: Eye position ``(x, y, z)``.
            pitch: Degrees, positive looking down.
            yaw: Degrees, 0 facing +z.
            sprites: Billboards to draw, a ``(n, 7)`` table (see `SPRITE_FIELDS`).
            target: ``(block_id, distance, break_fraction)`` of the block under the crosshair.
            underwater: Tint the frame blue.
            gui_open: Dim the frame and draw the inventory panel.

        Returns:
            A new ``(height, width, 3)`` uint8 RGB array.
        """
        h, w = self.height, self.width
        start = round((90 + self.fov / 2 + pitch) * self.rows_per_degree - h / 2)
        frame = self._panorama[start : start + h].copy()
        if sprites is not None and len(sprites):
            self._draw_sprites(frame, eye, -pitch, yaw, sprites)
        if target is not None:
            self._draw_target(frame, *target)
        cy, cx = h // 2, w // 2
        frame[cy - 1 : cy + 1, cx - 6 : cx + 6] = 255
        frame[cy - 6 : cy + 6, cx - 1 : cx + 1] = 255
        if underwater:
            frame //= 3
            frame += _WATER_TINT
        if gui_open:
            frame //= 2
            frame[h // 5 : h - h // 5, w // 4 : w - w // 4] = 198
        return frame

    def _draw_sprites(
        self,
        frame: np.ndarray,
        eye: tuple[float, float, float],
        view_up: float,
        yaw: float,
        sprites: np.ndarray,
    ) -> None:
        ex, ey, ez = eye
        dx, dz = sprites[:, 0] - ex, sprites[:, 1] - ez
        distance = np.hypot(dx, dz)
        relative = wrap_degrees(np.degrees(np.arctan2(-dx, dz)) - yaw)
        in_range = np.where(sprites[:, 3] < 1.0, PLANT_RANGE, SPRITE_RANGE)
        visible = np.nonzero(
            (distance > 0.4) & (distance < in_range) & (np.abs(relative) < self.fov_h / 2 + 15)
        )[0]
        nearest = visible[np.argsort(distance[visible], kind="stable")[:MAX_SPRITES]][::-1]
        if nearest.size == 0:
            return
        table, distance = sprites[nearest], distance[nearest]
        angle = np.radians(relative[nearest])
        # Depth along the view axis keeps sizes consistent across the screen.
        depth = np.maximum(distance * np.cos(angle), 0.3)
        px_per_unit = (self.width / 2) / self.half_tan_h
        centre = self.width / 2 + np.tan(angle) * px_per_unit
        half = np.maximum(table[:, 4] * px_per_unit / depth / 2, 0.5)
        base, top = table[:, 2], table[:, 2] + table[:, 3]
        trunk = self._rectangles(ey, view_up, distance, centre, half, base, top)
        canopy = self._rectangles(ey, view_up, distance, centre, half * 5, top - 3.0, top + 0.5)
        block_ids, canopy_ids = table[:, 5].astype(int), table[:, 6].astype(int)
        for i in range(len(table)):  # far to near, so near sprites cover far ones
            _paint(frame, *trunk[i], _COLORS[block_ids[i]])
            if canopy_ids[i] >= 0:
                _paint(frame, *canopy[i], _COLORS[canopy_ids[i]])

    def _rectangles(
        self,
        eye_y: float,
        view_up: float,
        distance: np.ndarray,
        centre: np.ndarray,
        half_width: np.ndarray,
        bottom_y: np.ndarray,
        top_y: np.ndarray,
    ) -> list[tuple[int, int, int, int]]:
        """Returns clipped pixel rectangles ``(r0, r1, c0, c1)`` of upright boxes."""
        top = self._row(np.degrees(np.arctan2(top_y - eye_y, distance)), view_up)
        bottom = self._row(np.degrees(np.arctan2(bottom_y - eye_y, distance)), view_up)
        rows0 = np.clip(top.astype(int), 0, self.height)
        rows1 = np.clip(np.ceil(bottom).astype(int), 0, self.height)
        cols0 = np.clip((centre - half_width).astype(int), 0, self.width)
        cols1 = np.clip(np.ceil(centre + half_width).astype(int), 0, self.width)
        return list(
            zip(rows0.tolist(), rows1.tolist(), cols0.tolist(), cols1.tolist(), strict=True)
        )

    def _draw_target(
        self, frame: np.ndarray, block_id: int, distance: float, broken: float
    ) -> None:
        h, w = self.height, self.width
        half = int(min(h, w) * 0.3 / max(distance, 0.6))
        color = (_COLORS[block_id] * (1.0 - 0.6 * broken)).astype(np.uint8)
        _paint(frame, h // 2 - half, h // 2 + half, w // 2 - half, w // 2 + half, color)
