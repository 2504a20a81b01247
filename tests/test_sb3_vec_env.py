"""`steve1_env.sb3.Steve1VecEnv`: SB3's VecEnv API over one batched vector env."""

from __future__ import annotations

import importlib
import sys

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import DummyVecEnv, VecCheckNan, VecMonitor

import steve1_env  # noqa: F401  (registers the env ids)
from steve1_env.agent.random_policy import RandomPolicy
from steve1_env.errors import (
    ClosedError,
    ConfigurationError,
    DependencyNotInstalledError,
    ResetNeededError,
)
from steve1_env.registry import register_policy
from steve1_env.sb3 import Steve1VecEnv
from steve1_env.success import custom
from steve1_env.vector.env import Steve1SkillVectorEnv

SKILLS = ["chop a tree", "get dirt", "collect seeds", "look at the sky"]
OFFLINE = {
    "policy": "scripted",
    "prompt_encoder": "hash",
    "world_kwargs": {"pov_shape": (48, 48)},
    "pov_shape": (36, 36),  # the smallest frame of SB3's NatureCNN
    "skills": SKILLS,
    "k": 40,
}


class BatchCountingPolicy(RandomPolicy):
    """A random policy that batches: records the rows of each call; `act` alone is refused."""

    calls: list[int] = []  # noqa: RUF012 (shared by the instances the registry builds)

    def act_batch(self, observations, goals, states):
        type(self).calls.append(len(observations))
        pairs = [super(BatchCountingPolicy, self).act(o, g, s) for o, g, s in
                 zip(observations, goals, states, strict=True)]  # fmt: skip
        return [a for a, _ in pairs], [s for _, s in pairs]

    def act(self, obs, goal, state):
        raise AssertionError("a batching policy is called through act_batch")


@pytest.fixture
def counting_policy(monkeypatch):
    # Registered for this test only: left in the registry, it showed up in other tests'
    # "Known policies: ..." messages (tests/test_env.py's, when run after this file).
    from steve1_env.registry import POLICIES

    monkeypatch.setattr(POLICIES, "_factories", dict(POLICIES._factories))
    register_policy("sb3-batch-counting", BatchCountingPolicy, overwrite=True)
    BatchCountingPolicy.calls = []
    return "sb3-batch-counting"


def same(a, b, where="") -> None:
    """Asserts that two observations/infos are equal, arrays and nested dicts included."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and sorted(a) == sorted(b), where
        for key in a:
            same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            same(x, y, f"{where}[{i}]")
    elif isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        np.testing.assert_array_equal(a, b, err_msg=where)
    else:
        assert type(a) is type(b) and a == b, (where, a, b)


def test_ppo_trains_on_four_envs_with_one_batched_policy_call_per_tick(counting_policy):
    kwargs = {**OFFLINE, "policy": counting_policy, "k": 5, "max_episode_steps": 4}
    venv = VecMonitor(VecCheckNan(Steve1VecEnv(4, **kwargs), raise_exception=True))
    model = PPO(
        "MultiInputPolicy",
        venv,
        n_steps=32,
        batch_size=64,
        n_epochs=1,
        seed=0,
        device="cpu",
        policy_kwargs={"features_extractor_kwargs": {"cnn_output_dim": 32}},
    )
    model.learn(total_timesteps=256)
    assert model.num_timesteps == 256
    # 64 vector steps of 5 ticks (the random policy never succeeds): one call per tick, all
    # four envs in it.
    assert BatchCountingPolicy.calls == [4] * (64 * 5)
    # VecMonitor saw the episodes end (4 high-level steps each), and PPO read is_success.
    assert len(model.ep_info_buffer) == 64 and {e["l"] for e in model.ep_info_buffer} == {4}
    assert len(model.ep_success_buffer) == 64
    action, _ = model.predict(venv.reset(), deterministic=True)
    assert action.shape == (4,) and venv.action_space.contains(int(action[0]))
    venv.close()


@pytest.mark.parametrize("policy", ["scripted", pytest.param("steve1", marks=pytest.mark.slow)])
def test_autoreset_matches_dummy_vec_env_over_the_single_env(policy, request):
    # Episodes end by success (terminate_on_success) and by the limit of 3 high-level steps;
    # SB3's DummyVecEnv over gym.make's env (its TimeLimit) is the reference. The native
    # policy (tiny weights) runs batched in the vector env, one env at a time in DummyVecEnv.
    kwargs = {**OFFLINE, "terminate_on_success": True, "k": 12}
    n, steps = 3, 14
    if policy == "steve1":
        files = request.getfixturevalue("tiny_policy_files")
        always = custom(lambda start, obs, steps: steps >= 5, name="five")
        kwargs.update(
            policy="steve1",
            policy_kwargs={"weights": str(files["weights"]), "model": str(files["model"])},
            # Untrained, it gathers nothing: success after 5 ticks of "chop a tree" instead.
            success={"chop a tree": always},
            k=6,
        )
        n, steps = 2, 7  # a CPU forward pass per tick: fewer ticks
    ours = Steve1VecEnv(n, max_episode_steps=3, **kwargs)
    reference = DummyVecEnv(
        [lambda: gym.make("Steve1SkillLibrary-v0", max_episode_steps=3, **kwargs)] * n
    )
    for venv in (ours, reference):
        venv.seed(7)
    same(ours.reset(), reference.reset(), "reset")
    same(ours.reset_infos, reference.reset_infos, "reset_infos")
    rng = np.random.default_rng(0)
    seen = {"terminated": 0, "truncated": 0}
    for t in range(steps):
        actions = rng.integers(len(SKILLS), size=n)
        obs, rewards, dones, infos = ours.step(actions)
        ref_obs, ref_rewards, ref_dones, ref_infos = reference.step(actions)
        same(obs, ref_obs, f"obs {t}")
        assert rewards.dtype == ref_rewards.dtype and dones.dtype == ref_dones.dtype
        np.testing.assert_array_equal(rewards, ref_rewards)
        np.testing.assert_array_equal(dones, ref_dones)
        same(infos, ref_infos, f"infos {t}")
        same(ours.reset_infos, reference.reset_infos, f"reset_infos {t}")
        for done, info in zip(dones, infos, strict=True):
            if done:
                seen["truncated" if info["TimeLimit.truncated"] else "terminated"] += 1
    assert seen["terminated"] > 0 and seen["truncated"] > 0
    ours.close()
    reference.close()


def test_terminal_observation_is_the_final_one_and_the_returned_one_starts_anew():
    venv = Steve1VecEnv(2, max_episode_steps=2, **OFFLINE)
    venv.seed(1)
    first = venv.reset()
    venv.step(np.array([0, 1]))
    obs, _, dones, infos = venv.step(np.array([0, 1]))
    assert dones.all()
    for i in range(2):
        final = infos[i]["terminal_observation"]
        assert final["inventory"].sum() > 0  # the skills gathered something
        assert obs["inventory"][i].sum() == 0 and venv.reset_infos[i]["total_steps"] == 0
        assert not np.array_equal(final["pov"], obs["pov"][i])
        assert infos[i]["TimeLimit.truncated"] is True
        assert infos[i]["high_level_steps"] == 2
    # The new episodes run: one more step is not done and has no terminal observation.
    _, _, dones, infos = venv.step(np.array([0, 1]))
    assert not dones.any() and "terminal_observation" not in infos[0]
    assert not np.array_equal(first["pov"], obs["pov"])  # a new world seed, from the env's RNG
    venv.close()


def test_seeds_apply_once_and_give_the_same_episodes():
    a, b = Steve1VecEnv(2, **OFFLINE), Steve1VecEnv(2, **OFFLINE)
    assert a.seed(5) == [5, 6]
    b.seed(5)
    first = a.reset()
    same(first, b.reset())
    assert not np.array_equal(first["pov"][0], first["pov"][1])  # env i gets seed + i
    again = a.reset()  # the seeds were used once: the env's RNG goes on
    assert not np.array_equal(again["pov"], first["pov"])
    b.seed(6)
    same(b.reset()["pov"][0], first["pov"][1])
    a.close()
    b.close()


def test_options_attributes_methods_and_render():
    venv = Steve1VecEnv(2, render_mode="rgb_array", **OFFLINE)
    with pytest.raises(ResetNeededError, match=r"reset\(\) before render\(\)"):
        venv.render()  # no frame yet
    venv.set_options([{"instruction": "chop a tree"}, {"instruction": "get dirt"}])
    venv.reset()
    assert [info["instruction"] for info in venv.reset_infos] == ["chop a tree", "get dirt"]
    assert venv.get_attr("skills") == [SKILLS, SKILLS]
    venv.set_attr("k", 3, indices=[1])
    assert venv.get_attr("k") == [40, 3]
    # Set directly, k is still checked: 0 made every step run no tick, 2.5 three.
    for bad in (0, -5, 2.5, True):
        with pytest.raises(ConfigurationError, match="k must be a positive integer"):
            venv.set_attr("k", bad)
    assert venv.get_attr("k") == [40, 3]
    _, _, _, infos = venv.step(np.array([1, 1]))
    assert infos[1]["steps"] <= 3
    assert venv.env_method("goal_embedding", "get dirt", indices=0)[0].shape == (512,)
    with pytest.raises(ConfigurationError, match="bypass the batch"):
        venv.env_method("reset")
    assert venv.env_is_wrapped(gym.wrappers.TimeLimit) == [False, False]
    assert venv.has_attr("current_instruction") and not venv.has_attr("no_such_attribute")
    frame = venv.render()
    assert frame.shape == (72, 36, 3) and frame.dtype == np.uint8  # two frames, tiled
    # Options holding arrays (visual-goal clips) are compared key by key.
    clip = np.zeros((16, 8, 8, 3), dtype=np.uint8)
    venv.set_options([{"visual_goal": clip, "cond_scale": 5.0}, {"visual_goal": clip}])
    with pytest.raises(ConfigurationError, match="different 'cond_scale' options"):
        venv.reset()
    venv.set_options([{"success": "any"}, {"success": None}])
    with pytest.raises(ConfigurationError, match="different 'success' options"):
        venv.reset()
    venv.close()


def test_reset_envs_starts_the_chosen_envs_anew_and_leaves_the_others():
    venv = Steve1VecEnv(2, **OFFLINE)
    venv.seed(3)
    venv.reset()
    stepped, *_ = venv.step(np.array([0, 1]))
    assert stepped["inventory"].sum(axis=1).all()  # both gathered something
    obs = venv.reset_envs(1)
    np.testing.assert_array_equal(obs["inventory"][0], stepped["inventory"][0])
    assert obs["inventory"][1].sum() == 0 and venv.reset_infos[1]["total_steps"] == 0
    _, _, _, infos = venv.step(np.array([0, 1]))
    assert [info["high_level_steps"] for info in infos] == [2, 1]
    with pytest.raises(ConfigurationError, match="out of range"):
        venv.reset_envs([2])
    venv.close()


def test_a_world_that_fails_to_restart_keeps_its_final_observation_and_retries(tmp_path):
    kwargs = {**OFFLINE, "policy": "random", "k": 2, "max_episode_steps": 1}
    # Resets 1 and 2 start both envs; the third (env 0's restart) kills its process.
    kwargs["world_kwargs"] = {"marker_dir": str(tmp_path), "die_at": 3, "pov_shape": (48, 48)}
    venv = Steve1VecEnv(
        2, world="tests.fakes.crashing_worlds:DyingWorld", world_processes=True, **kwargs
    )
    venv.reset()
    obs, _, dones, infos = venv.step(np.array([0, 1]))
    assert dones.all() and "died" in infos[0]["restart_error"]
    same(obs["pov"][0], infos[0]["terminal_observation"]["pov"])  # no new episode yet
    assert "restart_error" not in infos[1] and venv.reset_infos[1]["total_steps"] == 0
    # The vector env restarts env 0 at the next step (its action ignored); env 1 steps on.
    _, rewards, dones, infos = venv.step(np.array([0, 1]))
    assert not dones[0] and rewards[0] == 0 and infos[0]["high_level_steps"] == 0
    assert dones[1] and infos[1]["high_level_steps"] == 1
    venv.close()


def test_close_is_idempotent_and_a_closed_env_refuses_steps():
    venv = Steve1VecEnv(2, **OFFLINE)
    venv.reset()
    venv.close()
    venv.close()
    with pytest.raises(ClosedError):
        venv.step(np.array([0, 0]))


def test_only_the_discrete_face_is_supported_and_given_vector_envs_are_adapted():
    with pytest.raises(ConfigurationError, match="discrete face only"):
        Steve1VecEnv(2, face="text", **OFFLINE)
    text = Steve1SkillVectorEnv(2, instruction="chop a tree", **OFFLINE)
    with pytest.raises(ConfigurationError, match="discrete face only"):
        Steve1VecEnv(text)
    assert text._closed  # refused, and closed, as the adapter owns what it is given
    vector = Steve1SkillVectorEnv(2, face="discrete", **OFFLINE)
    with pytest.raises(ConfigurationError, match="apply to a new one only"):
        Steve1VecEnv(vector, k=3)
    venv = Steve1VecEnv(vector)
    assert venv.num_envs == 2 and venv.action_space == gym.spaces.Discrete(len(SKILLS))
    venv.close()
    assert vector._closed


def test_without_stable_baselines3_the_import_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "stable_baselines3.common.vec_env", None)
    monkeypatch.delitem(sys.modules, "steve1_env.sb3")
    with pytest.raises(DependencyNotInstalledError, match=r'pip install "steve1-env\[sb3\]"'):
        importlib.import_module("steve1_env.sb3")
