"""Closing what was built: every component is closed even when an earlier one fails."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any


def close_all(closers: Iterable[Callable[[], Any]]) -> None:
    """Calls every closer in order, then raises the first error, if any.

    Args:
        closers: ``close`` methods (or any callables) to call, e.g. ``[env.close, world.close]``.
    """
    errors: list[Exception] = []
    for close in closers:
        try:
            close()
        except Exception as exc:  # close the rest, then report
            errors.append(exc)
    if errors:
        raise errors[0]
