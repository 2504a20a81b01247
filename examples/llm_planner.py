"""A planner loop: a language model (or rules) picks instructions, STEVE-1 carries them out.

The planner is any function ``plan(observation_text) -> instruction``. Each round, the loop
describes the state in text (the goal, then `steve1_env.planning.planner_text`: where the
player is, its health, what it holds, the inventory, what the last instruction achieved),
asks the planner for the next instruction, and pursues it on the env's text face for one
high-level step, feeding success and inventory back into the next description. ``DONE`` ends
the plan.

Planners:
- the default, `rule_based_plan`, runs offline: it asks for whatever the goal still lacks;
- with ``STEVE1_PLANNER_BASE_URL`` set (an OpenAI-compatible server, e.g.
  ``http://localhost:8000/v1``), `ChatPlanner` asks that server's ``/chat/completions``, with
  ``STEVE1_PLANNER_MODEL`` (default ``gpt-4o-mini``) and ``STEVE1_PLANNER_API_KEY`` (or
  ``OPENAI_API_KEY``), waiting ``STEVE1_PLANNER_TIMEOUT`` seconds (default 30). A failed
  request or a reply that is not a short instruction falls back to the rules for that round.

Run: python examples/llm_planner.py [--rounds 8] [--seed 0]
"""

from __future__ import annotations

import argparse
import fnmatch
import http.client
import json
import os
import urllib.error
import urllib.request
from collections.abc import Callable

import gymnasium as gym

import steve1_env  # noqa: F401  (registers the env ids)
from steve1_env.errors import InvalidInstructionError
from steve1_env.instructions import validate_instruction
from steve1_env.planning import planner_text

GOAL = {"logs": ("*_log", "chop a tree"), "dirt": ("dirt", "get dirt"),
        "seeds": ("*seed*", "collect seeds")}  # fmt: skip
DONE = "DONE"
SYSTEM_PROMPT = (
    "You control a Minecraft agent that follows short English instructions such as 'chop a "
    "tree', 'get dirt', 'collect seeds', 'look at the sky' or 'go explore'. Given the state, "
    f"answer with the single next instruction only, or {DONE} when the goal is met."
)

Planner = Callable[[str], str]


def missing(inventory: dict[str, int]) -> list[str]:
    """Returns the goal items the inventory lacks."""
    return [
        name
        for name, (pattern, _) in GOAL.items()
        if not any(n > 0 and fnmatch.fnmatchcase(item, pattern) for item, n in inventory.items())
    ]


def describe(info: dict) -> str:
    """The state as the planner reads it: the goal, the env's state text, what is missing."""
    return "\n".join([
        "Goal: have at least one log, one dirt and one seed item.",
        planner_text(info),
        f"Still missing: {', '.join(missing(info['inventory'])) or 'nothing'}.",
    ])  # fmt: skip


def rule_based_plan(observation_text: str) -> str:
    """Offline planner: asks for the first goal item the text says is missing."""
    for line in observation_text.splitlines():
        if line.startswith("Still missing:"):
            wanted = [w.strip(" .") for w in line.split(":", 1)[1].split(",")]
            for name in wanted:
                if name in GOAL:
                    return GOAL[name][1]
    return DONE


class ChatPlanner:
    """Asks an OpenAI-compatible chat-completions server for the next instruction.

    Args:
        base_url: Server root including the version, e.g. ``http://localhost:8000/v1``.
        model: Model name sent with each request.
        api_key: Bearer token, if the server needs one.
        fallback: Planner used when the server fails or answers something unusable.
        timeout: Seconds to wait for an answer.
    """

    def __init__(
        self,
        base_url: str,
        model: str = "gpt-4o-mini",
        api_key: str | None = None,
        fallback: Planner = rule_based_plan,
        timeout: float = 30.0,
    ) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.api_key, self.fallback, self.timeout = model, api_key, fallback, timeout

    MAX_WORDS = 12  # longer replies are chat, not an instruction

    def __call__(self, observation_text: str) -> str:
        body = json.dumps({
            "model": self.model,
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": observation_text},
            ],
            "temperature": 0,
        }).encode()  # fmt: skip
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, body, headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                reply = json.load(response)["choices"][0]["message"]["content"]
            if not isinstance(reply, str):  # null (a refusal or tool call), parts, numbers
                raise TypeError(f"the reply's content is {type(reply).__name__}, not text")
        except (
            OSError,  # connection errors, timeouts, HTTP errors (urllib's are OSErrors)
            http.client.HTTPException,  # malformed or cut-off HTTP responses
            ValueError,  # not JSON
            KeyError,
            IndexError,
            TypeError,
        ) as exc:
            print(f"  planner: the server failed ({type(exc).__name__}: {exc}); using the rules")
            return self.fallback(observation_text)
        return self._instruction(reply, observation_text)

    def _instruction(self, reply: str, observation_text: str) -> str:
        lines = reply.strip().splitlines()
        text = lines[0] if lines else ""
        # "Next instruction: chop a tree" -> "chop a tree"
        text = text.rsplit(":", 1)[-1].strip(" \"'.`")
        if text.upper() == DONE:
            return DONE
        try:
            instruction = validate_instruction(text)
            if len(instruction.split()) > self.MAX_WORDS:
                raise InvalidInstructionError(f"more than {self.MAX_WORDS} words")
        except InvalidInstructionError as exc:
            print(f"  planner: unusable reply {reply!r} ({exc}); using the rules this round")
            return self.fallback(observation_text)
        return instruction


def planner_from_environment() -> Planner:
    """`ChatPlanner` when ``STEVE1_PLANNER_BASE_URL`` is set, else the rules."""
    base_url = os.environ.get("STEVE1_PLANNER_BASE_URL")
    if not base_url:
        return rule_based_plan
    return ChatPlanner(
        base_url,
        model=os.environ.get("STEVE1_PLANNER_MODEL", "gpt-4o-mini"),
        api_key=os.environ.get("STEVE1_PLANNER_API_KEY") or os.environ.get("OPENAI_API_KEY"),
        timeout=float(os.environ.get("STEVE1_PLANNER_TIMEOUT", "30")),
    )


def run(plan: Planner, rounds: int, seed: int) -> bool:
    """Runs the planner loop; returns True if the goal was met."""
    inventory: dict[str, int] = {}  # a new world starts with nothing
    first = describe({"inventory": inventory})  # before the world exists, nothing else is known
    instruction = plan(first)
    if instruction == DONE:  # nothing is held yet, so the goal cannot be met
        print(f"  planner: said {DONE} before anything was done; using the rules")
        instruction = rule_based_plan(first)
    with gym.make(
        "Steve1Skill-v0",
        policy="scripted",  # offline; policy="steve1" for the real agent
        prompt_encoder="hash",
        k=300,
    ) as env:
        env.reset(seed=seed, options={"instruction": instruction})
        for round_number in range(1, rounds + 1):
            _, _, terminated, truncated, info = env.step(instruction)
            inventory = info["inventory"]
            outcome = "success" if info["is_success"] else info["reason"]
            print(f"round {round_number}: {instruction!r} -> {outcome} in {info['steps']} ticks")
            if terminated or truncated:
                print("the episode ended")
                break
            instruction = plan(describe(info))
            if instruction == DONE and missing(inventory):
                # The inventory is the judge: a planner that stops early is overruled.
                print(f"  planner: said {DONE} but {', '.join(missing(inventory))} still missing")
                instruction = rule_based_plan(describe(info))
            if instruction == DONE:
                print("the planner says the goal is met")
                break
    met = not missing(inventory)
    print(f"goal {'met' if met else 'not met'}; inventory {inventory}")
    return met


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    plan = planner_from_environment()
    print(f"planner: {type(plan).__name__ if isinstance(plan, ChatPlanner) else 'rules'}")
    raise SystemExit(0 if run(plan, args.rounds, args.seed) else 1)


if __name__ == "__main__":
    main()
