import pathlib
import re
import subprocess
import sys

import pytest

EXAMPLES = sorted((pathlib.Path(__file__).parents[1] / "examples").glob("*.py"))


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs(script):
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip()


def test_quickstart_chops_twice():
    script = pathlib.Path(__file__).parents[1] / "examples" / "quickstart.py"
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True)
    first, second = out.stdout.splitlines()[:2]
    assert first.startswith("'chop a tree'") and "success" in first
    # The second request after a success is a new attempt: it must gain another log.
    assert second.startswith("'chop a tree'") and "success" in second
    logs = re.findall(r"'(?:oak|birch)_log': (\d+)", second)
    assert sum(map(int, logs)) == 2
