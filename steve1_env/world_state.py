"""The world state a planner reads: a MineRL-shaped observation as plain, documented values.

`world_state` turns a world observation (the `World` protocol's MineRL 1.0 language, see
`steve1_env.worlds.base`) into ``info["state"]``: where the player is and faces, its health,
food and air, what it holds, the biome, and whether it is in water or under the sky. A key the
world does not report is absent, never invented. Every value is a plain Python type (JSON-ready).

Bad values never raise: a number that is missing, not a real number (a string, a list, a bool
where a number belongs) or not finite (NaN, infinity) leaves its key out; a flag must be a bool
or 0/1; a name must be a non-empty string of at most `MAX_NAME_LENGTH` characters.

`attempt_delta` compares two observations: what was gained during a skill attempt.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from numbers import Integral, Real
from typing import Any

from steve1_env.worlds.angles import wrap_degrees

MAX_NAME_LENGTH = 100
"""Longest item or biome name kept; a longer one is dropped (a world's garbage, not a name)."""

STATE_KEYS: tuple[str, ...] = (
    "position", "pitch", "yaw", "health", "food", "saturation", "air", "equipped",
    "biome_id", "biome", "is_in_water", "can_see_sky", "attempt_delta",
)  # fmt: skip
"""Every key ``info["state"]`` may hold; only ``attempt_delta`` is always there."""

COUNTERS: tuple[str, ...] = (
    "mine_block", "pickup", "craft_item", "use_item", "break_item", "drop", "kill_entity",
    "damage_dealt", "entity_killed_by",
)  # fmt: skip
"""MineRL 1.0's statistics counters (item or entity -> count) that `attempt_delta` compares."""

BIOMES: dict[int, str] = {
    0: "ocean", 1: "plains", 2: "desert", 3: "mountains", 4: "forest", 5: "taiga",
    6: "swamp", 7: "river", 8: "nether_wastes", 9: "the_end", 10: "frozen_ocean",
    11: "frozen_river", 12: "snowy_tundra", 13: "snowy_mountains", 14: "mushroom_fields",
    15: "mushroom_field_shore", 16: "beach", 17: "desert_hills", 18: "wooded_hills",
    19: "taiga_hills", 20: "mountain_edge", 21: "jungle", 22: "jungle_hills",
    23: "jungle_edge", 24: "deep_ocean", 25: "stone_shore", 26: "snowy_beach",
    27: "birch_forest", 28: "birch_forest_hills", 29: "dark_forest", 30: "snowy_taiga",
    31: "snowy_taiga_hills", 32: "giant_tree_taiga", 33: "giant_tree_taiga_hills",
    34: "wooded_mountains", 35: "savanna", 36: "savanna_plateau", 37: "badlands",
    38: "wooded_badlands_plateau", 39: "badlands_plateau", 40: "small_end_islands",
    41: "end_midlands", 42: "end_highlands", 43: "end_barrens", 44: "warm_ocean",
    45: "lukewarm_ocean", 46: "cold_ocean", 47: "deep_warm_ocean", 48: "deep_lukewarm_ocean",
    49: "deep_cold_ocean", 50: "deep_frozen_ocean", 127: "the_void", 129: "sunflower_plains",
    130: "desert_lakes", 131: "gravelly_mountains", 132: "flower_forest",
    133: "taiga_mountains", 134: "swamp_hills", 140: "ice_spikes", 149: "modified_jungle",
    151: "modified_jungle_edge", 155: "tall_birch_forest", 156: "tall_birch_hills",
    157: "dark_forest_hills", 158: "snowy_taiga_mountains", 160: "giant_spruce_taiga",
    161: "giant_spruce_taiga_hills", 162: "modified_gravelly_mountains",
    163: "shattered_savanna", 164: "shattered_savanna_plateau", 165: "eroded_badlands",
    166: "modified_wooded_badlands_plateau", 167: "modified_badlands_plateau",
    168: "bamboo_jungle", 169: "bamboo_jungle_hills", 170: "soul_sand_valley",
    171: "crimson_forest", 172: "warped_forest", 173: "basalt_deltas",
}  # fmt: skip
"""Minecraft 1.16's numeric biome ids (MineRL 1.0 and MineStudio run 1.16) and their names."""


def as_number(value: Any) -> float | None:
    """Returns `value` as a float if it is a finite real number, else None.

    Bools are flags, not numbers; numpy scalars are real numbers; NaN, infinity and an int
    too large for a float (``10**400``) are not.
    """
    if isinstance(value, bool) or not isinstance(value, Real):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def as_count(value: Any) -> int | None:
    """Returns a count as an int (a finite real number, rounded), or None for anything else.

    A world may report ``3.0`` or ``np.int64(3)`` for 3; a string, a bool, NaN or infinity is
    not a count.
    """
    number = as_number(value)
    return None if number is None else round(number)


def _flag(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, Integral) and int(value) in (0, 1):
        return bool(int(value))
    if hasattr(value, "dtype") and getattr(value, "shape", None) == () and value.dtype == bool:
        return bool(value)  # a numpy bool scalar or 0-d array
    return None


def _name(value: Any) -> str | None:
    if isinstance(value, str) and 0 < len(value) <= MAX_NAME_LENGTH:
        return value
    return None


def _section(obs: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    section = obs.get(key)
    return section if isinstance(section, Mapping) else {}


def world_state(obs: Mapping[str, Any]) -> dict[str, Any]:
    """Returns the state a MineRL-shaped world observation reports, without ``attempt_delta``.

    Keys (each present only when the observation reports it, with a usable value):

    - ``position``: ``[x, y, z]`` floats in blocks (``location_stats.xpos/ypos/zpos``; all three
      or none), ``y`` up.
    - ``pitch``, ``yaw``: floats in degrees (``location_stats``), Minecraft's convention: pitch
      -90 looks straight up, +90 down; yaw 0 faces +z (south), 90 faces -x (west); yaw is
      wrapped into [-180, 180).
    - ``health``: float, ``life_stats.life``, 0 to 20 half-hearts.
    - ``food``: int, ``life_stats.food``, 0 to 20. ``saturation``: float, ``life_stats.saturation``.
    - ``air``: int, ``life_stats.air``, in ticks; 300 is full.
    - ``equipped``: str, the main-hand item (``equipped_items.mainhand.type``); ``"air"`` is an
      empty hand.
    - ``biome_id``: int, ``location_stats.biome_id``; ``biome``: its Minecraft 1.16 name from
      `BIOMES` (absent for an id the table lacks).
    - ``is_in_water``, ``can_see_sky``: bools (``location_stats``).

    Args:
        obs: A world observation; anything not a mapping gives an empty state.
    """
    if not isinstance(obs, Mapping):
        return {}
    location = _section(obs, "location_stats")
    life = _section(obs, "life_stats")
    state: dict[str, Any] = {}
    position = [as_number(location.get(axis)) for axis in ("xpos", "ypos", "zpos")]
    if all(value is not None for value in position):
        state["position"] = position
    pitch, yaw = as_number(location.get("pitch")), as_number(location.get("yaw"))
    if pitch is not None:
        state["pitch"] = pitch
    if yaw is not None:
        state["yaw"] = float(wrap_degrees(yaw))
    for key, source, convert in (
        ("health", "life", as_number),
        ("food", "food", as_count),
        ("saturation", "saturation", as_number),
        ("air", "air", as_count),
    ):
        value = convert(life.get(source))
        if value is not None:
            state[key] = value
    mainhand = _section(_section(obs, "equipped_items"), "mainhand")
    equipped = _name(mainhand.get("type"))
    if equipped is not None:
        state["equipped"] = equipped
    biome_id = as_number(location.get("biome_id"))
    if biome_id is not None and biome_id.is_integer() and biome_id >= 0:
        state["biome_id"] = int(biome_id)
        if int(biome_id) in BIOMES:
            state["biome"] = BIOMES[int(biome_id)]
    for key in ("is_in_water", "can_see_sky"):
        flag = _flag(location.get(key))
        if flag is not None:
            state[key] = flag
    return state


def _gains(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, int]:
    gains: dict[str, int] = {}
    for name, value in after.items():
        start = before.get(name, 0)
        if type(value) is int and type(start) is int:
            # The common case, fast: MineRL reports every item (mostly 0) in every counter.
            gained = value - start
        else:
            now = as_count(value)
            gained = 0 if now is None else now - (as_count(start) or 0)
        if gained > 0 and isinstance(name, str) and _name(name) is not None:
            gains[name] = gained
    return dict(sorted(gains.items()))


def attempt_delta(start: Mapping[str, Any] | None, obs: Mapping[str, Any] | None) -> dict[str, Any]:
    """Returns what increased from `start` to `obs`: the inventory and each of `COUNTERS`.

    ``{"inventory": {"oak_log": 2}, "mine_block": {"oak_log": 2}, ...}``: for each section the
    items whose count rose, with the increase (an int), sorted by name; sections where nothing
    rose are left out, so ``{}`` means nothing was gained. Counts that fell (items used up) are
    not reported. Bad counts are skipped as `world_state` skips bad numbers.

    Args:
        start: The observation the attempt started from (None before any attempt: ``{}``).
        obs: The current observation.
    """
    if not isinstance(start, Mapping) or not isinstance(obs, Mapping):
        return {}
    delta: dict[str, Any] = {}
    for section in ("inventory", *COUNTERS):
        gains = _gains(_section(start, section), _section(obs, section))
        if gains:
            delta[section] = gains
    return delta
