"""MineStudioWorld against a fake MinecraftSim that honours the real one's quirks."""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import steve1_env  # noqa: F401
from steve1_env.errors import DependencyNotInstalledError, ResetNeededError
from steve1_env.worlds.minestudio import MineStudioWorld, make_minecraft_sim
from tests.fakes.minestudio_sim import FakeMinecraftSim, fake_sim


def test_seeds_build_simulators_and_same_seed_reuses_one():
    FakeMinecraftSim.instances.clear()
    world = MineStudioWorld(sim_factory=fake_sim)
    a = world.reset(seed=3)
    b = world.reset(seed=3)
    world.reset(seed=4)
    sims = FakeMinecraftSim.instances
    assert [s.seed for s in sims] == [3, 4] and sims[0].resets == 2 and sims[0].closed
    assert np.array_equal(a["pov"], b["pov"]) and a["pov"].shape == (360, 640, 3)
    world.close()
    world.close()
    assert sims[1].closed


def test_actions_are_copied_before_the_simulator_mutates_them():
    world = MineStudioWorld(sim_factory=fake_sim)
    world.reset(seed=0)
    action = {"forward": 1, "camera": np.array([5.0, -3.0])}
    world.step(action)
    assert action["camera"].tolist() == [5.0, -3.0] and "forward" in action
    world.close()


def test_terminated_or_truncated_ends_the_world_episode():
    world = MineStudioWorld(sim_factory=fake_sim, max_steps=2)
    world.reset(seed=0)
    assert [world.step({}).done for _ in range(2)] == [False, True]
    with pytest.raises(ResetNeededError):
        world.step({})
    world.close()


def test_simulator_exceptions_are_crashes():
    class Exploding(FakeMinecraftSim):
        def step(self, action):
            raise ConnectionError("engine died")

    from steve1_env.errors import WorldCrashError

    world = MineStudioWorld(sim_factory=lambda seed, **kw: Exploding(seed=seed, **kw))
    world.reset(seed=0)
    # One crash channel: raised at the world boundary, not reported in info["error"].
    with pytest.raises(WorldCrashError, match="ConnectionError: engine died"):
        world.step({})
    with pytest.raises(ResetNeededError):  # the simulator is gone until the next reset
        world.step({})
    world.reset(seed=0)
    world.close()


def test_check_env_on_steve1skill_built_on_a_minestudio_world():
    env = gym.make("Steve1Skill-v0", world="minestudio", policy="random", prompt_encoder="hash",
                   world_kwargs={"sim_factory": fake_sim}, instruction="chop a tree", k=3,
                   render_mode="rgb_array")  # fmt: skip
    check_env(env.unwrapped)
    env.close()


def test_missing_minestudio_says_how_to_install_it():
    with pytest.raises(DependencyNotInstalledError, match=r"steve1-env\[minestudio\]"):
        make_minecraft_sim(seed=0)


def test_reset_failures_are_crashes_and_unseeded_resets_keep_the_world():
    from steve1_env.errors import WorldCrashError

    class Broken(FakeMinecraftSim):
        def reset(self):
            raise RuntimeError("engine missing")

    world = MineStudioWorld(sim_factory=lambda seed, **kw: Broken(seed=seed, **kw))
    with pytest.raises(WorldCrashError, match="engine missing"):
        world.reset(seed=1)
    FakeMinecraftSim.instances.clear()
    world = MineStudioWorld(sim_factory=fake_sim)
    world.reset()
    world.reset()
    assert len(FakeMinecraftSim.instances) == 1 and FakeMinecraftSim.instances[0].resets == 2
    world.close()


def test_minestudio_names_are_put_where_minerl_has_them_and_nothing_is_invented():
    from steve1_env.worlds.minestudio import minestudio_observation

    frame = np.zeros((4, 4, 3), dtype=np.uint8)
    info = {
        "player_pos": {"x": 1.5, "y": 64.0, "z": -2.0, "pitch": 10.0, "yaw": 90.0},
        "health": 17.0, "food_level": 12, "is_gui_open": True, "inventory": {"dirt": 2},
        "location_stats": {"biome_id": 4, "can_see_sky": False}, "custom": {"jump": 3},
    }  # fmt: skip
    obs = minestudio_observation({"image": frame}, info)
    assert obs["location_stats"] == {
        "biome_id": 4, "can_see_sky": False, "xpos": 1.5, "ypos": 64.0, "zpos": -2.0,
        "pitch": 10.0, "yaw": 90.0,
    }  # fmt: skip
    assert obs["life_stats"] == {"life": 17.0, "food": 12}  # no air, no saturation
    assert obs["isGuiOpen"] is True and obs["inventory"] == {"dirt": 2} and "custom" not in obs
    bare = minestudio_observation({"image": frame}, {})
    assert set(bare) == {"pov"}  # no statistics: none invented


def test_the_fake_simulator_speaks_minestudios_info_format():
    sim = FakeMinecraftSim(seed=0)
    obs, info = sim.reset()
    assert set(obs) == {"image"}
    assert "life_stats" not in info and "isGuiOpen" not in info and "drop" not in info
    assert {"player_pos", "health", "food_level", "is_gui_open", "location_stats"} <= set(info)
    assert "is_in_water" not in info["location_stats"]
