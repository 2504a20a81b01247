"""MineRLWorld against a fake MineRL env that honours the real one's quirks."""

import os
import time

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import steve1_env  # noqa: F401
from steve1_env.env import Steve1SkillEnv
from steve1_env.errors import (
    ClosedError,
    ConfigurationError,
    DependencyNotInstalledError,
    ResetNeededError,
    WorldCrashError,
)
from steve1_env.worlds.actions import ACTION_KEYS, noop_action
from steve1_env.worlds.minerl import MineRLWorld, make_minerl_env
from steve1_env.worlds.processes import child_processes
from tests.fakes.minerl_env import FakeMineRLFactory, fake_minerl_env


def running(pid):
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def make_env(factory, **kwargs):
    world = MineRLWorld(env_factory=factory, **kwargs.pop("world_kwargs", {}))
    return Steve1SkillEnv(world=world, policy="random", prompt_encoder="hash", **kwargs), world


def test_the_seed_is_set_before_every_reset():
    factory = FakeMineRLFactory()
    world = MineRLWorld(env_factory=factory)
    world.reset(seed=5)
    world.reset(seed=5)
    world.reset(seed=None)
    assert factory.built[0].seeds_at_reset == [5, 5, None]
    world.close()


def test_actions_are_completed_to_24_keys():
    factory = FakeMineRLFactory()
    world = MineRLWorld(env_factory=factory)
    world.reset(seed=1)
    result = world.step({"forward": 1})
    sent = factory.built[0].actions[0]
    assert set(sent) == set(ACTION_KEYS) and sent["ESC"] == 0 and sent["forward"] == 1
    assert result.obs["pov"].dtype == np.uint8 and isinstance(result.obs["inventory"]["dirt"], int)
    world.close()


@pytest.mark.parametrize("failure", ["socket", "raise"])
def test_crash_kills_java_restarts_and_never_passes_the_bogus_observation(failure):
    factory = FakeMineRLFactory(failures=[failure])
    env, world = make_env(factory, instruction="go explore", k=10)
    with env:
        env.reset(seed=0)
        java = factory.built[0].process.pid
        obs, _, terminated, truncated, info = env.step("")
        assert info["reason"] == "crash" and truncated and not terminated
        assert info["steps"] == 2 and obs["inventory"].max() < 99  # the random filler is dropped
        assert not running(java)  # Minecraft's process tree was killed
        env.reset(seed=1)  # a new world
        assert len(factory.built) == 2 and world.crashes == 1
        assert env.step("")[-1]["reason"] == "budget"
    world.close()  # passed in as an instance, so the env left it open
    assert not running(factory.built[1].process.pid)


@pytest.mark.parametrize(
    ("failure", "match"),
    [("socket", "MineRL reported a crash: java.net.SocketException"), ("raise", "MineRL failed: ")],
)
def test_a_crash_is_raised_at_the_world_boundary_not_reported_in_info(failure, match):
    factory = FakeMineRLFactory(failures=[failure])
    world = MineRLWorld(env_factory=factory)
    try:
        world.reset(seed=0)
        java = factory.built[0].process.pid
        for _ in range(factory.built[0].fail_at_step - 1):
            world.step(noop_action())
        with pytest.raises(WorldCrashError, match=match):
            world.step(noop_action())
        assert world.crashes == 1 and not running(java)
        with pytest.raises(ResetNeededError):  # the world is gone until the next reset
            world.step(noop_action())
        world.reset(seed=1)
        assert len(factory.built) == 2
    finally:
        world.close()


def test_a_hung_minecraft_is_a_crash_after_the_timeout():
    factory = FakeMineRLFactory(failures=["hang"])
    env, world = make_env(factory, instruction="go explore", k=10,
                          world_kwargs={"step_timeout": 0.5})  # fmt: skip
    with env:
        env.reset(seed=0)
        java = factory.built[0].process.pid
        start = time.monotonic()
        info = env.step("")[-1]
        assert info["reason"] == "crash" and "did not answer" in info["error"]
        assert time.monotonic() - start < 5 and not running(java)
    world.close()


def test_restart_every_n_episodes():
    factory = FakeMineRLFactory()
    world = MineRLWorld(env_factory=factory, restart_every=2)
    for seed in range(5):
        world.reset(seed=seed)
    assert len(factory.built) == 3
    assert all(env.closed for env in factory.built[:2])
    world.close()


def test_close_leaves_no_child_process_and_is_idempotent():
    before = child_processes()
    factory = FakeMineRLFactory()
    world = MineRLWorld(env_factory=factory)
    world.reset(seed=0)
    assert child_processes() - before
    world.close()
    world.close()
    deadline = time.monotonic() + 5
    while child_processes() - before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not child_processes() - before
    with pytest.raises(ClosedError, match="MineRLWorld was closed"):
        world.reset(seed=0)


def test_step_rules():
    world = MineRLWorld(env_factory=FakeMineRLFactory())
    with pytest.raises(ResetNeededError):
        world.step(noop_action())
    with pytest.raises(ConfigurationError, match="env_id"):
        MineRLWorld(env_id="")
    world.close()


def test_check_env_on_steve1skill_built_on_a_minerl_world():
    env = gym.make("Steve1Skill-v0", world="minerl", policy="random", prompt_encoder="hash",
                   world_kwargs={"env_factory": fake_minerl_env}, instruction="chop a tree",
                   k=3, render_mode="rgb_array")  # fmt: skip
    before = child_processes()
    check_env(env.unwrapped)
    env.close()  # built by name: the env closes the world and its Java stand-in
    assert not child_processes() - before


def test_missing_minerl_says_how_to_install_it():
    with pytest.raises(DependencyNotInstalledError, match=r"Java 8.*minerllabs/minerl@v1\.0\.2"):
        make_minerl_env()


def test_no_stray_processes_are_left_by_this_module():
    assert os.getpid() not in child_processes()


def test_unrelated_children_started_during_a_reset_survive():
    import subprocess
    import sys

    from tests.fakes.minerl_env import FakeMineRLEnv

    class SlowFake(FakeMineRLEnv):
        def reset(self):
            self.other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
            return super().reset()

    env = SlowFake()
    world = MineRLWorld(env_factory=lambda env_id, **kw: env)
    world.reset(seed=0)
    world.close()
    assert env.other.poll() is None  # not ours to kill
    assert not running(env.process.pid)
    env.other.kill()
    assert env.other.wait() == -9  # and its exit status still belongs to its owner


def test_a_slow_first_reset_is_not_a_hang():
    from tests.fakes.minerl_env import FakeMineRLEnv

    class SlowStart(FakeMineRLEnv):
        def reset(self):
            time.sleep(0.6)  # Minecraft launching
            return super().reset()

    world = MineRLWorld(env_factory=lambda env_id, **kw: SlowStart(), step_timeout=0.3)
    assert world.reset(seed=0)["pov"].shape == (360, 640, 3)
    world.close()


def test_isguiopen_comes_from_minerls_monitors_and_no_in_water_flag_is_invented():
    world = MineRLWorld(env_factory=fake_minerl_env)
    obs = world.reset(seed=0)
    assert "isGuiOpen" not in obs  # a reset reports no monitors
    assert "is_in_water" not in obs["location_stats"]
    assert set(obs["equipped_items"]) == {"mainhand", "offhand", "head", "chest", "legs", "feet"}
    result = world.step(noop_action())
    assert result.obs["isGuiOpen"] is False and result.info["isGuiOpen"] is False
    world.close()
