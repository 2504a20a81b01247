"""`WorkerProcess`: an object built in a child process and called across a pipe.

World processes (`steve1_env.worlds.world_process`) and evaluation workers
(`steve1_env.evaluation.executors`) both run their object (a world, a trial runner) this way:

- the child starts with the ``spawn`` start method (fork would copy the parent's threads, torch's
  included), builds the object with a picklable factory and says it is ready (the start
  handshake); a failed build is answered with its exception instead;
- a call is a method name and its arguments. `WorkerProcess.send` hands one over without
  waiting and `WorkerProcess.wait` reads its answer, with a timeout, so that many workers work
  at the same time;
- any call that does not end with the child's answer (a timeout, a dead child, an interrupt)
  abandons the child: it gets SIGTERM and is killed after `ABANDON_GRACE_S`, so a late answer is
  never read as the answer to a later call. `abandon_all` does it for many children at once;
- an exception raised in the child comes back as itself when it unpickles in the parent, as a
  `WorkerError` with its type name and text when it does not, and with the child's traceback
  (`worker_traceback`) unless it is one of the package's own errors, which explain themselves;
- `close_all` drains an answer still on its way, tells the children to close their object and
  kills those that do not exit in time.

A script that starts workers needs an ``if __name__ == "__main__":`` guard: each child imports it.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import pickle
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from multiprocessing.reduction import ForkingPickler
from typing import Any

from steve1_env.errors import Steve1EnvError

ABANDON_GRACE_S = 1.0
"""Seconds an abandoned child gets to close its object after SIGTERM before it is killed."""

CLOSE_TIMEOUT_S = 30.0
"""Seconds `close_all` waits for an answer still on its way, then again for the exits."""

_PR_SET_PDEATHSIG = 1
_TRACEBACK = "worker_traceback"


class WorkerError(Steve1EnvError, RuntimeError):
    """An exception of the child that could not be sent back as itself (it did not unpickle).

    Attributes:
        type_name: The name of the exception's class in the child.
    """

    def __init__(self, type_name: str, text: str) -> None:
        super().__init__(f"{type_name}: {text}")
        self.type_name = type_name

    def __reduce__(self) -> tuple[Any, ...]:
        return (WorkerError, (self.type_name, str(self).partition(": ")[2]))


class WorkerStateError(Steve1EnvError, RuntimeError):
    """Calls out of order: a second `WorkerProcess.send` before the answer, or `wait` alone."""


class WorkerLostError(Steve1EnvError, RuntimeError):
    """A worker process died, or did not answer in time, so it was abandoned.

    Attributes:
        name: The worker's name.
        reason: What happened, as a phrase (``"died (EOFError)"``, ``"did not answer ..."``).
        pid: The child's pid.
        exit_code: Its exit code, or None if it was still running (hung).
        started: Whether it had built its object (the start handshake had come).
        hung: True when it was still running but did not answer in time (else it died).
    """

    def __init__(
        self,
        name: str,
        reason: str,
        pid: int | None,
        exit_code: int | None,
        started: bool,
        hung: bool = False,
    ) -> None:
        suffix = "" if exit_code is None else f", exit code {exit_code}"
        super().__init__(f"The {name} process {reason}{suffix}.")
        self.name, self.reason, self.pid = name, reason, pid
        self.exit_code, self.started = exit_code, started
        self.hung = hung

    def __reduce__(self) -> tuple[Any, ...]:
        fields = (self.name, self.reason, self.pid, self.exit_code, self.started, self.hung)
        return (WorkerLostError, fields)


def describe(error: BaseException) -> str:
    """Returns ``"Type: text"`` for an exception, naming the child's type for a `WorkerError`."""
    return str(error) if isinstance(error, WorkerError) else f"{type(error).__name__}: {error}"


def worker_traceback(error: BaseException) -> str:
    """Returns the child's traceback of an exception a worker sent back ('' if none)."""
    return str(getattr(error, _TRACEBACK, ""))


# ------------------------------------------------------------------------- the child's side
def exit_on_sigterm(signum: int, frame: Any) -> None:
    """SIGTERM handler raising `SystemExit`, so `finally` blocks close worlds on the way out."""
    raise SystemExit(128 + signum)


def become_worker() -> None:
    """Prepares a child process: Ctrl-C is the parent's, SIGTERM unwinds, parent death ends it.

    Ctrl-C reaches the whole process group; the parent handles it and stops its children.
    On Linux the kernel sends SIGTERM when the parent dies, even when it was killed with -9.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _failure(exc: Exception) -> tuple[str, Exception, str]:
    # Our own errors explain themselves; anything else gets its traceback.
    details = "" if isinstance(exc, Steve1EnvError) else traceback.format_exc()
    try:
        pickle.loads(pickle.dumps(exc))  # exceptions of user code may not unpickle
    except Exception:
        exc = WorkerError(type(exc).__name__, str(exc))
    return ("error", exc, details)


def _serve(connection: Any, build: Callable[..., Any], args: tuple[Any, ...]) -> None:
    """Child process: builds the object, then answers calls until told to close (None)."""
    become_worker()
    target = None
    try:
        try:
            target = build(*args)
        except Exception as exc:
            connection.send(_failure(exc))
            return
        connection.send(("ready", None, ""))
        while True:
            message = connection.recv()
            if message is None:
                return
            method, call_args, call_kwargs = message
            try:
                answer = getattr(target, method)(*call_args, **call_kwargs)
            except Exception as exc:  # sent back: the caller decides what a failure means
                connection.send(_failure(exc))
            else:
                connection.send(("ok", answer, ""))
    except (EOFError, OSError):  # the parent went away
        return
    finally:
        close = getattr(target, "close", None)
        if callable(close):
            close()


# ------------------------------------------------------------------------ the parent's side
class WorkerProcess:
    """A child process that builds an object with ``build(*args)`` and serves its methods.

    Args:
        build: A picklable callable (a module-level function or class) run in the child.
        args: Its picklable arguments.
        name: What the process is, as messages should name it (``"synthetic world"``).

    The child starts at once; the first `wait` (or `wait_started`) reads the start handshake.
    """

    def __init__(self, build: Callable[..., Any], args: tuple[Any, ...], name: str) -> None:
        self.name = name
        self.started = False
        self._waiting = False
        self._method = ""
        context = multiprocessing.get_context("spawn")  # fork would copy torch's threads
        self.connection, child = context.Pipe()
        self.process: Any = context.Process(
            target=_serve, args=(child, build, args), name=f"steve1-env {name}", daemon=True
        )
        self.process.start()
        child.close()

    @property
    def pid(self) -> int | None:
        """The child's pid."""
        return self.process.pid

    @property
    def waiting(self) -> bool:
        """True between `send` and the `wait` that reads its answer."""
        return self._waiting

    def is_alive(self) -> bool:
        """Whether the child still runs."""
        return bool(self.process.is_alive())

    def wait_started(self, timeout: float | None) -> None:
        """Waits for the start handshake.

        Raises:
            WorkerLostError: If the child dies or does not start within `timeout` seconds.
            Exception: The exception that building the object raised (the child has exited).
        """
        while not self.started:
            self._receive(timeout, "start")

    def send(self, method: str, *args: Any, **kwargs: Any) -> None:
        """Asks the child to call ``method(*args, **kwargs)`` on its object; does not wait.

        The call is pickled before anything is sent, so an argument that cannot be pickled
        raises the pickler's error and leaves the worker untouched.

        Raises:
            WorkerLostError: If the child has died.
        """
        if self._waiting:
            raise WorkerStateError(
                f"The {self.name} process was sent a call before it answered the last."
            )
        message = bytes(ForkingPickler.dumps((method, args, kwargs)))
        self._method = method
        # Waiting from before the send: an interrupt right after it must still make
        # `close_all` drain the answer, or a child blocked sending a large answer never reads
        # the close message.
        self._waiting = True
        try:
            self.connection.send_bytes(message)
        except (OSError, ValueError) as exc:
            raise self._lost(f"died ({type(exc).__name__})") from None
        except BaseException:
            # An interrupt part-way leaves half a message in the pipe: the child would wait for
            # the rest forever and never read the close message, so it is dropped now.
            self.abandon()
            raise

    def wait(self, timeout: float | None = None) -> Any:
        """Returns the answer of the call `send` made (reading the start handshake first).

        Args:
            timeout: Seconds the answer may take (None: no limit); the start handshake, if it
                has not come yet, counts against it.

        Raises:
            WorkerLostError: If the child died or did not answer in time; it is abandoned.
            Exception: What the call raised in the child (see the module's docstring).
        """
        if not self._waiting:
            raise WorkerStateError(f"The {self.name} process was asked for an answer to no call.")
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.started:
            self._receive(_left(deadline), "start", timeout)
        return self._receive(_left(deadline), self._method, timeout)

    def call(self, method: str, *args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
        """`send` then `wait`: returns ``method(*args, **kwargs)`` computed in the child."""
        self.send(method, *args, **kwargs)
        return self.wait(timeout)

    def terminate(self) -> None:
        """Sends SIGTERM (the child closes its object and exits); does not wait.

        The answer of a call in progress is given up: `close_all` does not wait for it.
        """
        self._waiting = False
        with contextlib.suppress(OSError, ValueError):
            if self.process.is_alive():
                self.process.terminate()

    def abandon(self) -> None:
        """Stops the child without waiting for any answer (see `abandon_all`)."""
        abandon_all([self])

    def close(self, timeout: float = CLOSE_TIMEOUT_S) -> None:
        """Stops the child cleanly (see `close_all`). Safe to call twice."""
        close_all([self], timeout)

    # ---------------------------------------------------------------- internals
    def _receive(self, timeout: float | None, what: str, limit: float | None = None) -> Any:
        # `limit`: the whole call's timeout, as the message names it (`timeout` is what is left).
        try:
            if not self.connection.poll(timeout):
                limit = timeout if limit is None else limit
                raise self._lost(f"did not answer a {what} within {limit:g} s (hung)", hung=True)
            status, payload, details = self.connection.recv()
        except (EOFError, OSError) as exc:
            raise self._lost(f"died ({type(exc).__name__})") from None
        except WorkerLostError:
            raise
        except BaseException:  # an interrupt: the answer may still come, so drop the child
            self.abandon()
            raise
        if status == "ready":
            self.started = True
            return None
        if what == "start":  # the build failed: the child exits, nothing more will come
            self.abandon()
        self._waiting = False
        if status == "error":
            if details:
                setattr(payload, _TRACEBACK, details)
            raise payload
        return payload

    def _lost(self, reason: str, hung: bool = False) -> WorkerLostError:
        with contextlib.suppress(EOFError, OSError, ValueError, pickle.UnpicklingError):
            while self.connection.poll():  # a handshake that came before the end counts
                if self.connection.recv()[0] == "ready":
                    self.started = True
        if not hung:
            self.process.join(timeout=5)  # its pipe closed: it is exiting, wait for the code
        code = self.process.exitcode
        self.abandon()
        return WorkerLostError(self.name, reason, self.process.pid, code, self.started, hung)


def _left(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def abandon_all(workers: Iterable[WorkerProcess]) -> None:
    """Stops the children of `workers` without waiting for any answer, all at once.

    Each gets SIGTERM (its object closes on the way out, so a simulator does not outlive it);
    those still running after `ABANDON_GRACE_S` seconds in all are killed. Used when a call
    will never read its answer: a timeout, a dead child, an interrupt.
    """
    workers = list(workers)
    for worker in workers:
        worker.terminate()
    deadline = time.monotonic() + ABANDON_GRACE_S
    for worker in workers:
        worker.process.join(timeout=_left(deadline))
        if worker.process.is_alive():
            worker.process.kill()
            worker.process.join(timeout=5)
        worker.connection.close()


def close_all(workers: Iterable[WorkerProcess], timeout: float = CLOSE_TIMEOUT_S) -> None:
    """Stops the children of `workers` cleanly, all at once. Safe to call twice.

    An answer still on its way is read and dropped (up to `timeout` seconds in all), then each
    child is told to close its object and exit; those still running `timeout` seconds later
    (closing a Minecraft server takes a moment) are killed.
    """
    workers = [worker for worker in workers if not worker.connection.closed]
    deadline = time.monotonic() + timeout
    for worker in workers:
        waiting, worker._waiting = worker._waiting, False
        with contextlib.suppress(EOFError, OSError, ValueError, pickle.UnpicklingError):
            # A child answering the start handshake first still answers the call after it.
            while waiting and worker.connection.poll(_left(deadline)):
                waiting = worker.connection.recv()[0] == "ready"
            if not waiting and worker.process.is_alive():
                worker.connection.send(None)
    deadline = time.monotonic() + timeout
    for worker in workers:
        worker.process.join(timeout=_left(deadline))
    for worker in workers:
        if worker.process.is_alive():
            worker.process.kill()
            worker.process.join(timeout=5)
        worker.connection.close()


__all__ = [
    "ABANDON_GRACE_S",
    "CLOSE_TIMEOUT_S",
    "WorkerError",
    "WorkerLostError",
    "WorkerProcess",
    "WorkerStateError",
    "abandon_all",
    "become_worker",
    "close_all",
    "describe",
    "exit_on_sigterm",
    "worker_traceback",
]
