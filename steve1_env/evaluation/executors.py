"""Executors run trials and yield their records as they finish.

- `LocalExecutor`: one after another in this process (progress at every high-level step).
- `ProcessExecutor`: parallel worker processes on this machine, each with its own world and
  policy.
- `RayExecutor`: one Ray actor per world, each with its own policy, on a local or remote Ray
  cluster.

Every executor hands each worker one trial at a time. When a worker dies (a segfaulting
simulator, an out-of-memory kill, a lost Ray node), it is replaced and its trial runs again on
another worker, up to the run's ``crash_retries``; the lost tries are counted as crashes of
that trial. An exception raised inside a trial (a configuration error) stops the run.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
import os
import signal
import traceback
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any, Protocol

from steve1_env.errors import ConfigurationError, EvaluationError
from steve1_env.evaluation.records import TrialRecord, TrialSpec
from steve1_env.evaluation.trial import (
    Episode,
    RunSettings,
    StepsCallback,
    TrialRunner,
    trial_record,
)
from steve1_env.optional import import_optional
from steve1_env.tasks.detectors import build_detector

EXECUTORS = ("local", "processes", "ray")
"""The executor names `make_executor` and ``steve1-env eval --executor`` accept."""


class Executor(Protocol):
    """Runs trials and yields one record per trial, in the order they finish."""

    def run(
        self, specs: Sequence[TrialSpec], on_steps: StepsCallback | None = None
    ) -> Iterator[TrialRecord]:
        """Yields the record of every trial in `specs` as it finishes.

        Args:
            specs: The trials to run.
            on_steps: Called with live step counts, where the executor can report them.
        """
        ...

    def close(self) -> None:
        """Stops the workers and frees what they hold. Safe to call twice."""
        ...


class LocalExecutor:
    """Runs trials one after another in this process.

    Args:
        settings: The run's settings.
    """

    def __init__(self, settings: RunSettings) -> None:
        self.runner = TrialRunner(settings, worker="local")

    def run(
        self, specs: Sequence[TrialSpec], on_steps: StepsCallback | None = None
    ) -> Iterator[TrialRecord]:
        """Yields each trial's record after running it here."""
        for spec in specs:
            yield self.runner.run(spec, on_steps)

    def close(self) -> None:
        """Closes the worlds, policies and encoder."""
        self.runner.close()


class _WorkerLost(Exception):
    """The worker running a trial died before answering."""


class _WorkerPool:
    """Hands trials to workers one at a time; replaces dead workers and retries their trials.

    Subclasses say how to start, feed, wait on and stop one kind of worker.
    """

    def __init__(self, settings: RunSettings, workers: int) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ConfigurationError(f"workers must be a positive integer, got {workers!r}.")
        self.settings = settings
        self.workers = workers
        self._active: list[Any] = []
        self._in_flight: dict[Any, tuple[int, TrialSpec]] = {}

    # ---- what a kind of worker must provide
    def _start(self, index: int) -> Any:
        raise NotImplementedError

    def _submit(self, worker: Any, spec: TrialSpec) -> Any:
        raise NotImplementedError

    def _wait(self, pending: list[Any]) -> list[Any]:
        raise NotImplementedError

    def _result(self, worker: Any, pending: Any) -> dict[str, Any]:
        raise NotImplementedError

    def _stop(self, worker: Any) -> None:
        raise NotImplementedError

    def _cancel(self, worker: Any, pending: Any) -> None:
        """Interrupts the trial `worker` is running, so that it can close promptly."""

    # ---- the scheduling shared by all kinds
    def run(
        self, specs: Sequence[TrialSpec], on_steps: StepsCallback | None = None
    ) -> Iterator[TrialRecord]:
        """Yields each trial's record as a worker finishes it (`on_steps` is not called)."""
        queue = deque(specs)
        if not queue:
            return
        count = min(self.workers, len(queue))
        self._active = [self._start(i) for i in range(count)]
        idle = deque(range(count))
        in_flight: dict[Any, tuple[int, TrialSpec]] = {}
        self._in_flight = in_flight  # for close() after an interrupt
        lost: dict[str, list[str]] = {}
        while queue or in_flight:
            while idle and queue:
                index = idle.pop()
                spec = queue.popleft()
                in_flight[self._submit(self._active[index], spec)] = (index, spec)
            for pending in self._wait(list(in_flight)):
                index, spec = in_flight.pop(pending)
                try:
                    data = self._result(self._active[index], pending)
                except _WorkerLost as exc:
                    self._stop(self._active[index])
                    self._active[index] = self._start(index)
                    idle.appendleft(index)  # taken last: the retry goes to another worker
                    errors = lost.setdefault(spec.key, [])
                    errors.append(str(exc))
                    if len(errors) > self.settings.crash_retries:
                        yield _lost_record(spec, errors)
                    else:
                        queue.appendleft(spec)
                    continue
                idle.append(index)
                record = TrialRecord.from_json(data, f"the record of trial {spec.key}")
                if spec.key in lost:
                    earlier = lost.pop(spec.key)
                    record = replace(
                        record,
                        crashes=record.crashes + len(earlier),
                        errors=[*earlier, *record.errors],
                    )
                yield record

    def close(self) -> None:
        """Stops every worker, interrupting the trials still running (after a Ctrl-C)."""
        workers, self._active = self._active, []
        in_flight, self._in_flight = self._in_flight, {}
        for pending, (index, _) in in_flight.items():
            if index < len(workers):
                self._cancel(workers[index], pending)
        for worker in workers:
            self._stop(worker)


def _lost_record(spec: TrialSpec, errors: list[str]) -> TrialRecord:
    detector_spec = build_detector(spec.detector, spec.instruction).name
    episode = Episode("crash", 0, 0, None, detector_spec, {}, errors[-1])
    return trial_record(spec, episode, errors, 0.0, worker="lost")


# --------------------------------------------------------------------------- processes


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def _process_worker_main(connection: Any, settings: RunSettings, name: str, threads: int) -> None:
    """Entry point of a worker process: runs the trials it receives until told to stop."""
    # Ctrl-C is the parent's to handle: it stops the workers itself. SIGTERM (the parent
    # cancelling a trial) unwinds through `finally`, so worlds close and simulators stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))  # before torch is imported
    runner = TrialRunner(settings, worker=name)
    try:
        while True:
            spec = connection.recv()
            if spec is None:
                return
            try:
                record = runner.run(spec)
            except Exception as exc:
                connection.send(("error", f"{type(exc).__name__}: {exc}", traceback.format_exc()))
            else:
                connection.send(("ok", record.to_json(), ""))
    except (EOFError, OSError):  # the parent went away
        return
    finally:
        runner.close()


class _ProcessWorker:
    def __init__(self, settings: RunSettings, name: str, threads: int) -> None:
        context = multiprocessing.get_context("spawn")  # fork would copy torch's threads
        self.connection, child = context.Pipe()
        self.name = name
        self.process = context.Process(
            target=_process_worker_main,
            args=(child, settings, name, threads),
            name=f"steve1-env {name}",
            daemon=True,
        )
        self.process.start()
        child.close()


class ProcessExecutor(_WorkerPool):
    """Runs trials in parallel worker processes on this machine.

    Each worker builds its own world, policy and encoder (started with ``spawn``), so a
    worker's crash never takes the run down: it is replaced and its trial retried.

    Args:
        settings: The run's settings.
        workers: Number of worker processes.
    """

    def __init__(self, settings: RunSettings, workers: int = 2) -> None:
        super().__init__(settings, workers)
        self._threads = max(1, (os.cpu_count() or 1) // workers)

    def _start(self, index: int) -> _ProcessWorker:
        return _ProcessWorker(self.settings, f"process-{index}", self._threads)

    def _submit(self, worker: _ProcessWorker, spec: TrialSpec) -> Any:
        worker.connection.send(spec)
        return worker.connection

    def _wait(self, pending: list[Any]) -> list[Any]:
        return list(multiprocessing.connection.wait(pending))

    def _result(self, worker: _ProcessWorker, pending: Any) -> dict[str, Any]:
        try:
            status, payload, details = worker.connection.recv()
        except (EOFError, OSError):
            worker.process.join(timeout=5)
            raise _WorkerLost(
                f"worker {worker.name} (pid {worker.process.pid}) died with exit code "
                f"{worker.process.exitcode}"
            ) from None
        if status != "ok":
            raise EvaluationError(
                f"A trial failed in worker {worker.name}: {payload}. This is not a world "
                f"crash, so the run stops.\nWorker traceback:\n{details}"
            )
        return payload

    def _cancel(self, worker: _ProcessWorker, pending: Any) -> None:
        if worker.process.is_alive():
            worker.process.terminate()  # SIGTERM: the worker closes its world and exits

    def _stop(self, worker: _ProcessWorker) -> None:
        with contextlib.suppress(OSError, ValueError):
            if worker.process.is_alive():
                worker.connection.send(None)
        worker.process.join(timeout=30)  # time to close a simulator
        if worker.process.is_alive():
            worker.process.kill()
            worker.process.join(timeout=5)
        worker.connection.close()


# --------------------------------------------------------------------------------- Ray


class RayTrialActor:
    """A Ray actor holding one world and policy; runs the trials it is sent."""

    def __init__(self, settings: RunSettings, name: str) -> None:
        self.runner = TrialRunner(settings, worker=name)

    def run(self, spec: TrialSpec) -> dict[str, Any]:
        """Runs one trial and returns its record as JSON data."""
        return self.runner.run(spec).to_json()

    def close(self) -> None:
        """Closes the world, policy and encoder."""
        self.runner.close()


class RayExecutor(_WorkerPool):
    """Runs trials on Ray: one actor per world, each with its own policy.

    Args:
        settings: The run's settings.
        workers: Number of actors; default one per CPU the cluster offers.
        address: Ray cluster address (``"auto"`` for the running cluster); None starts a
            local Ray unless this process already connected one.
        num_cpus: CPUs of a local Ray started here (None: all).
        cpus_per_actor: CPUs each actor reserves.
        gpus_per_actor: GPUs each actor reserves (use with ``device="cuda"``).
    """

    def __init__(
        self,
        settings: RunSettings,
        workers: int | None = None,
        *,
        address: str | None = None,
        num_cpus: int | None = None,
        cpus_per_actor: float = 1.0,
        gpus_per_actor: float = 0.0,
    ) -> None:
        ray = import_optional("ray", "ray", "The Ray executor")
        self._ray = ray
        self._owns_ray = False
        if not ray.is_initialized():
            ray.init(
                address=address,
                num_cpus=num_cpus if address is None else None,
                include_dashboard=False,
                logging_level="WARNING",
                log_to_driver=True,
            )
            self._owns_ray = True
        if workers is None:
            workers = max(1, int(ray.available_resources().get("CPU", 1) // cpus_per_actor))
        super().__init__(settings, workers)
        self._actor = ray.remote(num_cpus=cpus_per_actor, num_gpus=gpus_per_actor)(RayTrialActor)

    def _start(self, index: int) -> Any:
        return self._actor.remote(self.settings, f"ray-{index}")

    def _submit(self, worker: Any, spec: TrialSpec) -> Any:
        return worker.run.remote(spec)

    def _wait(self, pending: list[Any]) -> list[Any]:
        while True:  # short waits keep Ctrl-C responsive
            ready, _ = self._ray.wait(pending, num_returns=1, timeout=1.0)
            if ready:
                return list(ready)

    def _result(self, worker: Any, pending: Any) -> dict[str, Any]:
        exceptions = self._ray.exceptions
        try:
            return self._ray.get(pending)
        except (exceptions.RayActorError, exceptions.WorkerCrashedError) as exc:
            raise _WorkerLost(f"Ray actor died ({type(exc).__name__})") from None
        except exceptions.RayTaskError as exc:
            cause = exc.cause if exc.cause is not None else exc
            raise EvaluationError(
                f"A trial failed in a Ray actor: {type(cause).__name__}: {cause}. This is "
                "not a world crash, so the run stops."
            ) from exc

    def _cancel(self, worker: Any, pending: Any) -> None:
        # Raises KeyboardInterrupt in the actor's trial, freeing it to run close().
        with contextlib.suppress(Exception):
            self._ray.cancel(pending)

    def _stop(self, worker: Any) -> None:
        with contextlib.suppress(Exception):  # dead or hung: killing it is enough
            self._ray.get(worker.close.remote(), timeout=30)
        self._ray.kill(worker)

    def close(self) -> None:
        """Kills the actors, and shuts Ray down if this executor started it."""
        super().close()
        if self._owns_ray:
            self._owns_ray = False
            self._ray.shutdown()


def make_executor(
    name: str, settings: RunSettings, *, workers: int | None = None, address: str | None = None
) -> Executor:
    """Builds an executor by name (see `EXECUTORS`).

    Args:
        name: ``local``, ``processes`` or ``ray``.
        settings: The run's settings.
        workers: Parallel workers (``processes``: default 2; ``ray``: default one per CPU).
        address: The Ray cluster address (``ray`` only).

    Raises:
        ConfigurationError: If the name is unknown or an option does not apply.
    """
    if name == "local":
        if workers not in (None, 1):
            raise ConfigurationError(
                "The local executor runs one trial at a time; use --executor processes (or "
                "ray) for parallel workers."
            )
        return LocalExecutor(settings)
    if address is not None and name != "ray":
        raise ConfigurationError("--address applies to the ray executor only.")
    if name == "processes":
        return ProcessExecutor(settings, 2 if workers is None else workers)
    if name == "ray":
        return RayExecutor(settings, workers, address=address)
    raise ConfigurationError(f"Unknown executor {name!r}; choose one of {', '.join(EXECUTORS)}.")
