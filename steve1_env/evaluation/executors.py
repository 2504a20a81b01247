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
from steve1_env.workers import (
    WorkerLostError,
    WorkerProcess,
    close_all,
    describe,
    worker_traceback,
)

_STOP_TIMEOUT_S = 30.0  # for workers to close their worlds (a Minecraft server) on stop

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
            try:
                record = self.runner.run(spec, on_steps)
            except Exception as exc:
                raise EvaluationError(trial_failed(spec, exc)) from exc
            yield record

    def close(self) -> None:
        """Closes the worlds, policies and encoder."""
        self.runner.close()


def trial_failed(spec: TrialSpec, error: BaseException | str, where: str = "") -> str:
    """Returns the message of a run stopped by a trial's error (not a world crash)."""
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    return (
        f"Trial {spec.key} (task {spec.task!r}, instruction {spec.instruction!r}) failed"
        f"{where}: {text.rstrip('. ')}. This is not a world crash, so the run stopped. Fix "
        "the cause, then continue with resume=True; if the fix changes the run's settings or "
        "task file after trials were recorded, start a new run directory (out=) instead."
    )


class _WorkerLost(Exception):
    """The worker running a trial died before answering."""


class _Cancelled(Exception):
    """Raised inside a Ray actor's trial once the driver cancels it."""


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

    def _submit(self, worker: Any, spec: TrialSpec, earlier_crashes: int) -> Any:
        raise NotImplementedError

    def _wait(self, pending: list[Any]) -> list[Any]:
        raise NotImplementedError

    def _result(self, worker: Any, pending: Any, spec: TrialSpec) -> dict[str, Any]:
        raise NotImplementedError

    def _stop(self, worker: Any) -> None:
        raise NotImplementedError

    def _stop_all(self, workers: list[Any]) -> None:
        for worker in workers:
            self._stop(worker)

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
        restarts = 0
        while queue or in_flight:
            while idle and queue:
                index = idle.pop()
                spec = queue.popleft()
                # Tries lost with dead workers count against the trial's crash retries.
                earlier = len(lost.get(spec.key, ()))
                try:
                    in_flight[self._submit(self._active[index], spec, earlier)] = (index, spec)
                except _WorkerLost:  # died while idle: replace it; the trial never ran
                    restarts += 1
                    if restarts > 2 * self.workers + self.settings.crash_retries:
                        raise EvaluationError(
                            "Workers keep dying before they run a trial; see their output "
                            "above for the cause."
                        ) from None
                    self._stop(self._active[index])
                    self._active[index] = self._start(index)
                    idle.appendleft(index)
                    queue.appendleft(spec)
            for pending in self._wait(list(in_flight)):
                index, spec = in_flight.pop(pending)
                try:
                    data = self._result(self._active[index], pending, spec)
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
                    lost_tries = lost.pop(spec.key)
                    record = replace(
                        record,
                        crashes=record.crashes + len(lost_tries),
                        errors=[*lost_tries, *record.errors],
                    )
                yield record

    def close(self) -> None:
        """Stops every worker, interrupting the trials still running (after a Ctrl-C)."""
        workers, self._active = self._active, []
        in_flight, self._in_flight = self._in_flight, {}
        for pending, (index, _) in in_flight.items():
            if index < len(workers):
                self._cancel(workers[index], pending)
        self._stop_all(workers)


def _lost_record(spec: TrialSpec, errors: list[str]) -> TrialRecord:
    detector_spec = build_detector(spec.detector, spec.instruction).name
    episode = Episode("crash", 0, 0, None, detector_spec, {}, errors[-1])
    return trial_record(spec, episode, errors, 0.0, worker="lost")


# --------------------------------------------------------------------------- processes


def _build_trial_runner(settings: RunSettings, name: str, threads: int) -> TrialRunner:
    """Worker process: builds the runner whose trials it runs (it closes it on the way out)."""
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))  # before torch is imported
    return TrialRunner(settings, worker=name)


def _lost_worker(worker: WorkerProcess, error: WorkerLostError) -> Exception:
    """The error of a worker found dead: a lost trial, or a failed start."""
    if not error.started:
        return EvaluationError(
            f"Worker {worker.name} exited (code {error.exit_code}) before it could start. If "
            "you call evaluate(..., executor='processes') from a script, put the call under "
            "`if __name__ == '__main__':` (each worker imports your script)."
        )
    return _WorkerLost(
        f"worker {worker.name} (pid {error.pid}) died with exit code {error.exit_code}"
    )


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

    def _start(self, index: int) -> WorkerProcess:
        name = f"process-{index}"
        return WorkerProcess(_build_trial_runner, (self.settings, name, self._threads), name)

    def _submit(self, worker: WorkerProcess, spec: TrialSpec, earlier_crashes: int) -> Any:
        try:
            worker.send("run", spec, earlier_crashes=earlier_crashes)
        except WorkerLostError as exc:
            raise _lost_worker(worker, exc) from None
        return worker.connection

    def _wait(self, pending: list[Any]) -> list[Any]:
        return list(multiprocessing.connection.wait(pending))

    def _result(self, worker: WorkerProcess, pending: Any, spec: TrialSpec) -> dict[str, Any]:
        try:
            record: TrialRecord = worker.wait()
        except WorkerLostError as exc:
            raise _lost_worker(worker, exc) from None
        except Exception as exc:
            trace = worker_traceback(exc)
            trace = f"\nWorker traceback:\n{trace}" if trace else ""
            where = f" in worker {worker.name}"
            raise EvaluationError(trial_failed(spec, describe(exc), where) + trace) from None
        return record.to_json()

    def _cancel(self, worker: WorkerProcess, pending: Any) -> None:
        worker.terminate()  # SIGTERM: the worker closes its world and exits

    def _stop(self, worker: WorkerProcess) -> None:
        self._stop_all([worker])

    def _stop_all(self, workers: list[WorkerProcess]) -> None:
        # One shared deadline: closing simulators runs in parallel, not one after another.
        close_all(workers, _STOP_TIMEOUT_S)


# --------------------------------------------------------------------------------- Ray


class RayTrialActor:
    """A Ray actor holding one world and policy; runs the trials it is sent."""

    def __init__(self, settings: RunSettings, name: str) -> None:
        self.runner = TrialRunner(settings, worker=name)

    def run(self, spec: TrialSpec, earlier_crashes: int = 0) -> dict[str, Any] | None:
        """Runs one trial and returns its record as JSON data (None once cancelled).

        A cancelled call stops at the next high-level step: Ray flags, but does not interrupt,
        a running task of a regular actor.
        """
        import ray

        is_canceled = getattr(ray.get_runtime_context(), "is_canceled", None)

        def stop_if_cancelled(spec: TrialSpec, steps: int) -> None:
            if is_canceled is not None and is_canceled():
                raise _Cancelled(f"trial {spec.key} was cancelled")

        try:
            return self.runner.run(spec, stop_if_cancelled, earlier_crashes).to_json()
        except _Cancelled:  # the driver is stopping and reads no result
            return None

    def close(self) -> None:
        """Closes the world, policy and encoder."""
        self.runner.close()


class RayExecutor(_WorkerPool):
    """Runs trials on Ray: one actor per world, each with its own policy.

    Args:
        settings: The run's settings. Videos are written by the actors, so on a multi-node
            cluster `settings.video_dir` must be on a file system every node shares.
        workers: Number of actors; default as many as the cluster's resources hold.
        address: Ray cluster address (``"auto"`` for the running cluster); None starts a
            local Ray unless this process already connected one.
        num_cpus: CPUs of a local Ray started here (None: all).
        cpus_per_actor: CPUs each actor reserves.
        gpus_per_actor: GPUs each actor reserves (use with ``device="cuda"``).

    Raises:
        ConfigurationError: If the cluster cannot be reached, or cannot hold `workers` actors
            (they would wait for resources forever).
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
            self._init_ray(address, num_cpus)
        capacity = _actor_capacity(ray.cluster_resources(), cpus_per_actor, gpus_per_actor)
        if workers is None:
            workers = max(1, capacity)
        if workers > capacity:
            if self._owns_ray:
                self._owns_ray = False
                ray.shutdown()
            raise ConfigurationError(
                f"The Ray cluster can hold {capacity} actor(s) of {cpus_per_actor:g} CPU and "
                f"{gpus_per_actor:g} GPU each ({ray.cluster_resources()}), but {workers} were "
                "asked for; the rest would wait forever. Ask for fewer workers or less per actor."
            )
        super().__init__(settings, workers)
        self._actor = ray.remote(num_cpus=cpus_per_actor, num_gpus=gpus_per_actor)(RayTrialActor)

    def _init_ray(self, address: str | None, num_cpus: int | None) -> None:
        # Ray installs its own SIGTERM handler; keep ours (SIGTERM stops a run cleanly).
        previous = signal.getsignal(signal.SIGTERM)
        try:
            self._ray.init(
                address=address,
                num_cpus=num_cpus if address is None else None,
                include_dashboard=False,
                logging_level="WARNING",
            )
        except ConnectionError as exc:
            raise ConfigurationError(
                f"Cannot connect to the Ray cluster at {address!r} ({exc}). Start one with "
                "`ray start --head`, or pass address=None to run Ray on this machine."
            ) from exc
        finally:
            with contextlib.suppress(ValueError, TypeError):  # not the main thread
                if previous is not None:
                    signal.signal(signal.SIGTERM, previous)
        self._owns_ray = True

    def _start(self, index: int) -> Any:
        return self._actor.remote(self.settings, f"ray-{index}")

    def _submit(self, worker: Any, spec: TrialSpec, earlier_crashes: int) -> Any:
        return worker.run.remote(spec, earlier_crashes)

    def _wait(self, pending: list[Any]) -> list[Any]:
        while True:  # short waits keep Ctrl-C responsive
            ready, _ = self._ray.wait(pending, num_returns=1, timeout=1.0)
            if ready:
                return list(ready)

    def _result(self, worker: Any, pending: Any, spec: TrialSpec) -> dict[str, Any]:
        exceptions = self._ray.exceptions
        try:
            return self._ray.get(pending)
        except (exceptions.RayActorError, exceptions.WorkerCrashedError) as exc:
            if "creation task" in str(exc):  # it never started: every retry would fail too
                raise EvaluationError(
                    f"A Ray actor failed to start: {exc}. Check that steve1-env (and any module "
                    "named by an import path) is installed on every node."
                ) from exc
            raise _WorkerLost(f"Ray actor died ({type(exc).__name__})") from None
        except exceptions.RayTaskError as exc:
            cause = exc.cause if exc.cause is not None else exc
            raise EvaluationError(trial_failed(spec, cause, " in a Ray actor")) from exc

    def _cancel(self, worker: Any, pending: Any) -> None:
        with contextlib.suppress(Exception):
            self._ray.cancel(pending)

    def _stop(self, worker: Any) -> None:
        with contextlib.suppress(Exception):  # dead or hung: killing it is enough
            self._ray.get(worker.close.remote(), timeout=_STOP_TIMEOUT_S)
        self._ray.kill(worker)

    def close(self) -> None:
        """Kills the actors, and shuts Ray down if this executor started it."""
        super().close()
        if self._owns_ray:
            self._owns_ray = False
            self._ray.shutdown()


def _actor_capacity(resources: dict[str, float], cpus: float, gpus: float) -> int:
    limits = []
    if cpus > 0:
        limits.append(int(resources.get("CPU", 0) // cpus))
    if gpus > 0:
        limits.append(int(resources.get("GPU", 0) // gpus))
    return min(limits) if limits else 1


def check_executor_options(
    name: str,
    workers: int | None = None,
    address: str | None = None,
    cpus_per_actor: float | None = None,
    gpus_per_actor: float | None = None,
) -> None:
    """Checks executor options before anything runs.

    Raises:
        ConfigurationError: If the name is unknown or an option does not apply to it.
    """
    if name not in EXECUTORS:
        raise ConfigurationError(
            f"Unknown executor {name!r}; choose one of {', '.join(EXECUTORS)}."
        )
    if name == "local" and workers not in (None, 1):
        raise ConfigurationError(
            "The local executor runs one trial at a time; use executor='processes' (or 'ray') "
            "for parallel workers."
        )
    ray_only = {
        "address=": address,
        "cpus_per_actor=": cpus_per_actor,
        "gpus_per_actor=": gpus_per_actor,
    }
    given = [argument for argument, value in ray_only.items() if value is not None]
    if given and name != "ray":
        raise ConfigurationError(f"{', '.join(given)} apply to executor='ray' only.")
    if workers is not None and (isinstance(workers, bool) or workers < 1):
        raise ConfigurationError(f"workers must be a positive integer, got {workers!r}.")
    for flag, value in (("cpus_per_actor", cpus_per_actor), ("gpus_per_actor", gpus_per_actor)):
        if value is not None and not value >= 0:
            raise ConfigurationError(f"{flag} must be >= 0, got {value!r}.")


def make_executor(
    name: str,
    settings: RunSettings,
    *,
    workers: int | None = None,
    address: str | None = None,
    cpus_per_actor: float | None = None,
    gpus_per_actor: float | None = None,
) -> Executor:
    """Builds an executor by name (see `EXECUTORS`).

    Args:
        name: ``local``, ``processes`` or ``ray``.
        settings: The run's settings.
        workers: Parallel workers (``processes``: default 2; ``ray``: as many as fit).
        address: The Ray cluster address (``ray`` only).
        cpus_per_actor: CPUs each Ray actor reserves (default 1).
        gpus_per_actor: GPUs each Ray actor reserves (default 0).

    Raises:
        ConfigurationError: If the name is unknown or an option does not apply.
    """
    check_executor_options(name, workers, address, cpus_per_actor, gpus_per_actor)
    if name == "local":
        return LocalExecutor(settings)
    if name == "processes":
        return ProcessExecutor(settings, 2 if workers is None else workers)
    return RayExecutor(
        settings,
        workers,
        address=address,
        cpus_per_actor=1.0 if cpus_per_actor is None else cpus_per_actor,
        gpus_per_actor=0.0 if gpus_per_actor is None else gpus_per_actor,
    )
