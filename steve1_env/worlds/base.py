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
from steve1_env.validation import timeout_seconds

WorldObs = dict[str, Any]
"""A MineRL-shaped observation dict."""


NOT_CRASHES: tuple[type[Exception], ...] = (
    InvalidActionError,
    ConfigurationError,
    DependencyNotInstalledError,
)
"""Errors a world raises that are the caller's mistake, not the simulator's: they pass the world
boundary as they are (a bad action, a bad argument, a backend that is not installed)."""


class WorldTimeouts(NamedTuple):
    """How long one kind of world may take before it counts as hung (a crash).

    A world class declares them once, as its ``timeouts`` class attribute; its own watchdog (if
    it has one) and `steve1_env.worlds.world_process.WorldProcess` both read them, so a world
    process never kills a world its own watchdog still lets run.

    Attributes:
        step_s: Seconds one step may take.
        reset_s: Seconds a reset may take, including building the world (the first Minecraft
            launch takes minutes).
        watchdog: The world enforces these limits itself and cleans up its simulator when one
            passes (MineRL kills its Java processes); a world process then waits
            `WATCHDOG_MARGIN_S` longer, so that the world, not the process kill, ends the call.
    """

    step_s: float
    reset_s: float
    watchdog: bool = False


WATCHDOG_MARGIN_S = 30.0
"""Seconds a world process waits past the limits of a world with its own watchdog: time for the
world to kill its simulator and answer with a `WorldCrashError` (a killed process could leave
the simulator's processes running)."""

DEFAULT_WORLD_TIMEOUTS = WorldTimeouts(step_s=60.0, reset_s=600.0)
"""The timeouts of a world kind that declares none (a user's world): a minute per step, ten
minutes per reset."""


def world_timeouts(factory: Any, kwargs: Mapping[str, Any] | None = None) -> WorldTimeouts:
    """Returns the timeouts a world kind declares, without building a world.

    Args:
        factory: The world's registered factory (a class with a ``timeouts`` attribute, or
            anything else: `DEFAULT_WORLD_TIMEOUTS`).
        kwargs: The factory's arguments: a ``step_timeout`` or ``reset_timeout`` among them
            (the world's own watchdog, as `steve1_env.worlds.minerl.MineRLWorld` takes) replaces
            the declared value, so the world and its process agree.

    Raises:
        ConfigurationError: If the declared or given timeouts are not positive numbers of
            seconds (at most `steve1_env.validation.MAX_TIMEOUT_S`).
    """
    declared = getattr(factory, "timeouts", None)
    if not isinstance(declared, WorldTimeouts):
        declared = DEFAULT_WORLD_TIMEOUTS
    given = kwargs or {}
    step = given.get("step_timeout", declared.step_s)
    reset = given.get("reset_timeout", declared.reset_s)
    return WorldTimeouts(
        timeout_seconds(declared.step_s if step is None else step, "step_timeout"),
        timeout_seconds(declared.reset_s if reset is None else reset, "reset_timeout"),
        declared.watchdog,
    )


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
    """A low-level Minecraft world (synthetic, MineRL, MineStudio, ...).

    A world reports a crash of its simulator by raising `steve1_env.errors.WorldCrashError`
    (the built-in worlds do). A ``WorldStep`` whose ``info`` carries an ``"error"`` counts as a
    crash too, for worlds written that way. A class may declare its `WorldTimeouts` as a
    ``timeouts`` class attribute (default `DEFAULT_WORLD_TIMEOUTS`).
    """

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
    `steve1_env.errors.InvalidActionError` from `step_async` (or from `step_wait`, when only
    the world in its process can tell). The errors of `NOT_CRASHES` pass as they are. This is
    the one crash channel the skill engine reads.
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
    world boundary for in-process worlds: any exception of the world other than those of
    `NOT_CRASHES`, and a step whose ``info`` carries an ``"error"`` (how a world written for
    MineRL's conventions reports a lost simulator, with a random observation), becomes a
    `WorldCrashError`.

    Args:
        world: The world to step.
    """

    def __init__(self, world: World) -> None:
        self.world = world
        self._result: WorldStep | None = None
        self._error: BaseException | None = None
        self._waiting = False

    def reset(self, seed: int | None = None) -> WorldObs:
        """Resets the world; any failure but those of `NOT_CRASHES` is a `WorldCrashError`."""
        self._waiting, self._result, self._error = False, None, None
        try:
            return self.world.reset(seed=seed)
        except WorldCrashError:
            raise
        except NOT_CRASHES:
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
        except NOT_CRASHES:
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
