import pytest

import steve1_env
from steve1_env.env import Steve1SkillEnv
from steve1_env.errors import ConfigurationError, UnknownNameError
from steve1_env.registry import POLICIES, WORLDS, Registry
from steve1_env.worlds.synthetic import SyntheticWorld


def test_unknown_name_suggests_and_lists():
    registry = Registry("widget", "widgets", "register_widget")
    registry.register("synthetic", dict)
    with pytest.raises(UnknownNameError) as caught:
        registry.make("synthtic")
    message = str(caught.value)
    assert "Did you mean 'synthetic'?" in message
    assert "Known widgets: synthetic" in message and "register_widget(name, factory)" in message
    with pytest.raises(UnknownNameError, match=r"Known widgets: synthetic\. Register"):
        registry.make("zzz")


def test_register_rules():
    registry = Registry("widget", "widgets", "register_widget")
    registry.register("a", dict)
    with pytest.raises(ConfigurationError, match="already registered"):
        registry.register("a", list)
    registry.register("a", list, overwrite=True)
    assert registry.make("a") == []
    with pytest.raises(ConfigurationError, match="non-empty string"):
        registry.register(" ", dict)


def test_builtins_are_lazy_paths():
    assert "synthetic" in WORLDS and {"scripted", "random"} <= set(POLICIES.names())
    assert WORLDS.factory("synthetic") is SyntheticWorld


def test_user_registered_world_and_policy_reach_the_env():
    def small_world(**kwargs):
        return SyntheticWorld(pov_shape=(32, 32), **kwargs)

    steve1_env.register_world("tiny-synthetic", small_world, overwrite=True)
    steve1_env.register_policy(
        "lazy-random", "steve1_env.agent.random_policy:RandomPolicy", overwrite=True
    )
    with Steve1SkillEnv(
        world="tiny-synthetic", policy="lazy-random", prompt_encoder="hash",
        instruction="get dirt", k=3,
        world_kwargs={"size": 32}, policy_kwargs={"press_probability": 0.0},
    ) as env:  # fmt: skip
        env.reset(seed=0)
        assert env.world.size == 32 and env.render() is None
        assert env.step("")[-1]["steps"] == 3


def test_import_paths_need_no_registration():
    # Worker processes and Ray actors build components from such paths.
    world = WORLDS.make("steve1_env.worlds.synthetic:SyntheticWorld", size=16)
    assert isinstance(world, SyntheticWorld)
    with pytest.raises(UnknownNameError, match="cannot be imported"):
        WORLDS.make("steve1_env.worlds.synthetic:NoSuchWorld")
    with pytest.raises(UnknownNameError, match="or pass an import path"):
        WORLDS.make("no_such_world")
