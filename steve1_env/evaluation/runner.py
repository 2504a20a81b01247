"""`evaluate`: run every task x trial of a task set, record each result, write the reports."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

from steve1_env.errors import ConfigurationError, ResultsError, warn_caller
from steve1_env.evaluation.executors import check_executor_options, make_executor
from steve1_env.evaluation.progress import Progress
from steve1_env.evaluation.records import TrialRecord
from steve1_env.evaluation.report import summarize, write_reports
from steve1_env.evaluation.results import (
    CONFIG_FILE,
    HISTORY_KEY,
    RESULTS_FILE,
    ResultsStore,
    read_config,
    read_records,
    report_settings,
)
from steve1_env.evaluation.trial import RunSettings, check_run_arguments
from steve1_env.evaluation.video import require_video_encoder
from steve1_env.files import make_folder
from steve1_env.tasks.spec import TaskSet, load_task_set
from steve1_env.validation import boolean

_log = logging.getLogger(__name__)

_WEIGHTED = ("steve1", "steve1-official")  # components that load the official files


@dataclass
class EvaluationResult:
    """What `evaluate` did.

    Attributes:
        directory: The run directory.
        records: Every trial recorded there (earlier runs included).
        summary: The report's data (see `steve1_env.evaluation.report.summarize`).
        reports: Report format -> file written.
        planned: Trials of this run's plan.
        ran: Trials run by this call (the rest were recorded before).
        missing: Trials of the plan not recorded yet (after an interrupt).
        interrupted: True if Ctrl-C stopped the run; resume it to finish.
    """

    directory: Path
    records: list[TrialRecord]
    summary: dict[str, Any]
    reports: dict[str, Path]
    planned: int
    ran: int
    missing: int
    interrupted: bool


_FILE_ARGUMENTS = ("model", "mineclip", "prior")  # kwargs naming one file each


def weight_checksums(settings: RunSettings) -> dict[str, Any]:
    """Returns the checksums of the weight files the run's policy and encoder load.

    Only the ``steve1`` stacks load files: ``weights`` names a directory of the official
    files or the policy's weight file, ``model``/``mineclip``/``prior`` name single files.
    ``weights="random"`` (untrained networks) is recorded as such.
    """
    from steve1_env.weights import OFFICIAL_FILES, file_digests, weights_dir

    result: dict[str, Any] = {}
    seen: set[Path] = set()
    for component, kwargs in (
        (settings.policy, settings.policy_kwargs),
        (settings.prompt_encoder, settings.prompt_encoder_kwargs),
    ):
        if component not in _WEIGHTED:
            continue
        weights = kwargs.get("weights")
        if weights == "random":
            result["random"] = "untrained networks (weights='random')"
            continue
        files = [Path(os.fspath(kwargs[key])) for key in _FILE_ARGUMENTS if kwargs.get(key)]
        location = weights_dir(None if weights is None else os.fspath(weights))
        if location.is_file():
            files.append(location)
        else:
            files += [location / name for name in OFFICIAL_FILES.values()]
        for path in files:
            resolved = path.resolve()
            if resolved in seen:
                continue
            seen.add(resolved)
            # Named by file name; a second file of the same name by its full path.
            key = path.name if path.name not in result else str(resolved)
            result[key] = file_digests(path) if path.is_file() else "missing"
    return result


def run_config(
    task_set: TaskSet,
    settings: RunSettings,
    *,
    trials: int | None,
    max_steps: int | None,
    executor: str,
    invocation: Mapping[str, Any] | None = None,
    horizon: int | None = None,
    baseline: str = "none",
) -> dict[str, Any]:
    """Returns what ``run.json`` records about a run (see `results.RESUME_KEYS`).

    The top level holds what every call resuming the run must share; what may differ from
    one call to the next (trials asked, executor, device, ...) goes into this call's entry of
    ``invocations``, which `ResultsStore` appends to the entries recorded before.

    Args:
        task_set: The tasks of this call.
        settings: World, policy, encoder and crash handling.
        trials: Trials per task instruction asked (None: the tasks' own).
        max_steps: The step budget override.
        executor: The executor's name.
        invocation: More fields of this call's entry (``resume``, ``workers``, ...).
        horizon: The fixed horizon every task was given (None: the tasks' own); a resumed
            run must keep it, as it changes what each trial is.
        baseline: Which conditions ran (see `steve1_env.tasks.spec.BASELINES`); per call,
            like `trials`: adding the baseline to a run adds trials on the same seeds.
    """
    from steve1_env import __version__

    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    as_json = settings.to_json()
    return {
        "steve1_env": __version__,
        "updated_at": now,
        "task_set": {
            "name": task_set.name,
            "source": task_set.source,
            "tasks": [task.name for task in task_set.tasks],
        },
        "task_set_sha256": task_set.sha256,
        "world": settings.world,
        "policy": settings.policy,
        "prompt_encoder": settings.prompt_encoder,
        "kwargs": {
            name: data
            for name, data in as_json.items()
            if name in ("world_kwargs", "policy_kwargs", "prompt_encoder_kwargs")
        },
        "max_steps": max_steps,
        "horizon": horizon,
        "weights": weight_checksums(settings),
        HISTORY_KEY: [
            {
                "started_at": now,
                "steve1_env": __version__,
                "trials": trials,
                "baseline": baseline,
                "tasks": [task.name for task in task_set.tasks],
                "executor": executor,
                "settings": {
                    name: data
                    for name, data in as_json.items()
                    if name in ("device", "k", "crash_retries", "video_dir", "overlay")
                },
                **dict(invocation or {}),
                "status": "running",
            }
        ],
    }


def evaluate(
    task_set: str | os.PathLike[str] | TaskSet,
    out: str | os.PathLike[str],
    settings: RunSettings | None = None,
    *,
    trials: int | None = None,
    max_steps: int | None = None,
    horizon: int | None = None,
    baseline: str = "none",
    tasks: Sequence[str] | None = None,
    resume: bool = False,
    retry_crashed: bool = False,
    executor: str = "local",
    workers: int | None = None,
    address: str | None = None,
    cpus_per_actor: float | None = None,
    gpus_per_actor: float | None = None,
    envs_per_worker: int | None = None,
    progress: bool = True,
    stream: TextIO | None = None,
    allow_imports: bool = False,
) -> EvaluationResult:
    """Runs every task x trial of a task set and writes ``results.jsonl`` and the reports.

    Args:
        task_set: A built-in set name (``"quick_harvest"``), a task file path or a `TaskSet`.
        out: The run directory.
        settings: World, policy, encoder and crash handling (default `RunSettings()`).
        trials: Trials per task instruction (default: the task's own setting).
        max_steps: Overrides every task's low-level step budget (a fixed-horizon task runs
            all of it).
        horizon: Makes every task a fixed-horizon one: exactly this many low-level steps,
            not stopping at success, recording the first success step and the paper's
            metrics (the STEVE-1 paper: 3000); not together with `max_steps`.
        baseline: ``"none"``, ``"unconditional"`` (the zero goal instead of each prompt, on
            the same seeds) or ``"both"``; see `steve1_env.tasks.spec.BASELINES`.
        tasks: Run only these tasks of the set.
        resume: Continue the run in `out`, skipping trials already recorded.
        retry_crashed: With `resume`, run again the trials recorded as crashed.
        executor: ``local``, ``processes`` or ``ray``.
        workers: Parallel workers of the ``processes`` and ``ray`` executors.
        address: Ray cluster address (``"auto"``).
        cpus_per_actor: CPUs each Ray actor reserves (default 1).
        gpus_per_actor: GPUs each Ray actor reserves (default 0).
        envs_per_worker: Worlds each worker (local, process or Ray actor) hosts with ONE
            policy, whose ticks share one batched policy call (default 1, see
            `steve1_env.evaluation.trial.DEFAULT_ENVS_PER_WORKER`). Records do not depend on
            it; memory grows by one world per env, not by one policy.
        progress: Show live progress on `stream`.
        stream: Where progress goes (default: standard error).
        allow_imports: Let a task file given by path name import paths (``custom``
            detectors); see `steve1_env.tasks.spec.load_task_set`. Workers get the checked
            configs, so this is decided once, here. A `TaskSet` object is taken as it is.

    Returns:
        The records, summary and report paths. A Ctrl-C returns normally with
        ``interrupted=True`` after writing reports of what finished.

    Raises:
        TaskSpecError: If the task set is malformed, names import paths without
            `allow_imports`, or plans too many trials (`steve1_env.tasks.spec.MAX_TRIALS`).
        ResultsError: If `out` holds another run's results, or is in use.
        EvaluationError: If a trial fails for a reason other than a world crash.
    """
    settings = settings or RunSettings()
    resume, retry_crashed = boolean(resume, "resume"), boolean(retry_crashed, "retry_crashed")
    progress, allow_imports = boolean(progress, "progress"), boolean(allow_imports, "allow_imports")
    check_executor_options(
        executor, workers, address, cpus_per_actor, gpus_per_actor, envs_per_worker
    )
    if retry_crashed and not resume:
        raise ConfigurationError("retry_crashed=True needs resume=True.")
    loaded = (
        task_set
        if isinstance(task_set, TaskSet)
        else load_task_set(task_set, allow_imports=allow_imports)
    )
    if tasks:
        loaded = loaded.select(tasks)
    plan = loaded.trial_specs(trials, max_steps, horizon=horizon, baseline=baseline)
    # Before anything is written: a misspelt option must not stop the run at its task.
    check_run_arguments(settings, plan, importable_here=executor != "ray", source=loaded.source)
    if settings.video_dir is not None:
        require_video_encoder()  # before anything is written
    invocation = {
        "resume": resume,
        "retry_crashed": retry_crashed,
        "workers": workers,
        "envs_per_worker": envs_per_worker,
        "planned": len(plan),
    }
    config = run_config(
        loaded,
        settings,
        trials=trials,
        max_steps=max_steps,
        executor=executor,
        invocation=invocation,
        horizon=horizon,
        baseline=baseline,
    )
    store = ResultsStore(out, config, resume=resume)
    ran, interrupted, status = 0, False, "failed"
    try:
        if settings.video_dir is not None:
            make_folder(
                settings.video_dir,
                "the video folder",
                "Nothing was run.",
                error=ResultsError,
                check_writable=True,
            )
        rerun = set(store.crashed) if retry_crashed else set()
        pending = [spec for spec in plan if spec.key not in store.keys or spec.key in rerun]
        done = [record for record in store.records if record.key not in rerun]
        bar = Progress(plan, done, stream=stream, enabled=progress)
        _log.info(
            "evaluating %s into %s: %d trials planned, %d already recorded, %d to run "
            "(executor %s)",
            loaded.source or "the task set", out, len(plan), len(plan) - len(pending),
            len(pending), executor,
        )  # fmt: skip
        if pending:
            runner = make_executor(
                executor,
                settings,
                workers=workers,
                address=address,
                cpus_per_actor=cpus_per_actor,
                gpus_per_actor=gpus_per_actor,
                envs_per_worker=envs_per_worker,
            )
            try:
                for record in runner.run(pending, on_steps=bar.steps_update):
                    store.append(record)
                    bar.trial_done(record)
                    ran += 1
                    _log.info(
                        "trial %s: %s (%s) after %d steps, %d crash(es), %.1f s",
                        record.key, record.outcome, record.reason, record.steps,
                        record.crashes, record.duration_s,
                    )  # fmt: skip
            except KeyboardInterrupt:
                interrupted = True
            finally:
                try:
                    runner.close()
                finally:
                    bar.finish()
        status = "interrupted" if interrupted else "finished"
    except KeyboardInterrupt:  # outside the trial loop (starting the workers)
        status = "interrupted"
        raise
    finally:
        try:
            _finish(store, status, ran)
        finally:
            store.close()
    # The file is the truth: an interrupt between a write and the bookkeeping after it must
    # not make the report disagree with it.
    records = read_records(store.path)
    order = store.config["task_set"]["tasks"]
    summary = summarize(records, report_settings(store.config), task_order=order, run_directory=out)
    reports = write_reports(out, summary)
    recorded = {record.key for record in records}
    missing = sum(spec.key not in recorded for spec in plan)
    _log.info(
        "evaluation %s: %d trials run, %d missing; reports %s",
        status, ran, missing, ", ".join(str(path) for path in reports.values()),
    )  # fmt: skip
    return EvaluationResult(
        Path(out), records, summary, reports, len(plan), ran, missing, interrupted
    )


def report(directory: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, Path]]:
    """Rewrites a run directory's reports from its ``results.jsonl`` and ``run.json``.

    Returns:
        The summary and the report files written.

    Raises:
        ResultsError: If the directory holds no run or its results are unreadable.
    """
    config = read_config(directory)
    records = read_records(Path(directory) / RESULTS_FILE)
    task_set = config.get("task_set")
    order = task_set.get("tasks") if isinstance(task_set, dict) else None
    if order is not None and (
        not isinstance(order, list) or not all(isinstance(name, str) for name in order)
    ):
        raise ResultsError(
            f"{Path(directory) / CONFIG_FILE}: task_set.tasks must be a list of task names, "
            f"got {type(order).__name__}. Fix it (the task names in the set's order), or "
            "delete the field."
        )
    summary = summarize(records, report_settings(config), task_order=order, run_directory=directory)
    return summary, write_reports(directory, summary)


def _finish(store: ResultsStore, status: str, ran: int) -> None:
    """Records how the call ended in ``run.json``; a failure there costs only that entry."""
    try:
        store.finish(status, ran)
    except ResultsError as exc:
        if status == "failed":  # the error that stopped the run is the one to show
            return
        warn_caller(
            f"{exc} The results are safe; only run.json's history lacks how this call ended.",
        )
