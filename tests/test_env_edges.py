"""Edge cases: worlds ending on a success, bad world output, failures mid-call, numpy inputs."""

import copy
import pickle
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest

import steve1_env
from steve1_env.env import REASONS
from steve1_env.errors import (
    ConfigurationError,
    DetectorError,
    InvalidInstructionError,
    InvalidObservationError,
    ResetNeededError,
    WorldCrashError,
)
from steve1_env.instructions import InstructionSpace
from steve1_env.success import DEFAULT_DETECTORS, InventoryDelta, TravelDistance, custom
from tests.conftest import CountingEncoder, FunctionPolicy, ScriptedWorld
from tests.conftest import offline_env as make


def test_success_on_the_tick_the_world_ends_still_terminates():
    def at_three(start, obs, steps):
        return steps >= 3

    world = ScriptedWorld(done_at=3)
    with make(world=world, policy="random", instruction="get dirt", success=at_three) as env:
        env.reset(seed=0)
        _, reward, terminated, truncated, info = env.step("")
        assert reward == 1.0 and info["reason"] == "success" and info["world_done"]
        assert info["reason"] in REASONS
        assert terminated and not truncated
        with pytest.raises(ResetNeededError):
            env.step("")
    assert world.ticks == 3


class BadFrameWorld(ScriptedWorld):
    def __init__(self, transform):
        super().__init__()
        self.transform = transform

    def reset(self, seed=None):
        return self.transform(super().reset(seed))


@pytest.mark.parametrize(
    ("transform", "match"),
    [
        (lambda obs: {k: v for k, v in obs.items() if k != "pov"}, "has no 'pov'"),
        (lambda obs: {**obs, "pov": obs["pov"][..., 0]}, r"shape \(64, 64\)"),
        (lambda obs: {**obs, "pov": obs["pov"] / 255.0}, "dtype float64"),
    ],
)
def test_malformed_world_frames_are_clear_errors(transform, match):
    world = BadFrameWorld(transform)
    with make(world=world, policy="random", instruction="get dirt") as env:
        with pytest.raises(InvalidObservationError, match=match):
            env.reset(seed=0)
        with pytest.raises(ResetNeededError):
            env.step("")


class BufferReusingWorld(ScriptedWorld):
    """A world that mutates one observation dict in place, as some simulators do."""

    def reset(self, seed=None):
        self.obs = super().reset(seed)
        return self.obs

    def step(self, action):
        result = super().step(action)
        for key, value in result.obs.items():
            self.obs[key] = value
        return result._replace(obs=self.obs)


def test_success_baseline_survives_worlds_that_reuse_their_observation():
    with make(world=BufferReusingWorld(), policy="random", instruction="get dirt",
              success=TravelDistance(0.5), k=100) as env:  # fmt: skip
        env.reset(seed=0)
        _, _, _, _, info = env.step("")
    assert info["is_success"]


def test_failed_reset_ends_the_previous_episode():
    # Invalid arguments are refused before anything changes (issue 12); a world that fails
    # to reset ends the episode.
    with make(instruction="get dirt", k=2) as env:
        env.reset(seed=0)
        env.step("")
        with pytest.raises(InvalidInstructionError):
            env.reset(seed=1, options={"instruction": " "})
        env.step("")
        env.world.reset = lambda seed=None: 1 / 0
        with pytest.raises(WorldCrashError):
            env.reset(seed=1)
        with pytest.raises(ResetNeededError):
            env.step("")


def test_policy_exception_mid_step_needs_a_reset():
    def act(call):
        if call == 3:
            raise RuntimeError("policy bug")
        return {}

    with make(instruction="go explore", policy=FunctionPolicy(act)) as env:
        env.reset(seed=0)
        with pytest.raises(RuntimeError, match="policy bug"):
            env.step("")
        with pytest.raises(ResetNeededError):
            env.step("")
        env.reset(seed=0)
        assert env.step("")[-1]["steps"] == 200


def test_close_closes_a_prompt_encoder_built_by_name_once():
    built = []

    def factory(device):
        built.append(CountingEncoder())
        return built[-1]

    steve1_env.register_prompt_encoder("counting", factory, overwrite=True)
    env = make(instruction="get dirt", prompt_encoder="counting")
    env.close()
    env.close()
    assert [encoder.closed for encoder in built] == [1]


def test_numpy_inputs_are_accepted():
    with make(
        instruction=np.str_("get dirt"),
        instructions=np.array(["get dirt", "chop a tree"]),
        k=np.int64(5),
        pov_shape=np.array([32, 48]),
        world_kwargs={"pov_shape": np.array([64, 64]), "size": np.int64(48)},
    ) as env:
        obs, _ = env.reset(seed=0)
        assert obs["pov"].shape == (32, 48, 3)
        _, _, _, _, info = env.step(np.array("chop a tree"))
        assert info["instruction"] == "chop a tree" and isinstance(info["instruction"], str)
    assert InventoryDelta("dirt", np.int64(2)).count == 2.0
    assert TravelDistance(np.float32(5)).distance == 5.0


def test_detector_classes_are_rejected_with_a_hint():
    with pytest.raises(DetectorError, match=r"InventoryDelta\(\.\.\.\)"):
        make(instruction="get dirt", success=InventoryDelta)


def test_detectors_pickle_and_copy():
    for detector in DEFAULT_DETECTORS.values():
        clone = pickle.loads(pickle.dumps(detector))
        assert clone.name == detector.name and copy.deepcopy(detector).name == detector.name


def test_instruction_space_excludes_whitespace_only_text():
    space = InstructionSpace(20, ["get dirt"])
    assert space.contains("") and space.contains(np.array("get dirt"))
    assert not space.contains("   ") and not space.contains("\t")


def test_unknown_and_ambiguous_instructions_warn_with_the_reason():
    with (
        make(instruction="gather logs and dirt", policy="random", k=2) as env,
        pytest.warns(steve1_env.Steve1EnvWarning, match=r"several skills \(dirt, wood\)"),
    ):
        env.reset(seed=0)


@pytest.mark.parametrize("env_id", ["Steve1Skill-v0", "Steve1SkillLibrary-v0"])
def test_vector_env_autoreset(env_id):
    envs = gym.make_vec(
        env_id,
        policy="scripted",
        prompt_encoder="hash",
        num_envs=2,
        vectorization_mode="sync",
        instructions=["get dirt", "look at the sky"],
        k=40,
        max_episode_steps=2,
        world_kwargs={"pov_shape": (32, 32)},
    )
    obs, _ = envs.reset(seed=3)
    assert obs["pov"].shape == (2, 128, 128, 3)
    actions = ("", "") if env_id == "Steve1Skill-v0" else np.array([1, 2])
    endings = 0
    for _ in range(5):
        obs, _rewards, terminated, truncated, _infos = envs.step(actions)
        endings += int(np.sum(terminated | truncated))
        assert obs["goal"].dtype == np.float32 and np.isfinite(obs["goal"]).all()
    assert endings >= 2  # each env's TimeLimit of 2 high-level steps fired and autoreset ran
    envs.close()


def test_check_env_on_the_wrapped_env():
    from gymnasium.utils.env_checker import check_env

    env = gym.make("Steve1SkillLibrary-v0", k=20, policy="scripted", prompt_encoder="hash")
    with pytest.warns(UserWarning, match="different from the unwrapped"):
        check_env(env)
    env.close()


@pytest.mark.slow
def test_sb3_ppo_trains_on_the_discrete_face():
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    vec = make_vec_env(
        "Steve1SkillLibrary-v0", n_envs=2, seed=0,
        env_kwargs={"k": 20, "world_kwargs": {"pov_shape": (64, 64)}, "policy": "scripted",
                    "prompt_encoder": "hash"},
    )  # fmt: skip
    model = PPO("MultiInputPolicy", vec, n_steps=16, batch_size=16, n_epochs=1, seed=0)
    model.learn(total_timesteps=32)
    action, _ = model.predict(vec.reset(), deterministic=True)
    assert action.shape == (2,)
    vec.close()


def test_episodes_are_identical_across_processes():
    code = (
        "import hashlib, numpy as np, gymnasium as gym, steve1_env\n"
        "env = gym.make('Steve1Skill-v0', policy='random', prompt_encoder='hash',"
        " instruction='chop a tree', k=30)\n"
        "obs, _ = env.reset(seed=11)\n"
        "h = hashlib.sha256(obs['pov'].tobytes())\n"
        "for a in ['', 'get dirt', '']:\n"
        "    obs, r, te, tr, info = env.step(a)\n"
        "    h.update(obs['pov'].tobytes()); h.update(repr(sorted(info.items())).encode())\n"
        "print(h.hexdigest())\n"
    )
    digests = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": seed, "PATH": ""},
        ).stdout
        for seed in ("0", "1")
    }
    assert len(digests) == 1 and len(digests.pop().strip()) == 64


@pytest.mark.parametrize("bad", ["", "   "])
def test_whitespace_actions_only_empty_string_keeps(bad):
    with make(instruction="get dirt", k=2) as env:
        env.reset(seed=0)
        if bad == "":
            assert env.step(bad)[-1]["instruction"] == "get dirt"
        else:
            with pytest.raises(InvalidInstructionError):
                env.step(bad)


def test_custom_detector_is_named_in_info():
    with make(instruction="get dirt", success=custom(lambda s, o, n: n >= 2, "two"), k=9) as env:
        env.reset(seed=0)
        assert env.step("")[-1]["detector"] == "two"


def test_reset_option_success_sets_this_episodes_detector():
    from steve1_env.success import InventoryDelta

    never = InventoryDelta("diamond", 1, name="diamond")
    with make(instruction="chop a tree", k=300) as env:
        env.reset(seed=0, options={"success": never})
        _, _, _, _, info = env.step("")
        assert info["detector_spec"] == "diamond" and not info["is_success"]
        # The next episode is back to the env's own detectors.
        env.reset(seed=0)
        _, _, _, _, info = env.step("")
        assert info["detector_spec"] == "wood" and info["is_success"]
        # A mapping covers its instructions; others keep the defaults.
        env.reset(seed=0, options={"success": {"get dirt": never}})
        _, _, _, _, info = env.step("get dirt")
        assert info["detector_spec"] == "diamond"
        _, _, _, _, info = env.step("chop a tree")
        assert info["detector_spec"] == "wood"
        with pytest.raises(ConfigurationError, match="options are instruction, success"):
            env.reset(options={"instructions": "x"})
