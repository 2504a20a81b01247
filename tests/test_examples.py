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

EXAMPLES = {p.name: p for p in (pathlib.Path(__file__).parents[1] / "examples").glob("*.py")}


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
def test_sb3_controller_trains_and_reports_both_means():
    out = run("sb3_skill_controller.py", "--timesteps", "256", "--episodes", "4")
    random = re.search(r"random chooser\s+mean return\s+(-?[\d.]+)", out)
    trained = re.search(r"trained PPO\s+mean return\s+(-?[\d.]+)", out)
    assert random and trained and "margin over the random chooser" in out


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
        payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": reply}}]})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(payload.encode())

    def log_message(self, *args):
        pass


def test_llm_planner_talks_to_an_openai_compatible_server_on_loopback():
    _ChatServer.replies = ["get dirt", "'chop a tree'.", "", "collect seeds", "DONE"]
    _ChatServer.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ChatServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        env = dict(os.environ, STEVE1_PLANNER_BASE_URL=f"http://127.0.0.1:{server.server_port}/v1",
                   STEVE1_PLANNER_MODEL="test-model", STEVE1_PLANNER_API_KEY="secret")  # fmt: skip
        out = run("llm_planner.py", env=env)
    finally:
        server.shutdown()
    assert "planner: ChatPlanner" in out and "goal met" in out
    # The server's instructions were carried out, quotes stripped; an empty reply fell back.
    assert "round 1: 'get dirt' -> success" in out
    assert "round 2: 'chop a tree' -> success" in out
    assert "unusable reply ''" in out and "round 3: 'collect seeds'" in out
    path, auth, body = _ChatServer.requests[0]
    assert path == "/v1/chat/completions" and auth == "Bearer secret"
    assert body["model"] == "test-model"
    assert "Still missing: logs, dirt, seeds." in body["messages"][1]["content"]
    # Feedback: the second request reports what the first instruction achieved.
    assert (
        "Last instruction: 'get dirt' succeeded"
        in _ChatServer.requests[1][2]["messages"][1]["content"]
    )
