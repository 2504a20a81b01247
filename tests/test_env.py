import gymnasium as gym
import numpy as np
import pytest

import steve1_env  # noqa: F401
from steve1_env.env import InstructionSpace, Steve1SkillEnv
from steve1_env.errors import (
    ClosedError,
    ConfigurationError,
    InvalidActionError,
    InvalidInstructionError,
    ResetNeededError,
    Steve1EnvError,
    UnknownNameError,
    WorldCrashError,
)
from steve1_env.success import custom
from steve1_env.tasks.prompts import PAPER_PROMPTS
from tests.conftest import FunctionPolicy, ScriptedWorld
from tests.conftest import offline_env as make

INFO_KEYS = {
    "is_success", "steps", "reason", "detector", "detector_spec", "instruction", "inventory",
    "attempt_steps", "total_steps", "high_level_steps",
}  # fmt: skip


# ---------------------------------------------------------------- instructions
def test_instruction_from_reset_options_wins():
    with make(instruction="get dirt") as env:
        _, info = env.reset(seed=0, options={"instruction": "chop a tree"})
        assert info["instruction"] == "chop a tree"


def test_instruction_from_argument():
    with make(instruction="  get dirt ") as env:
        _, info = env.reset(seed=0)
        assert info["instruction"] == "get dirt"


def test_instructions_are_sampled_with_the_env_seed():
    choices = ["chop a tree", "get dirt", "collect seeds", "look at the sky"]
    with make(instructions=choices) as env:
        first = [env.reset(seed=s)[1]["instruction"] for s in range(12)]
        again = [env.reset(seed=s)[1]["instruction"] for s in range(12)]
    assert first == again
    assert len(set(first)) > 1 and set(first) <= set(choices)


def test_missing_instruction_is_a_clear_error():
    with make() as env, pytest.raises(InvalidInstructionError, match="options=\\{'instruction'"):
        env.reset(seed=0)


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ("", "must contain text"),
        ("   \t ", "must contain text"),
        (42, "must be a str"),
        (["chop"], "must be a str"),
        ("x" * 301, "at most 300 characters"),
        ("chop\x00tree", "control characters"),
    ],
)
def test_bad_instructions_are_rejected_everywhere(bad, match):
    with pytest.raises(InvalidInstructionError, match=match):
        make(instruction=bad)
    with make() as env:
        with pytest.raises(InvalidInstructionError, match=match):
            env.reset(seed=0, options={"instruction": bad})
        env.reset(seed=0, options={"instruction": "chop a tree"})
        if bad != "":  # "" on the text face means "keep the current instruction"
            with pytest.raises(InvalidInstructionError, match=match):
                env.step(bad)
    with pytest.raises(InvalidInstructionError):
        make(instructions=["chop a tree", bad])


def test_errors_share_one_hierarchy_and_builtin_bases():
    with make() as env, pytest.raises(Steve1EnvError) as caught:
        env.reset(seed=0, options={"instruction": ""})
    assert isinstance(caught.value, ValueError)


def test_instruction_length_is_configurable():
    with (
        make(max_instruction_length=10) as env,
        pytest.raises(InvalidInstructionError, match="at most 10"),
    ):
        env.reset(options={"instruction": "chop down the big tree"})


def test_unknown_reset_option():
    with make(instruction="get dirt") as env, pytest.raises(ConfigurationError, match="instr"):
        env.reset(options={"instrution": "get dirt"})


# ----------------------------------------------------------------- step basics
def test_step_runs_until_success_and_reports_the_contract():
    with make(instruction="chop a tree") as env:
        obs, info = env.reset(seed=3)
        assert set(info) >= INFO_KEYS and info["reason"] is None
        obs, reward, terminated, truncated, info = env.step("")
    assert set(info) >= INFO_KEYS
    assert info["is_success"] and info["reason"] == "success" and reward == 1.0
    assert info["detector"] == "wood" and info["detector_spec"] == "wood"
    assert 0 < info["steps"] < 200 and info["total_steps"] == info["steps"]
    assert sum(v for k, v in info["inventory"].items() if k.endswith("_log")) >= 1
    assert not terminated and not truncated
    assert obs["inventory"].dtype == np.float32 and obs["inventory"].sum() >= 1
    assert obs["pov"].shape == (128, 128, 3) and obs["pov"].dtype == np.uint8
    assert obs["goal"].shape == (512,) and obs["goal"].dtype == np.float32


def test_budget_reason_when_k_runs_out():
    with make(instruction="chop a tree", k=5) as env:
        env.reset(seed=3)
        _, reward, terminated, truncated, info = env.step("")
    assert info["reason"] == "budget" and info["steps"] == 5 and reward == 0.0
    assert not info["is_success"] and not terminated and not truncated


def test_empty_action_continues_the_attempt_and_success_restarts_it():
    with make(instruction="chop a tree", k=5) as env:
        env.reset(seed=3)
        env.step("")
        _, _, _, _, info = env.step("")
        assert info["attempt_steps"] == 10  # continued: the baseline is kept
        while not info["is_success"]:
            _, _, _, _, info = env.step("")
        _, _, _, _, info = env.step("")
        assert info["attempt_steps"] == info["steps"] <= 5  # a new attempt after success
        _, _, _, _, info = env.step("get dirt")
        assert info["instruction"] == "get dirt" and info["attempt_steps"] == info["steps"]


def test_a_new_instruction_changes_the_goal_observation():
    with make(instruction="chop a tree", k=2) as env:
        obs, _ = env.reset(seed=0)
        obs2, *_ = env.step("get dirt")
    assert not np.array_equal(obs["goal"], obs2["goal"])
    np.testing.assert_array_equal(obs2["goal"], env.goal_embedding("get dirt"))


def test_seeded_episodes_are_reproducible():
    def run(seed):
        with make(instruction="chop a tree", policy="random", k=40) as env:
            obs, _ = env.reset(seed=seed)
            frames, infos = [obs["pov"]], []
            for action in ["", "get dirt", "", "collect seeds"]:
                obs, _, _, _, info = env.step(action)
                frames.append(obs["pov"])
                infos.append(info)
        return frames, infos

    frames_a, infos_a = run(7)
    frames_b, infos_b = run(7)
    frames_c, _ = run(8)
    assert infos_a == infos_b
    assert all(np.array_equal(a, b) for a, b in zip(frames_a, frames_b, strict=True))
    assert not all(np.array_equal(a, c) for a, c in zip(frames_a, frames_c, strict=True))


def test_reset_without_seed_gives_new_worlds():
    world = ScriptedWorld()
    with make(instruction="get dirt", world=world, policy="random") as env:
        env.reset(seed=5)
        env.reset()
        env.reset()
    assert len(set(world.reset_seeds)) == 3


def test_low_level_cap_truncates():
    with make(instruction="go explore", k=30, max_low_level_steps=70) as env:
        env.reset(seed=0)
        steps = []
        truncated = False
        while not truncated:
            _, _, terminated, truncated, info = env.step("")
            steps.append(info["steps"])
            assert not terminated
        assert steps == [30, 30, 10] and info["total_steps"] == 70
        with pytest.raises(ResetNeededError):
            env.step("")


def test_terminate_on_success():
    with make(instruction="get dirt", terminate_on_success=True) as env:
        env.reset(seed=0)
        _, reward, terminated, truncated, _ = env.step("")
    assert reward == 1.0 and terminated and not truncated


def test_world_done_terminates():
    with make(instruction="go explore", world=ScriptedWorld(done_at=7), policy="random") as env:
        env.reset(seed=0)
        _, _, terminated, truncated, info = env.step("")
    assert info["reason"] == "world_done" and info["steps"] == 7
    assert terminated and not truncated


@pytest.mark.parametrize("mode", ["raise", "info_error"])
def test_world_crash_is_reported_and_bogus_observation_dropped(mode):
    world = ScriptedWorld(fail_at=4, mode=mode)
    with make(instruction="go explore", world=world, policy="random") as env:
        env.reset(seed=0)
        obs, reward, terminated, truncated, info = env.step("")
        assert info["reason"] == "crash" and info["steps"] == 3 and reward == 0.0
        assert truncated and not terminated
        assert "Socket" in info["error"] or "socket" in info["error"]
        assert obs["inventory"].sum() == 0  # the bogus 99s never reach the caller
        with pytest.raises(ResetNeededError):
            env.step("")
        world.fail_at = None
        env.reset(seed=1)  # recovers with a new world
        _, _, _, _, info = env.step("")
        assert info["reason"] != "crash"


def test_world_reset_failure_is_a_world_crash_error():
    class BrokenWorld(ScriptedWorld):
        def reset(self, seed=None):
            raise OSError("Minecraft did not start")

    with make(instruction="get dirt", world=BrokenWorld(), policy="random") as env:
        with pytest.raises(WorldCrashError, match="Minecraft did not start"):
            env.reset(seed=0)
        with pytest.raises(ResetNeededError):
            env.step("")


def test_invalid_low_level_action_from_a_policy_is_not_a_crash():
    with make(instruction="get dirt", policy=FunctionPolicy(lambda n: {"atack": 1})) as env:
        env.reset(seed=0)
        with pytest.raises(InvalidActionError, match="did you mean 'attack'"):
            env.step("")


# --------------------------------------------------------------- discrete face
def test_discrete_face_defaults_to_the_paper_prompts():
    with make(face="discrete") as env:
        assert env.action_space == gym.spaces.Discrete(11)
        assert env.skills == list(PAPER_PROMPTS.values())
        obs, info = env.reset(seed=0)
        assert info["instruction"] is None and not obs["goal"].any()
        index = env.skills.index(PAPER_PROMPTS["dirt"])
        _, reward, _, _, info = env.step(np.int64(index))
    assert info["instruction"] == PAPER_PROMPTS["dirt"] and reward == 1.0


@pytest.mark.parametrize("bad", [-1, 11, 1.5, "chop a tree", np.array([1, 2]), None])
def test_discrete_face_rejects_bad_actions(bad):
    with make(face="discrete") as env:
        env.reset(seed=0)
        with pytest.raises(InvalidActionError, match="skill"):
            env.step(bad)


def test_custom_skill_list():
    with make(face="discrete", skills=["get dirt", "look at the sky"]) as env:
        assert env.action_space.n == 2
        env.reset(seed=0)
        _, reward, *_ = env.step(1)
    assert reward == 1.0


# ----------------------------------------------------------------- components
def test_unknown_names_suggest_close_ones():
    with pytest.raises(UnknownNameError, match="Did you mean 'synthetic'"):
        make(world="synthtic")
    with pytest.raises(UnknownNameError, match="Did you mean 'scripted'") as caught:
        make(policy="scriptd")
    assert "Known policies: random, scripted" in str(caught.value)
    with pytest.raises(UnknownNameError, match="prompt encoder"):
        make(prompt_encoder="mineclipp")


def test_policy_failure_at_construction_closes_the_world_it_built(recording_world):
    with pytest.raises(ConfigurationError, match="oracle for the synthetic world"):
        make(world="recording", world_kwargs={})  # the scripted policy needs the synthetic world
    assert [w.closed for w in recording_world] == [1]
    mine = ScriptedWorld()
    with pytest.raises(ConfigurationError):
        make(world=mine)
    assert mine.closed == 0  # an instance passed in stays the caller's


def test_objects_must_follow_the_protocols():
    with pytest.raises(ConfigurationError, match=r"World protocol.*lacks: close, reset, step"):
        make(world=object())

    class NoDevice:
        def initial_state(self, seed):
            return None

        def act(self, obs, goal, state):
            return {}, state

        def close(self):
            pass

    with pytest.raises(ConfigurationError, match=r"SkillPolicy protocol.*lacks: device"):
        make(policy=NoDevice())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"k": 0}, "k must be a positive int"),
        ({"k": 2.5}, "k must be a positive int"),
        ({"max_low_level_steps": 0}, "max_low_level_steps"),
        ({"face": "image"}, "face must be"),
        ({"render_mode": "human"}, "render_mode"),
        ({"inventory_items": []}, "inventory_items"),
        ({"inventory_items": "dirt"}, "inventory_items"),
        ({"skills": []}, "skills must not be empty"),
        ({"skills": "get dirt"}, "skills must be a list"),
        ({"pov_shape": 64}, "pov_shape must be a pair"),
        ({"device": "gpu9"}, "device must be a torch device"),
        ({"device": 3.5}, "device must be a torch device"),
        ({"world_kwargs": {"povshape": (64, 64)}}, "cannot take these arguments.*pov_shape"),
        ({"policy_kwargs": {"speed": 1}}, "cannot take these arguments"),
        ({"pov_shape": (64,)}, "pov_shape"),
    ],
)
def test_bad_configuration(kwargs, match):
    with pytest.raises(ConfigurationError, match=match):
        make(**kwargs)


def test_goal_embedding_is_computed_once_per_instruction(counting_encoder):
    with make(instruction="get dirt", prompt_encoder=counting_encoder, k=3) as env:
        env.reset(seed=0)
        env.step("")
        env.step("chop a tree")
        env.step("get dirt")
        env.reset(seed=1)
        obs, _ = env.reset(seed=2)
    assert counting_encoder.calls == ["get dirt", "chop a tree"]
    assert obs["goal"].dtype == np.float32 and obs["goal"][0] == len("get dirt")


def test_success_mapping_and_callable():
    never = custom(lambda start, obs, steps: False, name="never")
    with make(instruction="chop a tree", success={"Chop A Tree": never}, k=30) as env:
        env.reset(seed=3)
        _, _, _, _, info = env.step("")
        assert info["reason"] == "budget" and info["detector_spec"] == "never"
        _, _, _, _, info = env.step("get dirt")  # falls back to the defaults
        assert info["detector"] == "dirt"

    def after_ten(start, obs, steps):
        return steps >= 10

    with make(instruction="get dirt", success=after_ten, policy="random") as env:
        env.reset(seed=0)
        _, _, _, _, info = env.step("")
    assert info["steps"] == 10 and info["detector"] == "after_ten"


def test_instruction_without_detector_warns_and_never_succeeds():
    with make(instruction="build a castle", k=10) as env:
        with pytest.warns(UserWarning, match="No success detector is known for 'build a castle'"):
            env.reset(seed=0)
        with pytest.warns(UserWarning, match="no script for 'build a castle'"):
            _, _, _, _, info = env.step("")
    assert info["reason"] == "budget" and info["detector_spec"] is None


# ------------------------------------------------------- rendering & lifecycle
def test_render_returns_the_full_resolution_frame():
    with Steve1SkillEnv(
        instruction="get dirt", render_mode="rgb_array", policy="scripted", prompt_encoder="hash"
    ) as env:
        obs, _ = env.reset(seed=0)
        frame = env.render()
    assert frame.shape == (360, 640, 3) and frame.dtype == np.uint8
    assert obs["pov"].shape == (128, 128, 3)
    with make(instruction="get dirt") as env:
        env.reset(seed=0)
        assert env.render() is None


def test_step_before_reset_and_after_close():
    env = make(instruction="get dirt")
    with pytest.raises(ResetNeededError, match="reset"):
        env.step("")
    env.close()
    env.close()
    for use in (env.reset, lambda: env.step("")):
        with pytest.raises(ClosedError, match="closed") as raised:
            use()
        assert isinstance(raised.value, gym.error.ClosedEnvironmentError)
        assert not isinstance(raised.value, ResetNeededError)


def test_context_manager_closes_what_the_env_built(recording_world):
    with make(instruction="go explore", world="recording", world_kwargs={}, policy="random") as env:
        env.reset(seed=0)
    env.close()
    assert [w.closed for w in recording_world] == [1]
    mine = ScriptedWorld()
    with make(instruction="go explore", world=mine, policy="random") as env:
        env.reset(seed=0)
    assert mine.closed == 0


def test_instruction_space_samples_known_instructions():
    space = InstructionSpace(50, ["chop a tree", "get dirt"], seed=0)
    samples = {space.sample() for _ in range(50)}
    assert samples == {"chop a tree", "get dirt", ""}
    assert space.contains("look at the sky!") and not space.contains("x" * 51)
    assert not space.contains(3) and not space.contains("bad\x07")
    assert len(space.sample(mask=(5, None))) == 5
