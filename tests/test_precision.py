"""The dtype bug, reproduced on CPU, and the guarantees that remove it."""

import numpy as np
import pytest
import torch

from steve1_env import precision
from steve1_env.env import Steve1SkillEnv
from steve1_env.errors import GoalEmbeddingError
from steve1_env.worlds.actions import noop_action

torch.manual_seed(0)
TEXT_TOWER = torch.nn.Linear(16, 512)  # stands in for MineCLIP + prior (float32 weights)
POLICY_LAYER = torch.nn.Linear(512, 8)  # stands in for mineclip_embed_linear (float32)
TOKENS = torch.randn(1, 16)


def prompt_embedding_like_upstream():
    """Computes the embedding the way upstream's get_prior_embed does: inside autocast."""
    with torch.autocast("cpu", dtype=torch.float16):
        return TEXT_TOWER(TOKENS)


def test_upstream_pattern_reproduces_the_dtype_error():
    embedding = prompt_embedding_like_upstream()
    assert embedding.dtype == torch.float16
    with pytest.raises(RuntimeError, match="mat1 and mat2 must have the same dtype"):
        POLICY_LAYER(embedding)


def test_guarded_path_gives_float32():
    goal = precision.as_goal_embedding(prompt_embedding_like_upstream())
    assert goal.dtype == np.float32 and goal.shape == (512,)
    with precision.autocast_disabled("cpu"):
        out = POLICY_LAYER(precision.goal_tensor(goal, "cpu"))
    assert out.dtype == torch.float32
    expected = POLICY_LAYER(torch.from_numpy(goal)[None])
    torch.testing.assert_close(out, expected)


def test_autocast_disabled_overrides_a_callers_region():
    goal = precision.goal_tensor(np.ones(512, dtype=np.float32), "cpu")
    with torch.autocast("cpu", dtype=torch.float16):
        assert precision.autocast_active()
        assert POLICY_LAYER(goal).dtype == torch.float16  # what would leak into the policy
        with precision.autocast_disabled("cpu"):
            assert not precision.autocast_active()
            assert POLICY_LAYER(goal).dtype == torch.float32
        assert precision.autocast_active()  # the caller's region is restored
    assert not precision.autocast_active()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_as_goal_embedding_accepts_tensors_of_any_float_dtype(dtype):
    tensor = torch.linspace(-1, 1, 512, dtype=dtype).reshape(1, 512).requires_grad_(True)
    goal = precision.as_goal_embedding(tensor)
    assert goal.dtype == np.float32 and goal.flags.c_contiguous
    np.testing.assert_allclose(goal, np.linspace(-1, 1, 512), atol=1e-2)


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (np.zeros(511), "shape"),
        (np.zeros((2, 512)), "shape"),
        (np.array(["a"] * 512), "numeric"),
        (np.full(512, np.nan), "non-finite"),
        (np.full(512, 1e6), "non-finite"),  # fine in float64 ...
        (np.full(512, 1 + 1j), "numeric"),
    ],
)
def test_as_goal_embedding_rejects_bad_values(value, match):
    if match == "non-finite" and np.isfinite(value).all():
        value = torch.tensor(value, dtype=torch.float16)  # ... but float16 overflows to inf
    with pytest.raises(GoalEmbeddingError, match=match):
        precision.as_goal_embedding(value)


class AutocastPromptEncoder:
    """An encoder that behaves like upstream: returns float16 computed under autocast."""

    device = "cpu"

    def encode(self, instruction):
        return prompt_embedding_like_upstream()

    def close(self):
        pass


class TorchGoalPolicy:
    """A float32 torch policy whose first layer consumes the goal, like STEVE-1's."""

    device = "cpu"

    def __init__(self):
        self.seen_dtypes = []

    def initial_state(self, seed):
        return None

    def act(self, obs, goal, state):
        hidden = POLICY_LAYER(precision.goal_tensor(goal.embedding, self.device))
        self.seen_dtypes.append(hidden.dtype)
        action = noop_action()
        action["attack"] = 1
        return action, state

    def close(self):
        pass


def make_env(policy):
    return Steve1SkillEnv(
        policy=policy,
        prompt_encoder=AutocastPromptEncoder(),
        instruction="get dirt",
        k=5,
        world_kwargs={"pov_shape": (32, 32)},
    )


def test_env_stepped_inside_a_callers_autocast_region_runs_the_policy_in_float32():
    policy = TorchGoalPolicy()
    with make_env(policy) as env, torch.autocast("cpu", dtype=torch.float16):
        obs, _ = env.reset(seed=0)
        obs, *_ = env.step("")
        assert torch.is_autocast_enabled("cpu")  # the caller's region is intact afterwards
    assert obs["goal"].dtype == np.float32
    assert policy.seen_dtypes == [torch.float32] * 5
    with make_env(TorchGoalPolicy()) as env:
        env.reset(seed=0)
        plain, *_ = env.step("")
    np.testing.assert_array_equal(obs["goal"], plain["goal"])


def test_without_the_guard_the_same_policy_sees_float16():
    policy = TorchGoalPolicy()
    goal_embedding = precision.as_goal_embedding(prompt_embedding_like_upstream())
    from steve1_env.agent.base import Goal

    with torch.autocast("cpu", dtype=torch.float16):
        policy.act({}, Goal("get dirt", goal_embedding), None)
    assert policy.seen_dtypes == [torch.float16]  # the leak the env prevents


def test_a_goal_converts_its_embedding_once_to_read_only_float32():
    from steve1_env.agent.base import Goal

    ready = precision.as_goal_embedding(np.linspace(-1, 1, 512))
    ready.flags.writeable = False
    assert Goal("x", ready).embedding is ready  # already what policies need: no copy
    writable = np.ones(512, np.float32)
    goal = Goal("x", writable)
    assert goal.embedding is not writable and not goal.embedding.flags.writeable
    writable[0] = 5.0  # the caller's array stays theirs
    assert goal.embedding[0] == 1.0
    for raw in (prompt_embedding_like_upstream(), np.ones((1, 512), np.float16), [0.5] * 512):
        embedding = Goal("x", raw).embedding
        assert embedding.dtype == np.float32 and embedding.shape == (512,)
        assert not embedding.flags.writeable
    with pytest.raises(GoalEmbeddingError, match="non-finite"):
        Goal("x", np.full(512, np.nan, np.float32))
    with pytest.raises(GoalEmbeddingError, match=r"shape \(512,\)"):
        Goal("x", np.zeros(511, np.float32))
