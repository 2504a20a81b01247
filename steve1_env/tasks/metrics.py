"""Episode metrics written as data, as task files hold them (the paper's programmatic evaluation).

A metric config is a mapping with a ``type``; its value over an episode is the MAXIMUM of its
per-tick values, starting from 0 before the first tick, as the STEVE-1 paper measures::

    {type: inventory, items: "*_log*"}            # summed inventory counts of matching items
    {type: counter, counter: mine_block, items: "*leaves"}   # a MineRL counter, summed
    {type: travel}                                # horizontal (x, z) distance from the spawn
    {type: depth}                                 # blocks below the spawn height

Item patterns are shell-style (``fnmatch``), as in detectors: the paper's substring filters
``_log``, ``dirt`` and ``seed`` are the patterns ``*_log*``, ``*dirt*`` and ``*seed*``.
`PAPER_METRICS` holds the paper's four; fixed-horizon trials always track them, next to the
metrics their task declares (``metrics: {planks: {type: inventory, items: "*_planks"}}``).

A tracker starts from the episode's first observation (the spawn) and is updated with every
low-level tick's world observation (`MetricTracker.update`), so configs stay plain data that
travel to worker processes and Ray actors as they are.
"""

from __future__ import annotations

import fnmatch
import functools
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from steve1_env.errors import DetectorError, TaskSpecError
from steve1_env.tasks.detectors import (
    COUNTERS,
    FieldPath,
    FieldTable,
    check_typed_fields,
    format_path,
)
from steve1_env.tasks.detectors import _items as _items  # the same item fields as detectors
from steve1_env.world_state import as_number

PAPER_METRICS: dict[str, dict[str, Any]] = {
    "log": {"type": "inventory", "items": "*_log*"},
    "dirt": {"type": "inventory", "items": "*dirt*"},
    "seed": {"type": "inventory", "items": "*seed*"},
    "travel_distance": {"type": "travel"},
}
"""The STEVE-1 paper's programmatic metrics (episode maxima), tracked in fixed-horizon trials."""

METRIC_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
"""What a metric's name looks like (it is a column of the reports)."""

Obs = Mapping[str, Any]


_FIELDS: FieldTable = {
    "inventory": {"items": (True, _items, "an item name or pattern, or a list of them ('*_log*')")},
    "counter": {
        "counter": (True, lambda v: v in COUNTERS, f"a MineRL counter: {', '.join(COUNTERS)}"),
        "items": (True, _items, "an item name or pattern, or a list of them"),
    },
    "travel": {},
    "depth": {},
}
METRIC_TYPES = tuple(_FIELDS)
"""The ``type`` values a metric config may have."""


class MetricConfigError(TaskSpecError):
    """A metric config is invalid at `path` (relative to the ``metrics`` mapping)."""

    def __init__(self, path: FieldPath, message: str) -> None:
        super().__init__(f"{format_path(path) or 'metrics'}: {message}")
        self.path = path
        self.message = message


def check_metric_configs(configs: Any, *, own: bool = True) -> None:
    """Checks a ``metrics`` mapping (metric name -> config) without building anything.

    Args:
        configs: The mapping.
        own: The mapping is a task's own metrics: their names must differ from the paper's
            (`PAPER_METRICS`), which fixed-horizon trials track anyway.

    Raises:
        MetricConfigError: Naming the metric and field (``planks.items``) and what it
            expected.
    """
    if not isinstance(configs, Mapping):
        raise MetricConfigError(
            (),
            "expected a mapping of metric names to configs, such as "
            f"{{planks: {{type: inventory, items: '*_planks'}}}}, got {configs!r}.",
        )
    for name, config in configs.items():
        if not isinstance(name, str) or not METRIC_NAME.match(name):
            raise MetricConfigError(
                (str(name),),
                "a metric name is a letter then letters, digits or '_' (at most 64), got "
                f"{name!r}.",
            )
        if own and name in PAPER_METRICS:
            raise MetricConfigError(
                (name,),
                f"{name!r} is one of the paper's metrics ({', '.join(PAPER_METRICS)}), tracked "
                "in every fixed-horizon trial as the paper defines it; give yours another name.",
            )
        _check(config, (name,))


def _check(config: Any, path: FieldPath) -> None:
    if not isinstance(config, Mapping):
        raise MetricConfigError(
            path,
            "expected a mapping with a type, such as {type: inventory, items: '*_planks'}, got "
            f"{config!r}.",
        )
    check_typed_fields(config, path, _FIELDS, "metric", MetricConfigError)


MAX_CACHED_NAMES = 4096
"""Item names whose match a metric remembers (MineRL 1.0 knows 976 items)."""

ItemFilter = Callable[[str], bool]


def _item_filter(items: str | list[str]) -> ItemFilter:
    # Whether an item name matches: remembered per name, since a world reports the same names
    # every tick (matching MineRL's 976 items against every pattern each tick was the cost).
    patterns = (items,) if isinstance(items, str) else tuple(items)

    @functools.lru_cache(maxsize=MAX_CACHED_NAMES)
    def matches(item: str) -> bool:
        return any(fnmatch.fnmatchcase(item, pattern) for pattern in patterns)

    return matches


def _matching_sum(section: Any, matches: ItemFilter) -> float | None:
    if not isinstance(section, Mapping):
        return 0.0  # a world that reports no such counter has gained none of it
    counts = [as_number(count) for item, count in section.items() if matches(str(item))]
    # A count that is not a finite number is skipped, as info["state"] skips it.
    return as_number(sum(count for count in counts if count is not None))


def _location(obs: Obs, key: str) -> float | None:
    stats = obs.get("location_stats")
    return as_number(stats.get(key)) if isinstance(stats, Mapping) else None


Reader = Callable[[Obs], float | None]


def _reader(config: Mapping[str, Any], spawn: Obs) -> Reader | None:
    # One tick's value of a checked config (None: no value this tick), measured against the
    # spawn where it needs one; None when the spawn lacks what it is measured against.
    kind = config["type"]
    if kind == "inventory":
        matches = _item_filter(config["items"])
        return lambda obs: _matching_sum(obs.get("inventory"), matches)
    if kind == "counter":
        counter, matches = config["counter"], _item_filter(config["items"])
        return lambda obs: _matching_sum(obs.get(counter), matches)
    if kind == "travel":
        x0, z0 = _location(spawn, "xpos"), _location(spawn, "zpos")
        if x0 is None or z0 is None:
            return None

        def travel(obs: Obs) -> float | None:
            x, z = _location(obs, "xpos"), _location(obs, "zpos")
            return None if x is None or z is None else as_number(math.hypot(x - x0, z - z0))

        return travel
    y0 = _location(spawn, "ypos")
    if y0 is None:
        return None

    def depth(obs: Obs) -> float | None:
        y = _location(obs, "ypos")
        return None if y is None else as_number(y0 - y)

    return depth


class MetricTracker:
    """Tracks the episode maxima of metrics, tick by tick (the paper's programmatic values).

    Every value starts at 0 and becomes the maximum of itself and each tick's value, as the
    paper's evaluator does (so a metric whose ticks stay negative, such as a depth while
    climbing, reads 0). A tick whose value cannot be read (a position missing, NaN or
    infinite; a count that is not a finite number) leaves the maximum as it was, so every
    value stays a finite number.

    A paper metric (`PAPER_METRICS`) whose spawn value the world does not report (a world
    without ``location_stats`` has no travel distance) is left out of `values`, never
    invented; a task's own metric raises instead.

    Args:
        configs: Metric name -> config (see the module docstring); checked here.
        spawn: The episode's first observation, against which travel and depth are measured.

    Raises:
        MetricConfigError: If a config is invalid.
        DetectorError: If the world does not report (finitely) the spawn position a task's
            own travel or depth metric is measured against.
    """

    def __init__(self, configs: Mapping[str, Any], spawn: Obs) -> None:
        check_metric_configs(configs, own=False)
        self._readers: dict[str, Reader] = {}
        for name, config in configs.items():
            read = _reader(config, spawn)
            if read is not None:
                self._readers[name] = read
            elif name not in PAPER_METRICS:
                raise DetectorError(
                    f"The metric {name!r} is measured from the spawn's location_stats, which "
                    "this world does not report as finite numbers; drop the metric or use a "
                    "world that reports the player's position."
                )
        self._values = dict.fromkeys(self._readers, 0.0)

    def update(self, obs: Obs) -> None:
        """Takes in one low-level tick's world observation."""
        for name, read in self._readers.items():
            value = read(obs)
            if value is not None and value > self._values[name]:
                self._values[name] = value

    @property
    def values(self) -> dict[str, float]:
        """Metric name -> its maximum so far (0.0 before any tick)."""
        return dict(self._values)


def trial_metrics(own: Mapping[str, Any], fixed_horizon: bool) -> dict[str, Any]:
    """Returns the metric configs a trial tracks: the paper's in a fixed horizon, then its own.

    Args:
        own: The task's own metrics (name -> config).
        fixed_horizon: The trial runs a fixed horizon (the paper's protocol).
    """
    paper = {name: dict(config) for name, config in PAPER_METRICS.items()} if fixed_horizon else {}
    return {**paper, **{name: dict(config) for name, config in own.items()}}
