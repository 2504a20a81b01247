"""Success detectors: did the skill do what the instruction asked?

A detector looks at the world observation when the skill attempt started, the current one, and
the number of low-level steps taken since, and answers True or False. Detectors read MineRL's
observation keys (``inventory``, ``mine_block`` and other counters, ``location_stats``,
``life_stats``), so they work on every world. Compose them with `any_of` and `all_of`; wrap a
plain function ``(start_obs, obs, steps) -> bool`` with `custom`.
"""

from __future__ import annotations

import fnmatch
import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from steve1_env.errors import DetectorError, warn_caller
from steve1_env.instructions import normalize_instruction
from steve1_env.skill_kinds import skill_kind
from steve1_env.validation import boolean, positive_number, real_number, string_list

Obs = Mapping[str, Any]


@runtime_checkable
class SuccessDetector(Protocol):
    """Anything with a `name` that answers ``detector(start_obs, obs, steps) -> bool``."""

    @property
    def name(self) -> str:
        """Shown in ``info["detector"]`` when this detector fires."""
        ...

    def __call__(self, start_obs: Obs, obs: Obs, steps: int) -> bool:
        """Returns True once the skill attempt that started at `start_obs` has succeeded."""
        ...


def fired(detector: SuccessDetector, start_obs: Obs, obs: Obs, steps: int) -> str | None:
    """Returns the name of the (sub-)detector that succeeded, or None.

    Composites report the first of their parts that fired, so ``info["detector"]`` says which
    condition was met.
    """
    explain = getattr(detector, "explain", None)
    if explain is not None:
        return explain(start_obs, obs, steps)
    return detector.name if answer(detector, start_obs, obs, steps) else None


def answer(detector: SuccessDetector, start_obs: Obs, obs: Obs, steps: int) -> bool:
    """Calls `detector` and returns its answer, which must be a real boolean.

    Raises:
        DetectorError: If the detector returned anything but ``bool`` or ``numpy.bool_``
            (``"no"`` or ``[0]`` would otherwise count as success).
    """
    return checked_answer(detector(start_obs, obs, steps), getattr(detector, "name", detector))


def checked_answer(value: Any, detector: Any) -> bool:
    """Returns a detector's answer `value` as a bool, or raises `DetectorError` naming it.

    Args:
        value: What the detector returned for one observation.
        detector: The detector that answered, named in the message.

    Returns:
        `value` as a plain ``bool``.

    Raises:
        DetectorError: If `value` is not a ``bool`` or ``numpy.bool_`` (a text such as
            ``"no"``, a number or an array would be read as a decision it is not).
    """
    return boolean(
        value,
        f"The answer of the success detector {detector!r}",
        error=DetectorError,
        fix="make it return a comparison such as `count >= 1`, not a text or a number",
    )


def _count(mapping: Mapping[str, Any], patterns: Sequence[str]) -> float:
    return float(
        sum(
            float(value)
            for key, value in mapping.items()
            if any(fnmatch.fnmatchcase(key, pattern) for pattern in patterns)
        )
    )


def _section(obs: Obs, key: str, detector: str) -> Mapping[str, Any]:
    section = obs.get(key)
    if not isinstance(section, Mapping):
        raise DetectorError(
            f"Detector {detector!r} reads obs[{key!r}], which this world does not provide "
            f"(observation keys: {', '.join(sorted(obs))}). Use a detector that fits this world."
        )
    return section


def _patterns(items: str | Sequence[str]) -> tuple[str, ...]:
    if isinstance(items, str):
        items = [items]
    patterns = tuple(string_list(items, "Item patterns", error=DetectorError))
    if not all(patterns):
        raise DetectorError("Item patterns must be non-empty, such as 'dirt' or '*_log'.")
    return patterns


def _positive(value: float, what: str) -> float:
    return positive_number(value, what, error=DetectorError)


@dataclass(frozen=True)
class InventoryDelta:
    """Succeeds when the inventory gained `count` items matching `items` since the start.

    Args:
        items: Item names or shell-style patterns (``"*_log"``, ``"*seed*"``).
        count: How many more (summed over matches) are needed.
        name: Shown in ``info["detector"]``; derived from the arguments if omitted.
    """

    items: str | Sequence[str]
    count: float = 1
    name: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "items", _patterns(self.items))
        object.__setattr__(self, "count", _positive(self.count, "InventoryDelta count"))
        if not self.name:
            object.__setattr__(self, "name", f"inventory:{'|'.join(self.items)}>={self.count:g}")

    def __call__(self, start_obs: Obs, obs: Obs, steps: int) -> bool:
        """Returns True once the gain since `start_obs` reaches `count`."""
        now = _count(_section(obs, "inventory", self.name), self.items)
        before = _count(_section(start_obs, "inventory", self.name), self.items)
        return now - before >= self.count


@dataclass(frozen=True)
class CounterDelta:
    """Succeeds when a MineRL counter (``mine_block``, ``craft_item``, ...) grew by `count`.

    Args:
        counter: The observation key of the counter dict.
        items: Names or patterns inside that counter (``"*leaves"``).
        count: Required increase, summed over matches.
        name: Shown in ``info["detector"]``.
    """

    counter: str
    items: str | Sequence[str]
    count: float = 1
    name: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.counter, str) or not self.counter:
            raise DetectorError(f"counter must be a MineRL counter key, got {self.counter!r}.")
        object.__setattr__(self, "items", _patterns(self.items))
        object.__setattr__(self, "count", _positive(self.count, "CounterDelta count"))
        if not self.name:
            object.__setattr__(
                self, "name", f"{self.counter}:{'|'.join(self.items)}>={self.count:g}"
            )

    def __call__(self, start_obs: Obs, obs: Obs, steps: int) -> bool:
        """Returns True once the gain since `start_obs` reaches `count`."""
        now = _count(_section(obs, self.counter, self.name), self.items)
        before = _count(_section(start_obs, self.counter, self.name), self.items)
        return now - before >= self.count


def _location(obs: Obs, key: str, detector: str) -> float:
    stats = _section(obs, "location_stats", detector)
    if key not in stats:
        raise DetectorError(
            f"Detector {detector!r} needs location_stats[{key!r}]; this world provides "
            f"{', '.join(sorted(stats))}."
        )
    return float(stats[key])


@dataclass(frozen=True)
class TravelDistance:
    """Succeeds when the player is `distance` blocks (horizontally) from where it started."""

    distance: float
    name: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "distance", _positive(self.distance, "TravelDistance distance"))
        if not self.name:
            object.__setattr__(self, "name", f"travel>={self.distance:g}")

    def __call__(self, start_obs: Obs, obs: Obs, steps: int) -> bool:
        """Returns True once the player is far enough from where it started."""
        dx = _location(obs, "xpos", self.name) - _location(start_obs, "xpos", self.name)
        dz = _location(obs, "zpos", self.name) - _location(start_obs, "zpos", self.name)
        return math.hypot(dx, dz) >= self.distance


@dataclass(frozen=True)
class DepthDug:
    """Succeeds when the player is `depth` blocks below where it started."""

    depth: float
    name: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "depth", _positive(self.depth, "DepthDug depth"))
        if not self.name:
            object.__setattr__(self, "name", f"depth>={self.depth:g}")

    def __call__(self, start_obs: Obs, obs: Obs, steps: int) -> bool:
        """Returns True once the player is deep enough below where it started."""
        return _location(start_obs, "ypos", self.name) - _location(obs, "ypos", self.name) >= (
            self.depth
        )


@dataclass(frozen=True)
class LookingUp:
    """Succeeds when the pitch is at most `max_pitch` degrees (negative looks up).

    With ``require_sky`` the player must also see the sky (``location_stats.can_see_sky``).
    """

    max_pitch: float = -60.0
    require_sky: bool = True
    name: str = ""

    def __post_init__(self) -> None:
        pitch = real_number(self.max_pitch, "LookingUp max_pitch", error=DetectorError)
        object.__setattr__(self, "max_pitch", pitch)
        if not -90.0 <= self.max_pitch <= 0.0:
            raise DetectorError(
                f"LookingUp max_pitch must be in [-90, 0] degrees (negative looks up), "
                f"got {self.max_pitch!r}."
            )
        if not self.name:
            object.__setattr__(self, "name", f"pitch<={self.max_pitch:g}")

    def __call__(self, start_obs: Obs, obs: Obs, steps: int) -> bool:
        """Returns True while the player looks up (at the sky, if required)."""
        if _location(obs, "pitch", self.name) > self.max_pitch:
            return False
        return not self.require_sky or bool(_location(obs, "can_see_sky", self.name))


MAX_SUSTAIN = 256
"""Longest ``sustain`` of a `MineCLIPScore` detector, in ticks (the engine keeps that many)."""


@dataclass(frozen=True)
class MineCLIPScore:
    """Succeeds when the MineCLIP score stays at or above `threshold` for `sustain` ticks.

    Reads ``obs["mineclip_scores"]``, the attempt's latest scores, which the engine adds to
    what detectors see when the env scores frames (``mineclip_score=True``). The score is
    MineCLIP's similarity of the last 16 frames to the instruction, not a fact about the world:
    calibrate the threshold on real weights (`steve1_env.evaluation.calibration`).

    Args:
        threshold: Score in ``(0, 1)`` to reach.
        sustain: Consecutive ticks at or above it, 1 to `MAX_SUSTAIN`.
        name: Shown in ``info["detector"]``.
    """

    threshold: float
    sustain: int = 1
    name: str = ""

    def __post_init__(self) -> None:
        threshold = real_number(self.threshold, "MineCLIPScore threshold", error=DetectorError)
        if not 0.0 < threshold < 1.0:
            raise DetectorError(
                f"MineCLIPScore threshold must be a score strictly between 0 and 1, got "
                f"{threshold!r}; calibrate one on labelled clips."
            )
        sustain = self.sustain
        if (
            isinstance(sustain, bool)
            or not isinstance(sustain, int)
            or not 1 <= sustain <= MAX_SUSTAIN
        ):
            raise DetectorError(
                f"MineCLIPScore sustain must be a whole number of ticks from 1 to {MAX_SUSTAIN}, "
                f"got {sustain!r}."
            )
        object.__setattr__(self, "threshold", threshold)
        if not self.name:
            object.__setattr__(self, "name", f"mineclip>={threshold:g}x{sustain}")

    def __call__(self, start_obs: Obs, obs: Obs, steps: int) -> bool:
        """Returns True once the last `sustain` scores all reach the threshold."""
        scores = obs.get("mineclip_scores")
        if scores is None:
            raise DetectorError(
                f"The detector {self.name!r} needs the MineCLIP score, which this env does not "
                "compute: create it with mineclip_score=True."
            )
        recent = list(scores)[-self.sustain :]
        return len(recent) == self.sustain and all(score >= self.threshold for score in recent)


def needs_mineclip(detector: Any) -> bool:
    """Whether `detector` (or a part of a composite) reads the MineCLIP score."""
    if isinstance(detector, MineCLIPScore):
        return True
    return any(needs_mineclip(part) for part in getattr(detector, "parts", ()))


_COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}


@dataclass(frozen=True)
class ObservationValue:
    """Succeeds when an observation value compares true against `value`.

    Args:
        path: Dotted path into the observation, e.g. ``"life_stats.air"``.
        op: One of ``< <= > >= == !=``.
        value: The right-hand side.
        required: If the path is missing, raise (True) or answer False with a one-time
            warning (False), for worlds that do not report it.
        name: Shown in ``info["detector"]``.
    """

    path: str
    op: str
    value: Any
    required: bool = True
    name: str = ""
    _warned: list[bool] = field(default_factory=lambda: [False], repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.op not in _COMPARISONS:
            raise DetectorError(
                f"ObservationValue op must be one of {', '.join(_COMPARISONS)}, got {self.op!r}."
            )
        if not isinstance(self.path, str) or not self.path:
            raise DetectorError(
                f"ObservationValue path must be like 'life_stats.air', got {self.path!r}."
            )
        if not self.name:
            object.__setattr__(self, "name", f"{self.path}{self.op}{self.value!r}")

    def __call__(self, start_obs: Obs, obs: Obs, steps: int) -> bool:
        """Returns the comparison of the value at `path` with `value`."""
        current: Any = obs
        for part in self.path.split("."):
            if not isinstance(current, Mapping) or part not in current:
                if self.required:
                    raise DetectorError(
                        f"Detector {self.name!r}: the observation has no {self.path!r} "
                        f"(stopped at {part!r}). Pick a detector this world supports or pass "
                        "required=False."
                    )
                if not self._warned[0]:
                    self._warned[0] = True
                    warn_caller(
                        f"Detector {self.name!r}: this world reports no {self.path!r}, so this "
                        "condition is always False here.",
                    )
                return False
            current = current[part]
        return bool(_COMPARISONS[self.op](current, self.value))


@dataclass(frozen=True)
class Custom:
    """Wraps a function ``(start_obs, obs, steps) -> bool`` as a named detector."""

    function: Callable[[Obs, Obs, int], bool]
    name: str = ""

    def __post_init__(self) -> None:
        if not callable(self.function):
            raise DetectorError(
                f"custom() needs a callable (start_obs, obs, steps) -> bool, got {self.function!r}."
            )
        if not self.name:
            object.__setattr__(self, "name", getattr(self.function, "__name__", "custom"))

    def __call__(self, start_obs: Obs, obs: Obs, steps: int) -> bool:
        """Returns the wrapped function's answer, which must be a bool or numpy.bool_."""
        return checked_answer(self.function(start_obs, obs, steps), self.name)


def custom(function: Callable[[Obs, Obs, int], bool], name: str = "") -> Custom:
    """Returns `function` as a detector named `name` (default: the function's name)."""
    return Custom(function, name)


def as_detector(value: SuccessDetector | Callable[[Obs, Obs, int], bool]) -> SuccessDetector:
    """Returns detectors unchanged and wraps plain callables with `custom`."""
    if isinstance(value, type):
        raise DetectorError(
            f"Got the class {value.__name__}, not a detector: create one, e.g. "
            f"{value.__name__}(...) with its arguments."
        )
    if isinstance(value, SuccessDetector):
        return value
    if callable(value):
        return custom(value)
    raise DetectorError(
        f"A success detector must be a detector or a callable (start_obs, obs, steps) -> bool, "
        f"got {type(value).__name__}."
    )


MAX_DETECTOR_DEPTH = 32
"""How many `any_of`/`all_of` may sit inside one another.

Every level adds frames to Python's call stack when the detector runs, so a deeper nesting
(from a task file or a loop in code) would end in a `RecursionError` mid-episode.
"""


def _nesting(parts: Sequence[SuccessDetector], kind: str) -> int:
    # Only the composites are counted: a detector of the user's own is opaque here.
    depth = 1 + max(part.nesting if isinstance(part, AnyOf | AllOf) else 0 for part in parts)
    if depth > MAX_DETECTOR_DEPTH:
        raise DetectorError(
            f"{kind}() would nest {depth} any_of/all_of inside one another; at most "
            f"{MAX_DETECTOR_DEPTH} are supported (MAX_DETECTOR_DEPTH), since each level adds "
            "to Python's call stack when the detector runs. Flatten the nesting: "
            "any_of(any_of(a, b), c) is any_of(a, b, c)."
        )
    return depth


@dataclass(frozen=True)
class AnyOf:
    """Succeeds when any part succeeds; reports the first part that did."""

    parts: tuple[SuccessDetector, ...]
    name: str = ""
    nesting: int = field(default=1, init=False, repr=False, compare=False)
    """How many `any_of`/`all_of` sit inside one another here, this one included."""

    def __post_init__(self) -> None:
        if not self.parts:
            raise DetectorError("any_of() needs at least one detector.")
        object.__setattr__(self, "nesting", _nesting(self.parts, "any_of"))
        if not self.name:
            object.__setattr__(self, "name", f"any_of({', '.join(p.name for p in self.parts)})")

    def __call__(self, start_obs: Obs, obs: Obs, steps: int) -> bool:
        """Returns True when any part succeeds."""
        return self.explain(start_obs, obs, steps) is not None

    def explain(self, start_obs: Obs, obs: Obs, steps: int) -> str | None:
        """Returns the name of the first part that succeeds, or None."""
        for part in self.parts:
            name = fired(part, start_obs, obs, steps)
            if name is not None:
                return name
        return None


@dataclass(frozen=True)
class AllOf:
    """Succeeds when every part succeeds."""

    parts: tuple[SuccessDetector, ...]
    name: str = ""
    nesting: int = field(default=1, init=False, repr=False, compare=False)
    """How many `any_of`/`all_of` sit inside one another here, this one included."""

    def __post_init__(self) -> None:
        if not self.parts:
            raise DetectorError("all_of() needs at least one detector.")
        object.__setattr__(self, "nesting", _nesting(self.parts, "all_of"))
        if not self.name:
            object.__setattr__(self, "name", f"all_of({', '.join(p.name for p in self.parts)})")

    def __call__(self, start_obs: Obs, obs: Obs, steps: int) -> bool:
        """Returns True when every part succeeds."""
        return all(answer(part, start_obs, obs, steps) for part in self.parts)


DetectorLike = SuccessDetector | Callable[[Obs, Obs, int], bool]


def any_of(*detectors: DetectorLike, name: str = "") -> AnyOf:
    """Returns a detector that succeeds when any of `detectors` does."""
    return AnyOf(tuple(as_detector(d) for d in detectors), name)


def all_of(*detectors: DetectorLike, name: str = "") -> AllOf:
    """Returns a detector that succeeds when all of `detectors` do."""
    return AllOf(tuple(as_detector(d) for d in detectors), name)


FLOWERS = (
    "dandelion", "poppy", "blue_orchid", "allium", "azure_bluet", "*_tulip", "oxeye_daisy",
    "cornflower", "lily_of_the_valley", "sunflower", "lilac", "rose_bush", "peony",
)  # fmt: skip


def _default_detectors() -> dict[str, SuccessDetector]:
    return {
        "wood": InventoryDelta("*_log", 1, name="wood"),
        "dirt": InventoryDelta("dirt", 1, name="dirt"),
        "seeds": InventoryDelta("*seed*", 1, name="seeds"),
        "flower": CounterDelta("mine_block", FLOWERS, 1, name="flower"),
        "leaves": CounterDelta("mine_block", "*leaves", 1, name="leaves"),
        "sky": LookingUp(-60.0, name="sky"),
        "dig": DepthDug(3, name="dig"),
        "explore": TravelDistance(20, name="explore"),
        # MineRL reports no in-water flag; the synthetic world does. Head under water shows in
        # the air supply everywhere.
        "swim": any_of(
            ObservationValue("location_stats.is_in_water", "==", True, required=False),
            ObservationValue("life_stats.air", "<", 300),
            name="swim",
        ),
        "underwater": ObservationValue("life_stats.air", "<", 300, name="underwater"),
        "inventory": ObservationValue("isGuiOpen", "==", True, required=False, name="inventory"),
    }


DEFAULT_DETECTORS: dict[str, SuccessDetector] = _default_detectors()
"""Skill kind -> detector for the paper's tasks (thresholds are this package's choice)."""


def detector_for(instruction: str) -> SuccessDetector | None:
    """Returns the default detector for an instruction, or None if none is known."""
    kind = skill_kind(instruction)
    return None if kind is None else DEFAULT_DETECTORS[kind]


DetectorSpec = (
    SuccessDetector
    | Callable[[Obs, Obs, int], bool]
    | Mapping[str, SuccessDetector | Callable[[Obs, Obs, int], bool]]
    | None
)


DetectorLookup = Callable[[str], SuccessDetector | None]


def resolve_detectors(
    spec: DetectorSpec, fallback: DetectorLookup = detector_for
) -> DetectorLookup:
    """Turns the env's ``success=`` argument into an instruction -> detector lookup.

    Args:
        spec: None for `fallback`; one detector or callable for every instruction; or a
            mapping instruction -> detector, consulted first (instructions compared case- and
            whitespace-insensitively) with `fallback` for the rest.
        fallback: The lookup for instructions `spec` does not cover (default: the defaults of
            the paper's tasks, `detector_for`).
    """
    if spec is None:
        return fallback
    if isinstance(spec, Mapping):
        table = {normalize_instruction(str(k)): as_detector(v) for k, v in spec.items()}
        return lambda instruction: (
            table.get(normalize_instruction(instruction)) or fallback(instruction)
        )
    single = as_detector(spec)
    return lambda instruction: single
