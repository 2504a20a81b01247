import shutil
import subprocess

import pytest

from steve1_env.cli import main


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
