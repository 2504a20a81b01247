from __future__ import annotations

import textwrap

import pytest

from steve1_env.errors import TaskSpecError
from steve1_env.success import DEFAULT_DETECTORS, InventoryDelta
from steve1_env.tasks.detectors import build_detector
from steve1_env.tasks.prompts import PAPER_PROMPTS
from steve1_env.tasks.spec import builtin_task_sets, load_task_set, parse_task_set


def test_builtin_sets():
    assert builtin_task_sets() == ["early_game", "paper", "quick_harvest"]
    early = load_task_set("early_game")
    assert [t.name for t in early.tasks] == list(PAPER_PROMPTS)
    for task in early.tasks:
        assert task.instructions == (PAPER_PROMPTS[task.name],)
        assert task.max_steps == 3000
        # Programmatic detectors, equivalent to the env's defaults for the paper prompts.
        detector = build_detector(task.success, task.instructions[0])
        assert type(detector) is type(DEFAULT_DETECTORS[task.name])
    quick = load_task_set("quick_harvest")
    assert [t.name for t in quick.tasks] == ["logs", "dirt", "seeds"]
    assert {t.max_steps for t in quick.tasks} == {2000}
    assert build_detector(quick.task("logs").success, "x") == InventoryDelta("*_log", 1)


def test_trial_plan_seeds_and_overrides():
    tasks = parse_task_set(
        textwrap.dedent(
            """
            defaults: {max_steps: 50}
            tasks:
              - {name: a, instructions: [chop a tree, gather wood], seed: 10}
              - {name: b, instruction: get dirt, seeds: [7, 3], max_steps: 9}
            """
        )
    )
    plan = tasks.trial_specs(trials=2)
    assert [(s.key, s.seed, s.max_steps) for s in plan] == [
        ("a/0/0", 10, 50), ("a/0/1", 11, 50), ("a/1/0", 10, 50), ("a/1/1", 11, 50),
        ("b/0/0", 7, 9), ("b/0/1", 3, 9),
    ]  # fmt: skip
    assert len(tasks.trial_specs()) == 3 * 2 + 2  # default trials: 3, or the seeds listed
    assert {s.max_steps for s in tasks.trial_specs(1, max_steps=77)} == {77}
    with pytest.raises(TaskSpecError, match="lists 2 seeds but 3 trials"):
        tasks.task("b").trial_specs(3)
    with pytest.raises(TaskSpecError, match="no task 'c'"):
        tasks.select(["c"])
    with pytest.raises(TaskSpecError, match="named more than once"):
        tasks.select(["a", "a"])
    with pytest.raises(TaskSpecError, match="<string>: Task 'b' lists 2 seeds"):
        tasks.trial_specs(3)
    with pytest.raises(TaskSpecError, match="trials must be a positive integer, got 0"):
        tasks.trial_specs(0)


def test_users_file_loads_by_path(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("tasks:\n  - {name: t, instruction: chop a tree, max_steps: 5}\n")
    loaded = load_task_set(path)
    assert loaded.name == "mine" and loaded.source == str(path)
    assert load_task_set(str(path)).sha256 == loaded.sha256
    # Comments and layout do not change what the set is.
    path.write_text("# comment\ntasks:\n- name: t\n  instruction: chop a tree\n  max_steps: 5\n")
    assert load_task_set(path).sha256 == loaded.sha256


@pytest.mark.parametrize(
    ("body", "task", "field", "line", "message"),
    [
        ("tasks:\n  - {instruction: x, max_steps: 5}\n", "#1", "name", 2, "expected a name"),
        ("tasks:\n  - name: t\n    max_steps: 5\n", "t", "instruction", 2, "exactly one of"),
        ("tasks:\n  - name: t\n    instruction: chop a tree\n", "t", "max_steps", 2, "missing"),
        (
            "tasks:\n  - name: t\n    instruction: chop a tree\n    max_steps: 5\n"
            "    success: {type: invetory, items: dirt}\n",
            "t", "success.type", 5, "unknown detector type 'invetory'. Did you mean 'inventory'",
        ),
        (
            "tasks:\n  - name: t\n    instruction: chop a tree\n    max_steps: 5\n"
            "    success:\n      type: any_of\n      parts:\n        - {type: depth, depth: 3}\n"
            "        - {type: inventory, items: dirt, count: many}\n",
            "t", "success.parts[1].count", 9, "expected a positive number, got 'many'",
        ),
        ("tasks:\n  - name: t\n    instruction: 5\n    max_steps: 5\n", "t", "instruction", 3,
         "must be a str"),
        ("tasks:\n  - name: t\n    instruction: x\n    max_steps: '5'\n", "t", "max_steps", 4,
         "expected an integer >= 1, got '5'"),
        ("tasks:\n  - name: t\n    instruction: x\n    max_steps: 5\n    seeds: [1, -1]\n",
         "t", "seeds[1]", 5, "expected an integer >= 0"),
        ("tasks:\n  - name: t\n    instruction: x\n    max_step: 5\n", "t", "max_step", 4,
         "Did you mean 'max_steps'"),
        ("tasks:\n  - name: t\n    instruction: chop a tree\n    max_steps: 5\n"
         "    success: woood\n", "t", "success", 5, "unknown skill 'woood'. Did you mean 'wood'"),
        ("tasks:\n  - name: t\n    instruction: do a dance\n    max_steps: 5\n", "t", "success",
         2, "no default detector is known for 'do a dance'"),
        ("tasks:\n  - name: t\n    instruction: x\n    max_steps: 5\n"
         "    success: {type: counter, counter: mine_blok, items: dirt}\n", "t",
         "success.counter", 5, "expected a MineRL counter: mine_block"),
        ("tasks:\n  - name: t\n    instruction: x\n    max_steps: 5\n"
         "    success: {type: inventory, items: dirt, count: 0}\n", "t",
         "success.count", 5, "expected a positive number, got 0"),
        ("defaults: {max_steps: x}\ntasks:\n  - {name: t, instruction: chop a tree}\n", "t",
         "defaults.max_steps", 1, "expected an integer"),
        ("tasks:\n  - name: t\n    instruction: x\n    max_steps: 5\n    world_options: [1]\n",
         "t", "world_options", 5, "expected a mapping of world arguments"),
        ("tasks:\n  - name: t\n    instruction: x\n    max_steps: 5\n    success:\n"
         "      type: custom\n      function: no_such_module_xyz:f\n", "t", "success.function", 7,
         "cannot import 'no_such_module_xyz:f'"),
    ],
)  # fmt: skip
def test_malformed_files_name_file_task_field_and_line(tmp_path, body, task, field, line, message):
    path = tmp_path / "broken.yaml"
    path.write_text(body)
    with pytest.raises(TaskSpecError) as caught:
        load_task_set(path, allow_imports=True)  # one case tries an import that fails
    text = str(caught.value)
    assert str(path) in text
    assert f"task {task!r}" in text
    assert f"field {field!r}" in text
    assert f"line {line}:" in text
    assert message in text


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("- just a list\n", "expected a mapping with 'tasks'"),
        ("name: s\n", "expected a non-empty list of tasks"),
        ("tasks: [\n", "not valid YAML"),
        ("tasks:\n  - {name: t, instruction: get dirt, max_steps: 5}\n  - {name: t, instruction: "
         "chop a tree, max_steps: 5}\n", "used by two tasks"),
        ("tasks:\n  - name: t\n    name: u\n", "line 3: the key 'name' appears twice"),
        ("tasks:\n  - {name: t, instruction: get dirt, max_steps: 5}\nextra: 1\n", "field 'extra'"),
        ("", "the file is empty"),
        ("name: x\n", "broken.yaml, field 'tasks', line 1: expected a non-empty list"),
        ("tasks: [3]\n", "task '#1', field 'tasks[0]', line 1: expected a task mapping"),
        ("tasks: &x [*x]\n", "cannot be recursive"),
    ],
)  # fmt: skip
def test_malformed_sets(tmp_path, body, message):
    path = tmp_path / "broken.yaml"
    path.write_text(body)
    with pytest.raises(TaskSpecError, match=r"broken\.yaml") as caught:
        load_task_set(path)
    assert message in str(caught.value)


def test_unknown_set_names_suggest_and_missing_files_say_so():
    with pytest.raises(TaskSpecError, match="Did you mean 'quick_harvest'"):
        load_task_set("quick_harvst")
    with pytest.raises(TaskSpecError, match="does not exist"):
        load_task_set("nowhere/tasks.yaml")


def test_custom_detector_imports_a_function(tmp_path):
    tasks = parse_task_set(
        "tasks:\n  - name: t\n    instruction: anything at all\n    max_steps: 5\n"
        "    success: {type: custom, function: 'tests.test_task_specs:always', name: sure}\n",
        allow_imports=True,
    )
    detector = build_detector(tasks.tasks[0].success, "anything at all")
    assert detector.name == "sure" and detector({}, {}, 0) is True


def always(start_obs, obs, steps):
    return True


def test_the_readme_task_file_loads():
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    (block,) = re.findall(r"```yaml\n(.*?)```", readme, re.S)
    loaded = parse_task_set(block, "README.md")
    assert [t.name for t in loaded.tasks] == ["logs", "deep"]
    assert len(loaded.trial_specs()) == 2 * 5 + 5
