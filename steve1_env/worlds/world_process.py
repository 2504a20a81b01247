"""`WorldProcess`: a registered world run in its own process, as an `AsyncWorld`.

Real Minecraft blocks for tens of milliseconds per tick and can hang or crash on its own. Each
such world can live in a child process (a `steve1_env.workers.WorkerProcess`), so N worlds step
at the same time (`step_async` to all, then `step_wait`), and one that dies or hangs is killed
and restarted at its next reset instead of taking the others down.

A call that does not end with the child's answer (a timeout, a dead child, an interrupt)
abandons the child, so a late answer is never read as the answer to a later call. The
timeouts are the world kind's own (`steve1_env.worlds.base.WorldTimeouts`), so a MineRL world
gets the 30 minutes its first launch may take. Children run with the spawn start method, so a
script that builds worlds in processes needs an ``if __name__ == "__main__":`` guard.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from steve1_env.errors import InvalidActionError, WorldCrashError
from steve1_env.validation import timeout_seconds
from steve1_env.workers import (
    ABANDON_GRACE_S,
    WorkerLostError,
    WorkerProcess,
    describe,
)
from steve1_env.workers import abandon_all as _abandon_workers
from steve1_env.worlds.base import (
    NOT_CRASHES,
    WATCHDOG_MARGIN_S,
    WorldObs,
    WorldStep,
    world_timeouts,
)

_log = logging.getLogger(__name__)

_CLOSE_TIMEOUT_S = 30.0  # closing a Minecraft server takes a moment

__all__ = ["ABANDON_GRACE_S", "WorldProcess", "abandon_all"]


def _build_world(name: str, kwargs: dict[str, Any]) -> Any:
    """Child process: builds the registered world."""
    from steve1_env.registry import WORLDS

    return WORLDS.make(name, **kwargs)


class WorldProcess:
    """A registered world (by name) running in a child process; an `AsyncWorld`.

    Args:
        name: The world's registered name or import path (``"minerl"``).
        kwargs: Arguments of the world factory.
        step_timeout: Seconds a step may take before the world counts as hung; None for the
            world kind's declared `WorldTimeouts` (see
            `steve1_env.worlds.base.world_timeouts`).
        reset_timeout: Seconds a reset (and, before it, starting the process and building the
            world) may take; None for the world kind's.

    The child starts at the first reset. A call that fails raises `WorldCrashError` (the env
    records a crash) and the next `reset` starts a new child. Looking up the kind's timeouts
    imports the world's factory here but builds nothing. For a world with its own watchdog
    (`WorldTimeouts.watchdog`, MineRL) the process waits `WATCHDOG_MARGIN_S` past the kind's
    limits, so the world's watchdog ends a hung call and cleans up its simulator first.
    """

    def __init__(
        self,
        name: str,
        kwargs: Mapping[str, Any] | None = None,
        step_timeout: float | None = None,
        reset_timeout: float | None = None,
    ) -> None:
        from steve1_env.registry import WORLDS

        self.name = name
        self.kwargs = dict(kwargs or {})
        declared = world_timeouts(WORLDS.factory(name), self.kwargs)
        self.step_timeout = (
            declared.step_s
            if step_timeout is None
            else timeout_seconds(step_timeout, "step_timeout")
        )
        self.reset_timeout = (
            declared.reset_s
            if reset_timeout is None
            else timeout_seconds(reset_timeout, "reset_timeout")
        )
        # Explicit limits are the process's own; the world's watchdog gets its margin only
        # under the limits it enforces itself.
        margin = WATCHDOG_MARGIN_S if declared.watchdog else 0.0
        self._step_limit = self.step_timeout + (margin if step_timeout is None else 0.0)
        self._reset_limit = self.reset_timeout + (margin if reset_timeout is None else 0.0)
        self._worker: WorkerProcess | None = None

    @property
    def waiting(self) -> bool:
        """True between `step_async` and the `step_wait` that reads its answer."""
        return self._worker is not None and self._worker.waiting

    @property
    def pid(self) -> int | None:
        """The child's pid, or None when none runs."""
        return None if self._worker is None else self._worker.pid

    # ------------------------------------------------------------------ AsyncWorld
    def reset(self, seed: int | None = None) -> WorldObs:
        """Resets the world in the child, starting (or restarting) the child if needed."""
        worker = self._worker
        if worker is None or not worker.is_alive() or worker.waiting:
            worker = self._start()
        try:
            worker.wait_started(self._reset_limit)
            return worker.call("reset", seed=seed, timeout=self._reset_limit)
        except Exception as exc:
            raise self._crash(exc, "reset") from None

    def step(self, action: Mapping[str, Any]) -> WorldStep:
        """Steps the world in the child and waits for the result."""
        self.step_async(action)
        return self.step_wait()

    def step_async(self, action: Mapping[str, Any]) -> None:
        """Sends the action without waiting, so that several worlds step at once.

        Raises:
            WorldCrashError: If the child is not ready (not reset, or a step is pending).
            InvalidActionError: If `action` is not a mapping that can be sent to the child;
                nothing is sent then and the child stays usable.
        """
        worker = self._worker
        if worker is None or worker.waiting:
            raise WorldCrashError(f"The {self.name} world process is not ready; reset it.")
        if not isinstance(action, Mapping):
            raise InvalidActionError(
                f"A world action must be a dict such as {{'forward': 1}}, got "
                f"{type(action).__name__}."
            )
        try:
            worker.send("step", dict(action))
        except WorkerLostError as exc:
            raise self._crash(exc, "step") from None
        except Exception as exc:  # pickling: nothing was sent
            raise InvalidActionError(
                f"The action cannot be sent to the {self.name} world process "
                f"({type(exc).__name__}: {exc}); actions hold numbers and arrays only."
            ) from None

    def step_wait(self) -> WorldStep:
        """Returns the result of the action sent by `step_async`.

        Raises:
            WorldCrashError: If the world failed, or its process died or hung (it is killed
                and restarts at the next reset); also for a step whose ``info`` carries an
                ``"error"``.
            InvalidActionError: If the world refused the action.
        """
        worker = self._worker
        if worker is None or not worker.waiting:
            raise WorldCrashError("step_wait() without step_async().")
        try:
            result = worker.wait(self._step_limit)
        except Exception as exc:
            raise self._crash(exc, "step") from None
        info = getattr(result, "info", None)
        if isinstance(info, Mapping) and info.get("error"):
            raise WorldCrashError(str(info["error"]))
        return result

    def close(self) -> None:
        """Stops the child (it closes its world); an answer on its way is drained first.

        Safe to call twice.
        """
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.close(_CLOSE_TIMEOUT_S)

    # ------------------------------------------------------------------ internals
    def _start(self) -> WorkerProcess:
        restart = self._worker is not None
        self._abandon()
        self._worker = WorkerProcess(_build_world, (self.name, self.kwargs), f"{self.name} world")
        _log.info(
            "%s the %s world process (pid %s)",
            "restarted" if restart else "started",
            self.name,
            self._worker.pid,
        )
        return self._worker

    def _crash(self, error: Exception, what: str) -> Exception:
        """The error a failed call raises: lost children and world failures are crashes."""
        if isinstance(error, WorkerLostError):
            self._worker = None  # abandoned already
            suffix = "" if error.exit_code is None else f", exit code {error.exit_code}"
            _log.warning("the %s world process %s on %s%s", self.name, error.reason, what, suffix)
            return WorldCrashError(
                f"The {self.name} world process {error.reason}{suffix}; it is killed and "
                "restarts at the next reset."
            )
        if isinstance(error, (WorldCrashError, NOT_CRASHES)):
            if self._worker is not None and not self._worker.is_alive():
                self._worker = None  # building the world failed: the child has exited
            return error
        _log.warning("the %s world failed to %s: %s", self.name, what, describe(error))
        return WorldCrashError(f"The {self.name} world failed to {what}: {describe(error)}")

    def _abandon(self) -> None:
        abandon_all([self])


def abandon_all(worlds: Iterable[WorldProcess]) -> None:
    """Stops the children of `worlds` without waiting for any answer, all at once.

    See `steve1_env.workers.abandon_all`: SIGTERM, then SIGKILL after `ABANDON_GRACE_S`.
    """
    workers = []
    for world in worlds:
        worker, world._worker = world._worker, None
        if worker is not None:
            workers.append(worker)
    _abandon_workers(workers)
