"""Review of issue 14: the MineCLIP score's and visual goals' edge cases."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from steve1_env.agent.base import Goal
from steve1_env.errors import ConfigurationError
from steve1_env.prompt.visual_goals import check_clip
from steve1_env.success import MineCLIPScore
from tests.test_mineclip_score import (
    COW_BY_MINECLIP_AND_DIRT,
    SMALL,
    ColourTower,
    colour_worker_scorers,
    make_scorer,
)


def _count_builds(monkeypatch):
    import steve1_env.env as env_module
    import steve1_env.prompt.mineclip_score as score_module

    built = []

    def build(**kwargs):
        built.append(kwargs)
        return make_scorer()[1]

    monkeypatch.setattr(env_module, "build_mineclip_scorer", build)
    monkeypatch.setattr(score_module, "build_mineclip_scorer", build)
    return built


@pytest.mark.parametrize(
    "kwargs",
    [
        {"success": MineCLIPScore(0.001)},
        {"success": {"kill a cow": MineCLIPScore(0.001)}},
        {"fallback_detector": MineCLIPScore(0.001)},
    ],
)
def test_a_vector_env_whose_detectors_read_mineclip_shares_one_scorer(monkeypatch, kwargs):
    from steve1_env.vector.env import Steve1SkillVectorEnv

    built = _count_builds(monkeypatch)
    vector = Steve1SkillVectorEnv(
        3, policy="random", prompt_encoder="hash", instruction="kill a cow", k=3,
        world_kwargs=SMALL, **kwargs,
    )  # fmt: skip
    try:
        assert len(built) == 1
        assert len({id(env.scorer) for env in vector.envs}) == 1
    finally:
        vector.close()


def test_a_vector_reset_whose_detectors_read_mineclip_shares_one_scorer(monkeypatch):
    from steve1_env.vector.env import Steve1SkillVectorEnv

    built = _count_builds(monkeypatch)
    vector = Steve1SkillVectorEnv(
        3, policy="random", prompt_encoder="hash", instruction="kill a cow", k=3,
        world_kwargs=SMALL,
    )  # fmt: skip
    try:
        vector.reset(seed=0, options={"success": MineCLIPScore(0.001)})
        _, _, _, _, info = vector.step([""] * 3)
        assert len(built) == 1
        assert len({id(env.scorer) for env in vector.envs}) == 1
        assert list(info["is_success"]) == [True] * 3
    finally:
        vector.close()


@pytest.mark.parametrize("scale", [float("inf"), float("nan"), -1.0, True, "7"])
def test_a_goal_refuses_a_cond_scale_that_is_not_a_finite_number(scale):
    with pytest.raises(ConfigurationError, match="cond_scale"):
        Goal("x", np.zeros(512, np.float32), scale)


def test_a_goal_takes_a_numpy_cond_scale():
    assert Goal("x", np.zeros(512, np.float32), np.float32(7.0)).cond_scale == 7.0


@pytest.mark.parametrize(
    "clip",
    [
        [np.zeros((4, 4, 3), np.uint8)] * 15 + [np.zeros((4, 5, 3), np.uint8)],  # ragged
        [[1, 2], [3]],
        np.broadcast_to(np.zeros((1, 1, 1, 3), np.uint8), (16, 1 << 20, 1 << 20, 3)),
        np.zeros((16, 0, 4, 3), np.uint8),
    ],
)
def test_a_hostile_clip_is_a_clear_error(clip):
    with pytest.raises(ConfigurationError):
        check_clip(clip)


def _plain(action):
    return {key: np.asarray(value).tolist() for key, value in action.items()}


def test_envs_with_the_default_scale_act_bitwise_as_before_beside_a_visual_goal(
    tiny_policy_files,
):
    import torch

    from steve1_env.agent.native import NativeSteve1Policy

    policy = NativeSteve1Policy(
        weights=tiny_policy_files["weights"], model=tiny_policy_files["model"], cond_scale=6.0
    )
    rng = np.random.default_rng(0)
    n, ticks = 4, 6
    frames = rng.integers(0, 256, (ticks, n, 48, 64, 3), dtype=np.uint8)
    embeddings = rng.standard_normal((n, 512)).astype(np.float32)

    def rollout(scales):
        goals = [Goal(f"g{i}", embeddings[i], scale) for i, scale in enumerate(scales)]
        states = [policy.initial_state(i) for i in range(n)]
        actions = []
        for t in range(ticks):
            obs = [{"pov": frames[t, i]} for i in range(n)]
            step, states = policy.act_batch(obs, goals, states)
            actions.append(step)
        return actions, states

    before, before_states = rollout([None] * n)
    calls = []
    forward = policy.forward

    def recording(frames, goals, states, cond_scale="policy"):
        calls.append((cond_scale, len(frames)))
        return forward(frames, goals, states, cond_scale=cond_scale)

    policy.forward = recording  # type: ignore[method-assign]
    mixed, mixed_states = rollout([None, 100.0, None, 0.0])
    # One forward pass per scale and tick, each env in the pass of its own scale.
    assert calls == [(6.0, 2), (100.0, 1), (0.0, 1)] * ticks
    for i in (0, 2):  # the default-scale envs
        assert [_plain(a[i]) for a in mixed] == [_plain(a[i]) for a in before]
        for old, new in zip(before_states[i].memory, mixed_states[i].memory, strict=True):
            assert torch.equal(old.keys, new.keys) and torch.equal(old.values, new.values)
    # A visual goal's env acts as it does alone at its scale.
    alone = [Goal("g1", embeddings[1], 100.0)]
    state = [policy.initial_state(1)]
    for t in range(ticks):
        step, state = policy.act_batch([{"pov": frames[t, 1]}], alone, state)
        assert _plain(step[0]) == _plain(mixed[t][1])


def test_an_evaluations_paper_visual_goal_reads_the_runs_weights_directory(tmp_path):
    from steve1_env.evaluation.runner import evaluate
    from steve1_env.evaluation.trial import RunSettings
    from steve1_env.prompt.hash_encoder import HashPromptEncoder
    from steve1_env.prompt.visual_prompts import PAPER_VISUAL_PROMPT_NAMES, VISUAL_PROMPTS_FILE
    from steve1_env.registry import register_prompt_encoder
    from steve1_env.tasks.spec import parse_task_set

    def hash_with_weights(device="cpu", weights=None):
        return HashPromptEncoder(device)

    register_prompt_encoder("hash-with-weights", hash_with_weights, overwrite=True)
    weights = tmp_path / "weights"  # the run's, not STEVE1_WEIGHTS_DIR (unset here)
    weights.mkdir()
    rng = np.random.default_rng(2)
    prompts = {name: rng.random(512, np.float32) for name in PAPER_VISUAL_PROMPT_NAMES}
    np.savez(weights / VISUAL_PROMPTS_FILE, **prompts)
    tasks = parse_task_set(
        "tasks:\n"
        "  - {name: dirt, instruction: get dirt, max_steps: 300, visual_goal: 'paper:dirt'}\n"
    )
    settings = RunSettings(
        policy="scripted",
        prompt_encoder="hash-with-weights",
        prompt_encoder_kwargs={"weights": str(weights)},
        world_kwargs=SMALL,
        k=50,
    )
    result = evaluate(tasks, tmp_path / "run", settings, trials=1, progress=False)
    assert [record.outcome for record in result.records] == ["success"]


def test_a_vector_cond_scale_applies_to_the_envs_with_a_visual_goal(monkeypatch):
    import steve1_env.prompt.visual_goals as goals_module
    from steve1_env.vector.env import Steve1SkillVectorEnv

    embedding = np.ones(512, np.float32)
    monkeypatch.setattr(goals_module, "visual_goal_from_spec", lambda spec, folder: embedding)
    vector = Steve1SkillVectorEnv(
        2, policy="random", prompt_encoder="hash", instruction="get dirt", k=2,
        world_kwargs=SMALL,
    )  # fmt: skip
    try:
        _, info = vector.reset(seed=0, options={"visual_goal": ["paper:dirt", None],
                                                "cond_scale": 5})  # fmt: skip
        assert [env._slot.goal.cond_scale for env in vector.envs] == [5.0, None]
        assert list(info["instruction"]) == ["visual:paper:dirt", "get dirt"]
        for alone in ({"cond_scale": 5}, {"cond_scale": 5, "visual_goal": [None, None]}):
            with pytest.raises(ConfigurationError, match="visual_goal only"):
                vector.reset(seed=0, options=alone)
    finally:
        vector.close()


class _Loaded(list):
    tower: Any = None


def _count_video_towers(monkeypatch):
    # Replaces MineCLIP's video tower loader with one that counts the towers loaded.
    import torch

    import steve1_env.prompt.mineclip_video as video_module

    loaded: Any = _Loaded()

    class Tower:
        encoded = 0  # clips encoded by every tower

        def encode_video(self, clip):
            Tower.encoded += 1
            return torch.ones(1, 512)

    def load(*args, **kwargs):
        loaded.append(kwargs)
        return Tower()

    monkeypatch.setattr(video_module, "load_mineclip_video", load)
    loaded.tower = Tower
    return loaded


def test_a_vector_envs_visual_goals_load_one_video_tower(monkeypatch):
    from steve1_env.vector.env import Steve1SkillVectorEnv

    loaded = _count_video_towers(monkeypatch)
    clip = np.zeros((16, 8, 8, 3), np.uint8)
    vector = Steve1SkillVectorEnv(
        3, policy="random", prompt_encoder="hash", instruction="get dirt", k=2,
        world_kwargs=SMALL,
    )  # fmt: skip
    try:
        vector.reset(seed=0, options={"visual_goal": clip})
        assert loaded.tower.encoded == 3  # once per env: checking the reset encodes it
        vector.reset(seed=1, options={"visual_goal": [clip, None, clip]})
        assert len(loaded) == 1 and loaded.tower.encoded == 5
    finally:
        vector.close()


def test_an_evaluation_workers_visual_goals_load_one_video_tower(tmp_path, monkeypatch):
    from steve1_env.evaluation.runner import evaluate
    from steve1_env.evaluation.trial import RunSettings
    from steve1_env.evaluation.video import VideoWriter
    from steve1_env.tasks.spec import load_task_set

    loaded = _count_video_towers(monkeypatch)
    writer = VideoWriter(tmp_path / "goal.mp4")
    for value in range(16):
        writer.write(np.full((32, 32, 3), value * 10, np.uint8))
    writer.close()
    (tmp_path / "tasks.yaml").write_text(
        "tasks:\n  - {name: dirt, instruction: get dirt, max_steps: 300, visual_goal: goal.mp4}\n"
    )
    tasks = load_task_set(tmp_path / "tasks.yaml")
    settings = RunSettings(policy="scripted", prompt_encoder="hash", world_kwargs=SMALL, k=50)
    result = evaluate(tasks, tmp_path / "run", settings, trials=3, envs_per_worker=3,
                      progress=False)  # fmt: skip
    assert [record.outcome for record in result.records] == ["success"] * 3
    assert len(loaded) == 1


def test_a_world_scores_only_the_trials_whose_detector_reads_mineclip(tmp_path, monkeypatch):
    from steve1_env.evaluation.runner import evaluate
    from steve1_env.evaluation.trial import RunSettings
    from steve1_env.tasks.spec import parse_task_set

    built = colour_worker_scorers(monkeypatch)
    tasks = parse_task_set(COW_BY_MINECLIP_AND_DIRT)
    settings = RunSettings(policy="scripted", prompt_encoder="hash", world_kwargs=SMALL, k=10)
    result = evaluate(tasks, tmp_path / "run", settings, trials=1, progress=False)
    assert [record.outcome for record in result.records] == ["success", "success"]
    # The cow trial: its reset frame and 2 ticks; the dirt trial after it on the same world: none.
    assert built[0].frames_encoded == 3


def test_negatives_count_once_and_an_instruction_needs_a_rival():
    from steve1_env.prompt.mineclip_score import MineCLIPScorer

    tower = ColourTower()
    scorer = MineCLIPScorer(tower, tower.encode_text, negatives=["stand still", "stand still"])
    assert scorer.negatives == ("stand still",)
    window = scorer.window()
    scorer.push([window], [np.zeros((4, 4, 3), np.uint8)])
    with pytest.raises(ConfigurationError, match="only MineCLIP negative"):
        scorer.scores([window], ["stand still"])


def test_a_vector_env_leaves_a_scorer_passed_in_open():
    from steve1_env.prompt.mineclip_score import MineCLIPScorer
    from steve1_env.vector.env import Steve1SkillVectorEnv

    tower = ColourTower()
    closed = []
    tower.close = lambda: closed.append(True)
    scorer = MineCLIPScorer(tower, tower.encode_text)
    vector = Steve1SkillVectorEnv(
        2, policy="random", prompt_encoder="hash", instruction="get dirt", k=2,
        world_kwargs={"pov_shape": (32, 32)}, mineclip_score=scorer,
    )  # fmt: skip
    vector.close()
    assert closed == []


def test_a_tower_answering_numpy_arrays_is_scored():
    from steve1_env.prompt.mineclip_score import MineCLIPScorer

    class NumpyTower(ColourTower):
        def encode_frames(self, frames):
            return super().encode_frames(frames).numpy()

    tower = NumpyTower()
    scorer = MineCLIPScorer(tower, tower.encode_text)
    window = scorer.window()
    scorer.push([window], [np.full((4, 4, 3), 50, np.uint8)])
    [score] = scorer.scores([window], ["get dirt"])
    assert 0.0 < score < 1.0


def test_paper_prompts_are_read_beside_a_mineclip_checkpoint_file(tmp_path):
    from steve1_env.env import _folder

    checkpoint = tmp_path / "attn.pth"
    checkpoint.write_bytes(b"")
    assert _folder(str(checkpoint)) == str(tmp_path)
    assert _folder(str(tmp_path)) == str(tmp_path)
    assert _folder(None) is None
