import importlib.util
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from steve1_env.cli import CLI_WORDING, in_cli_words, main


def test_demo_prints_the_result(capsys):
    assert main(["demo", "--seed", "0"]) == 0
    out = capsys.readouterr().out
    assert "'chop a tree' try 1: success (wood)" in out
    assert "result: 3/3 skills succeeded" in out and "_log=1" in out


def test_demo_with_own_instructions(capsys):
    assert main(["demo", "--instruction", "look at the sky", "--k", "50"]) == 0
    assert "result: 1/1 skills succeeded" in capsys.readouterr().out


def test_errors_exit_2_with_a_hint(capsys):
    assert main(["demo", "--policy", "scriptd"]) == 2
    assert "Did you mean 'scripted'" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [[], ["demo", "--tries", "0"], ["demo", "--k", "x"]])
def test_usage_errors_exit_2(argv):
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2


@pytest.mark.skipif(shutil.which("steve1-env") is None, reason="package not installed")
def test_console_script_is_installed():
    out = subprocess.run(
        ["steve1-env", "demo", "--k", "100"], capture_output=True, text=True, check=True
    )
    assert "skills succeeded" in out.stdout


OFFLINE_ARGS = ["--policy", "scripted", "--world-option", "pov_shape=[48, 64]"]


def test_eval_writes_results_and_reports_and_report_rewrites_them(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["eval", "--task-set", "quick_harvest", "--trials", "2", "--max-steps", "500",
            "--out", str(out), "--quiet", *OFFLINE_ARGS]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "total" in printed and "6/6" in printed and "100.0%" in printed
    assert len((out / "results.jsonl").read_text().splitlines()) == 6
    (out / "report.html").unlink()
    assert main(["report", str(out)]) == 0
    assert (out / "report.html").exists() and "6/6" in capsys.readouterr().out
    # Resuming a finished run runs nothing and keeps the results.
    assert main([*argv, "--resume"]) == 0
    assert len((out / "results.jsonl").read_text().splitlines()) == 6
    # Resuming with other settings is refused with the difference named.
    assert main([*argv[:-4], "--policy", "random", "--resume"]) == 2
    assert "policy: recorded 'scripted', now 'random'" in capsys.readouterr().err


def test_eval_errors_name_the_problem(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("tasks:\n  - {name: t, instruction: get dirt}\n")
    assert main(["eval", "--task-set", str(bad), "--out", str(tmp_path / "o"), *OFFLINE_ARGS]) == 2
    assert "bad.yaml, task 't', field 'max_steps'" in capsys.readouterr().err
    assert main(["eval", "--world-option", "oops", "--out", str(tmp_path / "p")]) == 2
    assert "NAME=VALUE" in capsys.readouterr().err
    assert main(["report", str(tmp_path)]) == 2
    assert "not a steve1-env run directory" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "flags"),
    [
        (["--executor", "processes", "--address", "auto"], "--address apply to --executor ray"),
        (["--executor", "local", "--workers", "2"], "use --executor processes (or ray)"),
        (["--retry-crashed"], "--retry-crashed needs --resume."),
        (["--world-option", "tree_densty=0.1"], "Fix the arguments of the world (--world-option)"),
    ],
)
def test_eval_errors_name_the_flags_not_the_python_arguments(tmp_path, capsys, extra, flags):
    out = tmp_path / "never"
    argv = ["eval", "--task-set", "quick_harvest", "--out", str(out), "--quiet", *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert flags in err and "=True" not in err and "executor='" not in err
    assert not out.exists()


def test_the_cli_wording_table_matches_library_messages():
    # Every phrase the CLI rewords must still occur in a library message, or it rewords nothing.
    package = Path(__file__).resolve().parents[1] / "steve1_env"
    library = "".join(
        path.read_text(encoding="utf-8") for path in package.rglob("*.py") if path.name != "cli.py"
    )
    joined = re.sub(r'"\s*\n\s*f?"', "", library)  # implicit concatenation across lines
    for phrase, _ in CLI_WORDING:
        assert phrase in joined, f"no library message says {phrase!r}"
    # Longer phrases first: "pass address=None" is not read as "address=".
    assert (
        in_cli_words("pass address=None; address= is for Ray")
        == "drop --address; --address is for Ray"
    )


def test_run_prints_every_step_and_writes_a_video(tmp_path, capsys):
    video = tmp_path / "chop.mp4"
    argv = ["run", "chop a tree", "--k", "10", "--video", str(video), *OFFLINE_ARGS]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "detector: wood" in out and "step   1:   10 low-level steps" in out
    assert "result: 'chop a tree' succeeded" in out and f"video: {video}" in out
    assert video.stat().st_size > 0
    assert main(["run", "get dirt", "--max-steps", "3", *OFFLINE_ARGS]) == 1
    assert "did not succeed (budget) after 3 steps" in capsys.readouterr().out


def test_run_pursues_a_visual_goal_from_the_papers_prompts(tmp_path, capsys):
    from steve1_env.prompt.visual_prompts import PAPER_VISUAL_PROMPT_NAMES, VISUAL_PROMPTS_FILE

    rng = np.random.default_rng(0)
    table = {
        name: rng.standard_normal(512).astype(np.float32) for name in PAPER_VISUAL_PROMPT_NAMES
    }
    argv = ["run", "get dirt", "--visual-goal", "paper:dirt", "--weights", str(tmp_path),
            "--max-steps", "400", *OFFLINE_ARGS]  # fmt: skip
    assert main(argv) == 2  # not downloaded yet: the error says how to get them
    assert "steve1-env weights download --visual-prompts" in capsys.readouterr().err
    np.savez(tmp_path / VISUAL_PROMPTS_FILE, **table)
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "detector: dirt" in out and "result: 'get dirt' succeeded" in out


def test_run_judges_with_a_success_detector_given_as_yaml(capsys):
    argv = ["run", "chop a tree", "--success", "{type: inventory, items: oak_log}", "--k", "50",
            *OFFLINE_ARGS]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "detector: inventory:oak_log>=1" in out and "success (inventory:oak_log>=1)" in out
    # JSON works too, and a detector that cannot fire within the budget is not met.
    argv = ["run", "chop a tree", "--success", '{"type": "inventory", "items": "dirt"}',
            "--max-steps", "60", *OFFLINE_ARGS]  # fmt: skip
    assert main(argv) == 1
    assert "did not succeed (budget) after 60 steps" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("success", "said"),
    [
        ("{type: inventry}", "--success, field 'type', line 1: unknown detector type 'inventry'. "
                             "Did you mean 'inventory'?"),
        ("{type: inventory, items: dirt, count: 0}", "--success, field 'count', line 1: expected "
                                                     "a positive number"),
        ("[wood,", "--success, line 1: not valid YAML"),
        ("{type: custom, function: 'os:getcwd'}", "Pass --allow-imports only"),
    ],
)  # fmt: skip
def test_run_refuses_a_bad_success_detector_with_the_task_files_words(capsys, success, said):
    assert main(["run", "chop a tree", "--success", success, *OFFLINE_ARGS]) == 2
    err = capsys.readouterr().err
    assert said in err and "allow_imports=" not in err


def test_run_takes_a_tasks_instruction_detector_and_budget(tmp_path, capsys):
    assert main(["run", "--task", "dirt", "--task-set", "quick_harvest", *OFFLINE_ARGS]) == 0
    out = capsys.readouterr().out
    assert "'get dirt' task=quick_harvest:dirt" in out and "result: 'get dirt' succeeded" in out
    tasks = tmp_path / "mine.yaml"
    tasks.write_text(
        "tasks:\n  - {name: two_dirt, instruction: get dirt, max_steps: 77, seeds: [5],\n"
        "     success: {type: inventory, items: dirt, count: 50},\n"
        "     world_options: {pov_shape: [48, 64]}}\n"
    )
    assert (
        main(["run", "--task", "two_dirt", "--task-set", str(tasks), "--policy", "scripted"]) == 1
    )
    out = capsys.readouterr().out
    assert "seed=5 k=100 max_steps=77" in out and "detector: inventory:dirt>=50" in out
    # Without --task-set the built-in sets are searched; flags override the task.
    assert main(["run", "say it", "--task", "logs", "--max-steps", "5", "--seed", "3",
                 *OFFLINE_ARGS]) == 1  # fmt: skip
    assert "'say it' task=quick_harvest:logs" in (out := capsys.readouterr().out)
    assert "seed=3" in out and "detector: inventory:*_log>=1" in out


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--task", "wod"], "--task 'wod': no such task in the built-in task sets. Did you mean"),
        (["--task-set", "paper"], "give --task NAME too"),
        ([], "Give the INSTRUCTION to pursue"),
    ],
)
def test_run_task_errors_name_the_flags(capsys, argv, said):
    assert main(["run", *argv, *OFFLINE_ARGS]) == 2
    assert said in capsys.readouterr().err


def test_the_undetectable_warning_names_the_cli_flags(capsys):
    assert main(["run", "dance", "--max-steps", "3", *OFFLINE_ARGS]) == 1
    err = capsys.readouterr().err
    assert "No success detector is known for 'dance'" in err
    assert "--success" in err and "--task NAME" in err and "success={" not in err


@pytest.mark.skipif(importlib.util.find_spec("minerl") is not None, reason="MineRL is installed")
def test_eval_on_minerl_without_it_names_the_synthetic_world_and_the_extra(tmp_path, capsys):
    assert main(["eval", "--world", "minerl", "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--world minerl needs the optional dependency 'minerl'" in err
    assert "use --world synthetic" in err and "world='" not in err
    assert 'pip install "steve1-env[minerl]"' in err and 'pip install -e ".[minerl]"' in err
    assert "minerllabs/minerl@v1.0.2" in err


def test_the_oracle_on_another_world_names_the_flags(capsys):
    assert main(["run", "chop a tree", "--world", "minestudio", "--policy", "scripted"]) == 2
    err = capsys.readouterr().err
    assert (
        "--policy scripted is an oracle for the synthetic world and needs --world synthetic" in err
    )
    assert "(--help lists them)" in err
    assert (
        main(["run", "chop a tree", "--policy", "scripted", "--world-option", "pov_shape=5"]) == 2
    )
    assert "a pair [height, width] such as [128, 128], got 5" in capsys.readouterr().err


def test_calibrate_with_a_missing_checkpoint_names_the_flag_not_none(tmp_path, capsys):
    (tmp_path / "positive").mkdir()
    (tmp_path / "negative").mkdir()
    assert main(["calibrate", str(tmp_path), "--weights", str(tmp_path / "nothing.pth")]) == 2
    err = capsys.readouterr().err
    assert "or no --weights for the weights directory" in err and "None" not in err


def test_dtype_selects_the_native_policys_precision(
    tmp_path, tiny_policy_files, monkeypatch, capsys
):
    import steve1_env.agent.native as native

    shutil.copy(tiny_policy_files["weights"], tmp_path / "steve1.weights")
    shutil.copy(tiny_policy_files["model"], tmp_path / "2x.model")
    asked = []
    resolve = native.resolve_precision
    monkeypatch.setattr(native, "resolve_precision", lambda d: asked.append(d) or resolve(d))
    argv = ["run", "chop a tree", "--policy", "steve1", "--weights", str(tmp_path),
            "--prompt-encoder", "hash", "--max-steps", "3",
            "--dtype", "bfloat16-mixed"]  # fmt: skip
    assert main(argv) == 1  # ran to its budget
    assert asked == ["bfloat16-mixed"]
    assert "did not succeed (budget) after 3 steps" in capsys.readouterr().out
    assert main(["demo", "--dtype", "bfloat16-mixed"]) == 2  # the scripted policy has none
    assert "--dtype selects the native policy's precision" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["demo", "--dtype", "int8"])
