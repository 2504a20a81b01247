"""Hostile task files and detector configs (issue 12): each is refused fast with the package's
error, never a RecursionError, MemoryError, UnicodeDecodeError or an import of the file's
choosing."""

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from steve1_env import success
from steve1_env.cli import main
from steve1_env.errors import ConfigurationError, DetectorError, TaskFileError, TaskSpecError
from steve1_env.evaluation.runner import evaluate
from steve1_env.tasks import spec
from steve1_env.tasks.detectors import build_detector
from steve1_env.tasks.spec import TaskSpec, load_task_set, parse_task_set

# Generous for a loaded machine, yet far below what the unbounded code took (seconds to never).
FAST_S = 3.0
ONE_TASK = "tasks:\n  - {name: t, instruction: get dirt, max_steps: 5}\n"


def laughs(levels: int) -> str:
    """A "billion laughs" task file: each anchor repeats the previous one ten times."""
    lines = ["defaults:", "  world_options:", '    l0: &l0 ["lol", "lol"]']
    for level in range(1, levels + 1):
        lines.append(f"    l{level}: &l{level} [{', '.join([f'*l{level - 1}'] * 10)}]")
    return "\n".join(lines) + "\n" + ONE_TASK


def refused_fast(call, match):
    started = time.perf_counter()
    with pytest.raises(TaskSpecError, match=match) as caught:
        call()
    assert time.perf_counter() - started < FAST_S
    return str(caught.value)


def nested_config(levels, leaf=None):
    config = leaf or {"type": "inventory", "items": "dirt"}
    for level in range(levels):
        config = {"type": "all_of" if level % 2 else "any_of", "parts": [config]}
    return config


# ----------------------------------------------------------------------------- case 1


def test_nested_aliases_are_refused_fast():
    # 10^5 values once expanded: the old code walked (and hashed) every one of them.
    text = refused_fast(lambda: parse_task_set(laughs(5), "laughs.yaml"), "MAX_TASK_FILE_VALUES")
    assert "laughs.yaml, line" in text and "alias" in text


def test_file_level_failures_are_task_file_errors(tmp_path):
    # A TaskFileError is a TaskSpecError: code catching the latter keeps working.
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"name: caf\xe9\n")
    for load in (lambda: parse_task_set(laughs(5), "laughs.yaml"),
                 lambda: parse_task_set("[" * 20_000, "brackets.yaml"),
                 lambda: parse_task_set("a: [", "broken.yaml"),
                 lambda: load_task_set(latin), lambda: load_task_set(tmp_path)):  # fmt: skip
        with pytest.raises(TaskFileError):
            load()
    with pytest.raises(TaskSpecError) as caught:  # a field problem is not a file problem
        parse_task_set("tasks: [{name: t, instruction: get dirt, max_steps: -1}]")
    assert not isinstance(caught.value, TaskFileError)


def test_a_billion_laughs_neither_hangs_nor_fills_memory():
    # In a child with 1 GiB of address space, so unbounded expansion fails this test (by
    # MemoryError or the timeout) instead of taking the machine down with it.
    child = textwrap.dedent(
        f"""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, (2**30, 2**30))
        from steve1_env.errors import TaskSpecError
        from steve1_env.tasks.spec import parse_task_set
        try:
            parse_task_set({laughs(9)!r})
        except TaskSpecError as exc:
            print("refused:", exc)
        """
    )
    package_root = Path(spec.__file__).resolve().parents[2]  # the code under test
    env = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(package_root)}
    started = time.perf_counter()
    try:
        done = subprocess.run(
            [sys.executable, "-c", child], capture_output=True, text=True, timeout=60, env=env
        )
    except subprocess.TimeoutExpired:
        pytest.fail("nested aliases were expanded for a minute")
    assert "refused:" in done.stdout and "MAX_TASK_FILE_VALUES" in done.stdout, done.stderr
    assert time.perf_counter() - started < 30


def test_aliases_within_the_limit_still_work():
    loaded = parse_task_set(
        "tasks:\n"
        "  - &first {name: a, instruction: get dirt, max_steps: 5, success: &dirt {type: "
        "inventory, items: dirt}}\n"
        "  - {name: b, instruction: dig a hole, max_steps: 7, success: *dirt}\n"
        "  - {<<: *first, name: c}\n"
    )
    assert [(t.name, t.max_steps) for t in loaded.tasks] == [("a", 5), ("b", 7), ("c", 5)]
    assert (
        loaded.tasks[1].success == loaded.tasks[2].success == {"type": "inventory", "items": "dirt"}
    )


# ----------------------------------------------------------------------------- case 3


def test_absurd_trials_in_a_task_file_are_refused_at_their_line(tmp_path):
    path = tmp_path / "many.yaml"
    path.write_text("tasks:\n  - {name: t, instruction: get dirt, max_steps: 5,\n"
                    "     trials: 1000000000}\n")  # fmt: skip
    text = refused_fast(lambda: load_task_set(path), "<= 10000")
    assert "field 'trials', line 3" in text
    path.write_text("defaults: {trials: 1000000000}\n" + ONE_TASK)
    assert "field 'defaults.trials', line 1" in refused_fast(lambda: load_task_set(path), "<=")


def test_too_many_seeds_are_refused():
    seeds = list(range(10001))
    text = f"tasks:\n  - {{name: t, instruction: get dirt, max_steps: 5, seeds: {seeds}}}\n"
    assert "MAX_TRIALS" in refused_fast(lambda: parse_task_set(text), "10001 seeds")


def test_absurd_trials_asked_in_python_or_the_cli_are_refused_before_building(tmp_path, capsys):
    tasks = load_task_set("quick_harvest")
    refused_fast(lambda: tasks.trial_specs(10**9), "MAX_TRIALS")
    lone = TaskSpec("t", ("get dirt",), max_steps=5, trials=10**9)
    refused_fast(lambda: lone.trial_specs(), "MAX_TRIALS")
    started = time.perf_counter()
    argv = ["eval", "--task-set", "quick_harvest", "--trials", "1000000000", "--quiet",
            "--out", str(tmp_path / "run"), "--policy", "scripted"]  # fmt: skip
    assert main(argv) == 2
    assert time.perf_counter() - started < FAST_S
    assert "at most 10000 are supported (MAX_TRIALS)" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_the_whole_plan_is_bounded_across_tasks_and_instructions():
    phrasings = [f"get dirt {i}" for i in range(20)]
    text = (
        "defaults: {max_steps: 5, trials: 10000, success: dirt}\ntasks:\n"
        f"  - {{name: t, instructions: {json.dumps(phrasings)}}}\n"
    )
    tasks = parse_task_set(text)  # each number is allowed; the product is not
    message = refused_fast(tasks.trial_specs, "MAX_PLANNED_TRIALS")
    assert "200000 trials were planned" in message


# ----------------------------------------------------------------------------- case 6


def test_twenty_thousand_brackets_are_refused_fast():
    text = "tasks: " + "[" * 20000 + "]" * 20000 + "\n"
    refused_fast(lambda: parse_task_set(text, "deep.yaml"), r"deep\.yaml, line 1: .*DEPTH")


def test_deep_detectors_in_a_task_file_are_refused():
    for levels in (300, 40):  # past the YAML depth limit; within it but past the detector's
        config = json.dumps(nested_config(levels))
        text = ONE_TASK.replace("max_steps: 5}", f"max_steps: 5,\n     success: {config}}}")
        message = refused_fast(lambda text=text: parse_task_set(text, "d.yaml"), "DEPTH")
        assert "d.yaml" in message and "line 3" in message


def test_deep_detector_configs_in_python_are_refused_at_the_level_too_deep():
    with pytest.raises(TaskSpecError, match="MAX_DETECTOR_DEPTH") as caught:
        build_detector(nested_config(300), "get dirt")
    assert caught.value.path == ("parts", 0) * success.MAX_DETECTOR_DEPTH
    cyclic = {"type": "any_of", "parts": []}
    cyclic["parts"].append(cyclic)
    with pytest.raises(TaskSpecError, match="MAX_DETECTOR_DEPTH"):
        build_detector(cyclic, "get dirt")
    deepest = build_detector(nested_config(success.MAX_DETECTOR_DEPTH), "get dirt")
    assert deepest({"inventory": {"dirt": 0}}, {"inventory": {"dirt": 1}}, 1) is True


def test_nested_composites_built_in_python_stop_at_the_limit():
    # Before, 300 levels were built and the env's first step ended in a RecursionError.
    detector, built = success.InventoryDelta("dirt"), 0
    with pytest.raises(DetectorError, match="MAX_DETECTOR_DEPTH"):
        for level in range(300):
            detector = (success.any_of if level % 2 else success.all_of)(detector)
            built += 1
    assert built == success.MAX_DETECTOR_DEPTH
    assert detector(*[{"inventory": {}}] * 2, 0) is False  # the deepest allowed one runs


# ----------------------------------------------------------------------------- files


def test_a_file_that_is_not_utf8_says_so(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(
        "tasks:\n  - {name: t, instruction: caf\xe9, max_steps: 5}\n".encode("latin-1")
    )
    text = refused_fast(lambda: load_task_set(path), "must be UTF-8 text")
    assert "latin1.yaml, line 2" in text and "0xe9" in text


def test_a_directory_or_an_unreadable_file_gets_a_clean_error(tmp_path, monkeypatch):
    with pytest.raises(TaskSpecError, match="is a directory"):
        load_task_set(tmp_path)
    path = tmp_path / "t.yaml"
    path.write_text(ONE_TASK)

    real_open = os.open

    def refuse(file, *args, **kwargs):
        if str(file) == str(path):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(os, "open", refuse)  # root may read anything: simulate it
    with pytest.raises(TaskSpecError, match=r"Cannot read the task set file .*Permission denied"):
        load_task_set(path)


def test_an_oversized_file_is_not_read_whole(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text(ONE_TASK + "#" * 4 * 2**20)  # a valid file, one comment too long
    refused_fast(lambda: load_task_set(path), "MAX_TASK_FILE_BYTES")


# ----------------------------------------------------------------------------- trust


@pytest.fixture
def marker_module(tmp_path, monkeypatch):
    """An importable module that leaves a file behind when imported."""
    marker = tmp_path / "imported"
    (tmp_path / "hostile_detector_module.py").write_text(
        f"open({str(marker)!r}, 'w').close()\n"
        "def reached(start_obs, obs, steps):\n    return True\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "hostile_detector_module", raising=False)
    return marker


def custom_task_file(tmp_path):
    path = tmp_path / "custom.yaml"
    path.write_text(
        "tasks:\n  - name: t\n    instruction: get dirt\n    max_steps: 50\n    success:\n"
        "      type: any_of\n      parts:\n        - {type: inventory, items: dirt}\n"
        "        - {type: custom, function: 'hostile_detector_module:reached'}\n"
    )
    return path


def test_task_files_may_not_import_without_the_opt_in(tmp_path, marker_module):
    path = custom_task_file(tmp_path)
    with pytest.raises(TaskSpecError) as caught:
        load_task_set(path)
    text = str(caught.value)
    assert "custom.yaml, task 't', field 'success.parts[1].function', line 9" in text
    assert "runs its code" in text and "allow_imports=True" in text
    assert not marker_module.exists()  # refused before anything was imported
    loaded = load_task_set(path, allow_imports=True)
    assert marker_module.exists()
    nothing = {"inventory": {}}
    assert build_detector(loaded.tasks[0].success, "get dirt")(nothing, nothing, 0) is True


@pytest.mark.parametrize("truthy", ["no", "False", 1, [0]])
def test_the_import_opt_in_must_be_a_real_boolean(tmp_path, marker_module, truthy):
    # "no" is truthy: taken as a yes, it would let the file import its modules.
    path = custom_task_file(tmp_path)
    with pytest.raises(TaskSpecError, match="allow_imports must be True or False"):
        load_task_set(path, allow_imports=truthy)
    with pytest.raises(ConfigurationError, match="allow_imports must be True or False"):
        evaluate(path, tmp_path / "run", allow_imports=truthy, progress=False)
    config = {"type": "custom", "function": "hostile_detector_module:reached"}
    with pytest.raises(ConfigurationError, match="allow_imports must be True or False"):
        build_detector(config, "get dirt", allow_imports=truthy)
    assert not marker_module.exists() and not (tmp_path / "run").exists()


def test_eval_needs_allow_imports_for_such_a_file(tmp_path, capsys, marker_module):
    path = custom_task_file(tmp_path)
    argv = ["eval", "--task-set", str(path), "--quiet", "--trials", "1", "--policy", "scripted",
            "--world-option", "pov_shape=[48, 64]"]  # fmt: skip
    assert main([*argv, "--out", str(tmp_path / "refused")]) == 2
    assert "--allow-imports" in capsys.readouterr().err and not marker_module.exists()
    assert main([*argv, "--out", str(tmp_path / "run"), "--allow-imports"]) == 0
    assert "1/1" in capsys.readouterr().out


def test_python_detector_configs_are_code_and_may_import(marker_module):
    config = {"type": "custom", "function": "hostile_detector_module:reached"}
    assert build_detector(config, "get dirt")({}, {}, 0) is True


def test_builtin_sets_need_no_imports():
    for name in spec.builtin_task_sets():
        assert load_task_set(name).tasks


def test_world_option_keys_that_are_not_text_are_refused_at_their_line(tmp_path, capsys):
    path = tmp_path / "keys.yaml"
    path.write_text(
        "tasks:\n  - name: logs\n    instruction: chop a tree\n    max_steps: 100\n"
        "    world_options: {tree_density: {1: a, b: c}}\n"
    )
    with pytest.raises(
        TaskSpecError, match=r"field 'world_options.tree_density', line 5: the key 1"
    ):
        load_task_set(path)
    assert main(["eval", "--task-set", str(path), "--policy", "scripted", "--quiet",
                 "--out", str(tmp_path / "run")]) == 2  # fmt: skip
    assert "is not text" in capsys.readouterr().err and not (tmp_path / "run").exists()
