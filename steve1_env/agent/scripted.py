"""A scripted oracle policy for the synthetic world.

It turns to the nearest matching block, walks there and attacks. It reads the world's block
grid directly (it is an oracle, not a learned policy), so demos and tests see real successes
offline. It understands the paper's skill kinds (see
`steve1_env.skill_kinds.skill_kind`) and stands still, with a warning, for anything else.

Given the unconditional baseline's zero goal (``goal.unconditional``), it has no instruction
to follow and wanders instead: it walks ahead at eye level, detouring round obstacles and
swinging at whatever is in front of it, a stand-in for an agent driven by no goal (the paper's
unconditional STEVE-1 roams and gathers a little), so a baseline differs from standing still.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from steve1_env.agent.base import Goal
from steve1_env.errors import ConfigurationError, warn_caller
from steve1_env.skill_kinds import skill_kind
from steve1_env.worlds.actions import noop_action
from steve1_env.worlds.angles import wrap_degrees
from steve1_env.worlds.blocks import BLOCK_ID
from steve1_env.worlds.synthetic import EYE_HEIGHT, SyntheticWorld

MAX_TURN = 10.0
"""Largest camera change per tick in degrees, the same as STEVE-1's camera bins allow."""
AIM_TOLERANCE = 6.0
ATTACK_RANGE = 2.8
"""Horizontal distance (blocks) from which the script attacks its target."""

_TARGETS: dict[str, tuple[str, ...]] = {
    "wood": ("oak_log", "birch_log"),
    "leaves": ("oak_leaves", "birch_leaves"),
    "seeds": ("grass",),
    "flower": ("dandelion", "poppy"),
    "swim": ("water",),
    "underwater": ("water",),
}


@dataclass
class ScriptState:
    """Per-env state of the scripted policy."""

    instruction: str = ""
    target: tuple[int, int, int] | None = None
    last_position: tuple[float, float] = (math.nan, math.nan)
    stuck_ticks: int = 0
    detour_ticks: int = 0
    inventory_pressed: bool = False
    rng: np.random.Generator = field(default_factory=np.random.default_rng)


def _turn_towards(current: float, wanted: float) -> float:
    return float(np.clip(wrap_degrees(wanted - current), -MAX_TURN, MAX_TURN))


class ScriptedPolicy:
    """An oracle for `SyntheticWorld` that solves the paper's tasks with hand-written rules.

    Args:
        world: The synthetic world it will act in (it reads the block grid).
        device: Accepted for interface compatibility; the script computes nothing on it.
    """

    def __init__(self, world: Any, device: Any = "cpu") -> None:
        if not isinstance(world, SyntheticWorld):
            raise ConfigurationError(
                "policy='scripted' is an oracle for the synthetic world and needs "
                f"world='synthetic', got a {type(world).__name__}. Choose another policy for "
                "other worlds (steve1_env.registry.POLICIES.names() lists them)."
            )
        self.world = world
        self.device = device
        self._warned: set[str] = set()

    def initial_state(self, seed: int) -> ScriptState:
        """Returns a fresh state; `seed` drives the random detours around obstacles."""
        return ScriptState(rng=np.random.default_rng(seed))

    def close(self) -> None:
        """Nothing to release."""

    def act(
        self, obs: Mapping[str, Any], goal: Goal, state: ScriptState
    ) -> tuple[dict[str, Any], ScriptState]:
        """Returns the next action towards `goal` and the updated state."""
        if goal.instruction != state.instruction:
            state.instruction, state.target = goal.instruction, None
            state.stuck_ticks = state.detour_ticks = 0
            state.inventory_pressed = False
        kind = skill_kind(goal.instruction)
        action = noop_action()
        location = obs["location_stats"]
        pitch = float(location["pitch"])
        if goal.unconditional:
            self._walk(action, obs, state, sprint=False, explore=True)
            action["attack"] = 1
        elif kind is None:
            if goal.instruction not in self._warned:
                self._warned.add(goal.instruction)
                warn_caller(
                    f"The scripted policy has no script for {goal.instruction!r}; it stands "
                    "still. Scripts exist for the paper's tasks (see steve1_env.skill_kinds).",
                )
        elif kind == "sky" and not location.get("can_see_sky", True):
            self._walk(action, obs, state, sprint=False, explore=True)  # out from under leaves
        elif kind == "sky":
            action["camera"] = np.array([_turn_towards(pitch, -90.0), 0.0])
        elif kind in ("dig", "dirt"):
            action["camera"] = np.array([_turn_towards(pitch, 90.0), 0.0])
            action["attack"] = int(pitch > 80.0)
        elif kind == "inventory":
            if not obs.get("isGuiOpen", False) and not state.inventory_pressed:
                action["inventory"] = 1
            state.inventory_pressed = not state.inventory_pressed and action["inventory"] == 1
        elif kind == "explore":
            self._walk(action, obs, state, sprint=True, explore=True)
        else:
            self._pursue(kind, action, obs, state)
        return action, state

    def _pursue(
        self, kind: str, action: dict[str, Any], obs: Mapping[str, Any], state: ScriptState
    ) -> None:
        location = obs["location_stats"]
        x, y, z = float(location["xpos"]), float(location["ypos"]), float(location["zpos"])
        pitch, yaw = float(location["pitch"]), float(location["yaw"])
        names = _TARGETS[kind]
        if kind in ("swim", "underwater") and location.get("is_in_water", False):
            # In the water: stay afloat to swim, sink (and look down) to dive.
            action["jump"] = int(kind == "swim")
            action["camera"] = np.array(
                [_turn_towards(pitch, 45.0 if kind == "underwater" else 0), 0]
            )
            action["forward"] = int(kind == "swim")
            return
        if state.target is None or self.world.block_at(*state.target) not in _ids(names):
            state.target = self._choose_target(names, y)
            if state.target is None:
                self._walk(action, obs, state, sprint=False, explore=True)
                return
        tx, ty, tz = state.target
        centre = np.array([tx + 0.5, ty + 0.5, tz + 0.5])
        eye = np.array([x, y + EYE_HEIGHT, z])
        offset = centre - eye
        horizontal = math.hypot(offset[0], offset[2])
        wanted_yaw = math.degrees(math.atan2(-offset[0], offset[2]))
        wanted_pitch = -math.degrees(math.atan2(offset[1], horizontal))
        if names == ("water",):
            wanted_pitch = 20.0
        action["camera"] = np.array(
            [_turn_towards(pitch, wanted_pitch), _turn_towards(yaw, wanted_yaw)]
        )
        yaw_error = abs(wrap_degrees(wanted_yaw - yaw))
        if names != ("water",) and horizontal <= ATTACK_RANGE:
            aligned = yaw_error < AIM_TOLERANCE and abs(wanted_pitch - pitch) < AIM_TOLERANCE
            action["attack"] = int(aligned or self._looking_at(state.target))
            return
        if yaw_error < 30.0:
            self._walk(action, obs, state, sprint=False, explore=False)

    def _choose_target(self, names: tuple[str, ...], feet_y: float) -> tuple[int, int, int] | None:
        feet = math.floor(feet_y + 1e-6)
        # Water is entered from its surface; blocks to break must be within reach of the eyes.
        y_range = (feet - 1, feet) if names == ("water",) else (feet - 1, feet + 3)
        found = self.world.nearest_blocks(names, y_range=y_range)
        if len(found) == 0:
            return None
        if names != ("water",):
            # Prefer the lowest reachable block of the nearest column.
            nearest = found[0]
            same_column = found[(found[:, 0] == nearest[0]) & (found[:, 2] == nearest[2])]
            nearest = same_column[np.argmin(same_column[:, 1])]
            return int(nearest[0]), int(nearest[1]), int(nearest[2])
        return int(found[0][0]), int(found[0][1]), int(found[0][2])

    def _looking_at(self, cell: tuple[int, int, int]) -> bool:
        seen = self.world.target()
        return seen is not None and seen[0] == cell

    def _walk(
        self,
        action: dict[str, Any],
        obs: Mapping[str, Any],
        state: ScriptState,
        *,
        sprint: bool,
        explore: bool,
    ) -> None:
        location = obs["location_stats"]
        position = (float(location["xpos"]), float(location["zpos"]))
        # A NaN start position compares False, so the first tick never counts as stuck.
        stuck = math.dist(position, state.last_position) < 0.01
        state.last_position = position
        state.stuck_ticks = state.stuck_ticks + 1 if stuck else 0
        if state.stuck_ticks >= 3 and state.detour_ticks == 0:
            state.detour_ticks, state.stuck_ticks = int(state.rng.integers(6, 14)), 0
        action["forward"] = 1
        action["sprint"] = int(sprint)
        detour = state.detour_ticks > 0
        action["jump"] = action["right"] = int(detour)
        state.detour_ticks = max(state.detour_ticks - 1, 0)
        if explore:
            level = _turn_towards(float(location["pitch"]), 0.0)
            action["camera"] = np.array([level, MAX_TURN if detour else 0.0])


def _ids(names: tuple[str, ...]) -> set[int]:
    return {BLOCK_ID[name] for name in names}
