"""Tokenizer, MineCLIP text tower, prior and the STEVE-1 prompt encoder against the fixtures."""

import json
import shutil
import warnings

import numpy as np
import pytest
import torch

from steve1_env.env import Steve1SkillEnv
from steve1_env.errors import (
    ClosedError,
    ConfigurationError,
    GoalEmbeddingError,
    InvalidInstructionError,
    Steve1EnvWarning,
    WeightsError,
)
from steve1_env.precision import as_goal_embedding
from steve1_env.prompt.base import PromptEncoder
from steve1_env.prompt.mineclip import CHECKPOINT_PREFIX, TextTower, TextTowerConfig
from steve1_env.prompt.precomputed import PrecomputedPromptEncoder
from steve1_env.prompt.prior import PriorVAE
from steve1_env.prompt.steve1_encoder import Steve1PromptEncoder, text_tower_state
from steve1_env.prompt.tokenizer import ClipTokenizer
from steve1_env.weights import check_state_dict, load_state_dict

TOL = {"atol": 1e-4, "rtol": 1e-4}


@pytest.fixture(scope="module")
def tokenizer():
    return ClipTokenizer()


@pytest.fixture(scope="module")
def tiny_config(golden):
    spec = json.loads((golden / "mineclip_text_tiny.json").read_text())
    return TextTowerConfig(spec["width"], spec["layers"], spec["heads"], spec["embed_dim"])


@pytest.fixture
def tiny_weights_dir(golden, tmp_path):
    """A weights directory with the fixture prior and the tiny tower (not named attn.pth)."""
    shutil.copy(golden / "mineclip_text_tiny.pth", tmp_path / "mineclip_tiny.pth")
    shutil.copy(golden / "prior.pt", tmp_path / "steve1_prior.pt")
    return tmp_path


def dir_encoder(directory, config, **kwargs):
    return Steve1PromptEncoder(
        weights=directory, mineclip=directory / "mineclip_tiny.pth", text_config=config, **kwargs
    )


def tiny_encoder(golden, tiny_config, **kwargs):
    return Steve1PromptEncoder(
        mineclip=golden / "mineclip_text_tiny.pth",
        prior=golden / "prior.pt",
        weights=golden,
        text_config=tiny_config,
        **kwargs,
    )


def test_every_tokenizer_case_is_exact(tokenizer, golden):
    cases = json.loads((golden / "tokenizer_cases.json").read_text())
    assert (cases["bos"], cases["eos"]) == (tokenizer.start_id, tokenizer.end_id)
    for case in cases["cases"]:
        assert tokenizer.encode(case["text"]) == case["ids"], case["text"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Steve1EnvWarning)
            row = tokenizer.tokenize(case["text"])
        assert row.tolist() == case["tokens77"], case["text"]


def test_over_long_instructions_are_truncated_with_a_warning(tokenizer):
    with pytest.warns(Steve1EnvWarning, match="truncated"):
        row = tokenizer.tokenize("chop " * 100)
    assert row[0] == tokenizer.start_id and row[-1] == tokenizer.end_id and (row != 0).all()


def test_text_tower_matches_mineclip(golden, tiny_config):
    tower = TextTower(tiny_config).eval()
    state = text_tower_state(torch.load(golden / "mineclip_text_tiny.pth")["state_dict"])
    tower.load_state_dict(state, strict=True)
    data = np.load(golden / "mineclip_text_io.npz")
    with torch.no_grad():
        out = tower(torch.from_numpy(data["tokens"]))
    np.testing.assert_allclose(out, data["text_embed"], **TOL)


def test_prior_matches_both_modes(golden):
    prior = PriorVAE().eval()
    prior.load_state_dict(load_state_dict(golden / "prior.pt"), strict=True)
    data = np.load(golden / "prior_io.npz")
    text = torch.from_numpy(data["text_embed"])
    with torch.no_grad():
        np.testing.assert_allclose(prior.decode(text), data["out_deterministic"], **TOL)
        z = torch.from_numpy(data["z"])
        np.testing.assert_allclose(prior.decode(text, z), data["out_with_z"], **TOL)


def test_full_chain_gives_the_prompt_embeddings(golden, tiny_config, tokenizer):
    encoder = tiny_encoder(golden, tiny_config)
    assert isinstance(encoder, PromptEncoder)
    data = np.load(golden / "chain_io.npz")
    cases = json.loads((golden / "tokenizer_cases.json").read_text())["cases"][:11]
    for i, case in enumerate(cases):
        assert tokenizer.tokenize(case["text"]).tolist() == data["tokens"][i].tolist()
        goal = encoder.encode(case["text"])
        assert goal.dtype == np.float32 and goal.shape == (512,)
        np.testing.assert_allclose(goal, data["prompt_embed"][i], **TOL)


def test_full_size_tower_loads_a_checkpoint_with_the_official_keys(golden):
    manifest = json.loads((golden / "manifests.json").read_text())["mineclip_attn"]["keys"]
    with torch.device("meta"):
        tower = TextTower(TextTowerConfig())
        checkpoint = {key: torch.empty(shape) for key, shape in manifest.items()}
    state = text_tower_state(checkpoint)
    assert len(state) < len(checkpoint)  # vision, pooling and reward-head keys are ignored
    check_state_dict(tower.state_dict(), state, "MineCLIP text tower")
    tower.load_state_dict(state, strict=True, assign=True)
    expected = sum(int(np.prod(manifest[CHECKPOINT_PREFIX + key])) for key in state)
    assert sum(p.numel() for p in tower.parameters()) == expected


def test_caller_autocast_still_gives_float32(golden, tiny_config):
    plain = tiny_encoder(golden, tiny_config).encode("chop a tree")
    with torch.autocast("cpu", dtype=torch.float16):
        guarded = tiny_encoder(golden, tiny_config).encode("chop a tree")
    assert guarded.dtype == np.float32
    np.testing.assert_allclose(guarded, plain, atol=1e-3, rtol=1e-3)


def test_non_finite_embeddings_are_rejected(golden, tiny_config):
    encoder = tiny_encoder(golden, tiny_config)
    with torch.no_grad():
        encoder.prior.decoder[6].bias.fill_(float("nan"))
    with pytest.raises(GoalEmbeddingError, match="non-finite"):
        encoder.encode("chop a tree")


def test_text_tower_runs_once_per_instruction(golden, tiny_config):
    encoder = tiny_encoder(golden, tiny_config)
    first = encoder.encode("chop a tree")
    np.testing.assert_array_equal(encoder.encode("chop a tree"), first)
    encoder.encode("get dirt")
    assert encoder.text_tower_calls == 2


def test_second_reset_with_the_same_instruction_skips_the_text_tower(tiny_weights_dir, tiny_config):
    encoder = dir_encoder(tiny_weights_dir, tiny_config)
    with Steve1SkillEnv(policy="scripted", prompt_encoder=encoder, instruction="chop a tree",
                        world_kwargs={"pov_shape": (32, 32)}) as env:  # fmt: skip
        env.reset(seed=0)
        env.reset(seed=1)
    assert encoder.text_tower_calls == 1


def test_disk_cache_survives_processes_and_keys_on_weights(tiny_weights_dir, tiny_config, tmp_path):
    cache = tmp_path / "cache"
    first = dir_encoder(tiny_weights_dir, tiny_config, cache_dir=cache)
    goal = first.encode("chop a tree")
    assert len(list(cache.glob("*.npy"))) == 1
    second = dir_encoder(tiny_weights_dir, tiny_config, cache_dir=cache)
    np.testing.assert_array_equal(second.encode("chop a tree"), goal)
    assert second.text_tower_calls == 0  # served from disk
    # Other prior weights: another key, so no stale embedding.
    prior = load_state_dict(tiny_weights_dir / "steve1_prior.pt")
    prior["decoder.6.bias"] = prior["decoder.6.bias"] + 1.0
    torch.save(prior, tiny_weights_dir / "steve1_prior.pt")
    third = dir_encoder(tiny_weights_dir, tiny_config, cache_dir=cache)
    changed = third.encode("chop a tree")
    assert third.text_tower_calls == 1 and not np.allclose(changed, goal)


def test_sampling_draws_one_latent_per_episode(golden, tiny_config):
    encoder = tiny_encoder(golden, tiny_config, sample=True)
    with pytest.raises(ConfigurationError, match="start_episode"):
        encoder.encode("chop a tree")
    encoder.start_episode(1)
    a, a_again = encoder.encode("chop a tree"), encoder.encode("chop a tree")
    encoder.start_episode(2)
    b = encoder.encode("chop a tree")
    encoder.start_episode(1)
    np.testing.assert_array_equal(a, a_again)
    np.testing.assert_array_equal(encoder.encode("chop a tree"), a)
    assert not np.allclose(a, b) and encoder.text_tower_calls == 1


def test_env_redraws_sampled_goals_per_episode(golden, tiny_config):
    encoder = tiny_encoder(golden, tiny_config, sample=True)
    with Steve1SkillEnv(policy="scripted", prompt_encoder=encoder, instruction="chop a tree",
                        world_kwargs={"pov_shape": (32, 32)}) as env:  # fmt: skip
        goals = [env.reset(seed=s)[0]["goal"] for s in (0, 1, 0)]
    assert not np.allclose(goals[0], goals[1])
    np.testing.assert_array_equal(goals[0], goals[2])


def test_official_mineclip_file_must_have_its_published_md5(tiny_weights_dir, tiny_config):
    shutil.copy(tiny_weights_dir / "mineclip_tiny.pth", tiny_weights_dir / "attn.pth")
    encoder = Steve1PromptEncoder(weights=tiny_weights_dir, text_config=tiny_config)
    with pytest.raises(WeightsError, match=r"md5 .* but the official attn\.pth has b5ece919"):
        encoder.encode("chop a tree")  # the tower (and its check) loads on first use


def test_missing_weights_say_how_to_get_them(tmp_path):
    with pytest.raises(
        WeightsError,
        match=r"missing there: 2x.model.*steve1-env weights download.*'weights': 'random'",
    ):
        Steve1PromptEncoder(weights=tmp_path)


def test_random_weights_warn(tiny_config):
    with pytest.warns(Steve1EnvWarning, match="UNTRAINED"):
        encoder = Steve1PromptEncoder(weights="random", text_config=tiny_config)
    goal = encoder.encode("chop a tree")
    assert np.isfinite(goal).all() and goal.dtype == np.float32
    encoder.close()
    encoder.close()
    with pytest.raises(ClosedError, match="prompt encoder was closed"):
        encoder.encode("chop a tree")


def test_precomputed_embeddings_from_npz_and_json(tmp_path):
    rng = np.random.default_rng(0)
    table = {
        "chop a tree": rng.standard_normal(512),
        "Visual: dig a hole": rng.standard_normal(512),
    }
    np.savez(tmp_path / "e.npz", **table)
    (tmp_path / "e.json").write_text(json.dumps({k: v.tolist() for k, v in table.items()}))
    for path in (tmp_path / "e.npz", tmp_path / "e.json"):
        encoder = PrecomputedPromptEncoder(path)
        np.testing.assert_allclose(encoder.encode("Chop  a Tree"), table["chop a tree"], rtol=1e-6)
        with pytest.raises(InvalidInstructionError, match="No precomputed embedding"):
            encoder.encode("build a house")
    with Steve1SkillEnv(
        policy="scripted",
        prompt_encoder="precomputed",
        prompt_encoder_kwargs={"path": tmp_path / "e.npz"},
        instruction="chop a tree",
        world_kwargs={"pov_shape": (32, 32)},
    ) as env:
        obs, _ = env.reset(seed=0)
    np.testing.assert_allclose(obs["goal"], as_goal_embedding(table["chop a tree"]))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "exactly one of"),
        ({"embeddings": {}}, "empty"),
        ({"embeddings": {"x": np.zeros(3)}}, "shape"),
        ({"embeddings": {"x": np.full(512, np.inf)}}, "non-finite"),
        ({"embeddings": {"Go": np.zeros(512), "go": np.ones(512)}}, "differ only in case"),
        ({"path": "missing.npz"}, "Cannot read"),
        ({"path": "table.csv"}, r"\.npz or \.json"),
    ],
)
def test_bad_precomputed_tables(kwargs, match):
    with pytest.raises(ConfigurationError, match=match):
        PrecomputedPromptEncoder(**kwargs)


def test_disk_cache_keys_on_the_tower_config_and_survives_bad_directories(
    tiny_weights_dir, tiny_config, tmp_path
):
    cache = tmp_path / "cache"
    goal = dir_encoder(tiny_weights_dir, tiny_config, cache_dir=cache).encode("chop a tree")
    other_heads = TextTowerConfig(tiny_config.width, tiny_config.layers, 1, tiny_config.embed_dim)
    other = dir_encoder(tiny_weights_dir, other_heads, cache_dir=cache)
    assert not np.allclose(other.encode("chop a tree"), goal)
    assert other.text_tower_calls == 1  # not served the 2-head entry
    (next(cache.glob("*.npy"))).write_bytes(b"garbage")  # a damaged entry is recomputed
    again = dir_encoder(tiny_weights_dir, tiny_config, cache_dir=cache)
    with pytest.warns(Steve1EnvWarning, match="Dropped the unreadable"):
        np.testing.assert_allclose(again.encode("chop a tree"), goal, rtol=1e-6)
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where the cache directory should be")
    fallback = dir_encoder(tiny_weights_dir, tiny_config, cache_dir=blocked)
    with pytest.warns(Steve1EnvWarning, match="Continuing without the disk cache"):
        np.testing.assert_allclose(fallback.encode("chop a tree"), goal, rtol=1e-6)
    assert fallback.cache_dir is None


def test_cached_process_never_loads_the_tower(tiny_weights_dir, tiny_config, tmp_path):
    cache = tmp_path / "cache"
    dir_encoder(tiny_weights_dir, tiny_config, cache_dir=cache).encode("get dirt")
    fresh = dir_encoder(tiny_weights_dir, tiny_config, cache_dir=cache)
    fresh.encode("get dirt")
    assert fresh._tower is None


def test_special_tokens_in_text_are_special(tokenizer):
    assert tokenizer.encode("a <|endoftext|> b")[1] == tokenizer.end_id


def test_encoder_is_safe_to_share_between_threads(golden, tiny_config):
    import threading

    encoder = tiny_encoder(golden, tiny_config, cache_size=2)
    errors = []

    def work(i):
        try:
            for j in range(20):
                encoder.encode(f"instruction {(i + j) % 5}")
        except Exception as exc:  # collected: the assertion reports it
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
