"""`WorldProcess`: a world run in its own process, behind the `World` protocol.

Real Minecraft blocks for tens of milliseconds per tick and can hang or crash on its own. In a
vector env each such world lives in a child process, so N worlds step at the same time
(`step_async` to all, then `step_wait`), and one that dies or hangs is killed and restarted at
its next reset instead of taking the others down.

Any call that does not end with the child's answer (a timeout, a dead child, an interrupt)
abandons the child: it is killed, so a late answer can never be read as the answer to a later
call. Children run with the spawn start method, so a script that builds worlds in processes
needs an ``if __name__ == "__main__":`` guard.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Iterable, Mapping
from multiprocessing.reduction import ForkingPickler
from typing import Any

from steve1_env.errors import InvalidActionError, WorldCrashError
from steve1_env.validation import timeout_seconds
from steve1_env.worlds.base import WorldObs, WorldStep
from steve1_env.worlds.processes import become_worker

DEFAULT_STEP_TIMEOUT_S = 60.0
DEFAULT_RESET_TIMEOUT_S = 600.0  # building a Minecraft world can take minutes
_CLOSE_TIMEOUT_S = 30.0
ABANDON_GRACE_S = 1.0
"""Seconds an abandoned child gets to close its world after SIGTERM before it is killed."""


def _serve(connection: Any, name: str, kwargs: dict[str, Any]) -> None:
    """Child process: builds the world and answers the parent's calls until told to close."""
    become_worker()
    from steve1_env.registry import WORLDS

    world = None
    try:
        try:
            world = WORLDS.make(name, **kwargs)
        except Exception as exc:
            connection.send(("error", _portable(exc)))
            return
        connection.send(("ok", None))
        while True:
            method, argument = connection.recv()
            if method == "close":
                return
            try:
                answer: Any = (
                    world.reset(seed=argument) if method == "reset" else world.step(argument)
                )
            except Exception as exc:  # sent back: the parent decides what a failure means
                connection.send(("error", _portable(exc)))
            else:
                connection.send(("ok", answer))
    except (EOFError, OSError):  # the parent went away
        return
    finally:
        if world is not None:
            world.close()


def _message(method: str, argument: Any) -> bytes:
    # Pickled before anything is sent, so that an argument that cannot be pickled fails
    # without touching the pipe; the child's ``recv`` unpickles it as a sent object.
    return bytes(ForkingPickler.dumps((method, argument)))


def _portable(exc: Exception) -> Exception:
    # Exceptions of user code may not unpickle in the parent; their text always does.
    import pickle

    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return WorldCrashError(f"{type(exc).__name__}: {exc}")
    return exc


class WorldProcess:
    """A registered world (by name) running in a child process.

    Args:
        name: The world's registered name or import path (``"minerl"``).
        kwargs: Arguments of the world factory.
        step_timeout: Seconds a step may take before the world counts as hung.
        reset_timeout: Seconds a reset (including starting the process) may take.

    The child starts at the first reset. A call that fails raises `WorldCrashError` (the env
    records a crash) and the next `reset` starts a new child.
    """

    def __init__(
        self,
        name: str,
        kwargs: Mapping[str, Any] | None = None,
        step_timeout: float = DEFAULT_STEP_TIMEOUT_S,
        reset_timeout: float = DEFAULT_RESET_TIMEOUT_S,
    ) -> None:
        self.name = name
        self.kwargs = dict(kwargs or {})
        self.step_timeout = timeout_seconds(step_timeout, "step_timeout")
        self.reset_timeout = timeout_seconds(reset_timeout, "reset_timeout")
        self._process: Any = None
        self._connection: Any = None
        self._waiting = False

    @property
    def waiting(self) -> bool:
        """True between `step_async` and the `step_wait` that reads its answer."""
        return self._waiting

    @property
    def pid(self) -> int | None:
        """The child's pid, or None when none runs."""
        return None if self._process is None else self._process.pid

    # ------------------------------------------------------------------ World protocol
    def reset(self, seed: int | None = None) -> WorldObs:
        """Resets the world in the child, starting (or restarting) the child if needed."""
        if self._process is None or not self._process.is_alive() or self._waiting:
            self._start()
        self._send(_message("reset", seed))
        return self._receive(self.reset_timeout, "reset")

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
        if self._connection is None or self._waiting:
            raise WorldCrashError(f"The {self.name} world process is not ready; reset it.")
        if not isinstance(action, Mapping):
            raise InvalidActionError(
                f"A world action must be a dict such as {{'forward': 1}}, got "
                f"{type(action).__name__}."
            )
        try:
            message = _message("step", dict(action))
        except Exception as exc:
            raise InvalidActionError(
                f"The action cannot be sent to the {self.name} world process "
                f"({type(exc).__name__}: {exc}); actions hold numbers and arrays only."
            ) from None
        # Waiting from before the send (and only once there is a message to send): an
        # interrupt right after it must still make close() drain the answer, or a child
        # blocked sending a large frame never reads "close".
        self._waiting = True
        self._send(message)

    def step_wait(self) -> WorldStep:
        """Returns the result of the action sent by `step_async`."""
        if not self._waiting:
            raise WorldCrashError("step_wait() without step_async().")
        result = self._receive(self.step_timeout, "step")
        self._waiting = False
        return result

    def close(self) -> None:
        """Stops the child (it closes its world). Safe to call twice."""
        process, connection = self._process, self._connection
        self._process = self._connection = None
        waiting, self._waiting = self._waiting, False
        if process is None:
            return
        try:
            # An answer still on its way is drained first; a child that never answers is
            # killed below.
            if not waiting or connection.poll(_CLOSE_TIMEOUT_S):
                if waiting:
                    connection.recv()
                connection.send(("close", None))
        except (EOFError, OSError, ValueError):
            pass
        process.join(timeout=_CLOSE_TIMEOUT_S)  # closing a Minecraft server takes a moment
        if process.is_alive():
            process.kill()
            process.join(timeout=5)
        connection.close()

    # ------------------------------------------------------------------ internals
    def _start(self) -> None:
        self._abandon()
        context = multiprocessing.get_context("spawn")
        self._connection, child = context.Pipe()
        self._process = context.Process(
            target=_serve,
            args=(child, self.name, self.kwargs),
            name=f"steve1-env world {self.name}",
            daemon=True,
        )
        self._process.start()
        child.close()
        self._receive(self.reset_timeout, "start")

    def _send(self, message: bytes) -> None:
        try:
            self._connection.send_bytes(message)
        except (OSError, ValueError) as exc:
            raise self._failed(f"died ({type(exc).__name__})") from None
        except BaseException:
            # An interrupt part-way leaves half a message in the pipe: the child would wait for
            # the rest forever and never read "close", so it is dropped now.
            self._abandon()
            raise

    def _receive(self, timeout: float, what: str) -> Any:
        try:
            if not self._connection.poll(timeout):
                raise self._failed(
                    f"did not answer a {what} within {timeout:g} s (hung)", died=False
                )
            status, payload = self._connection.recv()
        except (EOFError, OSError) as exc:
            raise self._failed(f"died ({type(exc).__name__})") from None
        except BaseException:  # an interrupt: the answer may still come, so drop the child
            self._abandon()
            raise
        if status == "error":
            if what == "start":
                self._abandon()
            raise payload
        return payload

    def _failed(self, what: str, died: bool = True) -> WorldCrashError:
        process = self._process
        if process is not None and died:
            process.join(timeout=5)  # its pipe closed: it is exiting, wait for the exit code
        code = None if process is None else process.exitcode
        self._abandon()
        suffix = "" if code is None else f", exit code {code}"
        return WorldCrashError(
            f"The {self.name} world process {what}{suffix}; it is killed and restarts at the "
            "next reset."
        )

    def _abandon(self) -> None:
        abandon_all([self])

    def _take_child(self) -> tuple[Any, Any]:
        process, connection = self._process, self._connection
        self._process = self._connection = None
        self._waiting = False
        return process, connection


def abandon_all(worlds: Iterable[WorldProcess]) -> None:
    """Stops the children of `worlds` without waiting for any answer, all at once.

    Each gets SIGTERM (its world closes on the way out, so a simulator does not outlive it);
    those still running after `ABANDON_GRACE_S` seconds in all are killed. Used when a call
    will never read its answer: a timeout, a dead child, an interrupt.
    """
    children = [world._take_child() for world in worlds]
    for process, _ in children:
        if process is not None and process.is_alive():
            process.terminate()
    deadline = time.monotonic() + ABANDON_GRACE_S
    for process, connection in children:
        if process is not None:
            process.join(timeout=max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join(timeout=5)
        if connection is not None:
            connection.close()
