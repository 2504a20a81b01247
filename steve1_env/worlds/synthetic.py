"""The synthetic world: a small, seeded, numpy-only stand-in for MineRL's HumanSurvival.

It exists so that everything runs offline (demos, CI, the quick start). It speaks MineRL's
observation and action formats and has just enough physics for the paper's programmatic tasks
to mean something: the camera turns, movement collides with trees, holding ``attack`` on the
block in view breaks it after a few ticks and adds its drop to the inventory, looking up shows
sky, attacking downward digs a hole the player falls into, water can be swum in and drowned in.

Coordinates follow Minecraft: ``y`` is up; yaw 0 faces +z and yaw 90 faces -x; pitch -90 looks
straight up and +90 straight down.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from steve1_env.errors import ClosedError, ConfigurationError, ResetNeededError
from steve1_env.validation import bounded_int, positive_int, real_number
from steve1_env.worlds.actions import canonical_action
from steve1_env.worlds.angles import direction_from_angles, wrap_degrees
from steve1_env.worlds.base import DEFAULT_WORLD_TIMEOUTS, WorldObs, WorldStep
from steve1_env.worlds.blocks import BLOCK_ID, BLOCKS, ITEMS
from steve1_env.worlds.render import FrameRenderer, sprite_row

Y_OFFSET = 48
"""Absolute y of voxel layer 0."""
HEIGHT = 32
SURFACE_Y = 63
"""Absolute y of the top grass layer; the player spawns standing on it at y=64."""
EYE_HEIGHT = 1.62
REACH = 4.5
MAX_AIR = 300
MAX_LIFE = 20.0
WALK_SPEED = 0.2
SPRINT_SPEED = 0.28
SNEAK_SPEED = 0.065
SWIM_SPEED = 0.1
FALL_SPEED = 0.5
SINK_SPEED = 0.05
MIN_SIZE = 16
"""Smallest world side in blocks."""
MAX_SIZE = 512
"""Largest world side in blocks: the voxels take ``size * size * 32`` bytes (8 MiB here) and
generating a world takes seconds at this size, growing with its area."""
POND_CLEARANCE = 8.0
"""Blocks kept between the spawn point and a pond's centre where the world is large enough."""

_SOLID = np.array([block.solid for block in BLOCKS])
_TARGETABLE = np.array([block.targetable for block in BLOCKS])
_RAY_STEPS = np.arange(0.05, REACH + 1e-9, 0.05)
_FLORA = ("grass", "dandelion", "poppy")
_COUNTERS = ("mine_block", "pickup", "craft_item", "use_item", "break_item", "drop", "kill_entity")


class SyntheticWorld:
    """A seeded voxel world with MineRL-shaped observations and the 24-key MineRL action.

    Args:
        size: Width and depth of the square world in blocks (`MIN_SIZE` to `MAX_SIZE`); the
            player spawns in the middle and is held inside by an invisible wall.
        pov_shape: ``(height, width)`` of the rendered ``pov``; MineRL's is ``(360, 640)``.
            Each side is 16 to `steve1_env.validation.MAX_FRAME_SIDE` pixels.
        fov: Vertical field of view in degrees (STEVE-1 uses 70).
        tree_density: Probability that a column grows a tree.
        max_steps: End the world episode (``done``) after this many ticks; None for never.
    """

    timeouts = DEFAULT_WORLD_TIMEOUTS
    """The generic limits: a tick renders in milliseconds, but a loaded machine may be slow."""

    def __init__(
        self,
        size: int = 96,
        pov_shape: Sequence[int] = (360, 640),
        fov: float = 70.0,
        tree_density: float = 0.03,
        max_steps: int | None = None,
    ) -> None:
        size = bounded_int(
            size, "size", MIN_SIZE, MAX_SIZE, limit_name="MIN_SIZE to MAX_SIZE", unit=" blocks"
        )
        tree_density = real_number(tree_density, "tree_density")
        if not 0.0 <= tree_density <= 0.2:
            raise ConfigurationError(f"tree_density must be in [0, 0.2], got {tree_density!r}.")
        self.size = size
        self.tree_density = tree_density
        self.max_steps = None if max_steps is None else positive_int(max_steps, "max_steps")
        self.renderer = FrameRenderer(pov_shape, fov)
        self.blocks = np.zeros((size, HEIGHT, size), dtype=np.uint8)
        self._rng = np.random.default_rng()
        self._sprites = np.zeros((0, 7))
        self._sprite_alive = np.zeros(0, dtype=bool)
        self._sprite_at: dict[tuple[int, int], int] = {}
        self._started = False
        self._closed = False

    # ------------------------------------------------------------------ episode
    def reset(self, seed: int | None = None) -> WorldObs:
        """Generates a new world from `seed` and places the player at the spawn point."""
        if self._closed:
            raise ClosedError("This SyntheticWorld was closed; create a new one.")
        self._rng = np.random.default_rng(seed)
        self._generate()
        centre = self.size // 2 + 0.5
        self.x, self.y, self.z = centre, float(SURFACE_Y + 1), centre
        self.pitch, self.yaw = 0.0, 0.0
        self.spawn = (self.x, self.y, self.z)
        self.life, self.air = MAX_LIFE, MAX_AIR
        self.gui_open = False
        self._inventory_was_pressed = False
        self._break_target: tuple[int, int, int] | None = None
        self._break_progress = 0
        self.ticks = 0
        self.inventory: dict[str, int] = dict.fromkeys(ITEMS, 0)
        self.counters: dict[str, dict[str, int]] = {name: {} for name in _COUNTERS}
        self._started = True
        return self._observe()

    def step(self, action: Mapping[str, Any]) -> WorldStep:
        """Applies one MineRL action for one tick (1/20 s of game time)."""
        if not self._started:
            raise ResetNeededError("Call reset() on the SyntheticWorld before step().")
        if self.life <= 0:
            raise ResetNeededError("The player is dead and the world episode is over; reset().")
        act = canonical_action(action)
        self._update_gui(act)
        if not self.gui_open:
            pitch_delta, yaw_delta = act["camera"]
            self.pitch = float(np.clip(self.pitch + pitch_delta, -90.0, 90.0))
            self.yaw = wrap_degrees(float(self.yaw + yaw_delta))
            self._move(act)
        self._apply_gravity(swim_up=bool(act["jump"]) and not self.gui_open)
        self._attack(bool(act["attack"]) and not self.gui_open)
        self._breathe()
        self.ticks += 1
        done = self.life <= 0 or (self.max_steps is not None and self.ticks >= self.max_steps)
        return WorldStep(self._observe(), done, {})

    def close(self) -> None:
        """Releases the world; safe to call twice."""
        self._closed = True
        self._started = False

    # ------------------------------------------------------------ generation
    def _generate(self) -> None:
        rng, size = self._rng, self.size
        blocks = self.blocks
        blocks[:] = BLOCK_ID["air"]
        ground = SURFACE_Y - Y_OFFSET
        blocks[:, : ground - 3, :] = BLOCK_ID["stone"]
        blocks[:, ground - 3 : ground, :] = BLOCK_ID["dirt"]
        blocks[:, ground, :] = BLOCK_ID["grass_block"]
        xs, zs = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
        centre = size // 2
        # Canopies reach two blocks out: keep them off the spawn point so the sky is visible.
        near_spawn = (np.abs(xs - centre) <= 3) & (np.abs(zs - centre) <= 3)
        water = np.zeros((size, size), dtype=bool)
        # Below 20 blocks no pond centre is POND_CLEARANCE away: ask for most of the farthest
        # corner's distance instead, so the draw below ends (larger worlds are unchanged).
        farthest = math.hypot(*[max(centre - 4, size - 5 - centre)] * 2)
        clearance = POND_CLEARANCE if farthest > POND_CLEARANCE else 0.9 * farthest
        for _ in range(max(1, size // 24)):
            while True:
                px, pz = rng.integers(4, size - 4, size=2)
                if math.hypot(px - centre, pz - centre) > clearance:
                    break
            radius = rng.uniform(2.0, 4.0)
            water |= (xs - px) ** 2 + (zs - pz) ** 2 <= radius**2
        for layer in range(ground - 2, ground + 1):
            blocks[:, layer, :][water] = BLOCK_ID["water"]
        free = ~water & ~near_spawn
        rows: list[list[float]] = []
        self._sprite_at = {}
        tree = free & (rng.random((size, size)) < self.tree_density)
        tree[:2, :] = tree[-2:, :] = tree[:, :2] = tree[:, -2:] = False
        for tx, tz in np.argwhere(tree):
            height = int(rng.integers(4, 7))
            birch = bool(rng.random() < 0.3)
            rows.append(self._grow_tree(int(tx), int(tz), height, birch))
        free &= blocks[:, ground + 1, :] == BLOCK_ID["air"]
        roll = rng.random((size, size))
        for name, low, high in (
            ("grass", 0.0, 0.12),
            ("dandelion", 0.12, 0.135),
            ("poppy", 0.135, 0.15),
        ):
            cells = free & (roll >= low) & (roll < high)
            blocks[:, ground + 1, :][cells] = BLOCK_ID[name]
            for fx, fz in np.argwhere(cells):
                self._sprite_at[(int(fx), int(fz))] = len(rows)
                rows.append(
                    sprite_row(fx + 0.5, fz + 0.5, SURFACE_Y + 1.0, 0.8, 0.5, BLOCK_ID[name])
                )
        self._sprites = np.array(rows, dtype=np.float64).reshape(-1, 7)
        self._sprite_alive = np.ones(len(rows), dtype=bool)

    def _grow_tree(self, tx: int, tz: int, height: int, birch: bool) -> list[float]:
        log = BLOCK_ID["birch_log" if birch else "oak_log"]
        leaves = BLOCK_ID["birch_leaves" if birch else "oak_leaves"]
        base = SURFACE_Y + 1 - Y_OFFSET
        top = base + height - 1
        canopy = self.blocks[tx - 2 : tx + 3, top - 1 : top + 1, tz - 2 : tz + 3]
        canopy[canopy == BLOCK_ID["air"]] = leaves
        crown = self.blocks[tx - 1 : tx + 2, top + 1 : top + 2, tz - 1 : tz + 2]
        crown[crown == BLOCK_ID["air"]] = leaves
        self.blocks[tx, base : top + 1, tz] = log
        return sprite_row(tx + 0.5, tz + 0.5, SURFACE_Y + 1.0, height + 1.0, 1.0, log, leaves)

    # --------------------------------------------------------------- physics
    def block_at(self, x: int, y: int, z: int) -> int:
        """Returns the block id at absolute block coordinates (air outside the world)."""
        iy = y - Y_OFFSET
        if 0 <= x < self.size and 0 <= iy < HEIGHT and 0 <= z < self.size:
            return int(self.blocks[x, iy, z])
        return BLOCK_ID["air"]

    def _solid(self, x: float, y: float, z: float) -> bool:
        return bool(_SOLID[self.block_at(math.floor(x), math.floor(y), math.floor(z))])

    def _blocked(self, x: float, z: float) -> bool:
        if not (0.3 <= x <= self.size - 0.3 and 0.3 <= z <= self.size - 0.3):
            return True
        return self._solid(x, self.y + 1e-6, z) or self._solid(x, self.y + 1.0, z)

    def _in_water(self) -> bool:
        return (
            self.block_at(math.floor(self.x), math.floor(self.y + 1e-6), math.floor(self.z))
            == (BLOCK_ID["water"])
        )

    def head_in_water(self) -> bool:
        """Returns True if the player's eyes are under water."""
        eye = math.floor(self.y + EYE_HEIGHT)
        return self.block_at(math.floor(self.x), eye, math.floor(self.z)) == BLOCK_ID["water"]

    def _ground_level(self) -> float:
        column = self.blocks[math.floor(self.x), :, math.floor(self.z)]
        below = math.floor(self.y + 1e-6) - Y_OFFSET
        solid = np.nonzero(_SOLID[column[: max(below, 0)]])[0]
        return float(solid[-1] + 1 + Y_OFFSET) if solid.size else float(Y_OFFSET)

    def _move(self, act: Mapping[str, Any]) -> None:
        forward = act["forward"] - act["back"]
        strafe = act["right"] - act["left"]
        if forward == 0 and strafe == 0:
            return
        if self._in_water():
            speed = SWIM_SPEED
        elif act["sneak"]:
            speed = SNEAK_SPEED
        elif act["sprint"] and forward > 0:
            speed = SPRINT_SPEED
        else:
            speed = WALK_SPEED
        yaw = math.radians(self.yaw)
        # Forward is (-sin yaw, cos yaw); right is forward turned 90 degrees clockwise from above.
        scale = speed / math.hypot(forward, strafe)
        dx = (-math.sin(yaw) * forward - math.cos(yaw) * strafe) * scale
        dz = (math.cos(yaw) * forward - math.sin(yaw) * strafe) * scale
        on_ground = self.y <= self._ground_level() + 1e-6 or self._in_water()
        # One axis at a time, so the player slides along a wall instead of sticking to it.
        for axis_dx, axis_dz in ((dx, 0.0), (0.0, dz)):
            nx, nz = self.x + axis_dx, self.z + axis_dz
            if not self._blocked(nx, nz):
                self.x, self.z = nx, nz
            elif act["jump"] and on_ground and self._can_step_up(nx, nz):
                self.x, self.z, self.y = nx, nz, math.floor(self.y + 1e-6) + 1.0

    def _can_step_up(self, x: float, z: float) -> bool:
        if not (0.3 <= x <= self.size - 0.3 and 0.3 <= z <= self.size - 0.3):
            return False
        step = math.floor(self.y + 1e-6)
        return (
            self._solid(x, step, z)
            and not self._solid(x, step + 1, z)
            and not self._solid(x, step + 2, z)
            and not self._solid(self.x, step + 2, self.z)
        )

    def _apply_gravity(self, swim_up: bool) -> None:
        ground = self._ground_level()
        if self._in_water():
            if swim_up:
                column_x, column_z = math.floor(self.x), math.floor(self.z)
                surface = math.floor(self.y + 1e-6)
                while self.block_at(column_x, surface + 1, column_z) == BLOCK_ID["water"]:
                    surface += 1
                self.y = min(self.y + SWIM_SPEED, surface + 0.6)
            else:
                self.y = max(ground, self.y - SINK_SPEED)
        elif self.y > ground:
            self.y = max(ground, self.y - FALL_SPEED)

    def target(self) -> tuple[tuple[int, int, int], float] | None:
        """Returns the block in view within reach and its distance, or None."""
        eye = np.array([self.x, self.y + EYE_HEIGHT, self.z])
        points = np.floor(eye + _RAY_STEPS[:, None] * direction_from_angles(self.pitch, self.yaw))
        cells = points.astype(np.int64)
        cells[:, 1] -= Y_OFFSET
        inside = (
            (cells >= 0).all(axis=1)
            & (cells[:, 0] < self.size)
            & (cells[:, 1] < HEIGHT)
            & (cells[:, 2] < self.size)
        )
        ids = np.zeros(len(cells), dtype=np.uint8)
        ids[inside] = self.blocks[cells[inside, 0], cells[inside, 1], cells[inside, 2]]
        hits = np.nonzero(_TARGETABLE[ids])[0]
        if hits.size == 0:
            return None
        cell = cells[hits[0]]
        return (int(cell[0]), int(cell[1]) + Y_OFFSET, int(cell[2])), float(_RAY_STEPS[hits[0]])

    def _attack(self, attacking: bool) -> None:
        seen = self.target() if attacking else None
        if seen is None:
            self._break_target, self._break_progress = None, 0
            return
        cell = seen[0]
        if cell != self._break_target:
            self._break_target, self._break_progress = cell, 0
        self._break_progress += 1
        block = BLOCKS[self.block_at(*cell)]
        if self._break_progress < block.break_ticks:
            return
        x, y, z = cell
        self.blocks[x, y - Y_OFFSET, z] = BLOCK_ID["air"]
        if block.name in _FLORA and (x, z) in self._sprite_at:
            self._sprite_alive[self._sprite_at.pop((x, z))] = False
        self._break_target, self._break_progress = None, 0
        mined = self.counters["mine_block"]
        mined[block.name] = mined.get(block.name, 0) + 1
        if block.drop is not None and self._rng.random() < block.drop_chance:
            self.inventory[block.drop] += 1
            picked = self.counters["pickup"]
            picked[block.drop] = picked.get(block.drop, 0) + 1

    def _update_gui(self, act: Mapping[str, Any]) -> None:
        pressed = bool(act["inventory"])
        if pressed and not self._inventory_was_pressed:
            self.gui_open = not self.gui_open
        self._inventory_was_pressed = pressed
        if act["ESC"]:
            self.gui_open = False

    def _breathe(self) -> None:
        if self.head_in_water():
            self.air = max(0, self.air - 1)
            if self.air == 0 and self.ticks % 20 == 0:
                self.life = max(0.0, self.life - 2.0)
        else:
            self.air = min(MAX_AIR, self.air + 5)

    # ----------------------------------------------------------- observation
    def can_see_sky(self) -> bool:
        """Returns True if no solid block is above the player's head."""
        column = self.blocks[math.floor(self.x), :, math.floor(self.z)]
        head = math.floor(self.y + EYE_HEIGHT) - Y_OFFSET + 1
        return not _SOLID[column[max(head, 0) :]].any()

    def nearest_blocks(
        self, names: Sequence[str], *, y_range: tuple[int, int] | None = None
    ) -> np.ndarray:
        """Returns absolute coordinates of blocks named `names`, nearest to the player first.

        Args:
            names: Block names to look for.
            y_range: Inclusive absolute y bounds; None for all heights.
        """
        ids = [BLOCK_ID[name] for name in names]
        low, high = y_range if y_range is not None else (Y_OFFSET, Y_OFFSET + HEIGHT - 1)
        layer = slice(max(low - Y_OFFSET, 0), min(high - Y_OFFSET, HEIGHT - 1) + 1)
        found = np.argwhere(np.isin(self.blocks[:, layer, :], ids))
        if found.size == 0:
            return np.zeros((0, 3), dtype=np.int64)
        found[:, 1] += layer.start + Y_OFFSET
        centres = found[:, [0, 2]] + 0.5
        distance = np.hypot(centres[:, 0] - self.x, centres[:, 1] - self.z)
        return found[np.argsort(distance, kind="stable")]

    def _observe(self) -> WorldObs:
        target = self.target()
        frame = self.renderer.render(
            eye=(self.x, self.y + EYE_HEIGHT, self.z),
            pitch=self.pitch,
            yaw=self.yaw,
            sprites=self._sprites[self._sprite_alive],
            target=None
            if target is None
            else (self.block_at(*target[0]), target[1], self._break_fraction(target[0])),
            underwater=self.head_in_water(),
            gui_open=self.gui_open,
        )
        return {
            "pov": frame,
            "inventory": dict(self.inventory),
            "equipped_items": {"mainhand": {"type": "air", "damage": 0, "maxDamage": 0}},
            "life_stats": {
                "life": self.life,
                "food": 20,
                "saturation": 5.0,
                "air": self.air,
                "is_alive": self.life > 0,
                "xp": 0,
                "score": 0,
            },
            "location_stats": {
                "xpos": self.x,
                "ypos": self.y,
                "zpos": self.z,
                "pitch": self.pitch,
                "yaw": self.yaw,
                "biome_id": 1,
                "can_see_sky": self.can_see_sky(),
                "light_level": 15,
                "sea_level": SURFACE_Y,
                "is_in_water": self._in_water(),
            },
            "isGuiOpen": self.gui_open,
            **{name: dict(counts) for name, counts in self.counters.items()},
        }

    def _break_fraction(self, cell: tuple[int, int, int]) -> float:
        if cell != self._break_target:
            return 0.0
        return self._break_progress / max(BLOCKS[self.block_at(*cell)].break_ticks, 1)
