"""The scripted oracle solves the paper's tasks in the synthetic world; random rarely does."""

import numpy as np
import pytest

from steve1_env.agent.base import Goal, SkillPolicy
from steve1_env.agent.random_policy import RandomPolicy
from steve1_env.agent.scripted import ScriptedPolicy
from steve1_env.env import Steve1SkillEnv
from steve1_env.errors import ConfigurationError
from steve1_env.tasks.prompts import PAPER_PROMPTS

SEEDS = range(12)


def success_rate(instruction, policy, seeds=SEEDS, k=200):
    wins = 0
    for seed in seeds:
        with Steve1SkillEnv(
            policy=policy,
            prompt_encoder="hash",
            instruction=instruction,
            k=k,
            world_kwargs={"pov_shape": (64, 64)},
        ) as env:
            env.reset(seed=seed)
            wins += env.step("")[-1]["is_success"]
    return wins / len(seeds)


@pytest.mark.slow
def test_scripted_policy_chops_a_tree_for_most_seeds():
    assert success_rate("chop a tree", "scripted", seeds=range(30)) >= 0.9


@pytest.mark.slow
def test_random_policy_rarely_chops_a_tree():
    assert success_rate("chop a tree", "random", seeds=range(30)) <= 0.1


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(PAPER_PROMPTS))
def test_scripted_policy_solves_every_paper_task(kind):
    assert success_rate(PAPER_PROMPTS[kind], "scripted") >= 0.75


def test_policies_follow_the_protocol():
    from steve1_env.worlds.synthetic import SyntheticWorld

    world = SyntheticWorld(pov_shape=(32, 32))
    assert isinstance(ScriptedPolicy(world), SkillPolicy)
    assert isinstance(RandomPolicy(), SkillPolicy)


def test_random_policy_is_seeded_and_uses_agent_buttons_only():
    policy = RandomPolicy()
    goal = Goal("x", np.zeros(512, np.float32))
    a, b = policy.initial_state(3), policy.initial_state(3)
    for _ in range(20):
        action_a, a = policy.act({}, goal, a)
        action_b, b = policy.act({}, goal, b)
        assert action_a.keys() == action_b.keys()
        assert all(np.array_equal(action_a[key], action_b[key]) for key in action_a)
        assert action_a["ESC"] == action_a["pickItem"] == action_a["swapHands"] == 0
        assert np.abs(action_a["camera"]).max() <= 10.0


def test_policy_argument_errors():
    with pytest.raises(ConfigurationError, match="press_probability"):
        RandomPolicy(press_probability=2)
    with pytest.raises(ConfigurationError, match="synthetic world"):
        ScriptedPolicy(world=None)
