"""Tests of the evaluation report: Wilson intervals, the summary and the three renderings."""

from __future__ import annotations

import html
import json
import random
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from steve1_env.errors import ResultsError
from steve1_env.evaluation.records import TrialRecord
from steve1_env.evaluation.report import (
    render_html,
    render_markdown,
    summarize,
    wilson_interval,
    write_reports,
)

_REASONS = {"success": "success", "failure": "budget", "crash": "crash"}


def record(
    task: str,
    trial: int,
    outcome: str = "success",
    steps_to_success: int | None = None,
    *,
    index: int = 0,
    instruction: str | None = None,
    crashes: int = 0,
    duration_s: float = 10.0,
) -> TrialRecord:
    if outcome == "success" and steps_to_success is None:
        steps_to_success = 100 + trial
    return TrialRecord(
        task=task,
        instruction=instruction if instruction is not None else f"{task} #{index}",
        instruction_index=index,
        trial=trial,
        seed=1000 + trial,
        outcome=outcome,
        reason=_REASONS[outcome],
        steps=steps_to_success if steps_to_success is not None else 3000,
        steps_to_success=steps_to_success,
        max_steps=3000,
        detector="inventory" if outcome == "success" else None,
        detector_spec="inventory",
        crashes=crashes,
        errors=["boom"] * crashes,
        high_level_steps=5,
        inventory={},
        duration_s=duration_s,
        worker="local",
        finished_at="2024-05-01T12:00:00+00:00",
    )


CONFIG: dict[str, Any] = {
    "world": "synthetic",
    "policy": "scripted",
    "trials_per_task": 4,
    "weights": {
        "steve1.weights": {"sha256": "ab" * 32, "md5": "cd" * 16},
        "attn.pth": {"sha256": "ef" * 32, "md5": "b5ece9198337cfd117a3bfbd921e56da"},
    },
}


def sample_records() -> list[TrialRecord]:
    """chop: 2 successes, 1 failure, 1 crash; dig: 1 of 2 over two instructions."""
    return [
        record("chop", 0, "success", 120, duration_s=3.0),
        record("chop", 1, "failure", duration_s=4.0),
        record("chop", 2, "success", 300, duration_s=5.0),
        record("chop", 3, "crash", crashes=3, duration_s=6.0),
        record("dig", 0, "failure", index=0, crashes=1),
        record("dig", 1, "success", 50, index=1),
    ]


def by_task(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {task["task"]: task for task in summary["tasks"]}


def without_timing(summary: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in summary.items() if key != "timing"}


# --- wilson_interval ---------------------------------------------------------------------------


def test_wilson_interval_known_values():
    assert wilson_interval(0, 10) == (0.0, pytest.approx(0.27753, abs=1e-4))
    assert wilson_interval(5, 10) == (
        pytest.approx(0.23659, abs=1e-4),
        pytest.approx(0.76341, abs=1e-4),
    )
    assert wilson_interval(10, 10) == (pytest.approx(0.72247, abs=1e-4), 1.0)
    assert wilson_interval(1, 1)[1] == 1.0
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_wilson_interval_is_symmetric_and_narrows_with_trials():
    lower, upper = wilson_interval(3, 10)
    mirrored = wilson_interval(7, 10)
    assert lower == pytest.approx(1 - mirrored[1])
    assert upper == pytest.approx(1 - mirrored[0])
    small, large = wilson_interval(5, 10), wilson_interval(500, 1000)
    assert large[1] - large[0] < small[1] - small[0]
    assert wilson_interval(5, 10, z=1.0)[0] > wilson_interval(5, 10)[0]


def test_wilson_interval_returns_plain_floats_for_numpy_counts():
    lower, upper = wilson_interval(np.int64(3), np.int64(4))
    assert type(lower) is float and type(upper) is float


@pytest.mark.parametrize(
    ("successes", "trials", "z"),
    [(-1, 10, 1.96), (0, -1, 1.96), (11, 10, 1.96), (1.5, 10, 1.96), (True, 2, 1.96), (1, 2, 0)],
)
def test_wilson_interval_rejects_bad_input(successes, trials, z):
    with pytest.raises(ResultsError):
        wilson_interval(successes, trials, z)


# --- summarize ---------------------------------------------------------------------------------


def test_summary_counts_and_leaves_crashes_out_of_the_rate():
    summary = summarize(sample_records(), CONFIG)
    assert summary["schema"] == 3
    assert summary["config"] == CONFIG
    assert summary["totals"] == {
        "trials": 6,
        "judged": 5,
        "successes": 3,
        "failures": 2,
        "crashes": 1,
        "success_rate": pytest.approx(3 / 5),
        "ci95": [pytest.approx(v) for v in wilson_interval(3, 5)],
        "world_crashes": 4,
    }
    chop = by_task(summary)["chop"]
    assert (chop["trials"], chop["judged"], chop["successes"]) == (4, 3, 2)
    assert (chop["failures"], chop["crashes"], chop["world_crashes"]) == (1, 1, 3)
    assert chop["success_rate"] == pytest.approx(2 / 3)
    assert chop["ci95"] == list(wilson_interval(2, 3))
    assert chop["reasons"] == {"budget": 1, "crash": 1, "success": 2}
    assert summary["timing"]["total_duration_s"] == pytest.approx(3 + 4 + 5 + 6 + 10 + 10)
    assert summary["timing"]["mean_duration_s"] == round(38 / 6, 4)  # rounded like records


def test_summary_is_json_ready_with_plain_types():
    summary = summarize(sample_records(), CONFIG)
    assert json.loads(json.dumps(summary, allow_nan=False)) == summary

    def walk(value: Any) -> None:
        assert value is None or type(value) in (dict, list, str, int, float, bool), type(value)
        if isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(summary)


def test_a_task_with_only_crashes_has_no_rate():
    summary = summarize([record("t", 0, "crash", crashes=2), record("t", 1, "crash")])
    task = summary["tasks"][0]
    assert (task["judged"], task["crashes"], task["success_rate"]) == (0, 2, None)
    assert task["ci95"] == [0.0, 1.0]
    assert summary["totals"]["success_rate"] is None


def test_summary_does_not_depend_on_the_order_of_records():
    records = sample_records() + [record("swim", t, "failure") for t in range(3)]
    order = ["dig", "chop", "swim"]
    expected = summarize(records, CONFIG, task_order=order)
    rng = random.Random(7)
    for _ in range(5):
        shuffled = records[:]
        rng.shuffle(shuffled)
        summary = summarize(shuffled, CONFIG, task_order=order)
        assert without_timing(summary) == without_timing(expected)
        assert json.dumps(summary["tasks"]) == json.dumps(expected["tasks"])
        # Without an order only the order of the task list may change.
        assert by_task(summarize(shuffled, CONFIG)) == by_task(expected)


def test_task_order_default_and_explicit():
    records = [record("b", 0), record("a", 0), record("b", 1), record("c", 0)]
    assert [t["task"] for t in summarize(records)["tasks"]] == ["b", "a", "c"]
    ordered = summarize(records, task_order=["c", "missing", "a"])
    assert [t["task"] for t in ordered["tasks"]] == ["c", "a", "b"]
    with pytest.raises(ResultsError, match="task_order"):
        summarize(records, task_order="abc")


def test_duplicate_keys_raise_naming_the_key():
    records = [*sample_records(), record("dig", 1, "failure", index=1)]
    with pytest.raises(ResultsError, match="dig/1/1"):
        summarize(records)


def test_bad_records_and_config_raise():
    with pytest.raises(ResultsError, match="TrialRecord"):
        summarize([record("a", 0).to_json()])
    mismatched = [record("a", 0, instruction="chop"), record("a", 1, instruction="dig")]
    with pytest.raises(ResultsError, match="instruction 0"):
        summarize(mismatched)
    with pytest.raises(ResultsError, match="config"):
        summarize([], {"bad": object()})
    with pytest.raises(ResultsError, match="config"):
        summarize([], {"lr": float("nan")})


def test_config_is_copied_as_plain_json_values():
    config = {"out": Path("/runs/x"), "seeds": (1, 2), "scale": np.float32(0.5)}
    summary = summarize([], config)
    assert summary["config"] == {"out": "/runs/x", "seeds": [1, 2], "scale": 0.5}
    assert type(summary["config"]["scale"]) is float
    config["seeds"] = (3,)
    assert summary["config"]["seeds"] == [1, 2]


def test_per_instruction_breakdown():
    records = [
        record("dig", 0, "success", 40, index=1, instruction="dig down"),
        record("dig", 1, "failure", index=0, instruction="dig a hole"),
        record("dig", 2, "success", 60, index=0, instruction="dig a hole"),
        record("dig", 3, "crash", index=1, instruction="dig down", crashes=2),
    ]
    task = summarize(records)["tasks"][0]
    assert task["instructions"] == [
        {
            "instruction_index": 0,
            "instruction": "dig a hole",
            "trials": 2,
            "judged": 2,
            "successes": 1,
            "crashes": 0,
            "success_rate": 0.5,
            "ci95": list(wilson_interval(1, 2)),
        },
        {
            "instruction_index": 1,
            "instruction": "dig down",
            "trials": 2,
            "judged": 1,
            "successes": 1,
            "crashes": 1,
            "success_rate": 1.0,
            "ci95": list(wilson_interval(1, 1)),
        },
    ]


def test_steps_to_success_statistics():
    records = [
        record("t", 0, "success", 300),
        record("t", 1, "success", 100),
        record("t", 2, "failure"),
        record("t", 3, "success", 250),
        record("t", 4, "success", 150),
    ]
    stats = summarize(records)["tasks"][0]["steps_to_success"]
    assert stats == {
        "count": 4,
        "mean": 200.0,
        "median": 200.0,
        "min": 100,
        "max": 300,
        "values": [100, 150, 250, 300],
    }
    assert type(stats["mean"]) is float and type(stats["median"]) is float
    none = summarize([record("t", 0, "failure")])["tasks"][0]["steps_to_success"]
    assert none == {
        "count": 0,
        "mean": None,
        "median": None,
        "min": None,
        "max": None,
        "values": [],
    }


# --- renderers ---------------------------------------------------------------------------------


def test_markdown_report():
    text = render_markdown(summarize(sample_records(), CONFIG))
    assert text.startswith("# ")
    assert "| Task | Success | Rate | 95% CI | Crashes | Mean steps to success |" in text
    assert "| chop | 2/3 | 66.7% |" in text
    assert "| dig | 1/2 | 50.0% |" in text
    assert "| **Total** | 3/5 | 60.0% |" in text
    assert "210" in text  # chop's mean steps to success: (120 + 300) / 2.
    # dig has two instructions, so the per-instruction table is there.
    assert "| Instruction |" in text
    assert "| dig | 1 | dig #1 | 1/1 | 100.0% |" in text
    assert "## Configuration" in text
    assert "**steve1.weights**" in text
    assert "ab" * 32 in text
    assert "b5ece9198337cfd117a3bfbd921e56da" in text


def test_markdown_shows_missing_values_and_escapes_table_cells():
    records = [record("a|b", 0, "crash"), record("c", 0, "failure")]
    text = render_markdown(summarize(records))
    assert "| a\\|b | 0/0 | — | — | 1 | — |" in text
    # One instruction per task: no per-instruction table.
    assert "## Success by instruction" not in text


class _Checker(HTMLParser):
    """Collects tags, attributes and text; checks that elements nest and close."""

    VOID = frozenset({"meta", "br", "hr", "img", "input", "link"})

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs.extend(attrs)
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs.extend(attrs)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def parse(page: str) -> _Checker:
    checker = _Checker()
    checker.feed(page)
    checker.close()
    assert checker.stack == [], f"unclosed: {checker.stack}"
    return checker


def test_html_report_is_self_contained_and_escapes_text():
    records = [
        *sample_records(),
        record("a<b & c", 0, "success", 75),
        record("a<b & c", 1, "failure"),
    ]
    config = {**CONFIG, "note": "<script>alert(1)</script>"}
    page = render_html(summarize(records, config))
    checker = parse(page)
    assert "<svg" in page
    assert checker.tags.count("svg") == 2
    assert "script" not in checker.tags
    assert "a&lt;b &amp; c" in page
    assert "a<b & c" not in page
    assert "&lt;script&gt;" in page
    assert "a<b & c" in "".join(checker.text)  # The parsed text reads as given.
    assert "http://" not in page and "https://" not in page
    assert not [name for name, _ in checker.attrs if name in ("src", "href")]
    for needle in ("66.7%", "95% CI", "ab" * 32, "steve1.weights", "Configuration"):
        assert needle in page
    # The dot plot marks every successful trial.
    assert len(re.findall(r"<circle ", page)) == 4


def test_html_charts_handle_long_names_and_untouched_tasks():
    long_name = "collect dirt and then build a very tall tower of it"
    records = [record(long_name, 0, "success", 10), record("only crashes", 0, "crash")]
    page = render_html(summarize(records))
    parse(page)
    assert "rotate(-40)" in page
    assert "not judged" in page
    assert "no successes" in page


def test_renderers_reject_something_else():
    with pytest.raises(ResultsError, match="summarize"):
        render_markdown({"tasks": []})
    with pytest.raises(ResultsError, match="summarize"):
        render_html([])


def test_empty_results():
    summary = summarize([])
    assert summary["totals"] == {
        "trials": 0,
        "judged": 0,
        "successes": 0,
        "failures": 0,
        "crashes": 0,
        "success_rate": None,
        "ci95": [0.0, 1.0],
        "world_crashes": 0,
    }
    assert summary["tasks"] == []
    assert summary["timing"] == {"total_duration_s": 0.0, "mean_duration_s": None}
    assert "No trials yet" in render_markdown(summary)
    page = render_html(summary)
    parse(page)
    assert "No trials yet" in page


# --- write_reports -----------------------------------------------------------------------------


def test_write_reports(tmp_path):
    summary = summarize(sample_records(), CONFIG)
    paths = write_reports(tmp_path / "out", summary)
    assert paths == {
        "json": tmp_path / "out" / "report.json",
        "markdown": tmp_path / "out" / "report.md",
        "html": tmp_path / "out" / "report.html",
    }
    assert json.loads(paths["json"].read_text(encoding="utf-8")) == summary
    assert paths["markdown"].read_text(encoding="utf-8") == render_markdown(summary)
    assert paths["html"].read_text(encoding="utf-8") == render_html(summary)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "report.html",
        "report.json",
        "report.md",
    ]
    # Writing again replaces the files and leaves no temporary files behind.
    write_reports(tmp_path / "out", summarize([], CONFIG))
    assert json.loads(paths["json"].read_text(encoding="utf-8"))["totals"]["trials"] == 0
    assert len(list((tmp_path / "out").iterdir())) == 3


def test_write_reports_round_trips_through_json(tmp_path):
    summary = summarize(sample_records(), CONFIG)
    paths = write_reports(tmp_path, summary)
    loaded = json.loads(paths["json"].read_text(encoding="utf-8"))
    assert render_markdown(loaded) == render_markdown(summary)
    assert render_html(loaded) == render_html(summary)


# --- trials, failure reasons, videos, title -----------------------------------------------------


def with_video(r: TrialRecord, path: str | None) -> TrialRecord:
    return TrialRecord.from_json({**r.to_json(), "video": path})


def test_summary_lists_every_trial_with_its_clipped_crash_message():
    long_error = "the world fell over " * 100
    crashed = TrialRecord.from_json(
        {**record("chop", 3, "crash", crashes=2).to_json(), "errors": ["first", long_error]}
    )
    summary = summarize([*sample_records()[:3], crashed], CONFIG)
    trials = summary["trials"]
    assert [(t["task"], t["trial"], t["outcome"], t["reason"]) for t in trials] == [
        ("chop", 0, "success", "success"), ("chop", 1, "failure", "budget"),
        ("chop", 2, "success", "success"), ("chop", 3, "crash", "crash"),
    ]  # fmt: skip
    assert trials[0]["seed"] == 1000 and trials[0]["steps"] == 120
    assert trials[0]["instruction"] == "chop #0" and trials[0]["condition"] == "prompt"
    assert trials[3]["error"].startswith("the world fell over")
    assert len(trials[3]["error"]) == 300 and trials[3]["error"].endswith("…")
    assert summary["tasks"][0]["failure_reasons"] == {"budget": 1, "world_done": 0, "crash": 1}
    assert json.loads(json.dumps(summary)) == summary


def test_failure_reasons_leave_out_fixed_horizon_successes():
    horizon_success = TrialRecord.from_json(
        {
            **record("chop", 0, "success").to_json(),
            "reason": "budget",
            "horizon": 3000,
            "steps": 3000,
        }
    )
    ended = TrialRecord.from_json(
        {
            **record("chop", 1, "failure").to_json(),
            "reason": "world_done",
            "horizon": 3000,
            "steps": 2000,
        }
    )
    summary = summarize([horizon_success, ended])
    assert summary["tasks"][0]["failure_reasons"] == {"budget": 0, "world_done": 1, "crash": 0}
    text = render_markdown(summary)
    assert "| chop | prompt | 1 | 0 | 1 | 0 | 0 |" in text


def test_reports_link_every_video_and_embed_a_few(tmp_path):
    records = [
        with_video(record(task, n, "success" if n % 2 else "failure"), f"videos/{task}/0-{n}.mp4")
        for task in ("chop", "dig tunnel")
        for n in range(4)
    ]
    (tmp_path / "videos" / "chop").mkdir(parents=True)
    (tmp_path / "videos" / "chop" / "0-1.webp").write_bytes(b"RIFF")
    summary = summarize(records, CONFIG, run_directory=tmp_path)
    assert [t["thumbnail"] for t in summary["trials"]][:2] == [None, "videos/chop/0-1.webp"]
    page = render_html(summary)
    checker = parse(page)
    players = re.findall(
        r'<video controls preload="metadata" width="320"([^>]*) src="([^"]+)">', page
    )
    videos = [src for _, src in players]
    # Only the trial with a thumbnail gets it as its poster.
    assert [poster for poster, _ in players][:3] == ["", "", ' poster="videos/chop/0-1.webp"']
    # One per task first, then the next ones, up to four players.
    assert videos == [
        "videos/chop/0-0.mp4", "videos/dig%20tunnel/0-0.mp4",
        "videos/chop/0-1.mp4", "videos/chop/0-2.mp4",
    ]  # fmt: skip
    links = [value for name, value in checker.attrs if name == "href"]
    assert sorted(links) == sorted(_url_of(r.video) for r in records)
    assert [v for n, v in checker.attrs if n == "src" and v.endswith(".webp")] == [
        "videos/chop/0-1.webp"
    ]
    assert "script" not in checker.tags
    assert "http://" not in page and "https://" not in page
    text = render_markdown(summary)
    assert "[mp4](<videos/dig%20tunnel/0-3.mp4>)" in text
    assert text.count("[mp4](") == 8
    # Rendered again from report.json alone (what `steve1-env report` reads back), the same.
    again = json.loads(json.dumps(summary))
    assert render_html(again) == page


@pytest.mark.parametrize(
    "video", ["//tracker.example/x.mp4", "/home/someone/x.mp4", "../../x.mp4", "videos/../../x.mp4"]
)
def test_a_video_path_outside_the_run_directory_is_shown_not_loaded(video, tmp_path):
    # A results file from elsewhere: the page must not fetch another machine's file (a
    # protocol-relative URL) or one outside the run directory.
    records = [with_video(record("chop", 0, "failure"), video)]
    summary = summarize(records, CONFIG, run_directory=tmp_path)
    page = render_html(summary)
    checker = parse(page)
    assert not [v for n, v in checker.attrs if n in ("src", "href")]
    assert "<video" not in page and html.escape(video) in page
    assert summary["trials"][0]["thumbnail"] is None
    text = render_markdown(summary)
    assert "[mp4](" not in text and "x.mp4" in text
    # A thumbnail path in a report.json read back is held to the same rule.
    hostile = json.loads(json.dumps(summary))
    hostile["trials"][0].update(video="videos/chop/0-0.mp4", thumbnail=video)
    srcs = [v for n, v in parse(render_html(hostile)).attrs if n == "src"]
    assert srcs == ["videos/chop/0-0.mp4"]


def _url_of(path: str | None) -> str:
    assert path is not None
    return path.replace(" ", "%20")


@pytest.mark.parametrize(
    ("policy", "title"),
    [
        ("steve1", "STEVE-1 evaluation report"),
        ("steve1-official", "STEVE-1 evaluation report"),
        ("scripted", "Scripted oracle evaluation report"),
        ("random", "Random policy evaluation report"),
        ("mine", "Policy 'mine' evaluation report"),
        (None, "Evaluation report"),
    ],
)
def test_the_title_names_the_policy_that_ran(policy, title):
    config = {} if policy is None else {"policy": policy}
    summary = summarize(sample_records(), config)
    assert render_markdown(summary).startswith(f"# {title}\n")
    page = render_html(summary)
    assert f"<title>{title}</title>" in page.replace("&#x27;", "'")
    assert f"<h1>{title}</h1>" in page.replace("&#x27;", "'")
    if policy != "steve1" and policy != "steve1-official":
        assert "STEVE-1" not in page.split("</h1>")[0]
