import subprocess
import sys
import warnings

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import steve1_env
from steve1_env.env import Steve1SkillEnv


def test_ids_are_registered_on_import():
    for env_id in steve1_env.ENV_IDS:
        assert env_id in gym.registry
        assert gym.registry[env_id].max_episode_steps == steve1_env.MAX_EPISODE_STEPS


def test_module_prefixed_id_works_in_a_fresh_interpreter():
    code = (
        "import gymnasium as gym\n"
        "env = gym.make('steve1_env:Steve1Skill-v0', instruction='chop a tree', "
        "policy='scripted', prompt_encoder='hash')\n"
        "obs, info = env.reset(seed=1)\n"
        "print(type(env.unwrapped).__name__, info['instruction'])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "Steve1SkillEnv chop a tree"


def test_import_is_light():
    code = (
        "import sys, steve1_env\nprint('torch' in sys.modules, 'steve1_env.env' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


@pytest.mark.filterwarnings("error")
def test_gymnasium_check_env_text_face():
    env = gym.make(
        "Steve1Skill-v0",
        instruction="chop a tree",
        render_mode="rgb_array",
        k=50,
        policy="scripted",
        prompt_encoder="hash",
    )
    check_env(env.unwrapped)
    env.close()


@pytest.mark.filterwarnings("error")
def test_gymnasium_check_env_discrete_face():
    env = gym.make("Steve1SkillLibrary-v0", k=50, policy="scripted", prompt_encoder="hash")
    check_env(env.unwrapped)
    env.close()


def test_sb3_check_env_discrete_face():
    env = gym.make("Steve1SkillLibrary-v0", k=50, policy="scripted", prompt_encoder="hash")
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        sb3_check_env(env.unwrapped, warn=True)
    assert [str(w.message) for w in records] == []
    env.close()


def test_time_limit_wrapper_truncates_at_registered_steps():
    env = gym.make(
        "Steve1Skill-v0",
        instruction="go explore",
        k=1,
        max_episode_steps=3,
        policy="scripted",
        prompt_encoder="hash",
    )
    env.reset(seed=0)
    results = [env.step("") for _ in range(3)]
    assert [r[3] for r in results] == [False, False, True]
    env.close()


def test_lazy_env_class_export():
    assert steve1_env.Steve1SkillEnv is Steve1SkillEnv
    with pytest.raises(AttributeError):
        _ = steve1_env.NoSuchThing
