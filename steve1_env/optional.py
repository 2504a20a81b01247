"""Lazy imports of optional dependencies, failing with the exact install command."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from steve1_env.errors import DependencyNotInstalledError

DISTRIBUTION = "steve1-env"
"""The name the package installs under (``pip install steve1-env``)."""


def install_command(extra: str) -> str:
    """Returns how to install the ``steve1-env`` extra `extra`, from an index and from a clone.

    Example: ``pip install "steve1-env[minerl]"`` (from a clone of the repository:
    ``pip install -e ".[minerl]"``).
    """
    return (
        f'pip install "{DISTRIBUTION}[{extra}]" (from a clone of the repository: '
        f'pip install -e ".[{extra}]")'
    )


def _missing(module: str, extra: str | None, purpose: str, hint: str, why: str) -> str:
    message = f"{purpose} needs the optional dependency {module!r}, which failed to import ({why})."
    if extra is not None:
        message += f" Install the {extra!r} extra: {install_command(extra)}."
    return f"{message} {hint}".strip()


def require_installed(module: str, extra: str | None, purpose: str, hint: str = "") -> None:
    """Raises `DependencyNotInstalledError` unless `module` can be found, without importing it.

    For checks before a run starts: finding a package is instant, importing one (MineRL,
    MineStudio) takes seconds. A package found but broken still fails at its import.

    Args:
        module: The top-level module (``"minerl"``).
        extra: The ``steve1-env`` extra that brings it, or None when no extra can (the
            `hint` then says how to install it).
        purpose: What needs it, for the message.
        hint: Further setup the extra cannot do, appended to the message.
    """
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise DependencyNotInstalledError(
            _missing(module, extra, purpose, hint, f"No module named {module!r}")
        )


def import_optional(module: str, extra: str | None, purpose: str, hint: str = "") -> ModuleType:
    """Imports `module`, or raises `DependencyNotInstalledError` saying how to install it.

    Args:
        module: The module to import (``"stable_baselines3"``).
        extra: The ``steve1-env`` extra that brings it (``"sb3"``), or None when no extra
            can (the `hint` then says how to install it).
        purpose: What needs it, for the message (``"the PPO example"``).
        hint: Further setup the extra cannot do (Java, a git install), appended to the message.

    Raises:
        DependencyNotInstalledError: If the import fails; the original error is its cause.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise DependencyNotInstalledError(_missing(module, extra, purpose, hint, str(exc))) from exc
