"""`MineStudioWorld`: MineStudio's ``MinecraftSim`` behind the `World` protocol.

MineStudio is gymnasium-style with its own quirks, absorbed here:

- ``reset()`` takes no seed: the seed is a constructor argument, so a reset with a new seed
  builds a new simulator;
- ``step`` mutates the action dict it is given: each action is copied first;
- ``terminated`` and ``truncated`` are the same flag: either ends the world episode;
- the observation's frame is ``image``; MineRL-style statistics come in ``info``, where the
  position and orientation are ``player_pos`` (``x y z pitch yaw``), health and food are
  ``health`` and ``food_level`` (its ``HumanSurvival`` drops MineRL's ``life_stats``: no air or
  saturation) and the GUI flag is ``is_gui_open``. `minestudio_observation` puts them where
  MineRL has them (``location_stats``, ``life_stats``, ``isGuiOpen``).

Install: ``pip install "steve1-env[minestudio]"`` (from a clone: ``pip install -e
".[minestudio]"``). MineStudio downloads its Minecraft engine at
first use and asks for confirmation on the terminal: run it once interactively.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from steve1_env.errors import ClosedError, ResetNeededError, WorldCrashError
from steve1_env.optional import import_optional, require_installed
from steve1_env.worlds.actions import canonical_action
from steve1_env.worlds.base import WorldObs, WorldStep, WorldTimeouts
from steve1_env.worlds.minerl import minerl_observation

_log = logging.getLogger(__name__)

_STATISTICS = (
    "inventory", "equipped_items", "mine_block", "pickup", "craft_item", "use_item",
    "break_item", "drop", "kill_entity", "damage_dealt", "isGuiOpen",
)  # fmt: skip
"""Keys of MineStudio's ``info`` taken as they are (MineRL's names and formats)."""

_PLAYER_POS = {"x": "xpos", "y": "ypos", "z": "zpos", "pitch": "pitch", "yaw": "yaw"}
"""MineStudio's ``player_pos`` keys and MineRL's ``location_stats`` names for them."""
_LIFE = {"health": "life", "food_level": "food"}
"""MineStudio's top-level ``info`` keys and MineRL's ``life_stats`` names for them."""


def _mapping(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}


_SETUP_HINT = (
    "MineStudio also downloads its Minecraft engine at first use (run it once by hand). To run "
    "without Minecraft, use world='synthetic'."
)


def make_minecraft_sim(seed: int, **kwargs: Any) -> Any:
    """Builds MineStudio's ``MinecraftSim`` with env-format actions."""
    simulator = import_optional(
        "minestudio.simulator", "minestudio", "world='minestudio'", _SETUP_HINT
    )
    settings = {"action_type": "env", "obs_size": (640, 360), "render_size": (640, 360)}
    return simulator.MinecraftSim(seed=seed, **{**settings, **kwargs})


def minestudio_observation(obs: Mapping[str, Any], info: Mapping[str, Any]) -> WorldObs:
    """Merges MineStudio's ``image`` and the MineRL-style statistics in ``info``.

    ``player_pos`` becomes ``location_stats`` (``xpos ypos zpos pitch yaw``, over whatever
    ``location_stats`` MineRL's monitor put in ``info``); ``health`` and ``food_level`` become
    ``life_stats.life`` and ``life_stats.food``; ``is_gui_open`` becomes ``isGuiOpen``. What
    MineStudio does not report stays absent.
    """
    merged: dict[str, Any] = {key: info[key] for key in _STATISTICS if key in info}
    location = _mapping(info.get("location_stats"))
    position = _mapping(info.get("player_pos"))
    location.update(
        {ours: position[theirs] for theirs, ours in _PLAYER_POS.items() if theirs in position}
    )
    if location:
        merged["location_stats"] = location
    life = _mapping(info.get("life_stats"))
    life.update({ours: info[theirs] for theirs, ours in _LIFE.items() if theirs in info})
    if life:
        merged["life_stats"] = life
    if "isGuiOpen" not in merged and "is_gui_open" in info:
        merged["isGuiOpen"] = info["is_gui_open"]
    merged["pov"] = obs["image"] if "image" in obs else obs.get("pov", info.get("pov"))
    if merged["pov"] is None:
        raise WorldCrashError("MineStudio returned an observation without a frame ('image').")
    return minerl_observation(merged)


class MineStudioWorld:
    """MineStudio's simulator as a `World`.

    Args:
        sim_factory: Builds a simulator for a seed (default: `make_minecraft_sim`).
        sim_kwargs: Passed to the factory (``obs_size``, ``preferred_spawn_biome``, ...).
    """

    timeouts = WorldTimeouts(step_s=120.0, reset_s=1800.0)
    """Minecraft's limits (a new seed is a new launch), read by a `WorldProcess` running it."""

    def __init__(self, sim_factory: Callable[..., Any] | None = None, **sim_kwargs: Any) -> None:
        self._factory = sim_factory or make_minecraft_sim
        self._kwargs = sim_kwargs
        self._sim: Any = None
        self._seed: int | None = None
        self._done = True
        self._closed = False

    @staticmethod
    def check_backend(arguments: Mapping[str, Any]) -> None:
        """Raises `DependencyNotInstalledError` if MineStudio is missing where it will be needed.

        Called before a run starts (nothing is imported); a custom ``sim_factory`` needs no
        MineStudio.
        """
        if arguments.get("sim_factory") is None:
            require_installed("minestudio", "minestudio", "world='minestudio'", _SETUP_HINT)

    def reset(self, seed: int | None = None) -> WorldObs:
        """Starts an episode; a seed other than the current one builds a new simulator."""
        if self._closed:
            raise ClosedError("This MineStudioWorld was closed; create a new one.")
        if seed is not None:
            wanted = int(seed)
        elif self._sim is not None and self._seed is not None:
            wanted = self._seed  # no seed asked for: keep the current simulator
        else:
            wanted = int(np.random.default_rng().integers(2**31))
        try:
            if self._sim is None or wanted != self._seed:
                # A new seed means a new simulator (a new Minecraft launch): its cost is that.
                self._close_sim()
                _log.info("MineStudio: launching a simulator for seed %d", wanted)
                self._sim = self._factory(seed=wanted, **self._kwargs)
                self._seed = wanted
            obs, info = self._sim.reset()  # no seed argument: it was given at construction
        except Exception as exc:
            _log.warning("MineStudio: the simulator failed to reset (%s); closing it", exc)
            self._close_sim()
            raise WorldCrashError(
                f"MineStudio failed to reset: {type(exc).__name__}: {exc}"
            ) from exc
        self._done = False
        return minestudio_observation(obs, info)

    def step(self, action: Mapping[str, Any]) -> WorldStep:
        """Applies one action (copied: MineStudio mutates what it is given).

        Raises:
            WorldCrashError: If the simulator failed; it is closed and the next reset builds a
                new one.
            ResetNeededError: If the episode is over or never started.
        """
        if self._done or self._sim is None:
            raise ResetNeededError("The MineStudio episode is over (or never started); reset().")
        full = copy.deepcopy(canonical_action(action))
        full["camera"] = np.asarray(full["camera"], dtype=np.float64)
        try:
            obs, _reward, terminated, truncated, info = self._sim.step(full)
        except Exception as exc:
            _log.warning("MineStudio: the simulator failed to step (%s); closing it", exc)
            self._close_sim()
            self._done = True
            raise WorldCrashError(
                f"MineStudio failed to step: {type(exc).__name__}: {exc}"
            ) from exc
        self._done = bool(terminated) or bool(truncated)  # the same flag in MineStudio
        return WorldStep(minestudio_observation(obs, info), self._done, {})

    def close(self) -> None:
        """Closes the simulator; safe to call twice."""
        if not self._closed:
            self._closed = True
            self._close_sim()

    def _close_sim(self) -> None:
        sim, self._sim = self._sim, None
        if sim is not None:
            sim.close()
