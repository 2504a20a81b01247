"""The one exception hierarchy of `steve1_env`.

Every error the package raises on purpose derives from `Steve1EnvError`, so callers can catch
the whole family at once. Each also derives from the matching builtin (`ValueError`,
`ImportError`, `RuntimeError`) so generic handlers keep working. Messages say what was
expected, what came, and how to fix it.
"""

from __future__ import annotations

import os
import sys
import warnings

import gymnasium
from gymnasium.error import ClosedEnvironmentError as _GymnasiumClosedEnvironmentError
from gymnasium.error import ResetNeeded as _GymnasiumResetNeeded


class Steve1EnvError(Exception):
    """Base class of every error raised by `steve1_env`."""


class ConfigurationError(Steve1EnvError, ValueError):
    """An argument given when building the env or one of its parts is invalid."""


class UnknownNameError(ConfigurationError, KeyError):
    """A name (world, policy, prompt encoder, ...) is not in its registry.

    Derives from `KeyError` too, so `str()` would quote the message; `__str__` is plain.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class InvalidInstructionError(Steve1EnvError, ValueError):
    """An instruction is not a non-empty string of acceptable length."""


class InvalidActionError(Steve1EnvError, ValueError):
    """An action (high-level skill choice or low-level MineRL action) is malformed."""


class GoalEmbeddingError(Steve1EnvError, ValueError):
    """A goal embedding has the wrong shape or holds non-finite values."""


class DetectorError(Steve1EnvError, ValueError):
    """A success detector is misconfigured or cannot read the observation it needs."""


class DependencyNotInstalledError(Steve1EnvError, ImportError):
    """An optional dependency is missing; the message carries the install command."""


class WorldCrashError(Steve1EnvError, RuntimeError):
    """The low-level world failed (simulator crash, socket error, watchdog timeout)."""


class ResetNeededError(Steve1EnvError, RuntimeError, _GymnasiumResetNeeded):
    """`step` or `render` was called before `reset`, or `step` after the episode ended.

    Also a `gymnasium.error.ResetNeeded`, which gymnasium's order enforcer raises for the same
    mistake, so code catching that keeps working. Use after `close` is a `ClosedError` instead.
    """


class ClosedError(Steve1EnvError, RuntimeError, _GymnasiumClosedEnvironmentError):
    """An object was used after `close` (an env, a vector env, a policy, a world, an encoder).

    Closing released what the object held (a world process, weights), so no reset brings it
    back: create a new one. Also a `gymnasium.error.ClosedEnvironmentError`, the error
    Gymnasium's own envs raise for the same mistake.
    """


class WeightsError(Steve1EnvError, ValueError):
    """A weight or model file is missing, malformed or does not fit the network."""


class UnsafeFileError(WeightsError):
    """A file would run code when loaded (a pickle naming functions or classes)."""


class InvalidObservationError(Steve1EnvError, ValueError):
    """A world returned an observation that breaks the MineRL format (``pov`` and friends)."""


class TaskSpecError(ConfigurationError):
    """A task file or task set is malformed; the message names the file, task and field."""


class TaskFileError(TaskSpecError):
    """A task file cannot be read as a document within the limits.

    Unreadable, not a regular file, not UTF-8, not valid YAML, or past the size, value-count
    (aliases expanded) or nesting limits of `steve1_env.tasks.spec`; raised before any field
    is looked at. Field-level problems are plain `TaskSpecError`.
    """


class ResultsError(Steve1EnvError, ValueError):
    """A results file or run directory cannot be read or written, or does not fit the run."""


class EvaluationError(Steve1EnvError, RuntimeError):
    """A trial failed for a reason other than a world crash, so the evaluation stopped."""


class Steve1EnvWarning(UserWarning):
    """Base class of the warnings `steve1_env` emits, so they can be filtered as one."""


def _directory_prefixes(module_file: str | None) -> tuple[str, ...]:
    if module_file is None:
        return ()
    folder = os.path.dirname(module_file)
    return tuple({folder + os.sep, os.path.abspath(folder) + os.sep})


# Frames in these folders are passed through when a warning looks for the line that caused it:
# the package's own, and gymnasium's (its make() and wrappers hand the user's call to the env).
_PASSED_THROUGH = _directory_prefixes(__file__) + _directory_prefixes(gymnasium.__file__)


def warn_caller(message: str, category: type[Warning] = Steve1EnvWarning) -> None:
    """Warns, pointing at the line of the caller's code that led here.

    The rule for every warning of the package: its location (``filename``, ``lineno``, and so
    what a warnings filter by module sees) is the first frame outside `steve1_env` and
    gymnasium, i.e. the user's ``gym.make(...)``, ``env.step(...)`` or ``evaluate(...)``,
    wherever inside the package the warning is raised. A fixed ``stacklevel`` cannot say
    that, since the same warning is reached through several paths. When every frame is the
    package's (the ``steve1-env`` command), the outermost one is named.

    Args:
        message: The warning's text.
        category: Its class (`Steve1EnvWarning` unless said otherwise).
    """
    frame = sys._getframe(1)  # the function that warns: stacklevel 2 from here
    level = 2
    while frame.f_back is not None and frame.f_code.co_filename.startswith(_PASSED_THROUGH):
        frame = frame.f_back
        level += 1
    warnings.warn(message, category, stacklevel=level)
