from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import steve1_env  # registers the env ids
from steve1_env.env import Steve1SkillEnv
from steve1_env.errors import ConfigurationError, InvalidActionError
from steve1_env.vector.env import Steve1SkillVectorEnv

INSTRUCTIONS = ["chop a tree", "get dirt", "look at the sky"]
SMALL = {"pov_shape": (48, 64)}


def tiny_kwargs(files):
    return {"weights": str(files["weights"]), "model": str(files["model"])}


def single_rollouts(n, seed, steps, **kwargs):
    """The same envs, built and stepped one by one."""
    results = []
    for i in range(n):
        env = Steve1SkillEnv(**kwargs)
        obs, _ = env.reset(seed=seed + i, options={"instruction": INSTRUCTIONS[i]})
        trace = [obs]
        for _ in range(steps):
            obs, reward, term, trunc, info = env.step("")
            trace.append((obs, reward, term, trunc, info["steps"], info["reason"]))
            if term or trunc:
                break
        env.close()
        results.append(trace)
    return results


def vector_rollouts(n, seed, steps, **kwargs):
    env = Steve1SkillVectorEnv(n, **kwargs)
    obs, _ = env.reset(seed=seed, options={"instruction": INSTRUCTIONS[:n]})
    traces = [[{k: v[i] for k, v in obs.items()}] for i in range(n)]
    done = [False] * n
    for _ in range(steps):
        obs, rewards, terms, truncs, info = env.step([""] * n)
        for i in range(n):
            if not done[i]:
                traces[i].append((
                    {k: v[i] for k, v in obs.items()}, rewards[i], terms[i], truncs[i],
                    info["steps"][i], info["reason"][i],
                ))  # fmt: skip
                done[i] = bool(terms[i] or truncs[i])
    env.close()
    return traces


def assert_same(vector, single):
    assert len(vector) == len(single)
    for v_trace, s_trace in zip(vector, single, strict=True):
        v_first, s_first = v_trace[0], s_trace[0]
        for key in s_first:
            np.testing.assert_array_equal(v_first[key], s_first[key])
        assert len(v_trace) == len(s_trace)
        for (v_obs, *v_rest), (s_obs, *s_rest) in zip(v_trace[1:], s_trace[1:], strict=True):
            assert [type(x)(y) for x, y in zip(s_rest, v_rest, strict=True)] == s_rest
            for key in s_obs:
                np.testing.assert_array_equal(v_obs[key], s_obs[key])


@pytest.mark.slow
def test_batched_native_policy_matches_envs_run_one_by_one(tiny_policy_files):
    kwargs = {
        "policy": "steve1",
        "prompt_encoder": "hash",
        "policy_kwargs": tiny_kwargs(tiny_policy_files),
        "world_kwargs": SMALL,
        "k": 25,
    }
    vector = vector_rollouts(3, 11, 3, **kwargs)
    single = single_rollouts(3, 11, 3, **kwargs)
    assert_same(vector, single)
    # The envs really differed: different instructions, different worlds.
    assert not np.array_equal(vector[0][1][0]["pov"], vector[1][1][0]["pov"])


def test_scripted_envs_finish_their_high_level_steps_independently():
    kwargs = {"policy": "scripted", "prompt_encoder": "hash", "world_kwargs": SMALL, "k": 200}
    vector = vector_rollouts(3, 5, 2, **kwargs)
    assert_same(vector, single_rollouts(3, 5, 2, **kwargs))
    steps = [trace[1][4] for trace in vector]
    assert [trace[1][5] for trace in vector] == ["success"] * 3
    assert len(set(steps)) > 1  # the quick ones waited for the slow one, then stopped


@pytest.mark.filterwarnings("ignore:The scripted policy has no script")
def test_make_vec_uses_the_vector_entry_point_and_autoresets_next_step():
    env = gym.make_vec(
        "Steve1Skill-v0",
        num_envs=2,
        policy="scripted",
        prompt_encoder="hash",
        world_kwargs=SMALL,
        terminate_on_success=True,
        max_episode_steps=3,
        k=40,
    )
    assert isinstance(env, Steve1SkillVectorEnv)
    assert env.metadata["autoreset_mode"] == gym.vector.AutoresetMode.NEXT_STEP
    with pytest.warns(steve1_env.Steve1EnvWarning, match="do a dance"):
        obs, _ = env.reset(seed=0, options={"instruction": ["look at the sky", "do a dance"]})
    assert obs["pov"].shape == (2, 128, 128, 3) and env.observation_space.contains(obs)
    obs, rewards, terms, truncs, info = env.step(["", ""])
    # Env 0 succeeded and terminated; env 1 has no detector and used its whole budget.
    assert list(terms) == [True, False] and list(rewards) == [1.0, 0.0]
    assert list(info["reason"]) == ["success", "budget"] and not truncs.any()
    obs, rewards, terms, truncs, info = env.step(["ignored", ""])
    # Env 0 was reset (its action ignored): reward 0, no flags, the same task again.
    assert rewards[0] == 0.0 and not terms[0] and not truncs[0]
    assert info["high_level_steps"][0] == 0 and info["reason"][0] is None
    assert info["instruction"][0] == "look at the sky"
    assert info["high_level_steps"][1] == 2 and not truncs[1]
    *_, truncs, info = env.step(["", ""])
    # Env 1's third high-level step reaches max_episode_steps: truncated, reset next step.
    assert truncs[1] and info["high_level_steps"][1] == 3
    *_, info = env.step(["", ""])
    assert info["high_level_steps"][1] == 0 and info["instruction"][1] == "do a dance"
    env.close()


def test_reset_masks_and_per_env_instructions():
    env = Steve1SkillVectorEnv(
        2, policy="scripted", prompt_encoder="hash", world_kwargs=SMALL, k=10
    )
    with pytest.raises(ConfigurationError, match="first reset must reset every env"):
        env.reset(options={"reset_mask": np.array([True, False])})
    obs, info = env.reset(seed=[3, 4], options={"instruction": ["chop a tree", "get dirt"]})
    assert list(info["instruction"]) == ["chop a tree", "get dirt"]
    env.step(["", ""])
    before = obs["pov"][1].copy()
    obs, info = env.reset(
        seed=[9, None], options={"instruction": "go explore", "reset_mask": np.array([True, False])}
    )
    assert list(info["_instruction"]) == [True, False]
    assert info["instruction"][0] == "go explore"
    assert not np.array_equal(obs["pov"][1], before)  # env 1 kept its stepped observation
    with pytest.raises(InvalidActionError, match="one action per env"):
        env.step("chop a tree")
    with pytest.raises(InvalidActionError, match="2 in all, got 3"):
        env.step(["", "", ""])
    with pytest.raises(ConfigurationError, match="list of 2 seeds"):
        env.reset(seed=[1, 2, 3])
    with pytest.raises(ConfigurationError, match="reset_mask must be a boolean array"):
        env.reset(options={"reset_mask": [1, 0]})
    env.close()
    env.close()
    with pytest.raises(ConfigurationError, match="closed"):
        env.reset()


@pytest.mark.slow
def test_worlds_in_processes_step_in_parallel_and_give_the_same_rollouts(tiny_policy_files):
    kwargs = {
        "policy": "steve1",
        "prompt_encoder": "hash",
        "policy_kwargs": tiny_kwargs(tiny_policy_files),
        "world_kwargs": SMALL,
        "k": 10,
    }
    in_processes = vector_rollouts(2, 4, 2, world_processes=True, **kwargs)
    assert_same(in_processes, vector_rollouts(2, 4, 2, world_processes=False, **kwargs))


@pytest.mark.slow
def test_a_dying_world_process_crashes_only_its_env_and_restarts(tiny_policy_files, tmp_path):
    env = Steve1SkillVectorEnv(
        2,
        world="tests.fakes.crashing_worlds:StepDyingWorld",
        policy="steve1",
        prompt_encoder="hash",
        policy_kwargs=tiny_kwargs(tiny_policy_files),
        world_kwargs={"marker_dir": str(tmp_path), "die_at": 5, **SMALL},
        k=10,
    )
    assert env.world_processes  # not the synthetic name: worlds run in processes by default
    env.reset(seed=0, options={"instruction": "chop a tree"})
    _, _, terms, truncs, info = env.step(["", ""])
    crashed = [i for i in range(2) if info["reason"][i] == "crash"]
    assert len(crashed) == 1 and truncs[crashed[0]] and not terms.any()
    assert "world process died (exit code 3" in info["error"][crashed[0]]
    other = 1 - crashed[0]
    assert info["reason"][other] == "budget" and info["steps"][other] == 10
    # The crashed env is reset with a fresh world process at the next step.
    _, _, _, truncs, info = env.step(["", ""])
    assert info["high_level_steps"][crashed[0]] == 0 and not truncs.any()
    _, _, _, _, info = env.step(["", ""])
    assert info["reason"][crashed[0]] == "budget"
    env.close()
