"""The official `steve1` package (a faithful fake): its raw call sequence fails, ours works."""

import hashlib
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from steve1_env.env import Steve1SkillEnv
from steve1_env.errors import ConfigurationError, DependencyNotInstalledError, UnsafeFileError

FAKE_PACKAGE = Path(__file__).parent / "fakes" / "steve1_package"


@pytest.fixture
def official(monkeypatch, tmp_path, tiny_policy_files):
    """Puts the fake `steve1` on the path and writes its weights; yields the policy kwargs.

    The weights directory (``$STEVE1_WEIGHTS_DIR``) holds the policy, MineCLIP and prior
    weights; the fake config's MineCLIP checksum is set to the fake checkpoint's.
    """
    monkeypatch.syspath_prepend(str(FAKE_PACKAGE))
    for name in [m for m in sys.modules if m == "steve1" or m.startswith("steve1.")]:
        monkeypatch.delitem(sys.modules, name)
    import steve1.config
    from steve1.data.text_alignment.vae import TranslatorVAE
    from steve1.mineclip_code.load_mineclip import FakeMineCLIP
    from steve1.MineRLConditionalAgent import FakePolicy

    torch.manual_seed(0)
    torch.save(FakePolicy().state_dict(), tmp_path / "steve1.weights")
    torch.save(FakeMineCLIP().state_dict(), tmp_path / "attn.pth")
    torch.save(TranslatorVAE(512, 512, 512).state_dict(), tmp_path / "steve1_prior.pt")
    md5 = hashlib.md5((tmp_path / "attn.pth").read_bytes()).hexdigest()
    monkeypatch.setitem(steve1.config.MINECLIP_CONFIG["ckpt"], "checksum", md5)
    monkeypatch.setenv("STEVE1_WEIGHTS_DIR", str(tmp_path))
    stub = type("Env", (), {"task": object(), "action_space": object()})()
    yield {"weights": tmp_path / "steve1.weights", "model": tiny_policy_files["model"],
           "env_stub": stub}  # fmt: skip
    for name in [m for m in sys.modules if m == "steve1" or m.startswith("steve1.")]:
        sys.modules.pop(name, None)


def test_the_raw_upstream_call_sequence_fails_with_the_dtype_error(official, tmp_path, monkeypatch):
    # Upstream's config names its weights relative to the working directory.
    for role, name in (("mineclip", "attn.pth"), ("steve1", "steve1_prior.pt")):
        (tmp_path / "data" / "weights" / role).mkdir(parents=True)
        shutil.copy(tmp_path / name, tmp_path / "data" / "weights" / role / name)
    monkeypatch.chdir(tmp_path)
    from steve1.config import PRIOR_INFO
    from steve1.data.text_alignment.vae import load_vae_model
    from steve1.MineRLConditionalAgent import MineRLConditionalAgent
    from steve1.utils.embed_utils import get_prior_embed
    from steve1.utils.mineclip_agent_env_utils import load_mineclip_wconfig, make_agent

    with pytest.raises(RuntimeError, match="CUDA"):
        make_agent("2x.model", "steve1.weights", 6.0)  # hard-codes cuda and a real env
    embed = get_prior_embed("chop a tree", load_mineclip_wconfig(), load_vae_model(PRIOR_INFO),
                            "cpu")  # fmt: skip
    assert embed.dtype == np.float16
    agent = MineRLConditionalAgent(official["env_stub"], device="cpu", policy_kwargs={},
                                   pi_head_kwargs={"temperature": 2.0})  # fmt: skip
    agent.load_weights(str(official["weights"]))
    assert agent.cond_scale is None  # the quirk: load_weights switched guidance off
    agent.reset(cond_scale=6.0)
    obs = {"pov": np.zeros((360, 640, 3), np.uint8)}
    with pytest.raises(RuntimeError, match="mat1 and mat2 must have the same dtype"):
        agent.get_action(obs, embed)


def test_our_adapters_run_the_same_package(official):
    env = Steve1SkillEnv(policy="steve1-official", prompt_encoder="steve1-official",
                         policy_kwargs=official, instruction="chop a tree", k=4,
                         world_kwargs={"pov_shape": (72, 128)})  # fmt: skip
    with env, torch.autocast("cpu", dtype=torch.float16):
        obs, _ = env.reset(seed=0)
        assert obs["goal"].dtype == np.float32 and np.isfinite(obs["goal"]).all()
        _, _, _, _, info = env.step("")
        assert info["steps"] == 4
        agent = env.policy.agent
        assert agent.cond_scale == 6.0 and agent.device == "cpu"
        assert next(agent.policy.parameters()).dtype == torch.float32


def test_one_official_policy_serves_one_env(official):
    from steve1_env.agent.base import Goal
    from steve1_env.agent.official import OfficialSteve1Policy

    policy = OfficialSteve1Policy(**official)
    goal = Goal("x", np.zeros(512, np.float32))
    obs = {"pov": np.zeros((360, 640, 3), np.uint8)}
    first = policy.initial_state(0)
    policy.initial_state(1)
    with pytest.raises(ConfigurationError, match="one env"):
        policy.act(obs, goal, first)


def test_a_goals_own_guidance_scale_reaches_the_official_agent(official):
    # A task's cond_scale (the paper set's 6.0 for text) or a visual goal's 7.0 was ignored:
    # the agent kept the adapter's scale.
    from steve1_env.agent.base import Goal
    from steve1_env.agent.official import OfficialSteve1Policy

    policy = OfficialSteve1Policy(**official, cond_scale=3.0)
    seen = []
    get_action = policy.agent.get_action
    policy.agent.get_action = lambda obs, goal: (
        seen.append(policy.agent.cond_scale) or (get_action(obs, goal))
    )
    obs = {"pov": np.zeros((360, 640, 3), np.uint8)}
    state = policy.initial_state(0)
    for scale in (7.0, None, 6.0):
        policy.act(obs, Goal("x", np.zeros(512, np.float32), cond_scale=scale), state)
    assert seen == [7.0, 3.0, 6.0]
    assert policy.agent.hidden_state.shape[0] == 2  # both guidance branches throughout


def test_the_official_encoder_draws_the_papers_sampled_latent_from_a_seed(official):
    # It could draw one (upstream's get_prior_embed samples) but had no encode_sampled, so the
    # paper set (prompt_latent: sampled) was refused with the official stack, the reference.
    from steve1.utils.embed_utils import get_prior_embed

    from steve1_env.evaluation.trial import RunSettings, check_run_arguments
    from steve1_env.prompt.official import OfficialPromptEncoder
    from steve1_env.tasks.spec import load_task_set

    encoder = OfficialPromptEncoder()
    text = "chop a tree"
    one, again = encoder.encode_sampled(text, 7), encoder.encode_sampled(text, 7)
    assert np.array_equal(one, again) and not np.allclose(one, encoder.encode_sampled(text, 8))
    torch.manual_seed(7)  # upstream's own draw, from the global generator seeded so
    upstream = get_prior_embed(text, encoder.mineclip, encoder.prior, "cpu")
    assert np.array_equal(one, np.asarray(upstream, np.float32).reshape(512))
    with pytest.raises(ConfigurationError, match="MAX_SEED"):
        encoder.encode_sampled(text, 2**64)
    settings = RunSettings(policy="scripted", prompt_encoder="steve1-official")
    check_run_arguments(settings, load_task_set("paper").trial_specs(1, horizon=10))


def test_an_unsafe_weight_file_is_refused_before_the_package_loads_it(official, tmp_path):
    import os

    class RunsCode:
        def __reduce__(self):
            return (os.system, ("true",))

    torch.save({"x": RunsCode()}, tmp_path / "evil.weights")
    from steve1_env.agent.official import OfficialSteve1Policy

    with pytest.raises(UnsafeFileError):
        OfficialSteve1Policy(**{**official, "weights": tmp_path / "evil.weights"})


def test_without_the_package_the_error_says_how_to_install_it(monkeypatch):
    for name in [m for m in sys.modules if m == "steve1" or m.startswith("steve1.")]:
        monkeypatch.delitem(sys.modules, name)
    from steve1_env.agent.official import OfficialSteve1Policy

    with pytest.raises(DependencyNotInstalledError, match="Shalev-Lifshitz/STEVE-1"):
        OfficialSteve1Policy()


def test_prefixed_weights_load_and_foreign_ones_are_refused(official, tmp_path):
    from steve1_env.agent.official import OfficialSteve1Policy
    from steve1_env.errors import WeightsError

    state = torch.load(official["weights"])
    torch.save({"module.policy." + k: v for k, v in state.items()}, tmp_path / "ddp.weights")
    policy = OfficialSteve1Policy(**{**official, "weights": tmp_path / "ddp.weights"})
    loaded = policy.agent.policy.state_dict()
    assert all(torch.equal(loaded[k], state[k]) for k in state)
    torch.save({"something.else": torch.zeros(1)}, tmp_path / "other.weights")
    with pytest.raises(WeightsError, match="lacks 6 of the official policy's weights"):
        OfficialSteve1Policy(**{**official, "weights": tmp_path / "other.weights"})
