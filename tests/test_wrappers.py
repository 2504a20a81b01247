import gymnasium as gym
import numpy as np
import pytest

import steve1_env  # noqa: F401  (registers the env ids)
from steve1_env.errors import ConfigurationError
from steve1_env.wrappers import SemiMDPDiscount, semi_mdp_return, step_discount


def test_the_discount_follows_the_low_level_steps_of_each_skill_step():
    env = SemiMDPDiscount(
        gym.make("Steve1SkillLibrary-v0", policy="scripted", prompt_encoder="hash", k=100,
                 world_kwargs={"pov_shape": (48, 64)}),
        gamma=0.99,
    )  # fmt: skip
    env.reset(seed=0)
    _, _, _, _, info = env.step(4)  # chop the tree: succeeds in a few dozen ticks
    assert 0 < info["steps"] < 100
    assert info["discount"] == pytest.approx(0.99 ** info["steps"])
    env.close()


def test_semi_mdp_return_discounts_by_the_ticks_before_each_reward():
    infos = [{"steps": 10}, {"steps": 30}, {"steps": 5}]
    assert semi_mdp_return([1.0, 1.0, 2.0], infos, 0.9) == pytest.approx(
        1.0 + 0.9**10 + 2.0 * 0.9**40
    )
    assert step_discount(3, 0.5) == 0.125
    assert step_discount(np.int64(3), np.float32(0.5)) == 0.125  # a vector env's numbers
    with pytest.raises(ConfigurationError, match="one entry per step"):
        semi_mdp_return([1.0], infos, 0.9)
    with pytest.raises(ConfigurationError, match=r"gamma must be a number in \(0, 1\]"):
        step_discount(1, 1.5)
    with pytest.raises(ConfigurationError, match="steps must be an integer"):
        step_discount(-1, 0.9)


def test_envs_without_steps_in_info_are_refused():
    class Plain(gym.Env):
        observation_space = gym.spaces.Discrete(1)
        action_space = gym.spaces.Discrete(1)

        def reset(self, *, seed=None, options=None):
            return 0, {}

        def step(self, action):
            return 0, 0.0, False, False, {}

    env = SemiMDPDiscount(Plain())
    env.reset()
    with pytest.raises(ConfigurationError, match=r"needs info\['steps'\]"):
        env.step(0)
