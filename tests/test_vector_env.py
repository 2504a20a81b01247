from __future__ import annotations

import os

import gymnasium as gym
import numpy as np
import pytest

import steve1_env  # registers the env ids
from steve1_env.env import Steve1SkillEnv
from steve1_env.errors import ClosedError, ConfigurationError, InvalidActionError
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
    with pytest.raises(ClosedError, match="closed"):
        env.reset()
    with pytest.raises(gym.error.ClosedEnvironmentError, match="closed"):
        env.step(["go explore"] * env.num_envs)


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
    assert "world process died" in info["error"][crashed[0]]
    assert "exit code 3" in info["error"][crashed[0]]
    other = 1 - crashed[0]
    assert info["reason"][other] == "budget" and info["steps"][other] == 10
    # The crashed env is reset with a fresh world process at the next step.
    _, _, _, truncs, info = env.step(["", ""])
    assert info["high_level_steps"][crashed[0]] == 0 and not truncs.any()
    _, _, _, _, info = env.step(["", ""])
    assert info["reason"][crashed[0]] == "budget"
    env.close()


@pytest.mark.slow
def test_successes_waiting_envs_and_autoresets_match_envs_run_one_by_one(tiny_policy_files):
    # Detectors fire at different ticks, so the batch shrinks inside a step, envs terminate
    # and are autoreset while others keep going.
    from steve1_env.success import custom

    at = dict(zip(INSTRUCTIONS, (7, 13, 40), strict=True))
    success = {text: custom(lambda s, o, n, t=t: n >= t, name=f"at{t}") for text, t in at.items()}
    kwargs = {
        "policy": "steve1",
        "prompt_encoder": "hash",
        "policy_kwargs": tiny_kwargs(tiny_policy_files),
        "world_kwargs": SMALL,
        "k": 20,
        "success": success,
        "terminate_on_success": True,
    }
    vector = Steve1SkillVectorEnv(3, **kwargs)
    obs, _ = vector.reset(seed=11, options={"instruction": INSTRUCTIONS})
    traces = [[obs["pov"][i]] for i in range(3)]
    for _ in range(5):
        obs, rewards, terms, _, info = vector.step([""] * 3)
        for i in range(3):
            traces[i].append((obs["pov"][i], rewards[i], terms[i], info["steps"][i],
                              info["reason"][i]))  # fmt: skip
    vector.close()
    assert {trace[1][4] for trace in traces} == {"success", "budget"}
    for i in range(3):
        env = Steve1SkillEnv(**kwargs)
        obs, _ = env.reset(seed=11 + i, options={"instruction": INSTRUCTIONS[i]})
        expected, ended = [obs["pov"]], False
        for _ in range(5):
            if ended:  # what the vector env's next-step autoreset does
                obs, info = env.reset(options={"instruction": INSTRUCTIONS[i]})
                expected.append((obs["pov"], 0.0, False, info["steps"], info["reason"]))
                ended = False
            else:
                obs, reward, term, trunc, info = env.step("")
                expected.append((obs["pov"], reward, term, info["steps"], info["reason"]))
                ended = term or trunc
        env.close()
        np.testing.assert_array_equal(traces[i][0], expected[0])
        for got, want in zip(traces[i][1:], expected[1:], strict=True):
            np.testing.assert_array_equal(got[0], want[0])
            assert (float(got[1]), bool(got[2]), int(got[3]), got[4]) == want[1:]


def test_a_bad_action_moves_no_env_and_limits_truncate_like_time_limit():
    env = Steve1SkillVectorEnv(
        2, policy="scripted", prompt_encoder="hash", world_kwargs=SMALL, k=300,
        terminate_on_success=True, max_episode_steps=1,
    )  # fmt: skip
    env.reset(seed=0, options={"instruction": ["look at the sky", "go explore"]})
    with pytest.raises(Exception, match="at most"):
        env.step(["", "x" * 10_000])
    _, _, terms, truncs, info = env.step(["", ""])  # both envs still usable
    # Env 0 succeeded on the limit's step: terminated and truncated, as TimeLimit does.
    assert terms[0] and truncs[0] and info["reason"][0] == "success"
    env.close()


@pytest.mark.slow
def test_a_hung_world_process_is_killed_and_crashes_only_its_env(tiny_policy_files, tmp_path):
    env = Steve1SkillVectorEnv(
        2,
        world="tests.fakes.crashing_worlds:HangingWorld",
        policy="steve1",
        prompt_encoder="hash",
        policy_kwargs=tiny_kwargs(tiny_policy_files),
        world_kwargs={"marker_dir": str(tmp_path), "hang_at": 3, **SMALL},
        world_process_kwargs={"step_timeout": 2.0},
        k=6,
    )
    env.reset(seed=0, options={"instruction": "chop a tree"})
    pids = [env.envs[i].world.pid for i in range(2)]
    _, _, _, truncs, info = env.step(["", ""])
    hung = [i for i in range(2) if info["reason"][i] == "crash"]
    assert len(hung) == 1 and truncs[hung[0]]
    assert "did not answer a step within 2 s (hung)" in info["error"][hung[0]]
    assert info["steps"][1 - hung[0]] == 6
    env.step(["", ""])  # the hung env restarts with a new process
    assert env.envs[hung[0]].world.pid not in pids
    env.close()
    for pid in pids:
        with pytest.raises(OSError):
            os.kill(pid, 0)  # no process left behind


@pytest.mark.slow
def test_a_failed_autoreset_crashes_only_its_env_and_is_tried_again(tiny_policy_files, tmp_path):
    from steve1_env.success import custom

    env = Steve1SkillVectorEnv(
        2,
        world="tests.fakes.crashing_worlds:DyingWorld",
        policy="steve1",
        prompt_encoder="hash",
        policy_kwargs=tiny_kwargs(tiny_policy_files),
        # Resets 1 and 2 start both envs; the third (env 0's autoreset) kills its process.
        world_kwargs={"marker_dir": str(tmp_path), "die_at": 3, **SMALL},
        success={"chop a tree": custom(lambda start, obs, steps: steps >= 1, name="first")},
        terminate_on_success=True,
        k=5,
    )
    env.reset(seed=0, options={"instruction": ["chop a tree", "get dirt"]})
    _, _, terms, _, _ = env.step(["", ""])
    assert list(terms) == [True, False]
    _, _, _, truncs, info = env.step(["", ""])
    assert truncs[0] and info["reason"][0] == "crash" and "died" in info["error"][0]
    assert info["reason"][1] in ("budget", "success") and info["steps"][1] >= 1
    _, _, _, truncs, info = env.step(["", ""])  # the reset is tried again, in a new process
    assert not truncs[0] and info["high_level_steps"][0] == 0
    assert info["instruction"][0] == "chop a tree"
    env.close()
