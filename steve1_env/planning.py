"""Text for planners: what a language model reads about the player after each skill attempt.

`planner_text` renders an env's info dict (``info["state"]``, ``info["inventory"]`` and the
last outcome) as a few short lines, the same for the same info, and bounded in length whatever
the world reports: long lists end in "... and N more", long names are cut.

Example:
    >>> _, info = env.reset(options={"instruction": "chop a tree"})
    >>> _, _, _, _, info = env.step("chop a tree")
    >>> print(planner_text(info))  # the synthetic world, seed 0 (long lines shortened here)
    Position: x=15.2 y=64.0 z=16.9, facing west (yaw 77.1), pitch 22.3 (ahead); biome ...
    Health 20.0/20, food 20/20, saturation 5.0, air 300/300.
    Holding: nothing.
    Inventory: oak_log=1.
    Last instruction: 'chop a tree' succeeded after 27 ticks (detector: wood); this ...
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from steve1_env.world_state import as_number

MAX_ITEMS = 12
"""Items listed per list (inventory, gains) before "... and N more"."""
MAX_NAME = 40
"""Characters kept of an item, biome or detector name."""
MAX_INSTRUCTION = 80
"""Characters kept of the instruction."""
MAX_ERROR = 120
"""Characters kept of a crash's message."""

_GAINS = (
    ("inventory", "this attempt gained"),
    ("mine_block", "mined"),
    ("craft_item", "crafted"),
    ("kill_entity", "killed"),
)
"""The ``attempt_delta`` sections shown, with their words (pickups repeat the inventory)."""


def _cut(text: Any, limit: int) -> str:
    text = str(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


MAX_PLAIN = 1e12
"""Numbers this large or larger are shown in scientific notation, so every line stays short."""


def _number(value: float) -> str:
    if abs(value) >= MAX_PLAIN:
        return f"{value:.3g}"
    return str(int(value)) if value.is_integer() else f"{value:.1f}"


def _decimal(value: float) -> str:
    # One decimal, as positions and health are shown, unless the value is absurdly large.
    return f"{value:.3g}" if abs(value) >= MAX_PLAIN else f"{value:.1f}"


def _facing(yaw: float) -> str:
    # Minecraft: yaw 0 faces +z (south), 90 faces -x (west), 180 faces -z (north).
    directions = ("south", "west", "north", "east")
    return directions[int(((yaw + 45.0) % 360.0) // 90.0)]


def _looking(pitch: float) -> str:
    if pitch <= -60.0:
        return "up"
    if pitch >= 60.0:
        return "down"
    return "ahead"


def _counts(counts: Mapping[str, Any], max_items: int, sign: str = "=") -> str:
    # Largest first, then by name: the same text for the same counts.
    entries = []
    for name, value in counts.items():
        number = as_number(value)
        if number is not None and number > 0:
            entries.append((-number, _cut(name, MAX_NAME)))
    entries.sort()
    shown = ", ".join(f"{name}{sign}{_number(-negative)}" for negative, name in entries[:max_items])
    rest = len(entries) - max_items
    return f"{shown} ... and {rest} more" if rest > 0 else shown


def _where(state: Mapping[str, Any]) -> str:
    parts = []
    position = state.get("position")
    if isinstance(position, list | tuple) and len(position) == 3:
        coordinates = [as_number(v) for v in position]
        shown = [_decimal(c) for c in coordinates if c is not None]
        if len(shown) == 3:
            parts.append("x={} y={} z={}".format(*shown))
    yaw, pitch = as_number(state.get("yaw")), as_number(state.get("pitch"))
    if yaw is not None:
        parts.append(f"facing {_facing(yaw)} (yaw {_decimal(yaw)})")
    if pitch is not None:
        parts.append(f"pitch {_decimal(pitch)} ({_looking(pitch)})")
    text = "Position: " + (", ".join(parts) if parts else "unknown")
    if isinstance(state.get("biome"), str):
        text += f"; biome {_cut(state['biome'], MAX_NAME)}"
    if state.get("can_see_sky") is True:
        text += "; under the sky"
    elif state.get("can_see_sky") is False:
        text += "; no sky above"
    if state.get("is_in_water") is True:
        text += "; in water"
    return text + "."


def _vitals(state: Mapping[str, Any]) -> str | None:
    parts = []
    for key, label, full in (
        ("health", "Health", "/20"),
        ("food", "food", "/20"),
        ("saturation", "saturation", ""),
        ("air", "air", "/300"),
    ):
        value = as_number(state.get(key))
        if value is not None:
            shown = _decimal(value) if key in ("health", "saturation") else _number(value)
            parts.append(f"{label} {shown}{full}")
    if not parts:
        return None
    text = ", ".join(parts)
    return text[0].upper() + text[1:] + "."


def _outcome(info: Mapping[str, Any], delta: Mapping[str, Any], max_items: int) -> str:
    instruction = info.get("instruction")
    if not isinstance(instruction, str):
        return "No instruction yet."
    quoted = repr(_cut(instruction, MAX_INSTRUCTION))
    reason = info.get("reason")
    if reason is None:
        return f"Pursuing: {quoted} (no step taken yet)."
    steps = as_number(info.get("steps"))
    ticks = "" if steps is None else f" after {_number(steps)} ticks"
    if reason == "success":
        detector = info.get("detector")
        named = f" (detector: {_cut(detector, MAX_NAME)})" if isinstance(detector, str) else ""
        text = f"Last instruction: {quoted} succeeded{ticks}{named}"
    else:
        why = _cut(reason, MAX_NAME)
        if reason == "crash" and isinstance(info.get("error"), str):
            why += f": {_cut(info['error'], MAX_ERROR)}"
        text = f"Last instruction: {quoted} did not succeed ({why}){ticks}"
    gains = [
        f"{words} {_counts(_mapping(delta.get(section)), max_items, sign=' +')}"
        for section, words in _GAINS
        if _counts(_mapping(delta.get(section)), max_items)
    ]
    return text + ("; " + "; ".join(gains) if gains else "; nothing gained this attempt") + "."


def planner_text(info: Mapping[str, Any], *, max_items: int = MAX_ITEMS) -> str:
    """Renders an info dict as the short text a language model reads.

    The lines: where the player is and faces (and the biome, the sky, water), its health, food
    and air, what it holds, the inventory, and what the last instruction did (succeeded or why
    not, after how many ticks, which detector fired, what the attempt gained). A line whose
    facts the info lacks is left out or says "unknown"; nothing is invented.

    Args:
        info: What the env's `reset` or `step` returned, or a dict of its parts
            (``state``, ``inventory``, ``instruction``, ``reason``, ``steps``, ``detector``,
            ``error``); parts of the wrong type are ignored.
        max_items: Items listed per list before "... and N more".

    Returns:
        Lines joined by newlines, without a trailing newline.
    """
    state = _mapping(info.get("state"))
    lines = [_where(state)]
    vitals = _vitals(state)
    if vitals is not None:
        lines.append(vitals)
    held = state.get("equipped")
    if isinstance(held, str):
        lines.append("Holding: nothing." if held == "air" else f"Holding: {_cut(held, MAX_NAME)}.")
    inventory = _counts(_mapping(info.get("inventory")), max_items)
    lines.append(f"Inventory: {inventory or 'empty'}.")
    lines.append(_outcome(info, _mapping(state.get("attempt_delta")), max_items))
    return "\n".join(lines)
