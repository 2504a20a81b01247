"""Argument checks shared by the env, the worlds and the detectors.

Each accepts what a user naturally passes (Python or numpy numbers, lists, tuples or numpy
arrays of strings) and raises a `steve1_env` error naming the argument and what it expected.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from steve1_env.errors import ConfigurationError, Steve1EnvError

MAX_FRAME_SIDE = 2048
"""Largest height or width of a frame (``pov_shape``) in pixels. A 2048 x 2048 RGB frame takes
12 MiB, 18 times MineRL's (360, 640); larger asks would exhaust memory, not sharpen a policy."""


def boolean(
    value: Any, name: str, *, error: type[Steve1EnvError] = ConfigurationError, fix: str = ""
) -> bool:
    """Returns `value` as a bool if it is a real boolean (``bool`` or ``numpy.bool_``).

    Truthiness is not enough: ``"no"``, ``"False"``, ``0.5`` or ``[]`` would be taken as a
    decision the caller did not make.
    """
    if not isinstance(value, bool | np.bool_):
        got = f"{type(value).__name__} {short_repr(value)}"
        raise error(f"{name} must be True or False, got {got}{'; ' + fix if fix else ''}.")
    return bool(value)


def short_repr(value: Any, limit: int = 80) -> str:
    """Returns ``repr(value)`` cut to `limit` characters, for error messages about any input."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def reset_seed(value: Any, name: str = "seed") -> int | None:
    """Returns a reset seed: None, or an integer >= 0 (numpy integers too, bools excluded)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ConfigurationError(
            f"{name} must be None or an integer >= 0 such as 42, got {type(value).__name__} "
            f"{short_repr(value)}."
        )
    return int(value)


def reset_options(value: Any) -> dict[str, Any]:
    """Returns a copy of a reset's ``options``: None for none, else a mapping."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigurationError(
            f"reset options must be a dict such as {{'instruction': 'chop a tree'}}, got "
            f"{type(value).__name__} {short_repr(value)}."
        )
    return dict(value)


def positive_int(value: Any, name: str, *, error: type[Steve1EnvError] = ConfigurationError) -> int:
    """Returns `value` as an int if it is an integral number >= 1 (bools excluded)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise error(f"{name} must be a positive integer, got {value!r}.")
    return int(value)


def positive_number(
    value: Any, name: str, *, error: type[Steve1EnvError] = ConfigurationError
) -> float:
    """Returns `value` as a float if it is a finite real number > 0 (bools excluded)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise error(f"{name} must be a positive finite number, got {value!r}.")
    return float(value)


def real_number(
    value: Any, name: str, *, error: type[Steve1EnvError] = ConfigurationError
) -> float:
    """Returns `value` as a float if it is a finite real number (bools excluded)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise error(f"{name} must be a finite number, got {value!r}.")
    return float(value)


def non_empty_list(
    values: Any, name: str, *, error: type[Steve1EnvError] = ConfigurationError
) -> list[Any]:
    """Returns a non-empty list from any iterable that is not itself a string."""
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        raise error(f"{name} must be a list such as ['chop a tree'], got {values!r}.")
    result = list(values)
    if not result:
        raise error(f"{name} must not be empty.")
    return result


def string_list(
    values: Any, name: str, *, error: type[Steve1EnvError] = ConfigurationError
) -> list[str]:
    """Returns a non-empty list of strings from any non-string iterable of strings."""
    result = non_empty_list(values, name, error=error)
    if not all(isinstance(value, str) for value in result):
        raise error(f"{name} must hold only strings, got {values!r}.")
    return [str(value) for value in result]


def frame_shape(
    value: Any, name: str, minimum: int = 1, maximum: int = MAX_FRAME_SIDE
) -> tuple[int, int]:
    """Returns ``(height, width)`` from a pair of integers, each in ``[minimum, maximum]``."""
    try:
        height, width = value
    except (TypeError, ValueError):
        raise ConfigurationError(
            f"{name} must be a pair (height, width) such as (128, 128), got {value!r}."
        ) from None
    shape = (positive_int(height, f"{name}[0]"), positive_int(width, f"{name}[1]"))
    if min(shape) < minimum:
        raise ConfigurationError(f"{name} must be at least {minimum} pixels each way, got {shape}.")
    if max(shape) > maximum:
        raise ConfigurationError(
            f"{name} may be at most {maximum} pixels each way (MAX_FRAME_SIDE), got {shape}; "
            "MineRL's frames are (360, 640)."
        )
    return shape
