"""Argument checks shared by the env, the worlds and the detectors.

Each accepts what a user naturally passes (Python or numpy numbers, lists, tuples or numpy
arrays of strings) and raises a `steve1_env` error naming the argument and what it expected.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from steve1_env.errors import ConfigurationError, Steve1EnvError

MAX_FRAME_SIDE = 2048
"""Largest height or width of a frame (``pov_shape``) in pixels. A 2048 x 2048 RGB frame takes
12 MiB, 18 times MineRL's (360, 640); larger asks would exhaust memory, not sharpen a policy."""

MAX_TIMEOUT_S = 86_400.0
"""Longest step or reset timeout of a world, in seconds: a day. Any longer would mean never
(and a pipe's poll refuses much larger waits)."""


def boolean(
    value: Any, name: str, *, error: type[Steve1EnvError] = ConfigurationError, fix: str = ""
) -> bool:
    """Returns `value` as a bool if it is a real boolean (``bool`` or ``numpy.bool_``).

    Truthiness is not enough: ``"no"``, ``"False"``, ``0.5`` or ``[]`` would be taken as a
    decision the caller did not make.

    Args:
        value: The value to check.
        name: What `value` is, as the message should name it (``"world_processes"``).
        error: The error class to raise.
        fix: How to fix a wrong value, appended to the message.

    Returns:
        `value` as a plain ``bool``.

    Raises:
        Steve1EnvError: `error`, if `value` is anything but a ``bool`` or ``numpy.bool_``.
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
    """Returns a reset seed: None, or an integer >= 0 (numpy integers too, bools excluded).

    Args:
        value: The seed given to ``reset``.
        name: What the message calls it (``"seed[2]"`` for one of a vector env's seeds).

    Returns:
        None, or the seed as a plain ``int``.

    Raises:
        ConfigurationError: If `value` is neither None nor an integer >= 0.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ConfigurationError(
            f"{name} must be None or an integer >= 0 such as 42, got {type(value).__name__} "
            f"{short_repr(value)}."
        )
    return int(value)


def reset_options(value: Any) -> dict[str, Any]:
    """Returns a copy of a reset's ``options``: None for none, else a mapping.

    Args:
        value: The ``options`` given to ``reset``.

    Returns:
        A new dict (empty for None), so that popping entries leaves the caller's untouched.

    Raises:
        ConfigurationError: If `value` is neither None nor a mapping.
    """
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


def non_negative_int(
    value: Any, name: str, *, error: type[Steve1EnvError] = ConfigurationError, example: str = "0"
) -> int:
    """Returns `value` as an int if it is an integral number >= 0 (numpy integers too).

    Bools are refused: ``True`` as a seed or a size is a slip, not a decision.

    Args:
        value: The value to check.
        name: What the message calls it (``"seed"``).
        error: The error class to raise.
        example: A valid value, for the message.

    Returns:
        `value` as a plain ``int``.

    Raises:
        Steve1EnvError: `error`, if `value` is not an integer >= 0.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise error(
            f"{name} must be an integer >= 0 such as {example}, got {type(value).__name__} "
            f"{short_repr(value)}."
        )
    return int(value)


MAX_SEED = 2**64 - 1
"""Largest seed of random weights: torch's generators take 64-bit seeds."""


def weights_seed(value: Any, name: str = "seed") -> int:
    """Returns the seed of random weights: an integer from 0 to `MAX_SEED` (bools excluded)."""
    return bounded_int(value, name, 0, MAX_SEED, limit_name="MAX_SEED")


def optional_path(value: Any, name: str, example: str = "'weights/'") -> Path | None:
    """Returns `value` as a Path, or None for None; anything but a str or os.PathLike is refused.

    Args:
        value: The path given.
        name: What the message calls it (``"cache_dir"``).
        example: A valid value, for the message.

    Returns:
        None, or `value` as a ``Path`` (``~`` not expanded; the caller decides).

    Raises:
        ConfigurationError: If `value` is not None, a string or a path, or is an empty string.
    """
    if value is None:
        return None
    if not isinstance(value, str | os.PathLike) or value == "":
        raise ConfigurationError(
            f"{name} must be None or a file path (a str or pathlib.Path) such as {example}, got "
            f"{type(value).__name__} {short_repr(value)}."
        )
    try:
        return Path(value)
    except TypeError:  # an os.PathLike whose __fspath__ returns bytes
        raise ConfigurationError(
            f"{name} must be a text path such as {example}, got {short_repr(value)}."
        ) from None


def keyword_arguments(value: Any, name: str, example: str = "{'size': 64}") -> dict[str, Any]:
    """Returns a copy of keyword arguments for a factory: None for none, else a str-keyed mapping.

    Checked once where the user hands them over, so that ``**value`` further down cannot fail
    with a bare TypeError naming no argument.

    Args:
        value: The keyword arguments (``world_kwargs``...).
        name: What the message calls them (``"world_kwargs"``).
        example: A valid value, for the message.

    Returns:
        A new dict (empty for None), so that changes leave the caller's untouched.

    Raises:
        ConfigurationError: If `value` is neither None nor a mapping whose keys are all strings.
    """
    if value is None:
        return {}
    expected = f"{name} must be a dict of keyword arguments such as {example}"
    if not isinstance(value, Mapping):
        raise ConfigurationError(f"{expected}, got {type(value).__name__} {short_repr(value)}.")
    result = dict(value)
    for key in result:
        if not isinstance(key, str):
            raise ConfigurationError(
                f"{expected}: its keys must be argument names (strings), got the key "
                f"{type(key).__name__} {short_repr(key)}."
            )
    return result


def bounded_int(
    value: Any,
    name: str,
    low: int,
    high: int,
    *,
    limit_name: str,
    unit: str = "",
    hint: str = "",
    error: type[Steve1EnvError] = ConfigurationError,
) -> int:
    """Returns `value` as an int if it is an integer in ``[low, high]`` (bools excluded).

    The one range check of the package's documented limits, so that every message names the
    range and the constant that sets it.

    Args:
        value: The value to check.
        name: What `value` is, as the message should name it (``"num_envs"``).
        low: The smallest allowed value.
        high: The largest allowed value.
        limit_name: The constant(s) setting the range, for the message (``"MAX_NUM_ENVS"``).
        unit: The unit after the range (``" blocks"``), with its leading space.
        hint: How to do without a larger value, appended to the message.
        error: The error class to raise.

    Returns:
        `value` as a plain ``int``.

    Raises:
        Steve1EnvError: `error`, if `value` is not an integer from `low` to `high`.
    """
    expected = f"between {low} and {high}{unit} ({limit_name})"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise error(
            f"{name} must be an integer {expected}, got {type(value).__name__} {short_repr(value)}."
        )
    number = int(value)
    if not low <= number <= high:
        raise error(f"{name} must be {expected}, got {number}{'; ' + hint if hint else ''}.")
    return number


def timeout_seconds(
    value: Any, name: str, *, error: type[Steve1EnvError] = ConfigurationError
) -> float:
    """Returns a timeout in seconds: a finite number > 0 and at most `MAX_TIMEOUT_S`.

    Args:
        value: The timeout to check.
        name: What the message calls it (``"step_timeout"``).
        error: The error class to raise.

    Returns:
        The timeout as a float.

    Raises:
        Steve1EnvError: `error` (ConfigurationError by default), if `value` is not a positive
            finite number, or is over a day.
    """
    seconds = positive_number(value, name, error=error)
    if seconds > MAX_TIMEOUT_S:
        raise error(f"{name} may be at most {MAX_TIMEOUT_S:g} s (MAX_TIMEOUT_S), got {seconds:g}.")
    return seconds


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


def frame_shape(value: Any, name: str, minimum: int = 1) -> tuple[int, int]:
    """Returns ``(height, width)`` from a pair of integers, each `minimum` to `MAX_FRAME_SIDE`.

    Args:
        value: The pair to check.
        name: What the message calls it (``"pov_shape"``).
        minimum: The smallest side allowed.

    Returns:
        ``(height, width)`` as plain ints.

    Raises:
        ConfigurationError: If `value` is not a pair of integers in range.
    """
    try:
        height, width = value
    except (TypeError, ValueError):
        raise ConfigurationError(
            f"{name} must be a pair (height, width) such as (128, 128), got {short_repr(value)}."
        ) from None
    return (
        frame_side(height, f"{name}[0] (the height)", minimum),
        frame_side(width, f"{name}[1] (the width)", minimum),
    )


def frame_side(value: Any, name: str, minimum: int = 1) -> int:
    """Returns one side of a frame in pixels: an integer from `minimum` to `MAX_FRAME_SIDE`.

    Args:
        value: The side to check.
        name: What the message calls it (``"pov_shape[0] (the height)"``).
        minimum: The smallest side allowed.

    Returns:
        The side as a plain int.

    Raises:
        ConfigurationError: If `value` is not an integer in range.
    """
    return bounded_int(
        value,
        name,
        minimum,
        MAX_FRAME_SIDE,
        limit_name="MAX_FRAME_SIDE",
        unit=" pixels",
        hint="MineRL's frames are 360 high and 640 wide",
    )
