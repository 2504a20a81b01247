"""Success detectors written as data, as task files hold them.

A detector config is either a skill kind (``"wood"``: that skill's default detector), the word
``"default"`` (the default detector of the task's instruction), or a mapping with a ``type``::

    {type: inventory, items: "*_log", count: 1}
    {type: counter, counter: mine_block, items: ["*leaves"], count: 1}
    {type: travel, distance: 20}
    {type: depth, depth: 3}
    {type: looking_up, max_pitch: -60, require_sky: true}
    {type: observation, path: life_stats.air, op: "<", value: 300, required: true}
    {type: any_of, parts: [<config>, ...]}
    {type: all_of, parts: [<config>, ...]}
    {type: custom, function: "my_package.detectors:reached_village"}

Configs stay plain data until a worker builds them, so they travel to worker processes and
Ray actors as they are. ``any_of``/``all_of`` nest at most `success.MAX_DETECTOR_DEPTH` deep.
A ``custom`` config imports its module, which runs that module's code: task files may name one
only with ``allow_imports=True`` (see `check_detector_config`).
"""

from __future__ import annotations

import difflib
import importlib
import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from steve1_env import success
from steve1_env.errors import DetectorError, TaskSpecError
from steve1_env.validation import boolean

FieldPath = tuple[str | int, ...]


class DetectorConfigError(TaskSpecError):
    """A detector config is invalid at `path` (relative to the config)."""

    def __init__(self, path: FieldPath, message: str) -> None:
        super().__init__(f"{format_path(path) or 'success'}: {message}")
        self.path = path
        self.message = message


def format_path(path: FieldPath) -> str:
    """Returns ``("parts", 1, "count")`` as ``parts[1].count``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive(value: Any) -> bool:
    return _number(value) and math.isfinite(value) and value > 0


def _pitch(value: Any) -> bool:
    return _number(value) and -90 <= value <= 0


# MineRL 1.0's counter observations (the synthetic world reports mine_block and pickup).
COUNTERS = (
    "mine_block", "craft_item", "pickup", "use_item", "drop", "break_item", "kill_entity",
    "entity_killed_by",
)  # fmt: skip


def _items(value: Any) -> bool:
    return (isinstance(value, str) and bool(value)) or (
        isinstance(value, list) and bool(value) and all(isinstance(v, str) and v for v in value)
    )


FieldTable = dict[str, dict[str, tuple[bool, Callable[[Any], bool], str]]]
"""A typed config's fields: type -> field -> (required, check, what the check expects)."""

_FIELDS: FieldTable = {
    "inventory": {
        "items": (True, _items, "an item name or pattern, or a list of them ('*_log')"),
        "count": (False, _positive, "a positive number"),
    },
    "counter": {
        "counter": (
            True,
            lambda v: v in COUNTERS,
            f"a MineRL counter: {', '.join(COUNTERS)}",
        ),
        "items": (True, _items, "an item name or pattern, or a list of them"),
        "count": (False, _positive, "a positive number"),
    },
    "travel": {"distance": (True, _positive, "a positive distance in blocks")},
    "depth": {"depth": (True, _positive, "a positive depth in blocks")},
    "looking_up": {
        "max_pitch": (False, _pitch, "a pitch in degrees in [-90, 0] (negative looks up)"),
        "require_sky": (False, lambda v: isinstance(v, bool), "true or false"),
    },
    "observation": {
        "path": (True, lambda v: isinstance(v, str) and bool(v), "a dotted path (life_stats.air)"),
        "op": (True, lambda v: isinstance(v, str), "one of < <= > >= == !="),
        "value": (True, lambda v: v is None or isinstance(v, str | int | float | bool), "a value"),
        "required": (False, lambda v: isinstance(v, bool), "true or false"),
    },
    "mineclip": {
        "threshold": (
            True,
            lambda v: _number(v) and 0 < v < 1,
            "a MineCLIP score between 0 and 1 (calibrate it: steve1_env.evaluation.calibration)",
        ),
        "sustain": (
            False,
            lambda v: (
                isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= success.MAX_SUSTAIN
            ),
            f"a whole number of ticks from 1 to {success.MAX_SUSTAIN}",
        ),
    },
    "any_of": {"parts": (True, lambda v: isinstance(v, list) and bool(v), "a list of detectors")},
    "all_of": {"parts": (True, lambda v: isinstance(v, list) and bool(v), "a list of detectors")},
    "custom": {
        "function": (
            True,
            lambda v: isinstance(v, str) and v.count(":") == 1,
            "an import path 'module:function'",
        ),
    },
}
DETECTOR_TYPES = tuple(_FIELDS)
"""The ``type`` values a detector config may have."""


def _suggest(value: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(value, list(choices), n=1, cutoff=0.6)
    return f" Did you mean {close[0]!r}?" if close else ""


def check_typed_fields(
    config: Mapping[str, Any],
    path: FieldPath,
    table: FieldTable,
    what: str,
    error: Callable[[FieldPath, str], Exception],
    optional: Sequence[str] = (),
) -> str:
    """Checks a config mapping's ``type`` and fields against `table`; returns its type.

    Detector and metric configs share this shape: ``{type: ..., <the type's fields>}``.

    Args:
        config: The config mapping.
        path: Where it sits, for error messages.
        table: The fields of each type.
        what: What the config is (``"detector"``), for messages.
        error: Builds the error raised from a field's path and a message.
        optional: Fields every type may have besides its own (``name``), checked by the
            caller.

    Raises:
        Exception: What `error` builds, naming the field and what it expected.
    """
    kind = config.get("type")
    types = list(table)
    if kind is None:
        raise error((*path, "type"), f"missing; one of {', '.join(types)} is needed.")
    if kind not in table:
        raise error(
            (*path, "type"),
            f"unknown {what} type {kind!r}.{_suggest(str(kind), types)} Known types: "
            f"{', '.join(types)}.",
        )
    spec = table[kind]
    for key in config:
        if key not in spec and key != "type" and key not in optional:
            raise error(
                (*path, key),
                f"not a field of a {kind} {what}.{_suggest(str(key), list(spec))} Its fields: "
                f"{', '.join([*optional, *spec]) or 'none but type'}.",
            )
    for key, (required, check, expected) in spec.items():
        if key not in config:
            if required:
                raise error((*path, key), f"missing; expected {expected}.")
            continue
        if not check(config[key]):
            raise error((*path, key), f"expected {expected}, got {config[key]!r}.")
    return str(kind)


def check_detector_config(config: Any, path: FieldPath = (), *, allow_imports: bool = True) -> None:
    """Checks a detector config without building it (and without importing anything).

    Args:
        config: A detector config (see the module docstring).
        path: Where the config sits, for error messages.
        allow_imports: Whether ``custom`` detectors may name import paths. Importing a module
            runs its code, so configs from files that are not trusted as code pass False.
            True by default here because a config passed in Python is code already; the
            loaders of files (`steve1_env.tasks.spec.load_task_set`) default to False.

    Raises:
        DetectorConfigError: Naming the field (``parts[1].count``) and what it expected; if
            ``any_of``/``all_of`` nest deeper than `success.MAX_DETECTOR_DEPTH`; or if a
            ``custom`` detector names an import path and `allow_imports` is False.
    """
    _check(config, path, 1, boolean(allow_imports, "allow_imports"))


def _check(config: Any, path: FieldPath, depth: int, allow_imports: bool) -> None:
    if isinstance(config, str):
        if config != "default" and config not in success.DEFAULT_DETECTORS:
            kinds = sorted(success.DEFAULT_DETECTORS)
            raise DetectorConfigError(
                path,
                f"unknown skill {config!r}.{_suggest(config, kinds)} A detector is a skill kind "
                f"({', '.join(kinds)}), 'default', or a mapping with a type "
                f"({', '.join(DETECTOR_TYPES)}).",
            )
        return
    if not isinstance(config, Mapping):
        raise DetectorConfigError(
            path,
            f"expected a skill kind such as 'wood' or a mapping such as "
            f"{{type: inventory, items: '*_log'}}, got {type(config).__name__} {config!r}.",
        )
    kind = check_typed_fields(config, path, _FIELDS, "detector", DetectorConfigError, ("name",))
    if "name" in config and not (isinstance(config["name"], str) and config["name"]):
        raise DetectorConfigError((*path, "name"), "must be a non-empty string.")
    if kind == "custom" and not allow_imports:
        raise DetectorConfigError(
            (*path, "function"),
            f"names the import path {config['function']!r}, and importing a module runs its "
            "code, so a task file that names import paths is as trusted as code. Pass "
            "allow_imports=True only for task files you trust as code.",
        )
    if kind in ("any_of", "all_of"):
        # Counted before going down, so a cyclic or absurdly deep config stops here, not in a
        # RecursionError; the limit is the one the built composites enforce.
        if depth > success.MAX_DETECTOR_DEPTH:
            raise DetectorConfigError(
                path,
                f"any_of/all_of nest more than {success.MAX_DETECTOR_DEPTH} deep (the most "
                "supported, MAX_DETECTOR_DEPTH); flatten the nesting: any_of inside any_of is "
                "one any_of with all the parts.",
            )
        for index, part in enumerate(config["parts"]):
            _check(part, (*path, "parts", index), depth + 1, allow_imports)


def _import_function(target: str, path: FieldPath) -> Callable[..., bool]:
    module_name, _, attribute = target.partition(":")
    try:
        function = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise DetectorConfigError(
            path,
            f"cannot import {target!r} ({type(exc).__name__}: {exc}). Make the module importable "
            "(installed, or on PYTHONPATH) in every process that evaluates.",
        ) from exc
    if not callable(function):
        raise DetectorConfigError(path, f"{target!r} is not callable.")
    return function


def build_detector(
    config: Any, instruction: str, path: FieldPath = (), *, allow_imports: bool = True
) -> success.SuccessDetector:
    """Builds the detector a config describes.

    The whole config is checked first, so nothing is imported from a config that is invalid
    anywhere.

    Args:
        config: A detector config (see the module docstring); None means ``"default"``.
        instruction: The instruction judged, for ``"default"``.
        path: Where the config sits, for error messages.
        allow_imports: Whether ``custom`` detectors may import their functions (see
            `check_detector_config`). Configs written in Python are code already.

    Raises:
        DetectorConfigError: If the config is invalid, or ``"default"`` is asked for an
            instruction that has no default detector.
    """
    if config is None:
        config = "default"
    check_detector_config(config, path, allow_imports=allow_imports)
    return _build_checked(config, instruction, path)


def _build_checked(config: Any, instruction: str, path: FieldPath) -> success.SuccessDetector:
    if isinstance(config, str):
        detector = (
            success.detector_for(instruction)
            if config == "default"
            else success.DEFAULT_DETECTORS[config]
        )
        if detector is None:
            raise DetectorConfigError(
                path,
                f"no default detector is known for {instruction!r}; give one, e.g. "
                "success: {type: inventory, items: '*_log'} or a skill kind such as 'wood'.",
            )
        return detector
    kind = config["type"]
    options = {key: value for key, value in config.items() if key != "type"}
    try:
        return _build(kind, options, instruction, path)
    except DetectorError as exc:  # the detector's own range checks
        raise DetectorConfigError(path, str(exc)) from exc


def _build(
    kind: str, options: dict[str, Any], instruction: str, path: FieldPath
) -> success.SuccessDetector:
    name = options.pop("name", "")
    if kind == "inventory":
        return success.InventoryDelta(options["items"], options.get("count", 1), name)
    if kind == "counter":
        return success.CounterDelta(
            options["counter"], options["items"], options.get("count", 1), name
        )
    if kind == "travel":
        return success.TravelDistance(options["distance"], name)
    if kind == "depth":
        return success.DepthDug(options["depth"], name)
    if kind == "looking_up":
        return success.LookingUp(
            options.get("max_pitch", -60.0), options.get("require_sky", True), name
        )
    if kind == "observation":
        return success.ObservationValue(
            options["path"], options["op"], options["value"], options.get("required", True), name
        )
    if kind == "mineclip":
        return success.MineCLIPScore(options["threshold"], options.get("sustain", 1), name)
    if kind in ("any_of", "all_of"):
        parts = [
            _build_checked(part, instruction, (*path, "parts", index))
            for index, part in enumerate(options["parts"])
        ]
        combine = success.any_of if kind == "any_of" else success.all_of
        return combine(*parts, name=name)
    function = _import_function(options["function"], (*path, "function"))
    return success.custom(function, name)
