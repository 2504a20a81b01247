"""The `World` protocol: what the env needs from a low-level Minecraft world.

A world speaks MineRL 1.0's language: observations are dicts with ``pov`` (H, W, 3) uint8 RGB,
``inventory`` (item -> count), ``location_stats``, ``life_stats`` and counters such as
``mine_block``; actions are the 24-key MineRL action dict (see `steve1_env.worlds.actions`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple, Protocol, runtime_checkable

from steve1_env.errors import (
    ConfigurationError,
    DependencyNotInstalledError,
    InvalidActionError,
    WorldCrashError,
)

WorldObs = dict[str, Any]
"""A MineRL-shaped observation dict."""


class WorldStep(NamedTuple):
    """What one low-level world step returns.

    Attributes:
        obs: The observation after the action.
        done: The world's episode ended (death, time limit, crash).
        info: Extra information; a non-empty ``info["error"]`` marks a crash, and the
            observation that came with it must not be trusted.
    """

    obs: WorldObs
    done: bool
    info: dict[str, Any]


@runtime_checkable
class World(Protocol):
    """A low-level Minecraft world (synthetic, MineRL, MineStudio, ...)."""

    def reset(self, seed: int | None = None) -> WorldObs:
        """Starts a new world episode; `seed` is the world seed."""
        ...

    def step(self, action: Mapping[str, Any]) -> WorldStep:
        """Applies one 24-key MineRL action for one tick."""
        ...

    def close(self) -> None:
        """Releases the world's resources; safe to call twice."""
        ...


@runtime_checkable
class AsyncWorld(Protocol):
    """A world that steps in two halves, so that many worlds can step at the same time.

    `step_async` hands the action over and returns at once; `step_wait` returns its result.
    Every failure of the simulator comes out of `step_wait` (or `reset`) as
    `steve1_env.errors.WorldCrashError`; a malformed action is an
    `steve1_env.errors.InvalidActionError` from `step_async`. This is the one crash channel
    the skill engine reads.
    """

    def reset(self, seed: int | None = None) -> WorldObs:
        """Starts a new world episode; raises `WorldCrashError` if the world fails to start."""
        ...

    def step_async(self, action: Mapping[str, Any]) -> None:
        """Starts one tick with a 24-key MineRL action."""
        ...

    def step_wait(self) -> WorldStep:
        """Returns the result of the action `step_async` started."""
        ...

    def close(self) -> None:
        """Releases the world's resources; safe to call twice."""
        ...


class InProcessWorld:
    """An `AsyncWorld` over a `World` that steps in this process.

    The step runs inside `step_async`; `step_wait` hands over its result. This adapter is the
    world boundary for in-process worlds: any exception of the world other than an invalid
    action, and a step whose ``info`` carries an ``"error"`` (MineRL's way of reporting a lost
    simulator, with a random observation), becomes a `WorldCrashError`.

    Args:
        world: The world to step.
    """

    def __init__(self, world: World) -> None:
        self.world = world
        self._result: WorldStep | None = None
        self._error: BaseException | None = None
        self._waiting = False

    def reset(self, seed: int | None = None) -> WorldObs:
        """Resets the world; any failure but a configuration error is a `WorldCrashError`.

        A missing backend or a bad argument is not a crash: no retry would fix it, so it
        stays what it is.
        """
        self._waiting, self._result, self._error = False, None, None
        try:
            return self.world.reset(seed=seed)
        except (WorldCrashError, ConfigurationError, DependencyNotInstalledError):
            raise
        except Exception as exc:
            raise WorldCrashError(
                f"The world failed to reset ({type(exc).__name__}: {exc}). Check that its "
                "backend is installed and working, then reset again."
            ) from exc

    def step_async(self, action: Mapping[str, Any]) -> None:
        """Steps the world now and keeps the result (or the crash) for `step_wait`."""
        if self._waiting:
            raise WorldCrashError("step_async() twice without step_wait().")
        try:
            result = self.world.step(action)
        except InvalidActionError:
            raise
        except Exception as exc:  # a simulator failure ends the episode, not the program
            self._error = (
                exc
                if isinstance(exc, WorldCrashError)
                else WorldCrashError(f"{type(exc).__name__}: {exc}")
            )
            self._result = None
        else:
            error = result.info.get("error") if isinstance(result.info, Mapping) else None
            if error:
                self._error, self._result = WorldCrashError(str(error)), None
            else:
                self._error, self._result = None, result
        self._waiting = True

    def step_wait(self) -> WorldStep:
        """Returns the kept result, or raises the kept `WorldCrashError`."""
        if not self._waiting:
            raise WorldCrashError("step_wait() without step_async().")
        self._waiting = False
        result, error, self._result, self._error = self._result, self._error, None, None
        if error is not None:
            raise error
        assert result is not None
        return result

    def close(self) -> None:
        """Closes the world."""
        self.world.close()


def as_async(world: World | AsyncWorld) -> AsyncWorld:
    """Returns `world` itself if it steps asynchronously, else an `InProcessWorld` over it."""
    if callable(getattr(world, "step_async", None)) and callable(getattr(world, "step_wait", None)):
        return world  # type: ignore[return-value]
    return InProcessWorld(world)  # type: ignore[arg-type]
