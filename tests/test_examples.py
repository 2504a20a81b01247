import json
import os
import pathlib
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

ROOT = pathlib.Path(__file__).parents[1]
EXAMPLES = {p.name: p for p in (ROOT / "examples").glob("*.py")}


def run(name, *args, env=None, code=0):
    out = subprocess.run(
        [sys.executable, str(EXAMPLES[name]), *args],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert out.returncode == code, out.stderr
    return out.stdout


def test_quickstart_chops_twice():
    first, second = run("quickstart.py").splitlines()[:2]
    assert first.startswith("'chop a tree'") and "success" in first
    # The second request after a success is a new attempt: it must gain another log.
    assert second.startswith("'chop a tree'") and "success" in second
    logs = re.findall(r"'(?:oak|birch)_log': (\d+)", second)
    assert sum(map(int, logs)) == 2


def test_every_example_is_run_by_a_test():
    tested = set(re.findall(r'run\("([a-z_0-9]+\.py)"', pathlib.Path(__file__).read_text()))
    assert tested == set(EXAMPLES)


@pytest.mark.slow
def test_sb3_controller_beats_the_random_chooser():
    out = run("sb3_skill_controller.py", "--timesteps", "1000", "--episodes", "10")
    random = float(re.search(r"random chooser\s+mean return\s+(-?[\d.]+)", out).group(1))
    trained = float(re.search(r"trained PPO\s+mean return\s+(-?[\d.]+)", out).group(1))
    assert trained > random + 0.5, out


@pytest.mark.slow
def test_sb3_controller_trains_and_reports_both_means():
    out = run("sb3_skill_controller.py", "--timesteps", "256", "--episodes", "4")
    random = re.search(r"random chooser\s+mean return\s+(-?[\d.]+)", out)
    trained = re.search(r"trained PPO\s+mean return\s+(-?[\d.]+)", out)
    assert random and trained and "margin over the random chooser" in out


@pytest.mark.slow
def test_sb3_controller_trains_on_four_envs_through_the_vec_env_adapter():
    out = run("sb3_skill_controller.py", "--timesteps", "256", "--episodes", "4", "--envs", "4")
    assert "PPO trained for 256 skill calls on 4 envs" in out
    trained = float(re.search(r"trained PPO\s+mean return\s+(-?[\d.]+)", out).group(1))
    assert trained > 2.0, out  # the goal met in about three skill calls


def test_evaluate_prints_success_rates():
    out = run("evaluate.py", "--trials", "2", "--max-steps", "500")
    rows = [line for line in out.splitlines() if re.match(r"(logs|dirt|seeds) ", line)]
    assert len(rows) == 3 and all("2/2" in row and "100%" in row for row in rows)


def test_llm_planner_with_rules_meets_the_goal():
    out = run("llm_planner.py")
    assert "planner: rules" in out and "goal met" in out
    assert "'chop a tree' -> success" in out and "planner says the goal is met" in out


class _ChatServer(BaseHTTPRequestHandler):
    """An OpenAI-compatible /v1/chat/completions that plays back scripted replies."""

    replies: ClassVar[list] = []
    requests: ClassVar[list] = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append((self.path, self.headers.get("Authorization"), body))
        reply = type(self).replies.pop(0) if type(self).replies else "DONE"
        status, payload = 200, None
        if reply == "<500>":
            status, payload = 500, b'{"error": "overloaded"}'
        elif reply == "<html>":
            payload = b"<html>not json</html>"
        elif reply == "<null>":
            reply = None
        if payload is None:
            message = {"role": "assistant", "content": reply}
            payload = json.dumps({"choices": [{"message": message}]}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


def _run_planner_against(handler):
    handler.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = dict(
        os.environ,
        STEVE1_PLANNER_BASE_URL=f"http://127.0.0.1:{server.server_port}/v1",
        STEVE1_PLANNER_MODEL="test-model",
        STEVE1_PLANNER_API_KEY="secret",
        STEVE1_PLANNER_TIMEOUT="10",
    )
    try:
        return run("llm_planner.py", env=env)
    finally:
        server.shutdown()


def test_llm_planner_talks_to_an_openai_compatible_server_on_loopback():
    _ChatServer.replies = ["get dirt", "'chop a tree'.", "", "collect seeds", "DONE"]
    out = _run_planner_against(_ChatServer)
    assert "planner: ChatPlanner" in out and "goal met" in out
    # The server's instructions were carried out, quotes stripped; an empty reply fell back.
    assert "round 1: 'get dirt' -> success" in out
    assert "round 2: 'chop a tree' -> success" in out
    assert "unusable reply ''" in out and "round 3: 'collect seeds'" in out
    path, auth, body = _ChatServer.requests[0]
    assert path == "/v1/chat/completions" and auth == "Bearer secret"
    assert body["model"] == "test-model"
    first = body["messages"][1]["content"]
    assert "Still missing: logs, dirt, seeds." in first
    assert "Position: unknown.\nInventory: empty.\nNo instruction yet." in first  # no world yet
    # Feedback: the second request reports what the first instruction achieved, in the text
    # of steve1_env.planning: where the player is, its health, hand, inventory and gains.
    second = _ChatServer.requests[1][2]["messages"][1]["content"]
    assert "Last instruction: 'get dirt' succeeded after " in second
    assert "this attempt gained dirt +1" in second and "Inventory: dirt=1." in second
    assert "Position: x=" in second and "Health 20.0/20, food 20/20" in second
    assert "Holding: nothing." in second and "Still missing: logs, seeds." in second


def test_llm_planner_survives_a_misbehaving_server():
    _ChatServer.replies = [
        "DONE",  # too early: overruled, the rules ask for logs
        "<500>",  # the rules ask for dirt
        "Sure! The next instruction should be: collect seeds",
        "<null>",  # goal met: the rules say DONE
    ]
    out = _run_planner_against(_ChatServer)
    assert "said DONE before anything was done" in out
    assert "round 1: 'chop a tree'" in out and "round 2: 'get dirt'" in out
    assert "round 3: 'collect seeds' -> success" in out  # taken from after the colon
    assert "HTTPError" in out and "not text" in out and "goal met" in out
    _ChatServer.replies = ["<html>", "DONE"]
    out = _run_planner_against(_ChatServer)
    assert "JSONDecodeError" in out and "round 1: 'chop a tree'" in out


EXCERPT = re.compile(r'```python title="(examples/[\w.]+)"\n(.*?)```', re.S)


def excerpts():
    page = (ROOT / "docs" / "examples.md").read_text(encoding="utf-8")
    return [(path, body) for path, body in EXCERPT.findall(page)]


def found_at(fragment: list[str], lines: list[str], start: int) -> int | None:
    """Where `fragment` (dedented) occurs as consecutive lines of one indent, from `start`."""
    for i in range(start, len(lines) - len(fragment) + 1):
        indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
        if all(lines[i + j] == (indent + f if f else "") for j, f in enumerate(fragment)):
            return i + len(fragment)
    return None


def test_the_examples_page_shows_every_example_with_excerpts_equal_to_it():
    shown = {path for path, _ in excerpts()}
    assert shown == {f"examples/{p.name}" for p in (ROOT / "examples").glob("*.py")}
    for path, body in excerpts():
        lines = (ROOT / path).read_text(encoding="utf-8").splitlines()
        at = 0
        for fragment in re.split(r"^# \.\.\.\n", body, flags=re.M):
            found = found_at(fragment.splitlines(), lines, at)
            assert found is not None, (
                f"docs/examples.md shows lines {path} no longer has:\n{fragment}"
            )
            at = found


def test_the_excerpt_check_fails_on_a_changed_line():
    lines = ["def main():", "    x = 1", "    y = 2"]
    assert found_at(["x = 1", "y = 2"], lines, 0) == 3
    assert found_at(["x = 1", "y = 3"], lines, 0) is None
    assert found_at(["y = 2", "x = 1"], lines, 0) is None
