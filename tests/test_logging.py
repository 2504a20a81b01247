"""The `steve1_env` logger (silent at import and by default, shown by the CLI's -v) and
warnings that point at the caller's line."""

import inspect
import logging
import subprocess
import sys
import warnings
from dataclasses import replace

import gymnasium as gym
import pytest

import steve1_env  # noqa: F401  (registers the env ids)
from steve1_env.cli import main
from steve1_env.env import Steve1SkillEnv
from steve1_env.errors import Steve1EnvWarning
from steve1_env.evaluation.runner import evaluate
from steve1_env.evaluation.trial import RunSettings

OFFLINE = RunSettings(
    policy="scripted", prompt_encoder="hash", world_kwargs={"pov_shape": (48, 64)}
)
EVAL_ARGS = ["eval", "--task-set", "quick_harvest", "--trials", "1", "--quiet",
             "--policy", "scripted", "--world-option", "pov_shape=[48, 64]"]  # fmt: skip

IMPORT_EVERYTHING = """
import logging, sys
logging.basicConfig(level=logging.DEBUG, stream=sys.stdout, format="LOGGED %(name)s")
import steve1_env, steve1_env.cli, steve1_env.env, steve1_env.download, steve1_env.weights
import steve1_env.evaluation.runner, steve1_env.evaluation.progress, steve1_env.vector.env
import steve1_env.worlds.minerl, steve1_env.worlds.minestudio, steve1_env.worlds.world_process
package = logging.getLogger("steve1_env")
print([type(h).__name__ for h in package.handlers], package.level, len(logging.root.handlers))
"""


def test_importing_the_package_logs_nothing_and_configures_only_a_null_handler():
    out = subprocess.run(
        [sys.executable, "-c", IMPORT_EVERYTHING], capture_output=True, text=True, check=True
    )
    # Nothing logged (even at DEBUG, to a root handler), nothing set but the NullHandler.
    assert out.stdout.splitlines() == ["['NullHandler'] 0 1"]


def test_without_a_handler_nothing_is_printed_not_even_warnings(capsys):
    # logging's last resort prints WARNING records when no handler is found: the NullHandler
    # keeps a library's records away from a program that configured no logging.
    logging.getLogger("steve1_env.test").warning("a world crashed")
    assert capsys.readouterr().err == ""


def test_an_evaluation_logs_its_start_each_trial_and_its_end(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="steve1_env"):
        evaluate("quick_harvest", tmp_path / "run", OFFLINE, trials=1, progress=False)
    messages = [record.getMessage() for record in caplog.records]
    assert messages[0].startswith("evaluating builtin:quick_harvest into ")
    assert "3 trials planned, 0 already recorded, 3 to run (executor local)" in messages[0]
    assert "built the policy 'scripted' in " in " | ".join(messages)
    trials = [m for m in messages if m.startswith("trial ")]
    assert len(trials) == 3 and trials[0].startswith("trial logs/0/0: success (success) after")
    assert messages[-1].startswith("evaluation finished: 3 trials run, 0 missing; reports ")
    assert {record.name for record in caplog.records} <= {
        "steve1_env.evaluation.runner",
        "steve1_env.registry",
    }


def test_a_crashed_try_is_logged_as_a_warning_with_its_retry(tmp_path, caplog):
    markers = tmp_path / "markers"
    markers.mkdir()
    crashing = replace(
        OFFLINE,
        world="tests.fakes.crashing_worlds:SocketErrorWorld",
        world_kwargs={"pov_shape": (48, 64), "marker_dir": str(markers), "after": 5},
    )
    with caplog.at_level(logging.WARNING, logger="steve1_env"):
        evaluate("quick_harvest", tmp_path / "run", crashing, trials=1, tasks=["dirt"],
                 progress=False)  # fmt: skip
    retried = [r for r in caplog.records if "running it again" in r.getMessage()]
    assert len(retried) == 1 and retried[0].levelno == logging.WARNING
    assert "trial dirt/0/0: the world crashed (SocketException)" in retried[0].getMessage()


@pytest.mark.parametrize(
    ("flags", "shown", "hidden"),
    [
        ([], (), ("INFO", "DEBUG")),
        (["-v"], ("INFO steve1_env.evaluation.runner: evaluating",), ("DEBUG",)),
        (["-vv"], ("INFO", "DEBUG steve1_env.registry: building the policy"), ()),
        (["--log-level", "debug"], ("INFO", "DEBUG"), ()),
        (["--log-level", "WARNING"], (), ("INFO", "DEBUG")),
    ],
)
def test_the_cli_shows_log_records_only_when_asked(tmp_path, capsys, flags, shown, hidden):
    # After the command (`eval -v`) and before it (`-v eval`) alike.
    for where, argv in enumerate(([*EVAL_ARGS, *flags], [*flags, *EVAL_ARGS])):
        assert main([*argv, "--out", str(tmp_path / f"run{where}")]) == 0
        captured = capsys.readouterr()
        assert "steve1_env" not in captured.out  # records go to stderr only
        for text in shown:
            assert text in captured.err
        for text in hidden:
            assert f" {text} steve1_env" not in captured.err
        if not flags:
            assert captured.err == ""
    # The CLI leaves the package logger as it found it.
    package = logging.getLogger("steve1_env")
    assert package.level == logging.NOTSET
    assert [type(h).__name__ for h in package.handlers] == ["NullHandler"]


def test_an_unknown_log_level_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["--log-level", "loud", "demo"])
    assert caught.value.code == 2
    assert "--log-level: invalid choice" in capsys.readouterr().err


# ------------------------------------------------ warnings point at the caller's line
def _here() -> int:
    """The line number of the caller's next line."""
    return inspect.currentframe().f_back.f_lineno + 1


def _located(caught, match):
    (found,) = [w for w in caught if match in str(w.message)]
    assert issubclass(found.category, Steve1EnvWarning)
    return found.filename, found.lineno


RANDOM_ENCODER = {"prompt_encoder": "steve1", "prompt_encoder_kwargs": {"weights": "random"}}


def test_a_component_warning_points_at_the_gym_make_line():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        line = _here()
        env = gym.make(
            "Steve1Skill-v0", policy="scripted", instruction="get dirt", **RANDOM_ENCODER
        )
    env.close()
    assert _located(caught, "RANDOM, UNTRAINED weights") == (__file__, line)


def test_a_component_warning_points_at_the_env_constructor_line():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        line = _here()
        env = Steve1SkillEnv(policy="scripted", instruction="get dirt", **RANDOM_ENCODER)
    env.close()
    assert _located(caught, "RANDOM, UNTRAINED weights") == (__file__, line)


def test_episode_warnings_point_at_the_reset_and_step_lines_through_gymnasium_wrappers():
    env = gym.make("Steve1Skill-v0", policy="scripted", prompt_encoder="hash", k=10,
                   instruction="build a castle", world_kwargs={"pov_shape": (48, 64)})  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reset_line = _here()
        env.reset(seed=0)
        step_line = _here()
        env.step("")
    env.close()
    assert _located(caught, "No success detector is known") == (__file__, reset_line)
    assert _located(caught, "no script for 'build a castle'") == (__file__, step_line)


def test_an_evaluation_warning_points_at_the_evaluate_line(tmp_path):
    out = tmp_path / "run"
    evaluate("quick_harvest", out, OFFLINE, trials=1, tasks=["dirt"], progress=False)
    with open(out / "results.jsonl", "ab") as handle:
        handle.write(b'{"task": "dirt", "instru')  # cut short by a hard kill
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        line = _here()
        evaluate("quick_harvest", out, OFFLINE, trials=1, tasks=["dirt"], resume=True,
                 progress=False)  # fmt: skip
    assert _located(caught, "the last line is incomplete") == (__file__, line)


def test_a_script_sees_its_own_line_in_the_printed_warning(tmp_path):
    script = tmp_path / "user_script.py"
    script.write_text(
        "import gymnasium as gym\n"
        "import steve1_env\n"
        "env = gym.make('Steve1Skill-v0', policy='scripted', prompt_encoder='hash',\n"
        "               instruction='build a castle', world_kwargs={'pov_shape': (48, 64)})\n"
        "env.reset(seed=0)\n"
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True)
    assert f"{script}:5: Steve1EnvWarning: No success detector is known" in out.stderr
