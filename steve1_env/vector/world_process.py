"""`WorldProcess`: a world run in its own process, behind the `World` protocol.

Real Minecraft blocks for tens of milliseconds per tick and can hang or crash on its own. In a
vector env each such world lives in a child process, so N worlds step at the same time
(`step_async` to all, then `step_wait`), and one that dies is restarted at its next reset
instead of taking the others down.
"""

from __future__ import annotations

import multiprocessing
import signal
from collections.abc import Mapping
from typing import Any

from steve1_env.errors import WorldCrashError
from steve1_env.worlds.base import WorldObs, WorldStep

_START_TIMEOUT_S = 600.0  # a Minecraft world can take minutes to launch on its first reset


def _serve(connection: Any, name: str, kwargs: dict[str, Any]) -> None:
    """Child process: builds the world and answers the parent's calls until told to close."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and closes us
    from steve1_env.registry import WORLDS

    world = None
    try:
        world = WORLDS.make(name, **kwargs)
        connection.send(("ok", None))
        while True:
            method, argument = connection.recv()
            if method == "close":
                return
            try:
                if method == "reset":
                    answer: Any = world.reset(seed=argument)
                else:
                    answer = world.step(argument)
            except Exception as exc:  # sent back: the parent decides what a failure means
                connection.send(("error", _portable(exc)))
            else:
                connection.send(("ok", answer))
    except (EOFError, OSError, KeyboardInterrupt):
        return
    except Exception as exc:  # the world could not be built
        connection.send(("error", _portable(exc)))
    finally:
        if world is not None:
            world.close()


def _portable(exc: Exception) -> Exception:
    # Exceptions of user code may not unpickle in the parent; their text always does.
    try:
        import pickle

        pickle.loads(pickle.dumps(exc))
    except Exception:
        return WorldCrashError(f"{type(exc).__name__}: {exc}")
    return exc


class WorldProcess:
    """A registered world (by name) running in a child process.

    Args:
        name: The world's registered name or import path (``"minerl"``).
        kwargs: Arguments of the world factory.

    The child starts on the first call. If it dies, the call raises `WorldCrashError` and the
    next `reset` starts a new one.
    """

    def __init__(self, name: str, kwargs: Mapping[str, Any] | None = None) -> None:
        self.name = name
        self.kwargs = dict(kwargs or {})
        self._process: Any = None
        self._connection: Any = None
        self._waiting = False

    # ------------------------------------------------------------------ World protocol
    def reset(self, seed: int | None = None) -> WorldObs:
        """Resets the world in the child, starting (or restarting) the child if needed."""
        if self._process is None or not self._process.is_alive():
            self._start()
        return self._call("reset", seed)

    def step(self, action: Mapping[str, Any]) -> WorldStep:
        """Steps the world in the child and waits for the result."""
        self.step_async(action)
        return self.step_wait()

    def step_async(self, action: Mapping[str, Any]) -> None:
        """Sends the action without waiting, so that several worlds step at once."""
        if self._connection is None:
            raise WorldCrashError(f"The {self.name} world process is not running; reset it.")
        try:
            self._connection.send(("step", dict(action)))
        except (OSError, ValueError) as exc:
            raise self._died(exc) from None
        self._waiting = True

    def step_wait(self) -> WorldStep:
        """Returns the result of the action sent by `step_async`."""
        if not self._waiting:
            raise WorldCrashError("step_wait() without step_async().")
        self._waiting = False
        return self._answer()

    def close(self) -> None:
        """Stops the child (it closes its world). Safe to call twice."""
        process, connection = self._process, self._connection
        self._process = self._connection = None
        if process is None:
            return
        try:
            if self._waiting:
                connection.recv()
            connection.send(("close", None))
        except (EOFError, OSError, ValueError):
            pass
        self._waiting = False
        process.join(timeout=30)  # closing a Minecraft server takes a moment
        if process.is_alive():
            process.kill()
            process.join(timeout=5)
        connection.close()

    # ------------------------------------------------------------------ internals
    def _start(self) -> None:
        self.close()
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
        if not self._connection.poll(_START_TIMEOUT_S):
            raise WorldCrashError(f"The {self.name} world process did not start in time.")
        self._answer()

    def _call(self, method: str, argument: Any) -> Any:
        try:
            self._connection.send((method, argument))
        except (OSError, ValueError) as exc:
            raise self._died(exc) from None
        return self._answer()

    def _answer(self) -> Any:
        try:
            status, payload = self._connection.recv()
        except (EOFError, OSError) as exc:
            raise self._died(exc) from None
        if status == "error":
            raise payload
        return payload

    def _died(self, cause: BaseException) -> WorldCrashError:
        code = None
        if self._process is not None:
            self._process.join(timeout=5)
            code = self._process.exitcode
        return WorldCrashError(
            f"The {self.name} world process died (exit code {code}, {type(cause).__name__}); "
            "it restarts at the next reset."
        )
