"""Turn trial records into a summary and three report files: JSON, Markdown and HTML.

`summarize` aggregates `TrialRecord`s into a JSON-ready dict: success rates with Wilson
intervals per task and per instruction, crashes, and steps-to-success statistics. Trials whose
outcome is ``crash`` (the world kept crashing) were never judged, so they are left out of every
success rate and counted apart. The renderers read only that summary, so a ``report.json`` from
an earlier run can be rendered again. The HTML page is self-contained: inline CSS and SVG, no
scripts, no external resources.
"""

from __future__ import annotations

import html
import json
import math
import operator
import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from steve1_env.errors import ResultsError
from steve1_env.evaluation.records import DURATION_DECIMALS, OUTCOMES, TrialRecord
from steve1_env.files import atomic_write_text, make_folder

SUMMARY_SCHEMA = 1
"""Version of the layout of the dict `summarize` returns (``report.json``)."""

Z_95 = 1.959963984540054
"""The standard normal quantile for a two-sided 95% interval."""

REPORT_TITLE = "STEVE-1 evaluation report"

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


# --------------------------------------------------------------------------------------------
# Summary


def summarize(
    records: Sequence[TrialRecord],
    config: Mapping[str, Any] | None = None,
    *,
    task_order: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Aggregates trial records into a JSON-ready summary.

    Records are sorted by (task, instruction index, trial) before aggregating, so the summary
    depends only on the set of records and the task order; the ``timing`` values are the only
    ones that differ between runs with the same trial results. Without `task_order`, tasks
    appear in the order they first appear in `records`: pass the task set's order to make the
    task list independent of the order in which trials finished.

    Args:
        records: The finished trials, each key (``task/instruction_index/trial``) at most once.
        config: The run's settings (world, policy, weight checksums, ...), copied as given into
            ``summary["config"]``. Values must be JSON-like (mappings, sequences, strings,
            numbers, booleans, None; paths are stored as strings).
        task_order: Task names in the order to report them. Tasks not listed follow in order
            of first appearance; listed tasks without records are left out.

    Returns:
        A dict with ``schema``, ``config``, ``totals``, ``tasks`` and ``timing``; every value
        is a plain Python object, so `json.dumps` takes it as is.

    Raises:
        ResultsError: If a record is not a `TrialRecord` or has an unknown outcome, if a key
            appears twice, if one instruction index names two different instructions, or if
            `config` holds a value JSON cannot store.
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
    seen: set[tuple[str, int, int]] = set()
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
        identity = (record.task, record.instruction_index, record.trial)
        if identity in seen:
            raise ResultsError(
                f"summarize: trial {record.key} appears more than once; keep one record per "
                "trial before summarizing."
            )
        seen.add(identity)

    rank = _task_ranks(records, task_order)
    records.sort(key=lambda r: (rank[r.task], r.instruction_index, r.trial))
    by_task: dict[str, list[TrialRecord]] = {}
    for record in records:
        by_task.setdefault(record.task, []).append(record)

    counts = _counts(records)
    durations = [float(r.duration_s) for r in records]
    total_duration = math.fsum(durations)  # fsum is exact, hence independent of the order.
    return {
        "schema": SUMMARY_SCHEMA,
        "config": _json_ready(dict(config or {}), "config"),
        "totals": {**counts, "world_crashes": sum(r.crashes for r in records)},
        "tasks": [_task_summary(task, group) for task, group in by_task.items()],
        "timing": {
            # Rounded like each record's duration_s: sums of floats grow digits of noise.
            "total_duration_s": round(total_duration, DURATION_DECIMALS),
            "mean_duration_s": (
                round(total_duration / len(records), DURATION_DECIMALS) if records else None
            ),
        },
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
        group = by_index[index]
        texts = sorted({r.instruction for r in group})
        if len(texts) > 1:
            raise ResultsError(
                f"summarize: task {task!r} instruction {index} is {texts[0]!r} in some records "
                f"and {texts[1]!r} in others; the results come from different task files. "
                "Evaluate the changed task set into a new directory."
            )
        counts = _counts(group)
        del counts["failures"]
        instructions.append({"instruction_index": index, "instruction": texts[0], **counts})
    return {
        "task": task,
        **_counts(records),
        "steps_to_success": _steps_stats(records),
        "world_crashes": sum(r.crashes for r in records),
        "instructions": instructions,
        "reasons": dict(sorted(Counter(r.reason for r in records).items())),
    }


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
    if not isinstance(summary, Mapping) or summary.get("schema") != SUMMARY_SCHEMA:
        schema = summary.get("schema") if isinstance(summary, Mapping) else None
        raise ResultsError(
            f"Expected a summary from summarize() (schema {SUMMARY_SCHEMA}), got "
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
        ("Total trial time", _duration(timing["total_duration_s"])),
        ("Mean trial time", _duration(timing["mean_duration_s"])),
    ]


_CRASH_NOTE = (
    "Crashed trials (the world crashed on every try) were never judged: they are left out of "
    "the success rates and counted apart. Intervals are 95% Wilson score intervals."
)


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
        The report: title, overview, a per-task table with a total row, a per-instruction
        table when a task has several instructions, and the run's configuration.

    Raises:
        ResultsError: If `summary` is not a summary of this version.
    """
    _check_summary(summary)
    parts = [f"# {REPORT_TITLE}", ""]
    parts += [f"- **{name}**: {value}" for name, value in _overview(summary)]
    parts += ["", _CRASH_NOTE, "", "## Success by task", ""]
    if summary["tasks"]:
        parts.append(_md_table(TASK_COLUMNS, _task_rows(summary), bold_last=True))
    else:
        parts.append("_No trials yet._")
    instruction_rows = _instruction_rows(summary)
    if instruction_rows:
        parts += ["", "## Success by instruction", ""]
        parts.append(_md_table(INSTRUCTION_COLUMNS, instruction_rows, bold_last=False))
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
"""


def _f(value: float) -> str:
    return f"{value:.1f}"


def _label(task: str) -> str:
    return task if len(task) <= _LABEL_CHARS else task[: _LABEL_CHARS - 1] + "…"


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


def render_html(summary: Mapping[str, Any]) -> str:
    """Renders a summary as one self-contained HTML page.

    The page has inline CSS and inline SVG charts and references nothing outside itself, so
    it can be mailed or archived alone. All text from records and config is HTML-escaped.

    Args:
        summary: What `summarize` returned (or ``report.json`` read back).

    Returns:
        The page: overview, per-task table, per-instruction table (when a task has several
        instructions), a bar chart of success rates with 95% intervals, a dot plot of steps to
        success, and the run's configuration.

    Raises:
        ResultsError: If `summary` is not a summary of this version.
    """
    _check_summary(summary)
    tasks = summary["tasks"]
    body = [f"<h1>{_h(REPORT_TITLE)}</h1>", '<dl class="overview">']
    body += [f"<div><dt>{_h(k)}</dt><dd>{_h(v)}</dd></div>" for k, v in _overview(summary)]
    body += ["</dl>", f'<p class="note">{_h(_CRASH_NOTE)}</p>', "<h2>Success by task</h2>"]
    if tasks:
        body.append(_html_table(TASK_COLUMNS, _task_rows(summary), {1, 2, 3, 4, 5}, True))
    else:
        body.append('<p class="empty">No trials yet.</p>')
    instruction_rows = _instruction_rows(summary)
    if instruction_rows:
        body.append("<h2>Success by instruction</h2>")
        body.append(_html_table(INSTRUCTION_COLUMNS, instruction_rows, {1, 3, 4, 5, 6}, False))

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

    body.append("<h2>Configuration</h2>")
    if summary["config"]:
        body.append(_html_config(summary["config"]))
    else:
        body.append('<p class="empty">No configuration recorded.</p>')

    head = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_h(REPORT_TITLE)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
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
