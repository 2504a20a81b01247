import pathlib
import re
import subprocess
import sys

EXAMPLES = {p.name: p for p in (pathlib.Path(__file__).parents[1] / "examples").glob("*.py")}


def run(name):
    out = subprocess.run(
        [sys.executable, str(EXAMPLES[name])], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_quickstart_chops_twice():
    first, second = run("quickstart.py").splitlines()[:2]
    assert first.startswith("'chop a tree'") and "success" in first
    # The second request after a success is a new attempt: it must gain another log.
    assert second.startswith("'chop a tree'") and "success" in second
    logs = re.findall(r"'(?:oak|birch)_log': (\d+)", second)
    assert sum(map(int, logs)) == 2
