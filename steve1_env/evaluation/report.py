"""Turn trial records into a summary and three report files: JSON, Markdown and HTML.

`summarize` aggregates `TrialRecord`s into a JSON-ready dict: success rates with Wilson
intervals per task and per instruction, crashes, and steps-to-success statistics. Trials whose
outcome is ``crash`` (the world kept crashing) were never judged, so they are left out of every
success rate and every metric statistic, and counted apart. Records of the unconditional
baseline (the zero goal) get success rates of their own, and records with metrics (the paper's
fixed-horizon protocol) a metrics section: per prompt and condition the mean of each metric with
a 95% Student t-interval, and the ratio of the prompt's mean to its baseline's on the same
trials. The renderers read only that summary, so a ``report.json`` from an earlier run can be
rendered again. The summary also lists every trial (``trials``: seed, outcome, reason, steps,
crash message, video), so a re-rendered page has the per-trial table and the videos too. The
HTML page is self-contained: inline CSS and SVG, no scripts, no external resources apart from
the trials' video files, which it links and embeds by their paths relative to the run
directory (where the page is written).
"""

from __future__ import annotations

import functools
import html
import json
import math
import operator
import os
import re
import urllib.parse
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from steve1_env.errors import ResultsError
from steve1_env.evaluation.records import CONDITIONS, DURATION_DECIMALS, OUTCOMES, TrialRecord
from steve1_env.files import atomic_write_text, make_folder

SUMMARY_SCHEMA = 3
"""Version of the layout of the dict `summarize` returns (``report.json``). Schema 2 added the
``baseline`` section (success of the unconditional baseline, which schema 1 would have pooled
into the tasks' rates) and the ``metrics`` section; schema 3 the ``trials`` list (one entry per
trial) and each task's ``failure_reasons``. Summaries of schemas 1 and 2 still render (without
the per-trial table and videos)."""
READABLE_SUMMARY_SCHEMAS = (1, 2, 3)
"""Summary schemas the renderers read."""

CONFIDENCE = 0.95
"""Confidence level of every interval in the report."""

PAPER_METRICS = ("log", "dirt", "seed", "travel_distance")
"""The STEVE-1 paper's programmatic-evaluation metrics: they lead the metric columns, in this
order; a task's own metrics follow in alphabetical order."""

Z_95 = 1.959963984540054
"""The standard normal quantile for a two-sided 95% interval."""

REPORT_TITLE = "STEVE-1 evaluation report"
"""The title of a report on a STEVE-1 policy (see `report_title` for the others)."""
POLICY_TITLES = {"scripted": "Scripted oracle", "random": "Random policy"}
"""Report titles' names of the built-in policies that are not STEVE-1."""
EMBEDDED_VIDEOS = 4
"""Most videos the HTML report embeds as players (every trial's video is linked)."""
ERROR_PREVIEW_CHARS = 300
"""Longest crash message the per-trial table shows (the records keep the full message)."""
FAILURE_REASONS = ("budget", "world_done", "crash")
"""Why a trial that did not succeed ended, in the order the breakdown shows them."""

_NONE = "—"
_RANGE = "\u2013"  # En dash between the bounds of an interval.
_LABEL_CHARS = 32  # Longer task names are truncated in charts; the full name is in the tooltip.


# --------------------------------------------------------------------------------------------
# Statistics


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float]:
    """Returns the Wilson score interval of a binomial proportion.

    Unlike the normal approximation, the Wilson interval stays inside [0, 1] and is sensible
    for 0 or all successes and for small samples, which is what evaluation runs produce.

    Args:
        successes: Number of successes.
        trials: Number of judged trials.
        z: Standard normal quantile; the default gives a two-sided 95% interval.

    Returns:
        ``(lower, upper)``, clipped to [0, 1]. With no trials nothing is known: ``(0.0, 1.0)``.

    Raises:
        ResultsError: If a count is not an integer, is negative, if `successes` exceeds
            `trials`, or if `z` is not a positive finite number.
    """
    successes = _count(successes, "successes")
    trials = _count(trials, "trials")
    if successes > trials:
        raise ResultsError(
            f"wilson_interval: successes ({successes}) exceed trials ({trials}); "
            "pass the number of judged trials as `trials`."
        )
    if isinstance(z, bool) or not isinstance(z, int | float) or not math.isfinite(z) or z <= 0:
        raise ResultsError(f"wilson_interval: z must be a positive finite number, got {z!r}.")
    if trials == 0:
        return 0.0, 1.0
    p = successes / trials
    z2 = z * z
    denominator = 1.0 + z2 / trials
    center = (p + z2 / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials)) / denominator
    # The bounds are exactly 0 and 1 at the extremes; pin them against rounding.
    lower = 0.0 if successes == 0 else max(0.0, center - half)
    upper = 1.0 if successes == trials else min(1.0, center + half)
    return float(lower), float(upper)


def _count(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise ResultsError(f"wilson_interval: {name} must be an integer count, got {value!r}.")
    try:
        number = operator.index(value)  # Accepts numpy integers too.
    except TypeError:
        raise ResultsError(
            f"wilson_interval: {name} must be an integer count, got {type(value).__name__} "
            f"{value!r}."
        ) from None
    if number < 0:
        raise ResultsError(f"wilson_interval: {name} must be >= 0, got {number}.")
    return number


def student_t_quantile(probability: float, df: int) -> float:
    """Returns the quantile of Student's t distribution with integer degrees of freedom.

    Computed without SciPy, to double precision: bisection on the exact CDF, which for an
    integer `df` is a finite trigonometric series (Abramowitz and Stegun 26.7.3 and 26.7.4).
    The two-sided 95% critical value is ``student_t_quantile(0.975, df)``: 12.706 for one
    degree of freedom, 2.228 for ten, tending to 1.960 as `df` grows.

    Args:
        probability: The lower-tail probability, strictly between 0 and 1.
        df: Degrees of freedom, an integer >= 1.

    Returns:
        The value ``t`` with ``P(T <= t) == probability``.

    Raises:
        ResultsError: If `probability` is not strictly between 0 and 1 or `df` is not an
            integer >= 1.
    """
    _check_open_unit(probability, "student_t_quantile: probability")
    if isinstance(df, bool) or not isinstance(df, int | np.integer) or df < 1:
        raise ResultsError(
            f"student_t_quantile: df must be an integer >= 1 (degrees of freedom), got {df!r}."
        )
    return _t_quantile(float(probability), int(df))


def _check_open_unit(value: Any, name: str) -> None:
    """Raises unless `value` is a number strictly between 0 and 1."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 < value < 1.0:
        raise ResultsError(f"{name} must be a number strictly between 0 and 1, got {value!r}.")


@functools.lru_cache(maxsize=256)
def _t_quantile(probability: float, df: int) -> float:
    if probability == 0.5:
        return 0.0
    if probability < 0.5:
        return -_t_quantile(1.0 - probability, df)
    central = 2.0 * probability - 1.0  # P(|T| <= t) at the quantile t.
    low, high = 0.0, 1.0
    while _t_central_mass(high, df) < central:
        high *= 2.0
    for _ in range(200):  # Halving 200 times exhausts double precision: a fixed point.
        middle = 0.5 * (low + high)
        if middle in (low, high):
            break
        if _t_central_mass(middle, df) < central:
            low = middle
        else:
            high = middle
    return high


def _t_central_mass(t: float, df: int) -> float:
    """P(|T| <= t) for Student's t with integer `df` (t >= 0), as a finite series."""
    theta = math.atan(t / math.sqrt(df))
    sin, cos = math.sin(theta), math.cos(theta)
    c2 = cos * cos
    # Odd df: (2/pi)(theta + sin cos (1 + 2/3 c2 + 2*4/(3*5) c2^2 + ...)), df-1 powers of cos;
    # even df: sin (1 + 1/2 c2 + 1*3/(2*4) c2^2 + ...). Each term shrinks; stop when negligible.
    odd = df % 2 == 1
    term, total = 1.0, 1.0
    for k in range(1, (df - 1) // 2 if odd else df // 2):
        term *= c2 * ((2 * k) / (2 * k + 1) if odd else (2 * k - 1) / (2 * k))
        total += term
        if term < 1e-17 * total:
            break
    if odd:
        return (2.0 / math.pi) * (theta + (sin * cos * total if df > 1 else 0.0))
    return sin * total


def t_interval(
    values: Sequence[float], confidence: float = CONFIDENCE
) -> tuple[float, float] | None:
    """Returns the Student t confidence interval of the mean of `values`.

    ``mean -+ t * s / sqrt(n)``, with ``s`` the sample standard deviation and ``t`` the
    two-sided quantile with ``n - 1`` degrees of freedom. It assumes roughly normal means,
    which episode maxima of counts are only approximately for small samples; its coverage is
    then approximate too, but it is deterministic (no resampling).

    Args:
        values: The sample, finite numbers.
        confidence: The confidence level, strictly between 0 and 1.

    Returns:
        ``(lower, upper)``, or None for fewer than two values (no spread to estimate).

    Raises:
        ResultsError: If `confidence` is not strictly between 0 and 1.
    """
    _check_open_unit(confidence, "t_interval: confidence")
    if len(values) < 2:
        return None
    mean, std = _mean_std(values)
    quantile = student_t_quantile((1.0 + confidence) / 2.0, len(values) - 1)
    half = quantile * (std or 0.0) / math.sqrt(len(values))  # std is a float for n >= 2.
    return mean - half, mean + half


def _mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None below two values); fsum: order-independent."""
    n = len(values)
    mean = math.fsum(values) / n
    if n < 2:
        return mean, None
    return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))


# --------------------------------------------------------------------------------------------
# Summary


def summarize(
    records: Sequence[TrialRecord],
    config: Mapping[str, Any] | None = None,
    *,
    task_order: Sequence[str] | None = None,
    run_directory: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Aggregates trial records into a JSON-ready summary.

    Records are sorted by (task, instruction index, trial, condition) before aggregating, so
    the summary depends only on the set of records and the task order; the ``timing`` values
    are the only ones that differ between runs with the same trial results. Without
    `task_order`, tasks appear in the order they first appear in `records`: pass the task set's
    order to make the task list independent of the order in which trials finished.

    ``tasks`` and ``totals`` count the prompt trials; the unconditional baseline's trials, when
    there are any, are counted in ``baseline`` (same layout), never pooled with them. When any
    record carries metrics, ``metrics`` holds per prompt (task and instruction) and condition
    each metric's statistics over the judged trials, a pooled baseline, and the ratio of each
    prompt's mean to its baseline's over the trials both ran (see ``docs/evaluation.md``).

    Args:
        records: The finished trials, each key (``task/instruction_index/trial``, plus the
            condition for a baseline trial) at most once.
        config: The run's settings (world, policy, weight checksums, ...), copied as given into
            ``summary["config"]``. Values must be JSON-like (mappings, sequences, strings,
            numbers, booleans, None; paths are stored as strings).
        task_order: Task names in the order to report them. Tasks not listed follow in order
            of first appearance; listed tasks without records are left out.
        run_directory: The run directory the records' video paths are relative to; given, a
            trial whose video has a thumbnail there gets its path (``thumbnail``).

    Returns:
        A dict with ``schema``, ``config``, ``totals``, ``tasks``, ``baseline`` (only with
        baseline trials), ``metrics`` (only with metrics), ``trials`` (one entry per trial, in
        report order: task, instruction, condition, trial, seed, outcome, reason, steps, the
        last crash message clipped to `ERROR_PREVIEW_CHARS`, video and thumbnail paths) and
        ``timing``; every value is a plain Python object (no NaN or infinity), so `json.dumps`
        takes it as is.

    Raises:
        ResultsError: If a record is not a `TrialRecord` or has an unknown outcome, if a key
            appears twice, if one instruction index names two different instructions, if a
            trial and its baseline ran different seeds, or if `config` holds a value JSON
            cannot store.
    """
    if isinstance(records, str | bytes) or not isinstance(records, Iterable):
        raise ResultsError(
            f"summarize: expected a sequence of TrialRecord, got {type(records).__name__}."
        )
    if config is not None and not isinstance(config, Mapping):
        raise ResultsError(
            f"summarize: config must be a mapping of setting names to values, got "
            f"{type(config).__name__}."
        )
    records = list(records)
    _check_records(records)
    rank = _task_ranks(records, task_order)
    records.sort(
        key=lambda r: (rank[r.task], r.instruction_index, r.trial, CONDITIONS.index(r.condition))
    )
    prompt = [r for r in records if r.condition == "prompt"]
    baseline = [r for r in records if r.condition != "prompt"]
    durations = [float(r.duration_s) for r in records]
    total_duration = math.fsum(durations)  # fsum is exact, hence independent of the order.
    summary: dict[str, Any] = {
        "schema": SUMMARY_SCHEMA,
        "config": _json_ready(dict(config or {}), "config"),
        **_success_summary(prompt),
    }
    if baseline:
        summary["baseline"] = _success_summary(baseline)
    if any(r.metrics for r in records):
        summary["metrics"] = _json_ready(_metrics_summary(records), "metrics")
    summary["trials"] = [_trial_entry(r, run_directory) for r in records]
    summary["schema"] = SUMMARY_SCHEMA
    summary["timing"] = {
        # Rounded like each record's duration_s: sums of floats grow digits of noise.
        "total_duration_s": round(total_duration, DURATION_DECIMALS),
        "mean_duration_s": (
            round(total_duration / len(records), DURATION_DECIMALS) if records else None
        ),
    }
    return summary


def _trial_entry(
    record: TrialRecord, run_directory: str | os.PathLike[str] | None
) -> dict[str, Any]:
    error = record.errors[-1] if record.errors else None
    if error is not None and len(error) > ERROR_PREVIEW_CHARS:
        error = error[: ERROR_PREVIEW_CHARS - 1] + "…"
    thumbnail = None
    if record.video is not None and run_directory is not None and _in_run_directory(record.video):
        # Written beside the video (steve1_env.evaluation.video.thumbnail_path); runs from
        # before thumbnails, or with the file deleted, have none.
        candidate = Path(record.video).with_suffix(".webp")
        if (Path(run_directory) / candidate).is_file():
            thumbnail = candidate.as_posix()
    return {
        "task": record.task,
        "instruction_index": record.instruction_index,
        "instruction": record.instruction,
        "condition": record.condition,
        "trial": record.trial,
        "seed": int(record.seed),
        "outcome": record.outcome,
        "reason": record.reason,
        "steps": int(record.steps),
        "max_steps": int(record.max_steps),
        "crashes": int(record.crashes),
        "error": error,
        "video": record.video,
        "thumbnail": thumbnail,
    }


def _check_records(records: Sequence[Any]) -> None:
    seen: set[str] = set()
    instructions: dict[tuple[str, int], str] = {}
    seeds: dict[tuple[str, int, int], tuple[str, int]] = {}
    for record in records:
        if not isinstance(record, TrialRecord):
            raise ResultsError(
                f"summarize: expected TrialRecord objects, got {type(record).__name__}; read "
                "results with TrialRecord.from_json."
            )
        if record.outcome not in OUTCOMES:
            raise ResultsError(
                f"summarize: trial {record.key} has outcome {record.outcome!r}; expected one "
                f"of {OUTCOMES}."
            )
        if record.key in seen:
            raise ResultsError(
                f"summarize: trial {record.key} appears more than once; keep one record per "
                "trial before summarizing."
            )
        seen.add(record.key)
        text = instructions.setdefault((record.task, record.instruction_index), record.instruction)
        if text != record.instruction:
            first, second = sorted((text, record.instruction))
            raise ResultsError(
                f"summarize: task {record.task!r} instruction {record.instruction_index} is "
                f"{first!r} in some records and {second!r} in others; the results come from "
                "different task files. Evaluate the changed task set into a new directory."
            )
        # A baseline is compared with its prompt trial seed for seed: they must share it.
        identity = (record.task, record.instruction_index, record.trial)
        other, seed = seeds.setdefault(identity, (record.key, record.seed))
        if seed != record.seed:
            raise ResultsError(
                f"summarize: trial {other} ran seed {seed} but {record.key} ran seed "
                f"{record.seed}; a baseline must run its prompt trial's seed. The results come "
                "from different task files; evaluate the changed task set into a new directory."
            )


def _success_summary(records: Sequence[TrialRecord]) -> dict[str, Any]:
    """``totals`` and ``tasks`` of `records` (sorted, one condition)."""
    by_task: dict[str, list[TrialRecord]] = {}
    for record in records:
        by_task.setdefault(record.task, []).append(record)
    return {
        "totals": {**_counts(records), "world_crashes": sum(r.crashes for r in records)},
        "tasks": [_task_summary(task, group) for task, group in by_task.items()],
    }


def _task_ranks(records: Sequence[TrialRecord], task_order: Sequence[str] | None) -> dict[str, int]:
    if task_order is None:
        task_order = ()
    elif isinstance(task_order, str) or not all(isinstance(t, str) for t in task_order):
        # A bare string is a Sequence[str] too, but of letters, not task names.
        raise ResultsError(
            f"summarize: task_order must be a sequence of task names, got {task_order!r}."
        )
    rank: dict[str, int] = {}
    for task in [*task_order, *(r.task for r in records)]:
        rank.setdefault(task, len(rank))
    return rank


def _counts(records: Sequence[TrialRecord]) -> dict[str, Any]:
    successes = sum(r.outcome == "success" for r in records)
    failures = sum(r.outcome == "failure" for r in records)
    crashes = sum(r.outcome == "crash" for r in records)
    judged = successes + failures
    lower, upper = wilson_interval(successes, judged)
    return {
        "trials": len(records),
        "judged": judged,
        "successes": successes,
        "failures": failures,
        "crashes": crashes,
        "success_rate": successes / judged if judged else None,
        "ci95": [lower, upper],
    }


def _task_summary(task: str, records: Sequence[TrialRecord]) -> dict[str, Any]:
    by_index: dict[int, list[TrialRecord]] = {}
    for record in records:
        by_index.setdefault(record.instruction_index, []).append(record)
    instructions = []
    for index in sorted(by_index):
        group = by_index[index]  # One instruction text per index: see _check_records.
        counts = _counts(group)
        del counts["failures"]
        instructions.append(
            {"instruction_index": index, "instruction": group[0].instruction, **counts}
        )
    return {
        "task": task,
        **_counts(records),
        "steps_to_success": _steps_stats(records),
        "world_crashes": sum(r.crashes for r in records),
        "instructions": instructions,
        "reasons": dict(sorted(Counter(r.reason for r in records).items())),
        "failure_reasons": _failure_reasons(records),
    }


def _failure_reasons(records: Sequence[TrialRecord]) -> dict[str, int]:
    # A fixed-horizon trial that succeeded still ends by "budget": count by outcome, not reason.
    counts = Counter(r.reason for r in records if r.outcome != "success")
    return {reason: counts.get(reason, 0) for reason in (*FAILURE_REASONS, *sorted(counts))}


def _steps_stats(records: Sequence[TrialRecord]) -> dict[str, Any]:
    values = sorted(
        int(r.steps_to_success)
        for r in records
        if r.outcome == "success" and r.steps_to_success is not None
    )
    if not values:
        return {"count": 0, "mean": None, "median": None, "min": None, "max": None, "values": []}
    array = np.asarray(values, dtype=np.float64)
    return {
        "count": len(values),
        "mean": float(np.mean(array)),
        "median": float(np.median(array)),
        "min": values[0],
        "max": values[-1],
        "values": values,
    }


def _metrics_summary(records: Sequence[TrialRecord]) -> dict[str, Any]:
    """The ``metrics`` section of sorted `records` (see `summarize` and docs/evaluation.md)."""
    seen = {name for r in records for name in r.metrics}
    names = [n for n in PAPER_METRICS if n in seen] + sorted(seen - set(PAPER_METRICS))
    by_prompt: dict[tuple[str, int], dict[str, list[TrialRecord]]] = {}
    for record in records:
        prompt = by_prompt.setdefault((record.task, record.instruction_index), {})
        prompt.setdefault(record.condition, []).append(record)
    prompts = []
    for (task, index), conditions in by_prompt.items():
        first = next(iter(conditions.values()))[0]
        prompts.append(
            {
                "task": task,
                "instruction_index": index,
                "instruction": first.instruction,
                "conditions": {
                    condition: _condition_metrics(conditions[condition], names)
                    for condition in CONDITIONS
                    if condition in conditions
                },
                "ratio_to_baseline": _ratios(
                    conditions.get("prompt", []), conditions.get("unconditional", []), names
                ),
            }
        )
    baseline = [r for r in records if r.condition == "unconditional"]
    return {
        "names": names,
        "confidence": CONFIDENCE,
        "interval": "student_t",
        "prompts": prompts,
        "baseline": _pooled_baseline(baseline, names) if baseline else None,
    }


def _judged(records: Sequence[TrialRecord]) -> list[TrialRecord]:
    return [r for r in records if r.outcome != "crash"]


def _metric_stats(values: Sequence[float]) -> dict[str, Any]:
    """n, mean, sample standard deviation, 95% t-interval, min and max of `values`."""
    if not values:
        return {"n": 0, "mean": None, "std": None, "ci95": None, "min": None, "max": None}
    mean, std = _mean_std(values)
    interval = t_interval(values)
    return {
        "n": len(values),
        "mean": mean,
        "std": std,
        "ci95": None if interval is None else list(interval),
        "min": float(min(values)),
        "max": float(max(values)),
    }


def _condition_metrics(records: Sequence[TrialRecord], names: Sequence[str]) -> dict[str, Any]:
    judged = _judged(records)
    return {
        "trials": len(records),
        "judged": len(judged),
        "crashes": len(records) - len(judged),
        "metrics": {
            name: _metric_stats([float(r.metrics[name]) for r in judged if name in r.metrics])
            for name in names
        },
    }


def _ratios(
    prompt: Sequence[TrialRecord], baseline: Sequence[TrialRecord], names: Sequence[str]
) -> dict[str, Any]:
    """Per metric: the prompt's mean over its baseline's, over trials judged in both."""
    baseline_of = {r.trial: r for r in _judged(baseline)}
    result = {}
    for name in names:
        pairs = []
        for record in _judged(prompt):
            other = baseline_of.get(record.trial)
            if other is not None and name in record.metrics and name in other.metrics:
                pairs.append((float(record.metrics[name]), float(other.metrics[name])))
        prompt_mean = math.fsum(p for p, _ in pairs) / len(pairs) if pairs else None
        baseline_mean = math.fsum(b for _, b in pairs) / len(pairs) if pairs else None
        ratio = None
        if prompt_mean is not None and baseline_mean:  # A zero baseline has no ratio.
            ratio = prompt_mean / baseline_mean
            if not math.isfinite(ratio):  # Overflow over a denormal baseline.
                ratio = None
        result[name] = {
            "pairs": len(pairs),
            "prompt_mean": prompt_mean,
            "baseline_mean": baseline_mean,
            "ratio": ratio,
        }
    return result


def _pooled_baseline(records: Sequence[TrialRecord], names: Sequence[str]) -> dict[str, Any]:
    """The unconditional agent over all prompts: one value per seed (the mean of its trials).

    Prompts usually share seeds, and the zero goal ignores the prompt, so their baselines
    repeat one agent on the same worlds; counting each seed once keeps the interval honest.
    """
    judged = _judged(records)
    by_seed: dict[int, list[TrialRecord]] = {}
    for record in judged:
        by_seed.setdefault(record.seed, []).append(record)
    metrics = {}
    for name in names:
        per_seed = []
        for seed in sorted(by_seed):
            values = [float(r.metrics[name]) for r in by_seed[seed] if name in r.metrics]
            if values:
                per_seed.append(math.fsum(values) / len(values))
        metrics[name] = _metric_stats(per_seed)
    return {
        "unit": "seed",
        "trials": len(records),
        "judged": len(judged),
        "crashes": len(records) - len(judged),
        "seeds": len(by_seed),
        "metrics": metrics,
    }


def _json_ready(value: Any, where: str) -> Any:
    """Returns a copy of `value` made of dicts, lists and JSON scalars, or raises."""
    # Subclasses (numpy's float64, enums) become the plain type, so the copy compares equal
    # to its JSON round trip.
    if value is None or isinstance(value, str):
        return None if value is None else str(value)
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        if not math.isfinite(value):
            raise ResultsError(f"summarize: {where} is {value}, which JSON cannot store.")
        return float(value)
    if isinstance(value, np.ndarray):
        return _json_ready(value.tolist(), where)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, Mapping):
        result = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ResultsError(
                    f"summarize: {where} has key {key!r}; JSON keys must be strings."
                )
            result[key] = _json_ready(item, f"{where}[{key!r}]")
        return result
    if isinstance(value, list | tuple):
        return [_json_ready(item, f"{where}[{i}]") for i, item in enumerate(value)]
    raise ResultsError(
        f"summarize: {where} is a {type(value).__name__}, which a JSON report cannot store; "
        "give strings, numbers, booleans, None, lists or dicts."
    )


# --------------------------------------------------------------------------------------------
# Formatting helpers shared by the renderers


def _check_summary(summary: Any) -> None:
    schema = summary.get("schema") if isinstance(summary, Mapping) else None
    if isinstance(schema, bool) or schema not in READABLE_SUMMARY_SCHEMAS:
        raise ResultsError(
            f"Expected a summary from summarize() (schema "
            f"{' or '.join(map(str, READABLE_SUMMARY_SCHEMAS))}), got "
            f"{type(summary).__name__} with schema {schema!r}. Summarize the results again."
        )
    missing = [key for key in ("config", "totals", "tasks", "timing") if key not in summary]
    if missing:
        raise ResultsError(f"The summary lacks {', '.join(missing)}; summarize the results again.")


def _percent(rate: float | None) -> str:
    return _NONE if rate is None else f"{100 * rate:.1f}%"


def _interval(row: Mapping[str, Any]) -> str:
    if not row["judged"]:
        return _NONE
    lower, upper = row["ci95"]
    return f"{100 * lower:.1f}{_RANGE}{100 * upper:.1f}%"


def _number(value: float | None) -> str:
    if value is None:
        return _NONE
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.1f}"


def _fraction(row: Mapping[str, Any]) -> str:
    return f"{row['successes']}/{row['judged']}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return _NONE
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"


def _scalar(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _all_steps(summary: Mapping[str, Any]) -> list[int]:
    return [v for task in summary["tasks"] for v in task["steps_to_success"]["values"]]


def _mean(values: Sequence[int]) -> float | None:
    return float(np.mean(np.asarray(values, dtype=np.float64))) if values else None


def _task_rows(summary: Mapping[str, Any]) -> list[list[str]]:
    """Task | Success | Rate | 95% CI | Crashes | Mean steps to success, as plain text."""
    rows = [
        [
            task["task"],
            _fraction(task),
            _percent(task["success_rate"]),
            _interval(task),
            str(task["crashes"]),
            _number(task["steps_to_success"]["mean"]),
        ]
        for task in summary["tasks"]
    ]
    totals = summary["totals"]
    rows.append(
        [
            "Total",
            _fraction(totals),
            _percent(totals["success_rate"]),
            _interval(totals),
            str(totals["crashes"]),
            _number(_mean(_all_steps(summary))),
        ]
    )
    return rows


TASK_COLUMNS = ("Task", "Success", "Rate", "95% CI", "Crashes", "Mean steps to success")
INSTRUCTION_COLUMNS = ("Task", "#", "Instruction", "Success", "Rate", "95% CI", "Crashes")


def _instruction_rows(summary: Mapping[str, Any]) -> list[list[str]]:
    """The per-instruction table, or no rows when every task has a single instruction."""
    if not any(len(task["instructions"]) > 1 for task in summary["tasks"]):
        return []
    return [
        [
            task["task"],
            str(item["instruction_index"]),
            item["instruction"],
            _fraction(item),
            _percent(item["success_rate"]),
            _interval(item),
            str(item["crashes"]),
        ]
        for task in summary["tasks"]
        for item in task["instructions"]
    ]


def _overview(summary: Mapping[str, Any]) -> list[tuple[str, str]]:
    totals, timing = summary["totals"], summary["timing"]
    rate = _percent(totals["success_rate"])
    if totals["judged"]:
        rate += f" (95% CI {_interval(totals)})"
    return [
        ("Tasks", str(len(summary["tasks"]))),
        ("Trials", str(totals["trials"])),
        ("Judged", str(totals["judged"])),
        ("Successes", str(totals["successes"])),
        ("Failures", str(totals["failures"])),
        ("Success rate", rate),
        ("Crashed trials (not judged)", str(totals["crashes"])),
        ("World crashes (incl. retried)", str(totals["world_crashes"])),
        *_baseline_overview(summary),
        ("Total trial time", _duration(timing["total_duration_s"])),
        ("Mean trial time", _duration(timing["mean_duration_s"])),
    ]


def _baseline_overview(summary: Mapping[str, Any]) -> list[tuple[str, str]]:
    if "baseline" not in summary:
        return []
    totals = summary["baseline"]["totals"]
    rate = _percent(totals["success_rate"])
    if totals["judged"]:
        rate += f" (95% CI {_interval(totals)})"
    return [
        ("Baseline trials (unconditional)", str(totals["trials"])),
        ("Baseline success rate", rate),
    ]


def report_title(config: Mapping[str, Any]) -> str:
    """Returns the report's title, naming the policy that ran (``config["policy"]``).

    STEVE-1 (``steve1``, ``steve1-official``) gives `REPORT_TITLE`; the scripted oracle and
    the random policy are named as such, another policy by its registered name.
    """
    policy = config.get("policy") if isinstance(config, Mapping) else None
    if not isinstance(policy, str) or not policy:
        return "Evaluation report"
    if policy == "steve1" or policy.startswith("steve1-"):
        return REPORT_TITLE
    return f"{POLICY_TITLES.get(policy, f'Policy {policy!r}')} evaluation report"


REASON_COLUMNS = ("Task", "Condition", "Not succeeded", "Budget", "World done", "Crash", "Other")


def _failure_counts(task: Mapping[str, Any]) -> dict[str, int]:
    if "failure_reasons" in task:
        return dict(task["failure_reasons"])
    # Schemas 1 and 2 counted every trial's reason; without the outcomes, take all but success.
    return {k: int(v) for k, v in task.get("reasons", {}).items() if k != "success"}


def _reason_rows(summary: Mapping[str, Any]) -> list[list[str]]:
    """Per task and condition: how the trials that did not succeed ended."""
    sections = [("prompt", summary["tasks"])]
    if "baseline" in summary:
        sections.append(("unconditional", summary["baseline"]["tasks"]))
    rows = []
    for condition, tasks in sections:
        for task in tasks:
            counts = _failure_counts(task)
            other = sum(v for k, v in counts.items() if k not in FAILURE_REASONS)
            known = [str(counts.get(reason, 0)) for reason in FAILURE_REASONS]
            rows.append([task["task"], condition, str(sum(counts.values())), *known, str(other)])
    return rows


TRIAL_COLUMNS = (
    "Task", "#", "Instruction", "Condition", "Trial", "Seed", "Outcome", "Reason", "Steps",
    "Crash message", "Video",
)  # fmt: skip
_TRIAL_NUMERIC = {1, 4, 5, 8}


def _trial_cells(trial: Mapping[str, Any]) -> list[str]:
    return [
        trial["task"],
        str(trial["instruction_index"]),
        trial["instruction"],
        trial["condition"],
        str(trial["trial"]),
        str(trial["seed"]),
        trial["outcome"],
        trial["reason"],
        f"{trial['steps']}/{trial['max_steps']}",
        trial["error"] or "",
    ]


def _url(path: str) -> str:
    # A relative URL: the path's characters quoted, its folders kept.
    return urllib.parse.quote(path, safe="/")


def _in_run_directory(path: str) -> bool:
    """Whether a record's video path stays inside the run directory, so the page may load it.

    The trials write ``videos/<task>/<n>.mp4``; a path from an edited or foreign results file
    that is absolute, protocol-relative (``//host/x.mp4``, a request to another machine) or
    climbs out with ``..`` is shown as text, never linked or embedded.
    """
    parts = re.split(r"[/\\]", path)
    return bool(path) and not path.startswith(("/", "\\")) and ".." not in parts


_CRASH_NOTE = (
    "Crashed trials (the world crashed on every try) were never judged: they are left out of "
    "the success rates and counted apart. Intervals are 95% Wilson score intervals."
)

_BASELINE_NOTE = (
    "The unconditional baseline runs each trial again with the zero goal, on the same seed; "
    "its trials are counted here, apart from the prompt trials above."
)
_NO_PROMPT_TRIALS = "No prompt trials: only the unconditional baseline ran."

_REASONS_NOTE = (
    "Trials that did not succeed, by how they ended: budget (the step budget ran out), "
    "world_done (the world ended the episode) or crash (the world crashed on every try). "
    "A fixed-horizon trial that succeeded is not counted, though it ran to its budget."
)

_METRICS_NOTE = (
    "Each metric is its episode value (the paper's log, dirt and seed: the maximum over the "
    "episode of the inventory counts of matching items; travel_distance: the maximum "
    "horizontal distance from the spawn point). n counts the judged trials that recorded the "
    "metric (crashed trials are left out); SD is the sample standard deviation; 95% CI is the "
    "Student t-interval of the mean (none for n = 1). The ratio to baseline divides the "
    "prompt's mean by the unconditional baseline's mean over the same trials (seeds); it is "
    "\u2014 when the baseline's mean is 0 or no trial ran both."
)
_POOLED_BASELINE = "All prompts (per seed)"

METRIC_COLUMNS = ("Task", "Instruction", "Metric", "n", "Mean", "95% CI", "SD", "Min", "Max")
RATIO_COLUMNS = ("Ratio to baseline", "Pairs")
_METRIC_NUMERIC = set(range(3, len(METRIC_COLUMNS) + len(RATIO_COLUMNS)))
_CONDITION_TITLES = {"prompt": "Prompt", "unconditional": "Unconditional baseline"}


def _stat(value: float | None) -> str:
    return _NONE if value is None else f"{value:,.2f}"


def _stat_interval(stats: Mapping[str, Any]) -> str:
    if stats["ci95"] is None:
        return _NONE
    lower, upper = stats["ci95"]
    return f"{_stat(lower)}{_RANGE}{_stat(upper)}"


def _ratio(entry: Mapping[str, Any]) -> str:
    return _NONE if entry["ratio"] is None else f"{entry['ratio']:,.2f}\u00d7"


def _stats_cells(stats: Mapping[str, Any]) -> list[str]:
    return [
        str(stats["n"]),
        _stat(stats["mean"]),
        _stat_interval(stats),
        _stat(stats["std"]),
        _stat(stats["min"]),
        _stat(stats["max"]),
    ]


def _has_baseline(metrics: Mapping[str, Any]) -> bool:
    return metrics["baseline"] is not None


def _metric_tables(metrics: Mapping[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, columns, rows) of the metric table of each condition present."""
    tables = []
    for condition in CONDITIONS:
        prompts = [p for p in metrics["prompts"] if condition in p["conditions"]]
        if not prompts:
            continue
        ratios = condition == "prompt" and _has_baseline(metrics)
        rows = []
        for prompt in prompts:
            stats = prompt["conditions"][condition]["metrics"]
            for name in metrics["names"]:
                if not stats[name]["n"]:  # Not tracked for this prompt, or all crashed.
                    continue
                row = [prompt["task"], prompt["instruction"], name, *_stats_cells(stats[name])]
                if ratios:
                    entry = prompt["ratio_to_baseline"][name]
                    row += [_ratio(entry), str(entry["pairs"])]
                rows.append(row)
        if condition == "unconditional":
            pooled = metrics["baseline"]["metrics"]
            rows += [
                [_POOLED_BASELINE, _NONE, name, *_stats_cells(pooled[name])]
                for name in metrics["names"]
                if pooled[name]["n"]
            ]
        columns = [*METRIC_COLUMNS, *(RATIO_COLUMNS if ratios else ())]
        tables.append((_CONDITION_TITLES[condition], columns, rows))
    return tables


# --------------------------------------------------------------------------------------------
# Markdown


_MD_SPECIAL = set("\\`*_[]<>|")


def _md(text: Any) -> str:
    """Escapes text for a Markdown table cell or list item (one line, no markup, no HTML)."""
    one_line = " ".join(str(text).split())
    return "".join(f"\\{c}" if c in _MD_SPECIAL else c for c in one_line)


def _md_code(text: str) -> str:
    one_line = " ".join(text.split()) or '""'
    # A code span's fence must be longer than any run of backticks inside it.
    longest = max((len(run) for run in re.findall(r"`+", one_line)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if one_line.startswith("`") or one_line.endswith("`") else ""
    return f"{fence}{pad}{one_line}{pad}{fence}"


def _md_table(columns: Sequence[str], rows: Sequence[Sequence[str]], bold_last: bool) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for i, row in enumerate(rows):
        cells = [_md(cell) for cell in row]
        if bold_last and i == len(rows) - 1:
            cells[0] = f"**{cells[0]}**"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _md_trials(trials: Sequence[Mapping[str, Any]]) -> str:
    lines = _md_table(TRIAL_COLUMNS, [], bold_last=False).split("\n")
    for trial in trials:
        cells = [_md(cell) for cell in _trial_cells(trial)]
        video = trial.get("video")
        if video and _in_run_directory(video):
            cells.append(f"[mp4](<{_url(video)}>)")
        else:
            cells.append(_md(video or ""))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _md_config(value: Any, indent: str = "") -> list[str]:
    lines = []
    for key, item in value.items():
        head = f"{indent}- **{_md(key)}**:"
        if isinstance(item, Mapping) and item:
            lines.append(head)
            lines.extend(_md_config(item, indent + "  "))
        elif isinstance(item, list) and any(isinstance(x, Mapping | list) for x in item):
            lines.append(head)
            lines.extend(_md_config({str(i): x for i, x in enumerate(item)}, indent + "  "))
        elif isinstance(item, list):
            lines.append(f"{head} " + (", ".join(_md_code(_scalar(x)) for x in item) or "[]"))
        elif isinstance(item, Mapping):
            lines.append(f"{head} {{}}")
        else:
            lines.append(f"{head} {_md_code(_scalar(item))}")
    return lines


def render_markdown(summary: Mapping[str, Any]) -> str:
    """Renders a summary as a Markdown report.

    Args:
        summary: What `summarize` returned (or ``report.json`` read back).

    Returns:
        The report: title (naming the policy, `report_title`), overview, a per-task table with
        a total row, a per-instruction table when a task has several instructions, the
        baseline's per-task table (with baseline trials), a prompt x metric table per
        condition (with metrics), why the trials that did not succeed ended per task, a
        per-trial table linking each video (schema 3), and the run's configuration.

    Raises:
        ResultsError: If `summary` is not a summary of this version.
    """
    _check_summary(summary)
    parts = [f"# {report_title(summary['config'])}", ""]
    parts += [f"- **{name}**: {value}" for name, value in _overview(summary)]
    parts += ["", _CRASH_NOTE, "", "## Success by task", ""]
    if summary["tasks"]:
        parts.append(_md_table(TASK_COLUMNS, _task_rows(summary), bold_last=True))
    else:
        parts.append(f"_{_NO_PROMPT_TRIALS}_" if "baseline" in summary else "_No trials yet._")
    instruction_rows = _instruction_rows(summary)
    if instruction_rows:
        parts += ["", "## Success by instruction", ""]
        parts.append(_md_table(INSTRUCTION_COLUMNS, instruction_rows, bold_last=False))
    if "baseline" in summary:
        parts += ["", "## Success by task: unconditional baseline", "", _BASELINE_NOTE, ""]
        parts.append(_md_table(TASK_COLUMNS, _task_rows(summary["baseline"]), bold_last=True))
    if "metrics" in summary:
        parts += ["", "## Metrics per prompt", "", _METRICS_NOTE]
        for title, columns, rows in _metric_tables(summary["metrics"]):
            parts += ["", f"### {title}", "", _md_table(columns, rows, bold_last=False)]
    reason_rows = _reason_rows(summary)
    if reason_rows:
        parts += ["", "## Why trials did not succeed", "", _REASONS_NOTE, ""]
        parts.append(_md_table(REASON_COLUMNS, reason_rows, bold_last=False))
    if summary.get("trials"):
        parts += ["", "## Trials", ""]
        parts.append(_md_trials(summary["trials"]))
    parts += ["", "## Configuration", ""]
    parts += _md_config(summary["config"]) or ["_No configuration recorded._"]
    return "\n".join(parts) + "\n"


# --------------------------------------------------------------------------------------------
# HTML


def _h(text: Any) -> str:
    return html.escape(str(text), quote=True)


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2rem auto;
       max-width: 1100px; padding: 0 1rem; color: #1f2328; line-height: 1.45; }
h1 { font-size: 1.7rem; margin-bottom: .5rem; }
h2 { font-size: 1.25rem; margin-top: 2.2rem; border-bottom: 1px solid #d0d7de; }
table { border-collapse: collapse; margin: .8rem 0; }
th, td { border: 1px solid #d0d7de; padding: .3rem .6rem; text-align: left;
         vertical-align: top; }
th { background: #f6f8fa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.total td { font-weight: 600; background: #f6f8fa; }
table.config td.value { font-family: ui-monospace, SFMono-Regular, Menlo, monospace;
                        word-break: break-all; }
table.config table { margin: 0; }
.overview { display: flex; flex-wrap: wrap; gap: .6rem; margin: 1rem 0; padding: 0; }
.overview div { border: 1px solid #d0d7de; border-radius: 6px; padding: .4rem .8rem;
                background: #f6f8fa; }
.overview dt { font-size: .8rem; color: #59636e; }
.overview dd { margin: 0; font-weight: 600; }
.note, figcaption, .empty { color: #59636e; font-size: .9rem; }
figure { margin: 1rem 0; overflow-x: auto; }
svg { font-family: inherit; font-size: 12px; }
.videos { display: flex; flex-wrap: wrap; gap: 1rem; }
.videos figure { max-width: 320px; }
table.trials { font-size: .85rem; }
tr.crash td { background: #fff8f0; }
"""


def _f(value: float) -> str:
    return f"{value:.1f}"


def _label(task: str, limit: int = _LABEL_CHARS) -> str:
    return task if len(task) <= limit else task[: limit - 1] + "…"


_TASK_NUMERIC = {1, 2, 3, 4, 5}


def _html_table(
    columns: Sequence[str], rows: Sequence[Sequence[str]], numeric: set[int], bold_last: bool
) -> str:
    out = ["<table>", "<thead><tr>" + "".join(f"<th>{_h(c)}</th>" for c in columns) + "</tr>"]
    out.append("</thead><tbody>")
    for i, row in enumerate(rows):
        total = bold_last and i == len(rows) - 1
        cells = "".join(
            f'<td class="num">{_h(cell)}</td>' if j in numeric else f"<td>{_h(cell)}</td>"
            for j, cell in enumerate(row)
        )
        out.append(f'<tr class="total">{cells}</tr>' if total else f"<tr>{cells}</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def _html_config(value: Mapping[str, Any]) -> str:
    rows = []
    for key, item in value.items():
        if isinstance(item, Mapping) and item:
            cell = f"<td>{_html_config(item)}</td>"
        elif isinstance(item, list) and any(isinstance(x, Mapping | list) for x in item):
            cell = f"<td>{_html_config({str(i): x for i, x in enumerate(item)})}</td>"
        elif isinstance(item, list):
            cell = f'<td class="value">{_h(", ".join(_scalar(x) for x in item) or "[]")}</td>'
        elif isinstance(item, Mapping):
            cell = '<td class="value">{}</td>'
        else:
            cell = f'<td class="value">{_h(_scalar(item))}</td>'
        rows.append(f"<tr><th>{_h(key)}</th>{cell}</tr>")
    return '<table class="config">' + "".join(rows) + "</table>"


# SVG presentation attributes (not CSS classes), so a chart copied out of the page looks the same.
_GRID = 'stroke="#e3e7eb" stroke-width="1"'
_AXIS = 'stroke="#59636e" stroke-width="1"'
_BAR = 'fill="#4e79a7"'
_CI = 'stroke="#1f2328" stroke-width="1.5"'
_DOT = 'fill="#4e79a7" fill-opacity="0.65"'
_MEDIAN = 'stroke="#e15759" stroke-width="3"'
_MUTED = 'fill="#59636e" font-style="italic"'


def _tip(text: str) -> str:
    return f"<title>{_h(text)}</title>" if text else ""


def _line(x1: float, y1: float, x2: float, y2: float, style: str, tip: str = "") -> str:
    coords = f'x1="{_f(x1)}" y1="{_f(y1)}" x2="{_f(x2)}" y2="{_f(y2)}"'
    return f"<line {style} {coords}>{_tip(tip)}</line>"


def _text(
    x: float, y: float, text: str, anchor: str = "middle", style: str = "", tip: str = ""
) -> str:
    attributes = f'x="{_f(x)}" y="{_f(y)}" text-anchor="{anchor}"' + (f" {style}" if style else "")
    return f"<text {attributes}>{_h(text)}{_tip(tip)}</text>"


def _svg_open(width: float, height: float, label: str) -> str:
    return (
        f'<svg width="{_f(width)}" height="{_f(height)}" viewBox="0 0 {_f(width)} {_f(height)}" '
        f'role="img" aria-label="{_h(label)}" font-size="12">'
    )


def _success_chart(tasks: Sequence[Mapping[str, Any]]) -> str:
    """A bar per task: success rate, with its 95% Wilson interval as an error bar."""
    band, plot_h, top, right = 76.0, 220.0, 24.0, 16.0
    labels = [_label(t["task"]) for t in tasks]
    longest = max(len(label) for label in labels)
    char_w = 6.6  # Rough width of a 12px character; enough to size margins without a font.
    rotate = longest * char_w > band - 8
    if rotate:
        # Labels turn 40 degrees down-left from under their bar: make room below and left.
        bottom = 30.0 + longest * char_w * math.sin(math.radians(40))
        left = max(56.0, longest * char_w * math.cos(math.radians(40)) - band / 2 + 12)
    else:
        bottom, left = 40.0, 56.0
    width = left + band * len(tasks) + right
    height = top + plot_h + bottom

    def y(rate: float) -> float:
        return top + plot_h * (1.0 - rate)

    parts = [_svg_open(width, height, "Success rate per task with 95% intervals")]
    for tick in range(0, 101, 20):
        parts.append(_line(left, y(tick / 100), width - right, y(tick / 100), _GRID))
        parts.append(_text(left - 6, y(tick / 100) + 4, f"{tick}%", anchor="end"))
    for i, task in enumerate(tasks):
        cx = left + band * (i + 0.5)
        if task["judged"]:
            rate = float(task["success_rate"])
            lower, upper = (float(v) for v in task["ci95"])
            tip = (
                f"{task['task']}: {_fraction(task)} = {_percent(rate)} "
                f"(95% CI {_interval(task)}); {task['crashes']} crashed"
            )
            bw = band * 0.6
            parts.append(
                f'<rect {_BAR} x="{_f(cx - bw / 2)}" y="{_f(y(rate))}" width="{_f(bw)}" '
                f'height="{_f(plot_h * rate)}">{_tip(tip)}</rect>'
            )
            parts.append(_line(cx, y(lower), cx, y(upper), _CI, tip))
            parts += [_line(cx - 7, y(b), cx + 7, y(b), _CI, tip) for b in (lower, upper)]
            parts.append(_text(cx, y(upper) - 6, _percent(rate), tip=tip))
        else:
            tip = f"{task['task']}: no judged trials"
            parts.append(_text(cx, y(0) - 6, "not judged", style=_MUTED, tip=tip))
        label_y = top + plot_h + 16
        if rotate:
            parts.append(
                f'<text transform="translate({_f(cx)},{_f(label_y)}) rotate(-40)" '
                f'text-anchor="end">{_h(labels[i])}{_tip(task["task"])}</text>'
            )
        else:
            parts.append(_text(cx, label_y, labels[i], tip=task["task"]))
    parts.append(_line(left, y(0), width - right, y(0), _AXIS))
    parts.append(_line(left, top, left, y(0), _AXIS))
    parts.append("</svg>")
    return "\n".join(parts)


def _nice_ticks(maximum: int) -> list[int]:
    """Round-numbered ticks (1, 2 or 5 times a power of ten) from 0 to at least `maximum`."""
    if maximum <= 0:
        return [0, 1]
    raw = maximum / 5
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    step = max(1, round(step))  # Steps are whole numbers; no fractional ticks.
    count = math.ceil(maximum / step)
    return [k * step for k in range(count + 1)]


def _steps_chart(tasks: Sequence[Mapping[str, Any]]) -> str:
    """One row per task: a dot per successful trial at its step count, the median as a bar."""
    row_h, plot_w, top, right, bottom = 36.0, 560.0, 12.0, 28.0, 48.0
    labels = [_label(t["task"]) for t in tasks]
    left = max(90.0, max(len(label) for label in labels) * 6.6 + 14)
    ticks = _nice_ticks(max(v for t in tasks for v in t["steps_to_success"]["values"]))
    width = left + plot_w + right
    plot_bottom = top + row_h * len(tasks)
    height = plot_bottom + bottom

    def x(steps: float) -> float:
        return left + plot_w * steps / ticks[-1]

    parts = [_svg_open(width, height, "Low-level steps to success per task")]
    for tick in ticks:
        parts.append(_line(x(tick), top, x(tick), plot_bottom, _GRID))
        parts.append(_text(x(tick), plot_bottom + 16, f"{tick:,}"))
    for i, task in enumerate(tasks):
        cy = top + row_h * (i + 0.5)
        parts.append(_text(left - 8, cy + 4, labels[i], anchor="end", tip=task["task"]))
        stats = task["steps_to_success"]
        if not stats["count"]:
            parts.append(_text(left + 6, cy + 4, "no successes", anchor="start", style=_MUTED))
            continue
        for j, value in enumerate(stats["values"]):
            # A fixed vertical spread keeps equal values apart without randomness.
            jitter = ((j * 5) % 7 - 3) * 1.6
            tip = f"{task['task']}: {value:,} steps"
            parts.append(
                f'<circle {_DOT} cx="{_f(x(value))}" cy="{_f(cy + jitter)}" r="3.5">'
                f"{_tip(tip)}</circle>"
            )
        median = float(stats["median"])
        tip = f"{task['task']}: median {_number(median)} steps over {stats['count']} successes"
        parts.append(_line(x(median), cy - 13, x(median), cy + 13, _MEDIAN, tip))
    parts.append(_line(left, plot_bottom, left + plot_w, plot_bottom, _AXIS))
    parts.append(_text(left + plot_w / 2, plot_bottom + 38, "Low-level steps to success"))
    parts.append("</svg>")
    return "\n".join(parts)


_HEAT_STOPS = ((0xF7, 0xFB, 0xFF), (0xC6, 0xDB, 0xEF), (0x6B, 0xAE, 0xD6), (0x21, 0x71, 0xB5),
               (0x08, 0x30, 0x6B))  # fmt: skip
"""ColorBrewer's sequential Blues, light to dark, at 0, 1/4, 1/2, 3/4 and 1."""
_HEAT_MISSING = "#eaeef2"
_DARK_TEXT, _LIGHT_TEXT = "#1f2328", "#ffffff"
_METRIC_LABEL_CHARS = 20
_CHAR_W = 6.6  # Rough width of a 12px character; enough to size margins without a font.


def _heat_colour(share: float) -> tuple[str, str]:
    """The fill for `share` in [0, 1] and the text colour of higher contrast on it."""
    position = min(max(share, 0.0), 1.0) * (len(_HEAT_STOPS) - 1)
    index = min(int(position), len(_HEAT_STOPS) - 2)
    frac = position - index
    rgb = [
        a + (b - a) * frac for a, b in zip(_HEAT_STOPS[index], _HEAT_STOPS[index + 1], strict=True)
    ]

    def linear(channel: float) -> float:  # sRGB to linear light (WCAG relative luminance).
        c = channel / 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    luminance = 0.2126 * linear(rgb[0]) + 0.7152 * linear(rgb[1]) + 0.0722 * linear(rgb[2])
    on_dark = (1.05) / (luminance + 0.05)  # Contrast of white text.
    on_light = (luminance + 0.05) / 0.0687  # Contrast of _DARK_TEXT (luminance 0.0187).
    fill = "#" + "".join(f"{round(c):02x}" for c in rgb)
    return fill, _LIGHT_TEXT if on_dark > on_light else _DARK_TEXT


def _heat_rows(metrics: Mapping[str, Any]) -> list[tuple[str, str, Mapping[str, Any], Any]]:
    """(label, full name, stats by metric, ratios or None) per heat-map row."""
    prompts = [p for p in metrics["prompts"] if "prompt" in p["conditions"]]
    per_task = Counter(p["task"] for p in prompts)
    rows = []
    for prompt in prompts:
        name = prompt["task"]
        if per_task[name] > 1:  # Tell a task's instructions apart.
            name = f"{name} #{prompt['instruction_index']}"
        full = f"{name}: {prompt['instruction']}"
        stats = prompt["conditions"]["prompt"]["metrics"]
        rows.append((name, full, stats, prompt["ratio_to_baseline"]))
    if metrics["baseline"] is not None:
        full = "Unconditional baseline (zero goal), pooled over prompts, one value per seed"
        rows.append(("Unconditional baseline", full, metrics["baseline"]["metrics"], None))
    return rows


def _heat_map(metrics: Mapping[str, Any]) -> str:
    """Rows: prompts (and the pooled baseline); columns: metrics; colour: mean / column max."""
    names = metrics["names"]
    rows = _heat_rows(metrics)
    labels = [_label(label) for label, *_ in rows]
    columns = [_label(name, _METRIC_LABEL_CHARS) for name in names]
    cell_w = max(72.0, max(len(c) for c in columns) * _CHAR_W + 16)
    cell_h, top, right, bottom = 30.0, 28.0, 16.0, 44.0
    left = max(90.0, max(len(label) for label in labels) * _CHAR_W + 14)
    legend_caption_w = 250.0  # The caption's 36 characters, then five swatches.
    legend_w = legend_caption_w + 5 * 44.0
    width = left + max(cell_w * len(names), legend_w) + right
    height = top + cell_h * len(rows) + bottom

    # Per metric: from min(0, lowest mean) to the highest mean; for counts and distances
    # (never negative) that is the mean divided by the column's maximum.
    scale = {}
    for name in names:
        means = [stats[name]["mean"] for _, _, stats, _ in rows if stats[name]["mean"] is not None]
        low = min([0.0, *means])
        scale[name] = (low, max(means, default=0.0))

    parts = [_svg_open(width, height, "Heat map: mean of each metric per prompt")]
    for j, name in enumerate(names):
        cx = left + cell_w * (j + 0.5)
        parts.append(_text(cx, top - 10, columns[j], tip=name))
    for i, (label, full, stats, ratios) in enumerate(rows):
        y = top + cell_h * i
        parts.append(_text(left - 8, y + cell_h / 2 + 4, labels[i], anchor="end", tip=full))
        for j, name in enumerate(names):
            x = left + cell_w * j
            entry = stats[name]
            mean = entry["mean"]
            tip = f"{full}\n{name}: "
            if mean is None:
                fill, ink, value = _HEAT_MISSING, _DARK_TEXT, _NONE
                tip += "no judged trial recorded it"
            else:
                low, high = scale[name]
                fill, ink = _heat_colour((mean - low) / (high - low) if high > low else 0.0)
                value = _stat(mean)
                interval = _stat_interval(entry)
                tip += f"mean {value}, 95% CI {interval}, n = {entry['n']}"
                if ratios is not None and ratios[name]["ratio"] is not None:
                    tip += f"; {_ratio(ratios[name])} the unconditional baseline"
            text = _text(x + cell_w / 2, y + cell_h / 2 + 4, value, style=f'fill="{ink}"')
            parts.append(
                f'<g class="heat-cell" data-row="{_h(label)}" data-metric="{_h(name)}">'
                f"{_tip(tip)}"
                f'<rect x="{_f(x)}" y="{_f(y)}" width="{_f(cell_w)}" height="{_f(cell_h)}" '
                f'fill="{fill}" stroke="#ffffff" stroke-width="1"></rect>{text}</g>'
            )
    legend_y = top + cell_h * len(rows) + 14
    parts.append(_text(left, legend_y + 11, "Share of the column's highest mean:", "start"))
    swatch_x = left + legend_caption_w
    for k in range(5):
        share = k / 4
        fill, ink = _heat_colour(share)
        x = swatch_x + k * 44
        parts.append(
            f'<rect x="{_f(x)}" y="{_f(legend_y)}" width="44" height="16" fill="{fill}"></rect>'
        )
        parts.append(_text(x + 22, legend_y + 12, f"{round(100 * share)}%", style=f'fill="{ink}"'))
    parts.append("</svg>")
    return "\n".join(parts)


def _html_metrics(metrics: Mapping[str, Any]) -> list[str]:
    body = ["<h2>Metrics per prompt</h2>", f'<p class="note">{_h(_METRICS_NOTE)}</p>']
    if _heat_rows(metrics) and metrics["names"]:
        body += [
            "<figure>",
            _heat_map(metrics),
            "<figcaption>Mean of each metric per prompt over its judged trials (the "
            "unconditional baseline pooled over prompts, one value per seed). Each column is "
            "coloured on its own scale: the mean divided by the column's highest mean (from "
            "the lowest mean instead of 0 if a mean is negative); \u2014 marks a metric no "
            "judged trial of the prompt recorded. Hover a cell for its 95% interval and its "
            "ratio to the baseline.</figcaption>",
            "</figure>",
        ]
    for title, columns, rows in _metric_tables(metrics):
        body += [f"<h3>{_h(title)}</h3>", _html_table(columns, rows, _METRIC_NUMERIC, False)]
    return body


def _embedded(trials: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    # The first video of each task first, then the next ones, up to EMBEDDED_VIDEOS.
    with_video = [t for t in trials if t.get("video") and _in_run_directory(t["video"])]
    firsts: dict[str, Mapping[str, Any]] = {}
    for trial in with_video:
        firsts.setdefault(trial["task"], trial)
    chosen = list(firsts.values())[:EMBEDDED_VIDEOS]
    rest = [t for t in with_video if all(t is not c for c in chosen)]
    return chosen + rest[: EMBEDDED_VIDEOS - len(chosen)]


def _html_trials(trials: Sequence[Mapping[str, Any]]) -> list[str]:
    if not trials:
        return []
    body = []
    players = _embedded(trials)
    if players:
        body += ["<h2>Videos</h2>", '<div class="videos">']
        for trial in players:
            caption = (
                f"{trial['task']}: {trial['instruction']} (trial {trial['trial']}, seed "
                f"{trial['seed']}, {trial['condition']}): {trial['outcome']}, {trial['reason']}"
            )
            # The thumbnail as the poster: a frame shows before the video is played.
            thumbnail = trial.get("thumbnail")
            poster = (
                f' poster="{_h(_url(thumbnail))}"'
                if thumbnail and _in_run_directory(thumbnail)
                else ""
            )
            body.append(
                f'<figure><video controls preload="metadata" width="320"{poster} '
                f'src="{_h(_url(trial["video"]))}"></video>'
                f"<figcaption>{_h(caption)}</figcaption></figure>"
            )
        body.append("</div>")
    body += ["<h2>Trials</h2>", '<table class="trials">', "<thead><tr>"]
    body[-1] += "".join(f"<th>{_h(c)}</th>" for c in TRIAL_COLUMNS) + "</tr></thead><tbody>"
    for trial in trials:
        cells = [
            f'<td class="num">{_h(cell)}</td>' if j in _TRIAL_NUMERIC else f"<td>{_h(cell)}</td>"
            for j, cell in enumerate(_trial_cells(trial))
        ]
        video = trial.get("video")
        if video and not _in_run_directory(video):
            cells.append(f"<td>{_h(video)}</td>")
        elif video:
            thumbnail = trial.get("thumbnail")
            picture = (
                f'<img src="{_h(_url(thumbnail))}" alt="thumbnail" loading="lazy" width="96">'
                if thumbnail and _in_run_directory(thumbnail)
                else "mp4"
            )
            cells.append(f'<td><a href="{_h(_url(video))}">{picture}</a></td>')
        else:
            cells.append("<td></td>")
        body.append(f'<tr class="{_h(trial["outcome"])}">' + "".join(cells) + "</tr>")
    body.append("</tbody></table>")
    return body


def render_html(summary: Mapping[str, Any]) -> str:
    """Renders a summary as one self-contained HTML page.

    The page has inline CSS and inline SVG charts and references nothing outside itself, so
    it can be mailed or archived alone. All text from records and config is HTML-escaped.

    Args:
        summary: What `summarize` returned (or ``report.json`` read back).

    Returns:
        The page: overview, per-task table, per-instruction table (when a task has several
        instructions), the baseline's per-task table (with baseline trials), a bar chart of
        success rates with 95% intervals, a dot plot of steps to success, with metrics a heat
        map of the mean of each metric per prompt and the prompt x metric tables, why the
        trials that did not succeed ended, up to `EMBEDDED_VIDEOS` video players and a
        per-trial table linking every video (schema 3), and the run's configuration. Videos
        are referenced by their paths relative to the run directory, where the page is
        written; nothing else outside the page is.

    Raises:
        ResultsError: If `summary` is not a summary of this version.
    """
    _check_summary(summary)
    tasks = summary["tasks"]
    title = report_title(summary["config"])
    body = [f"<h1>{_h(title)}</h1>", '<dl class="overview">']
    body += [f"<div><dt>{_h(k)}</dt><dd>{_h(v)}</dd></div>" for k, v in _overview(summary)]
    body += ["</dl>", f'<p class="note">{_h(_CRASH_NOTE)}</p>', "<h2>Success by task</h2>"]
    if tasks:
        body.append(_html_table(TASK_COLUMNS, _task_rows(summary), _TASK_NUMERIC, True))
    else:
        empty = _NO_PROMPT_TRIALS if "baseline" in summary else "No trials yet."
        body.append(f'<p class="empty">{_h(empty)}</p>')
    instruction_rows = _instruction_rows(summary)
    if instruction_rows:
        body.append("<h2>Success by instruction</h2>")
        body.append(_html_table(INSTRUCTION_COLUMNS, instruction_rows, {1, 3, 4, 5, 6}, False))
    if "baseline" in summary:
        body += [
            "<h2>Success by task: unconditional baseline</h2>",
            f'<p class="note">{_h(_BASELINE_NOTE)}</p>',
            _html_table(TASK_COLUMNS, _task_rows(summary["baseline"]), _TASK_NUMERIC, True),
        ]

    body.append("<h2>Success rate</h2>")
    if any(task["judged"] for task in tasks):
        body += [
            "<figure>",
            _success_chart(tasks),
            "<figcaption>Success rate per task (judged trials only); error bars are 95% "
            "Wilson score intervals.</figcaption>",
            "</figure>",
        ]
    else:
        body.append('<p class="empty">No judged trials yet.</p>')

    body.append("<h2>Steps to success</h2>")
    if _all_steps(summary):
        body += [
            "<figure>",
            _steps_chart(tasks),
            "<figcaption>Each dot is one successful trial at the low-level step where the "
            "success detector fired; the red bar marks the task's median.</figcaption>",
            "</figure>",
        ]
    else:
        body.append('<p class="empty">No successful trials yet.</p>')

    if "metrics" in summary:
        body += _html_metrics(summary["metrics"])

    reason_rows = _reason_rows(summary)
    if reason_rows:
        body += [
            "<h2>Why trials did not succeed</h2>",
            f'<p class="note">{_h(_REASONS_NOTE)}</p>',
            _html_table(REASON_COLUMNS, reason_rows, {2, 3, 4, 5, 6}, False),
        ]
    body += _html_trials(summary.get("trials", []))

    body.append("<h2>Configuration</h2>")
    if summary["config"]:
        body.append(_html_config(summary["config"]))
    else:
        body.append('<p class="empty">No configuration recorded.</p>')

    head = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_h(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
    )
    return head + "\n".join(body) + "\n</body>\n</html>\n"


# --------------------------------------------------------------------------------------------
# Files


def write_reports(directory: str | os.PathLike[str], summary: Mapping[str, Any]) -> dict[str, Path]:
    """Writes ``report.json``, ``report.md`` and ``report.html`` into `directory`.

    All three are rendered before any is written, and each is written atomically (a temporary
    file in the same directory, then a rename), so readers never see a half-written report.

    Args:
        directory: Where to write; created if missing.
        summary: What `summarize` returned.

    Returns:
        ``{"json": path, "markdown": path, "html": path}``.

    Raises:
        ResultsError: If `summary` is not a summary of this version or is not JSON-ready, or
            a report cannot be written (a full disk: the message says how to redo it).
    """
    _check_summary(summary)
    try:
        as_json = json.dumps(summary, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    except (TypeError, ValueError) as error:
        raise ResultsError(
            f"The summary cannot be written as JSON ({error}); build it with summarize()."
        ) from error
    texts = {
        "json": ("report.json", as_json),
        "markdown": ("report.md", render_markdown(summary)),
        "html": ("report.html", render_html(summary)),
    }
    hint = (
        "Reports written before are intact, and results.jsonl is not touched; then rewrite "
        f"the reports with `steve1-env report {os.fspath(directory)}`."
    )
    folder = make_folder(directory, "the report folder", hint, error=ResultsError)
    paths = {}
    for kind, (name, text) in texts.items():
        paths[kind] = folder / name
        atomic_write_text(paths[kind], text, f"the {kind} report", hint, error=ResultsError)
    return paths
