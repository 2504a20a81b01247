"""A fake MineRL 1.0 env with the quirks the real one has (upstream-facts section 5).

- old gym API: ``reset() -> obs``, ``step(a) -> (obs, reward, done, info)``, ``seed(s)``;
- the seed must be set before every reset (reset clears it);
- the first reset launches a real child process standing in for Minecraft's Java;
- all 24 action keys are required; values arrive as numpy arrays;
- on a socket failure: a random observation, ``done=True`` and ``info["error"]``;
- stepping after done raises; a hang never returns;
- the observation holds what MineRL 1.0's ``HumanSurvival`` observes (its observables:
  ``location_stats`` without an in-water flag, ``life_stats``, ``equipped_items`` for both
  hands and the armour slots, the counters); ``isGuiOpen`` and a copy of ``location_stats``
  are monitors, in the step's ``info``, not in the observation.
"""

from __future__ import annotations

import subprocess
import sys
import threading

import numpy as np

from steve1_env.worlds.actions import ACTION_KEYS
from steve1_env.worlds.synthetic import SyntheticWorld

JAVA_STANDIN = [sys.executable, "-c", "import time; time.sleep(600)", "minecraft-java-standin"]


_EMPTY_SLOT = {"type": "air", "damage": 0, "maxDamage": 0}
_SLOTS = ("mainhand", "offhand", "head", "chest", "legs", "feet")


def _as_minerl(value):
    if isinstance(value, dict):
        return {key: _as_minerl(item) for key, item in value.items()}
    if isinstance(value, bool | int | float):
        return np.array(value)
    return value


def _upstream(obs):
    """The synthetic world's observation in MineRL 1.0's format, and MineRL's monitors."""
    obs = dict(obs)
    gui_open = obs.pop("isGuiOpen")
    location = {k: v for k, v in obs["location_stats"].items() if k != "is_in_water"}
    location.update(is_raining=0, sun_brightness=1.0, sky_light_level=1.0)
    obs["location_stats"] = location
    hands = obs["equipped_items"]
    obs["equipped_items"] = {slot: dict(hands.get(slot, _EMPTY_SLOT)) for slot in _SLOTS}
    obs.update(damage_dealt={}, entity_killed_by={})
    return _as_minerl(obs), {"isGuiOpen": gui_open, "location_stats": _as_minerl(location)}


class FakeMineRLEnv:
    def __init__(self, failure=None, fail_at_step=3, leak_process_on_close=False):
        self.failure = failure  # None, "socket", "raise", "hang"
        self.fail_at_step = fail_at_step
        self.leak_process_on_close = leak_process_on_close
        self.process = None
        self.seed_value = None
        self.seeds_at_reset = []
        self.actions = []
        self.done = True
        self.steps = 0
        self.closed = False
        self.world = SyntheticWorld(pov_shape=(360, 640))

    def seed(self, seed):
        self.seed_value = seed

    def reset(self):
        if self.process is None:
            self.process = subprocess.Popen(JAVA_STANDIN)
        self.seeds_at_reset.append(self.seed_value)
        seed, self.seed_value = self.seed_value, None  # reset clears the seed
        self.done, self.steps = False, 0
        return _upstream(self.world.reset(seed))[0]  # a reset reports no monitors

    def step(self, action):
        if self.done:
            raise RuntimeError("MineRL: step() called after the episode ended")
        missing = set(ACTION_KEYS) - set(action)
        if missing:
            raise KeyError(f"MineRL action is missing {sorted(missing)}")
        self.actions.append(action)
        self.steps += 1
        if self.failure and self.steps >= self.fail_at_step:
            if self.failure == "raise":
                raise ConnectionResetError("Minecraft socket closed")
            if self.failure == "hang":
                threading.Event().wait()  # never returns
            self.done = True
            rng = np.random.default_rng()
            bogus = _upstream(SyntheticWorld(pov_shape=(360, 640)).reset(int(rng.integers(1000))))[
                0
            ]
            bogus["inventory"] = {k: np.array(99) for k in bogus["inventory"]}
            return bogus, 0.0, True, {"error": "java.net.SocketException: Connection reset"}
        obs, monitors = _upstream(self.world.step(action).obs)
        return obs, 0.0, False, monitors

    def close(self):
        self.closed = True
        if self.process is not None and not self.leak_process_on_close:
            self.process.kill()
            self.process.wait()


class FakeMineRLFactory:
    """Builds fake envs like `make_minerl_env` would; scripts failures per env built."""

    def __init__(self, failures=()):
        self.failures = list(failures)
        self.built = []

    def __call__(self, env_id, **kwargs):
        failure = self.failures.pop(0) if self.failures else None
        env = FakeMineRLEnv(failure=failure, leak_process_on_close=failure is not None)
        self.built.append(env)
        return env


def fake_minerl_env(env_id, **kwargs):
    """A stateless factory (gymnasium deep-copies env kwargs, so no factory object)."""
    return FakeMineRLEnv()
