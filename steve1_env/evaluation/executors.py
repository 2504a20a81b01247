"""Executors run trials and yield their records as they finish.

- `LocalExecutor`: in this process (progress at every high-level step).
- `ProcessExecutor`: parallel worker processes on this machine.
- `RayExecutor`: Ray actors on a local or remote Ray cluster.

Every worker hosts ``envs_per_worker`` worlds with ONE policy and runs one trial per world at a
time. When a worker dies (a segfaulting simulator, an out-of-memory kill, a lost Ray node), it
is replaced, and each trial it was running loses one try and runs again, up to the run's
``crash_retries``; the lost tries are counted as crashes of that trial. An exception raised
inside a trial (a configuration error) stops the run.
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

from steve1_env.errors import ConfigurationError, EvaluationError, Steve1EnvError
from steve1_env.evaluation.records import TrialRecord, TrialSpec
from steve1_env.evaluation.trial import (
    DEFAULT_ENVS_PER_WORKER,
    Episode,
    RunSettings,
    StepsCallback,
    TrialFailedError,
    TrialRunner,
    check_envs_per_worker,
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
    """Runs trials in this process, on one worker hosting `envs_per_worker` worlds.

    Args:
        settings: The run's settings.
        envs_per_worker: Worlds (trials in flight) sharing the one policy.
    """

    def __init__(
        self, settings: RunSettings, envs_per_worker: int = DEFAULT_ENVS_PER_WORKER
    ) -> None:
        self.runner = TrialRunner(settings, worker="local", envs=envs_per_worker)

    def run(
        self, specs: Sequence[TrialSpec], on_steps: StepsCallback | None = None
    ) -> Iterator[TrialRecord]:
        """Yields each trial's record as it finishes here."""
        queue = deque(specs)
        while queue or self.runner.busy:
            new = [(queue.popleft(), 0) for _ in range(min(self.runner.free, len(queue)))]
            try:
                records = self.runner.advance(new, on_steps)
            except TrialFailedError as exc:
                raise EvaluationError(trial_failed(exc.spec, exc.cause)) from exc.cause
            yield from records

    def close(self) -> None:
        """Closes the worlds, policy and encoder."""
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
    """Keeps every worker's worlds busy; replaces dead workers and retries their trials.

    A worker hosts `envs_per_worker` worlds and answers one call at a time: "start these
    trials on free worlds, then run until at least one ends" (`TrialRunner.advance`), with
    the records of the trials that ended. Subclasses say how to start, call, wait on and stop
    one kind of worker.
    """

    def __init__(
        self, settings: RunSettings, workers: int, envs_per_worker: int = DEFAULT_ENVS_PER_WORKER
    ) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ConfigurationError(f"workers must be a positive integer, got {workers!r}.")
        self.settings = settings
        self.workers = workers
        self.envs_per_worker = envs_per_worker
        self._active: list[Any] = []
        self._in_flight: dict[Any, int] = {}

    # ---- what a kind of worker must provide
    def _start(self, index: int) -> Any:
        raise NotImplementedError

    def _submit(self, worker: Any, new: list[tuple[TrialSpec, int]]) -> Any:
        raise NotImplementedError

    def _wait(self, pending: list[Any]) -> list[Any]:
        raise NotImplementedError

    def _result(
        self, worker: Any, pending: Any, running: dict[str, TrialSpec]
    ) -> list[dict[str, Any]]:
        raise NotImplementedError

    def _stop(self, worker: Any) -> None:
        raise NotImplementedError

    def _stop_all(self, workers: list[Any]) -> None:
        for worker in workers:
            self._stop(worker)

    def _cancel(self, worker: Any, pending: Any) -> None:
        """Interrupts the call `worker` is running, so that it can close promptly."""

    # ---- the scheduling shared by all kinds
    def run(
        self, specs: Sequence[TrialSpec], on_steps: StepsCallback | None = None
    ) -> Iterator[TrialRecord]:
        """Yields each trial's record as a worker finishes it (`on_steps` is not called)."""
        queue = deque(specs)
        if not queue:
            return
        capacity = self.envs_per_worker
        count = min(self.workers, -(-len(queue) // capacity))
        self._active = [self._start(i) for i in range(count)]
        running: list[dict[str, TrialSpec]] = [{} for _ in range(count)]  # per worker
        in_flight: dict[Any, int] = {}  # a pending call -> its worker
        self._in_flight = in_flight  # for close() after an interrupt
        lost: dict[str, list[str]] = {}
        restarts = 0

        def lose(index: int, error: str) -> Iterator[TrialRecord]:
            # The worker died: each of its trials lost a try; retried first, or recorded.
            for spec in reversed(list(running[index].values())):
                errors = lost.setdefault(spec.key, [])
                errors.append(error)
                if len(errors) > self.settings.crash_retries:
                    yield _lost_record(spec, errors)
                else:
                    queue.appendleft(spec)
            running[index] = {}
            self._stop(self._active[index])
            self._active[index] = self._start(index)
            # Served last, so a lost trial's retry goes to another worker when one is free.
            order.remove(index)
            order.append(index)

        # A worker may hold trials between calls (it answered when one of its worlds ended).
        order = list(range(count))  # which worker is offered trials first
        while queue or in_flight or any(running):
            for index in list(order):
                if index in in_flight.values():
                    continue
                new: list[tuple[TrialSpec, int]] = []
                while queue and len(running[index]) + len(new) < capacity:
                    spec = queue.popleft()
                    # Tries lost with dead workers count against the trial's crash retries.
                    new.append((spec, len(lost.get(spec.key, ()))))
                if not new and not running[index]:
                    continue
                try:
                    pending = self._submit(self._active[index], new)
                except _WorkerLost as exc:  # died between calls: its new trials never ran
                    queue.extendleft(spec for spec, _ in reversed(new))
                    restarts += 1
                    if restarts > 2 * self.workers + self.settings.crash_retries:
                        raise EvaluationError(
                            "Workers keep dying before they run a trial; see their output "
                            "above for the cause."
                        ) from None
                    yield from lose(index, str(exc))
                    continue
                running[index].update((spec.key, spec) for spec, _ in new)
                in_flight[pending] = index
            if not in_flight:
                continue
            for pending in self._wait(list(in_flight)):
                index = in_flight.pop(pending)
                try:
                    answers = self._result(self._active[index], pending, running[index])
                except _WorkerLost as exc:
                    yield from lose(index, str(exc))
                    continue
                if not answers:  # a call ends when a trial ends: asking again would never end
                    raise EvaluationError(
                        f"Worker {index} answered without a record while it ran "
                        f"{len(running[index])} trial(s); the run stopped instead of waiting "
                        "forever."
                    )
                for data in answers:
                    key = str(data.get("key")) if isinstance(data, dict) else "?"
                    ran: TrialSpec | None = running[index].pop(key, None)
                    where = f"trial {key}"
                    record = TrialRecord.from_json(data.get("record"), f"the record of {where}")
                    if ran is None or record.key != ran.key:
                        raise EvaluationError(
                            f"Worker {index} answered for {where}, which it was not running; "
                            "the run stopped so that no record is misfiled."
                        )
                    if ran.key in lost:
                        lost_tries = lost.pop(ran.key)
                        record = replace(
                            record,
                            crashes=record.crashes + len(lost_tries),
                            errors=[*lost_tries, *record.errors],
                        )
                    yield record

    def close(self) -> None:
        """Stops every worker, interrupting the calls still running (after a Ctrl-C)."""
        workers, self._active = self._active, []
        in_flight, self._in_flight = self._in_flight, {}
        for pending, index in in_flight.items():
            if index < len(workers):
                self._cancel(workers[index], pending)
        self._stop_all(workers)


def _answers(records: list[TrialRecord]) -> list[dict[str, Any]]:
    """A worker's answer: each ended trial's key with its record as JSON data."""
    return [{"key": record.key, "record": record.to_json()} for record in records]


def _lost_record(spec: TrialSpec, errors: list[str]) -> TrialRecord:
    detector_spec = build_detector(spec.detector, spec.instruction).name
    episode = Episode("crash", 0, 0, None, detector_spec, {}, errors[-1])
    return trial_record(spec, episode, errors, 0.0, worker="lost")


# --------------------------------------------------------------------------- processes


class _TrialWorker:
    """Worker process side: a `TrialRunner` answering calls with JSON-ready data.

    A trial that fails is answered, not raised, so that its key and the cause's traceback
    reach the parent whatever the cause is (an exception of user code may not unpickle).
    """

    def __init__(self, settings: RunSettings, name: str, threads: int, envs: int) -> None:
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))  # before torch is imported
        self.runner = TrialRunner(settings, worker=name, envs=envs)

    def advance(self, new: list[tuple[TrialSpec, int]]) -> dict[str, Any]:
        """Runs `TrialRunner.advance`; returns ``{"records": ...}`` or ``{"failed": ...}``."""
        try:
            return {"records": _answers(self.runner.advance(new))}
        except TrialFailedError as exc:
            cause = exc.cause
            details = "" if isinstance(cause, Steve1EnvError) else worker_traceback(cause)
            return {"failed": {"key": exc.spec.key, "text": describe(cause), "details": details}}

    def close(self) -> None:
        """Closes the runner's worlds, policy and encoder."""
        self.runner.close()


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

    Each worker builds its own worlds, policy and encoder (started with ``spawn``), so a
    worker's crash never takes the run down: it is replaced and its trials retried.

    Args:
        settings: The run's settings.
        workers: Number of worker processes.
        envs_per_worker: Worlds each worker hosts, sharing its one policy.
    """

    def __init__(
        self,
        settings: RunSettings,
        workers: int = 2,
        envs_per_worker: int = DEFAULT_ENVS_PER_WORKER,
    ) -> None:
        super().__init__(settings, workers, envs_per_worker)
        self._threads = max(1, (os.cpu_count() or 1) // workers)

    def _start(self, index: int) -> WorkerProcess:
        name = f"process-{index}"
        arguments = (self.settings, name, self._threads, self.envs_per_worker)
        return WorkerProcess(_TrialWorker, arguments, name)

    def _submit(self, worker: WorkerProcess, new: list[tuple[TrialSpec, int]]) -> Any:
        try:
            worker.send("advance", new)
        except WorkerLostError as exc:
            raise _lost_worker(worker, exc) from None
        return worker.connection

    def _wait(self, pending: list[Any]) -> list[Any]:
        return list(multiprocessing.connection.wait(pending))

    def _result(
        self, worker: WorkerProcess, pending: Any, running: dict[str, TrialSpec]
    ) -> list[dict[str, Any]]:
        where = f" in worker {worker.name}"
        try:
            answer: dict[str, Any] = worker.wait()
        except WorkerLostError as exc:
            raise _lost_worker(worker, exc) from None
        except Exception as exc:  # the worker itself failed, not one of its trials
            trace = worker_traceback(exc)
            trace = f"\nWorker traceback:\n{trace}" if trace else ""
            spec = next(iter(running.values()))
            raise EvaluationError(trial_failed(spec, describe(exc), where) + trace) from None
        failed = answer.get("failed")
        if failed is not None:
            spec = running.get(failed["key"]) or next(iter(running.values()))
            trace = f"\nWorker traceback:\n{failed['details']}" if failed["details"] else ""
            raise EvaluationError(trial_failed(spec, failed["text"], where) + trace)
        return list(answer["records"])

    def _cancel(self, worker: WorkerProcess, pending: Any) -> None:
        worker.terminate()  # SIGTERM: the worker closes its world and exits

    def _stop(self, worker: WorkerProcess) -> None:
        self._stop_all([worker])

    def _stop_all(self, workers: list[WorkerProcess]) -> None:
        # One shared deadline: closing simulators runs in parallel, not one after another.
        close_all(workers, _STOP_TIMEOUT_S)


# --------------------------------------------------------------------------------- Ray


class RayTrialActor:
    """A Ray actor hosting `envs_per_worker` worlds and one policy; runs the trials it is sent."""

    def __init__(
        self, settings: RunSettings, name: str, envs_per_worker: int = DEFAULT_ENVS_PER_WORKER
    ) -> None:
        self.runner = TrialRunner(settings, worker=name, envs=envs_per_worker)

    def advance(self, new: list[tuple[TrialSpec, int]]) -> list[dict[str, Any]] | None:
        """Starts `new` trials, runs until one ends; returns the ended ones (None if cancelled).

        A cancelled call stops at the next high-level step: Ray flags, but does not interrupt,
        a running task of a regular actor.
        """
        import ray

        is_canceled = getattr(ray.get_runtime_context(), "is_canceled", None)

        def stop_if_cancelled(spec: TrialSpec, steps: int) -> None:
            if is_canceled is not None and is_canceled():
                raise _Cancelled(f"trial {spec.key} was cancelled")

        try:
            return _answers(self.runner.advance(new, stop_if_cancelled))
        except _Cancelled:  # the driver is stopping and reads no result
            return None
        except TrialFailedError as exc:
            if isinstance(exc.cause, _Cancelled):
                return None
            raise

    def close(self) -> None:
        """Closes the worlds, policy and encoder."""
        self.runner.close()


class RayExecutor(_WorkerPool):
    """Runs trials on Ray actors, each hosting `envs_per_worker` worlds and one policy.

    Args:
        settings: The run's settings. Videos are written by the actors, so on a multi-node
            cluster `settings.video_dir` must be on a file system every node shares.
        workers: Number of actors; default as many as the cluster's resources hold.
        address: Ray cluster address (``"auto"`` for the running cluster); None starts a
            local Ray unless this process already connected one.
        num_cpus: CPUs of a local Ray started here (None: all).
        cpus_per_actor: CPUs each actor reserves.
        gpus_per_actor: GPUs each actor reserves (use with ``device="cuda"``); one GPU then
            serves all the worlds of its actor.
        envs_per_worker: Worlds each actor hosts, sharing its one policy.

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
        envs_per_worker: int = DEFAULT_ENVS_PER_WORKER,
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
        super().__init__(settings, workers, envs_per_worker)
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
        return self._actor.remote(self.settings, f"ray-{index}", self.envs_per_worker)

    def _submit(self, worker: Any, new: list[tuple[TrialSpec, int]]) -> Any:
        return worker.advance.remote(new)

    def _wait(self, pending: list[Any]) -> list[Any]:
        while True:  # short waits keep Ctrl-C responsive
            ready, _ = self._ray.wait(pending, num_returns=1, timeout=1.0)
            if ready:
                return list(ready)

    def _result(
        self, worker: Any, pending: Any, running: dict[str, TrialSpec]
    ) -> list[dict[str, Any]]:
        exceptions = self._ray.exceptions
        try:
            answers = self._ray.get(pending)
        except (exceptions.RayActorError, exceptions.WorkerCrashedError) as exc:
            if "creation task" in str(exc):  # it never started: every retry would fail too
                raise EvaluationError(
                    f"A Ray actor failed to start: {exc}. Check that steve1-env (and any module "
                    "named by an import path) is installed on every node."
                ) from exc
            raise _WorkerLost(f"Ray actor died ({type(exc).__name__})") from None
        except exceptions.RayTaskError as exc:
            cause = exc.cause if exc.cause is not None else exc
            if isinstance(cause, TrialFailedError):
                spec, cause = cause.spec, cause.cause
            else:
                spec = next(iter(running.values()))
            raise EvaluationError(trial_failed(spec, cause, " in a Ray actor")) from exc
        return list(answers or [])

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
    envs_per_worker: int | None = None,
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
            "The local executor is one worker in this process, running one trial at a time on "
            "each of its envs_per_worker worlds; use executor='processes' (or 'ray') for "
            "parallel workers."
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
    if envs_per_worker is not None:
        check_envs_per_worker(envs_per_worker)


def make_executor(
    name: str,
    settings: RunSettings,
    *,
    workers: int | None = None,
    address: str | None = None,
    cpus_per_actor: float | None = None,
    gpus_per_actor: float | None = None,
    envs_per_worker: int | None = None,
) -> Executor:
    """Builds an executor by name (see `EXECUTORS`).

    Args:
        name: ``local``, ``processes`` or ``ray``.
        settings: The run's settings.
        workers: Parallel workers (``processes``: default 2; ``ray``: as many as fit).
        address: The Ray cluster address (``ray`` only).
        cpus_per_actor: CPUs each Ray actor reserves (default 1).
        gpus_per_actor: GPUs each Ray actor reserves (default 0).
        envs_per_worker: Worlds each worker hosts with its one policy (default
            `DEFAULT_ENVS_PER_WORKER`); with ``gpus_per_actor``, one GPU serves them all.

    Raises:
        ConfigurationError: If the name is unknown or an option does not apply.
    """
    check_executor_options(name, workers, address, cpus_per_actor, gpus_per_actor, envs_per_worker)
    envs = DEFAULT_ENVS_PER_WORKER if envs_per_worker is None else envs_per_worker
    if name == "local":
        return LocalExecutor(settings, envs)
    if name == "processes":
        return ProcessExecutor(settings, 2 if workers is None else workers, envs)
    return RayExecutor(
        settings,
        workers,
        address=address,
        cpus_per_actor=1.0 if cpus_per_actor is None else cpus_per_actor,
        gpus_per_actor=0.0 if gpus_per_actor is None else gpus_per_actor,
        envs_per_worker=envs,
    )
