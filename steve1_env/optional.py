"""Lazy imports of optional dependencies, failing with the exact install command."""

from __future__ import annotations

import importlib
from types import ModuleType

from steve1_env.errors import DependencyNotInstalledError


def import_optional(module: str, extra: str, purpose: str, hint: str = "") -> ModuleType:
    """Imports `module`, or raises `DependencyNotInstalledError` saying how to install it.

    Args:
        module: The module to import (``"stable_baselines3"``).
        extra: The ``steve1-env`` extra that brings it (``"sb3"``).
        purpose: What needs it, for the message (``"the PPO example"``).
        hint: Further setup the extra cannot do (Java, a git install), appended to the message.

    Raises:
        DependencyNotInstalledError: If the import fails; the original error is its cause.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        message = (
            f"{purpose} needs the optional dependency {module!r}, which failed to import "
            f'({exc}). Install it with: pip install "steve1-env[{extra}]".'
        )
        raise DependencyNotInstalledError(f"{message} {hint}".strip()) from exc
