"""Tests of the metric report: the t quantile and interval, the metrics and baseline sections of
the summary (recomputed here from the records), and their Markdown and HTML renderings."""

from __future__ import annotations

import json
import math
import random
import re
import statistics
from typing import Any

import pytest

from steve1_env.errors import ResultsError
from steve1_env.evaluation.records import TrialRecord
from steve1_env.evaluation.report import (
    PAPER_METRICS,
    render_html,
    render_markdown,
    student_t_quantile,
    summarize,
    t_interval,
    write_reports,
)
from tests.test_report import parse
from tests.test_report import record as binary_record

HORIZON = 300
RANGE, TIMES = "\u2013", "\u00d7"  # The en dash between bounds; the sign after a ratio.

T_TABLE = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 9: 2.262, 10: 2.228, 30: 2.042}
"""Two-sided 95% critical values of Student's t, from a printed table (three decimals)."""


def trial(
    task: str,
    number: int,
    metrics: dict[str, float],
    *,
    condition: str = "prompt",
    outcome: str = "failure",
    index: int = 0,
    seed: int | None = None,
) -> TrialRecord:
    """A fixed-horizon record: it ran its whole horizon (or crashed), success or not."""
    return TrialRecord(
        task=task,
        instruction=f"{task} #{index}",
        instruction_index=index,
        trial=number,
        seed=1000 + number if seed is None else seed,
        outcome=outcome,
        reason="crash" if outcome == "crash" else "budget",
        steps=HORIZON if outcome != "crash" else 17,
        steps_to_success=40 + number if outcome == "success" else None,
        max_steps=HORIZON,
        detector="inventory" if outcome == "success" else None,
        detector_spec="inventory",
        crashes=3 if outcome == "crash" else 0,
        errors=["boom"] * (3 if outcome == "crash" else 0),
        high_level_steps=3,
        inventory={},
        duration_s=2.0,
        worker="local",
        finished_at="2024-05-01T12:00:00+00:00",
        condition=condition,
        horizon=HORIZON,
        metrics=metrics,
    )


def paper_run() -> list[TrialRecord]:
    """chop: 4 prompt trials (one crashed) and their baselines (trial 3's missing, trial 1's
    crashed); dig: 3 trials each side, its baseline never collects dirt."""
    chop_logs = [5.0, 2.0, 7.0, 9.0]
    chop_base = [1.0, 4.0, 2.0]
    records = [
        trial("chop", 0, {"log": chop_logs[0], "travel_distance": 12.5}, outcome="success"),
        trial("chop", 1, {"log": chop_logs[1], "travel_distance": 3.0}),
        trial("chop", 2, {"log": chop_logs[2], "travel_distance": 8.25}, outcome="success"),
        trial("chop", 3, {"log": chop_logs[3], "travel_distance": 1.0}),
        trial("chop", 4, {"log": 50.0, "travel_distance": 99.0}, outcome="crash"),
        trial("chop", 0, {"log": chop_base[0], "travel_distance": 20.0}, condition="unconditional"),
        trial(
            "chop",
            1,
            {"log": chop_base[1], "travel_distance": 2.0},
            condition="unconditional",
            outcome="crash",
        ),
        trial("chop", 2, {"log": chop_base[2], "travel_distance": 6.0}, condition="unconditional"),
    ]
    for number, (dirt, base) in enumerate([(4.0, 0.0), (6.0, 0.0), (11.0, 0.0)]):
        records.append(trial("dig", number, {"dirt": dirt, "log": 1.0, "depth": 2.0 + number}))
        records.append(trial("dig", number, {"dirt": base, "log": 0.0}, condition="unconditional"))
    return records


def prompt_entry(summary: dict[str, Any], task: str, index: int = 0) -> dict[str, Any]:
    (entry,) = [
        p
        for p in summary["metrics"]["prompts"]
        if p["task"] == task and p["instruction_index"] == index
    ]
    return entry


def expected_stats(values: list[float]) -> dict[str, Any]:
    """The statistics recomputed with the standard library and the printed t table."""
    n = len(values)
    mean = statistics.mean(values)
    std = statistics.stdev(values) if n > 1 else None
    half = T_TABLE[n - 1] * std / math.sqrt(n) if std is not None else None
    return {
        "n": n,
        "mean": mean,
        "std": std,
        "ci95": None if half is None else [mean - half, mean + half],
        "min": min(values),
        "max": max(values),
    }


def assert_stats(actual: dict[str, Any], values: list[float]) -> None:
    expected = expected_stats(values)
    assert actual["n"] == expected["n"]
    for key in ("mean", "std", "min", "max"):
        assert actual[key] == pytest.approx(expected[key], abs=1e-12)
    if expected["ci95"] is None:
        assert actual["ci95"] is None
    else:
        # The table has three decimals: the bounds agree to the table's rounding.
        tolerance = 0.0005 * expected["std"] / math.sqrt(expected["n"]) + 1e-12
        assert actual["ci95"] == [pytest.approx(b, abs=tolerance) for b in expected["ci95"]]


# --- the t quantile and interval --------------------------------------------------------------


@pytest.mark.parametrize(("df", "value"), sorted(T_TABLE.items()))
def test_t_quantile_matches_the_printed_table(df, value):
    assert student_t_quantile(0.975, df) == pytest.approx(value, abs=5e-4)


def test_t_quantile_tends_to_the_normal_and_is_symmetric():
    assert student_t_quantile(0.975, 1000) == pytest.approx(1.962, abs=5e-4)
    # The normal's 1.959964 plus the first term of the expansion in 1/df, (z^3 + z) / (4 df).
    z = 1.959963984540054
    assert student_t_quantile(0.975, 100_000) == pytest.approx(z + (z**3 + z) / 4e5, abs=1e-8)
    assert student_t_quantile(0.995, 4) == pytest.approx(4.604, abs=5e-4)
    assert student_t_quantile(0.95, 10) == pytest.approx(1.812, abs=5e-4)
    assert student_t_quantile(0.025, 10) == -student_t_quantile(0.975, 10)
    assert student_t_quantile(0.5, 3) == 0.0
    values = [student_t_quantile(0.975, df) for df in range(1, 40)]
    assert values == sorted(values, reverse=True)
    # Two degrees of freedom have a closed form: t = (2p - 1) sqrt(2 / (1 - (2p - 1)^2)).
    central = 0.9
    closed = central * math.sqrt(2 / (1 - central**2))
    assert student_t_quantile(0.95, 2) == pytest.approx(closed, rel=1e-12)


@pytest.mark.parametrize(
    ("probability", "df"), [(0.0, 3), (1.0, 3), (1.5, 3), (0.9, 0), (0.9, 2.5), (True, 3)]
)
def test_t_quantile_rejects_bad_input(probability, df):
    with pytest.raises(ResultsError):
        student_t_quantile(probability, df)


def test_t_interval():
    lower, upper = t_interval([2.0, 4.0, 6.0])
    half = T_TABLE[2] * 2.0 / math.sqrt(3)
    assert (lower, upper) == (pytest.approx(4 - half, abs=1e-3), pytest.approx(4 + half, abs=1e-3))
    assert t_interval([3.0]) is None
    assert t_interval([]) is None
    assert t_interval([5.0, 5.0]) == (5.0, 5.0)
    with pytest.raises(ResultsError, match="confidence"):
        t_interval([1.0, 2.0], confidence=1.5)


# --- the metrics section -----------------------------------------------------------------------


def test_metric_statistics_equal_those_recomputed_from_the_records():
    summary = summarize(paper_run(), task_order=["chop", "dig"])
    metrics = summary["metrics"]
    assert summary["schema"] == 3
    assert metrics["confidence"] == 0.95
    assert metrics["interval"] == "student_t"
    # The paper's metrics first, in the paper's order; then the task's own.
    assert metrics["names"] == ["log", "dirt", "travel_distance", "depth"]
    chop = prompt_entry(summary, "chop")
    assert chop["instruction"] == "chop #0"
    prompt, baseline = chop["conditions"]["prompt"], chop["conditions"]["unconditional"]
    # The crashed trial (log 50) is left out.
    assert (prompt["trials"], prompt["judged"], prompt["crashes"]) == (5, 4, 1)
    assert_stats(prompt["metrics"]["log"], [5.0, 2.0, 7.0, 9.0])
    assert_stats(prompt["metrics"]["travel_distance"], [12.5, 3.0, 8.25, 1.0])
    assert prompt["metrics"]["dirt"] == {
        "n": 0, "mean": None, "std": None, "ci95": None, "min": None, "max": None,
    }  # fmt: skip
    assert (baseline["trials"], baseline["judged"], baseline["crashes"]) == (3, 2, 1)
    assert_stats(baseline["metrics"]["log"], [1.0, 2.0])
    dig = prompt_entry(summary, "dig")
    assert_stats(dig["conditions"]["prompt"]["metrics"]["dirt"], [4.0, 6.0, 11.0])
    assert_stats(dig["conditions"]["prompt"]["metrics"]["depth"], [2.0, 3.0, 4.0])
    assert dig["conditions"]["unconditional"]["metrics"]["depth"]["n"] == 0


def test_ratio_pairs_trials_judged_on_both_sides():
    chop = prompt_entry(summarize(paper_run()), "chop")
    # Pairs: trials 0 and 2 (trial 1's baseline crashed, trial 3 has none, 4 crashed).
    log = chop["ratio_to_baseline"]["log"]
    assert log["pairs"] == 2
    assert log["prompt_mean"] == pytest.approx((5.0 + 7.0) / 2)
    assert log["baseline_mean"] == pytest.approx((1.0 + 2.0) / 2)
    assert log["ratio"] == pytest.approx(6.0 / 1.5)
    # Not the ratio of the unpaired means, (5 + 2 + 7 + 9) / 4 over 1.5.
    assert log["ratio"] != pytest.approx(5.75 / 1.5)
    distance = chop["ratio_to_baseline"]["travel_distance"]
    assert distance["ratio"] == pytest.approx(((12.5 + 8.25) / 2) / ((20.0 + 6.0) / 2))


def test_a_zero_or_missing_baseline_has_no_ratio():
    summary = summarize(paper_run())
    dig = prompt_entry(summary, "dig")
    dirt = dig["ratio_to_baseline"]["dirt"]
    assert (dirt["pairs"], dirt["baseline_mean"], dirt["ratio"]) == (3, 0.0, None)
    depth = dig["ratio_to_baseline"]["depth"]  # The baseline does not record it.
    assert (depth["pairs"], depth["prompt_mean"], depth["ratio"]) == (0, None, None)
    assert json.loads(json.dumps(summary, allow_nan=False)) == summary
    text = render_markdown(summary)
    assert "| dig | dig #0 | dirt | 3 | 7.00 |" in text
    dirt_row = next(line for line in text.splitlines() if line.startswith("| dig | dig #0 | dirt"))
    assert dirt_row.endswith("| — | 3 |")


def test_metrics_without_a_baseline():
    records = [trial("chop", n, {"log": float(n)}) for n in range(3)]
    summary = summarize(records)
    assert "baseline" not in summary
    assert summary["schema"] == 3
    assert summary["metrics"]["baseline"] is None
    chop = summary["metrics"]["prompts"][0]
    assert set(chop["conditions"]) == {"prompt"}
    assert chop["ratio_to_baseline"]["log"] == {
        "pairs": 0, "prompt_mean": None, "baseline_mean": None, "ratio": None,
    }  # fmt: skip
    text = render_markdown(summary)
    assert "| Task | Instruction | Metric | n | Mean | 95% CI | SD | Min | Max |" in text
    assert "Ratio to baseline" not in text
    assert "### Unconditional baseline" not in text
    half = T_TABLE[2] * 1.0 / math.sqrt(3)
    assert (
        f"| chop | chop #0 | log | 3 | 1.00 | {1 - half:.2f}{RANGE}{1 + half:.2f} | 1.00 |" in text
    )


def test_a_single_trial_has_no_interval():
    summary = summarize([trial("chop", 0, {"log": 3.0})])
    stats = summary["metrics"]["prompts"][0]["conditions"]["prompt"]["metrics"]["log"]
    assert stats == {"n": 1, "mean": 3.0, "std": None, "ci95": None, "min": 3.0, "max": 3.0}
    assert "| chop | chop #0 | log | 1 | 3.00 | — | — | 3.00 | 3.00 |" in render_markdown(summary)


def test_the_pooled_baseline_counts_each_seed_once():
    # Two prompts on the same two seeds: their baselines repeat the zero-goal agent.
    records = [
        trial(task, number, {"log": value}, condition="unconditional", seed=number)
        for task, values in (("chop", [2.0, 4.0]), ("dig", [0.0, 6.0]))
        for number, value in enumerate(values)
    ]
    pooled = summarize(records)["metrics"]["baseline"]
    assert (pooled["unit"], pooled["trials"], pooled["judged"], pooled["seeds"]) == (
        "seed", 4, 4, 2
    )  # fmt: skip
    assert_stats(pooled["metrics"]["log"], [(2.0 + 0.0) / 2, (4.0 + 6.0) / 2])


def test_the_summary_does_not_depend_on_the_order_of_records():
    records = paper_run()
    expected = summarize(records, task_order=["dig", "chop"])
    rng = random.Random(3)
    for _ in range(5):
        rng.shuffle(records)
        summary = summarize(records, task_order=["dig", "chop"])
        assert json.dumps(summary["metrics"]) == json.dumps(expected["metrics"])
    assert [p["task"] for p in expected["metrics"]["prompts"]] == ["dig", "chop"]


def test_metric_names_put_the_papers_first():
    records = [trial("t", 0, {"zeta": 1.0, "travel_distance": 2.0, "alpha": 0.0, "seed": 1.0})]
    names = summarize(records)["metrics"]["names"]
    assert names == ["seed", "travel_distance", "alpha", "zeta"]
    assert set(PAPER_METRICS) == {"log", "dirt", "seed", "travel_distance"}


def test_several_instructions_are_separate_prompts():
    records = [
        trial("dig", n, {"dirt": float(n + 10 * index)}, index=index)
        for index in (0, 1)
        for n in range(2)
    ]
    prompts = summarize(records)["metrics"]["prompts"]
    assert [(p["task"], p["instruction_index"]) for p in prompts] == [("dig", 0), ("dig", 1)]
    assert prompts[1]["conditions"]["prompt"]["metrics"]["dirt"]["mean"] == 10.5
    page = render_html(summarize(records))
    assert 'data-row="dig #0"' in page and 'data-row="dig #1"' in page


# --- the success part with a baseline ----------------------------------------------------------


def test_baseline_trials_get_success_rates_of_their_own():
    summary = summarize(paper_run())
    # Prompt trials only: chop 2 of 4 judged, dig 0 of 3.
    assert summary["totals"]["trials"] == 8
    assert (summary["totals"]["judged"], summary["totals"]["successes"]) == (7, 2)
    baseline = summary["baseline"]
    assert (baseline["totals"]["trials"], baseline["totals"]["judged"]) == (6, 5)
    assert [t["task"] for t in baseline["tasks"]] == ["chop", "dig"]
    assert baseline["tasks"][0]["crashes"] == 1
    assert summary["timing"]["total_duration_s"] == pytest.approx(2.0 * 14)
    text = render_markdown(summary)
    assert "## Success by task: unconditional baseline" in text
    assert "- **Baseline trials (unconditional)**: 6" in text


def test_a_baseline_without_metrics_is_reported_apart():
    records = [binary_record("chop", 0), binary_record("chop", 1, "failure")]
    baseline = [
        TrialRecord(**{**r.to_json(), "condition": "unconditional", "outcome": "failure",
                       "reason": "budget", "steps_to_success": None, "steps": 3000,
                       "detector": None})
        for r in records
    ]  # fmt: skip
    summary = summarize(records + baseline)
    assert summary["schema"] == 3 and "metrics" not in summary
    assert summary["totals"]["successes"] == 1
    assert summary["baseline"]["totals"]["failures"] == 2
    only_baseline = summarize(baseline)
    assert only_baseline["tasks"] == []
    assert "only the unconditional baseline ran" in render_markdown(only_baseline)
    assert "only the unconditional baseline ran" in render_html(only_baseline)


def test_a_baseline_on_another_seed_is_refused():
    records = [
        trial("chop", 0, {"log": 1.0}),
        trial("chop", 0, {"log": 1.0}, condition="unconditional", seed=7),
    ]
    with pytest.raises(ResultsError, match="chop/0/0/unconditional ran seed 7"):
        summarize(records)


def test_a_run_without_metrics_has_no_metrics_section():
    summary = summarize([binary_record("chop", 0)])
    assert "metrics" not in summary and "baseline" not in summary
    assert "Metrics" not in render_markdown(summary)
    assert "heat-cell" not in render_html(summary)


# --- renderings --------------------------------------------------------------------------------


def test_markdown_has_a_table_per_condition():
    text = render_markdown(summarize(paper_run(), task_order=["chop", "dig"]))
    assert "## Metrics per prompt" in text
    assert "Student t-interval" in text
    assert "### Prompt" in text and "### Unconditional baseline" in text
    assert (
        "| Task | Instruction | Metric | n | Mean | 95% CI | SD | Min | Max | Ratio to baseline "
        "| Pairs |" in text
    )
    log = expected_stats([5.0, 2.0, 7.0, 9.0])
    lower, upper = log["ci95"]
    assert (
        f"| chop | chop #0 | log | 4 | 5.75 | {lower:.2f}{RANGE}{upper:.2f} | "
        f"{log['std']:.2f} | 2.00 | 9.00 | 4.00{TIMES} | 2 |" in text
    )
    assert "| chop | chop #0 | dirt |" not in text  # Not tracked for chop: no row.
    assert "| All prompts (per seed) | — | log | 3 |" in text


def test_html_heat_map_has_a_cell_per_prompt_and_metric():
    long_name = "collect dirt and then build a very tall tower of it"
    records = [
        *paper_run(),
        *(trial(long_name, n, {"dirt": 3.0}) for n in range(2)),
    ]
    summary = summarize(records, task_order=["chop", "dig"])
    page = render_html(summary)
    checker = parse(page)
    assert "script" not in checker.tags
    assert "http://" not in page and "https://" not in page
    assert not [name for name, _ in checker.attrs if name in ("src", "href")]
    assert checker.tags.count("svg") == 3  # Success rates, steps to success, the heat map.
    cells = re.findall(r'<g class="heat-cell" data-row="([^"]*)" data-metric="([^"]*)">', page)
    rows = ["chop", "dig", long_name, "Unconditional baseline"]
    names = summary["metrics"]["names"]
    assert cells == [(row, name) for row in rows for name in names]
    # Each cell prints the mean, its tooltip carries the interval.
    chop_log = re.search(r'data-row="chop" data-metric="log">(.*?)</g>', page, re.S)
    assert chop_log is not None
    lower, upper = expected_stats([5.0, 2.0, 7.0, 9.0])["ci95"]
    assert f"95% CI {lower:.2f}{RANGE}{upper:.2f}, n = 4" in chop_log.group(1)
    assert f"4.00{TIMES} the unconditional baseline" in chop_log.group(1)
    assert ">5.75</text>" in chop_log.group(1)
    chop_dirt = re.search(r'data-row="chop" data-metric="dirt">(.*?)</g>', page, re.S)
    assert chop_dirt is not None  # chop records no dirt: a dash, no colour scale.
    assert ">—</text>" in chop_dirt.group(1) and "no judged trial recorded it" in page
    # The long name is cut in the label, whole in its tooltip.
    assert f">{long_name[:31]}…<title>{long_name}: {long_name} #0</title>" in page
    assert "Heat map" in page and "highest mean" in page
    assert "<h3>Prompt</h3>" in page and "<h3>Unconditional baseline</h3>" in page


def test_heat_map_colours_are_normalised_per_metric():
    records = [trial(t, 0, {"log": v, "dirt": 100 * v}) for t, v in (("a", 0.0), ("b", 4.0))]
    page = render_html(summarize(records))

    def fill(row: str, metric: str) -> str:
        cell = rf'data-row="{row}" data-metric="{metric}">.*?<rect [^>]*fill="(#\w+)"'
        match = re.search(cell, page, re.S)
        assert match is not None
        return match.group(1)

    # Each column spans the palette on its own scale: the same shares, the same colours.
    assert fill("a", "log") == fill("a", "dirt") == "#f7fbff"
    assert fill("b", "log") == fill("b", "dirt") == "#08306b"
    # White text on the darkest cell, dark text on the lightest.
    assert re.search(
        r'data-row="b" data-metric="log">[^<]*<title>[^<]*</title><rect[^>]*>'
        r'</rect><text[^>]*fill="#ffffff">4.00<',
        page,
    )
    assert re.search(
        r'data-row="a" data-metric="log">[^<]*<title>[^<]*</title><rect[^>]*>'
        r'</rect><text[^>]*fill="#1f2328">0.00<',
        page,
    )


def test_reports_round_trip_through_json(tmp_path):
    summary = summarize(paper_run(), {"horizon": HORIZON})
    paths = write_reports(tmp_path, summary)
    loaded = json.loads(paths["json"].read_text(encoding="utf-8"))
    assert loaded == summary
    assert render_markdown(loaded) == paths["markdown"].read_text(encoding="utf-8")
    assert render_html(loaded) == paths["html"].read_text(encoding="utf-8")


def test_renderers_read_older_schemas_and_refuse_others():
    summary = summarize(paper_run())
    with pytest.raises(ResultsError, match="schema 1 or 2 or 3"):
        render_markdown({**summary, "schema": 4})
    # What earlier versions wrote: no per-trial list, no failure_reasons (schema 1 without
    # metrics or baseline, 2 with them).
    for schema, records in ((1, [binary_record("chop", 0)]), (2, paper_run())):
        old = summarize(records)
        del old["trials"]
        for task in old["tasks"]:
            del task["failure_reasons"]
        old["schema"] = schema
        page, text = render_html(old), render_markdown(old)
        assert "<h2>Trials</h2>" not in page and "## Trials" not in text
        assert "Why trials did not succeed" in page
