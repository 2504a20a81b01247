"""The MineCLIP score inside the engine: per tick, batched, each frame encoded once."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from steve1_env.engine import SkillEngine, Slot
from steve1_env.env import Steve1SkillEnv
from steve1_env.errors import ConfigurationError, DetectorError
from steve1_env.prompt.goals import GoalEncoder
from steve1_env.prompt.hash_encoder import HashPromptEncoder
from steve1_env.prompt.mineclip_score import (
    DEFAULT_NEGATIVE_PROMPTS,
    MineCLIPScorer,
    dense_reward,
)
from steve1_env.success import MineCLIPScore, resolve_detectors
from steve1_env.tasks.detectors import build_detector
from steve1_env.worlds.synthetic import SyntheticWorld

SMALL = {"pov_shape": (32, 32)}


class ColourTower:
    """A stand-in for MineCLIP's towers with the same interface: a frame's feature is its mean
    colour, a clip's the mean over time, text features are seeded by the prompt's letters."""

    def __init__(self):
        self.encoded = []  # batch sizes of encode_frames

    def encode_frames(self, frames):
        self.encoded.append(len(frames))
        return torch.from_numpy(frames.reshape(len(frames), -1, 3).mean(axis=1) / 255.0).float()

    def pool(self, features):
        return features.mean(dim=1)

    def logits_per_video(self, video, text):
        video = torch.nn.functional.normalize(video, dim=-1)
        text = torch.nn.functional.normalize(text, dim=-1)
        return 10.0 * video @ text.T

    def encode_text(self, prompts):
        rows = [np.random.default_rng(sum(map(ord, p))).random(3) for p in prompts]
        return torch.tensor(np.stack(rows), dtype=torch.float32)


def make_scorer(**kwargs):
    tower = ColourTower()
    return tower, MineCLIPScorer(tower, tower.encode_text, **kwargs)


COW_BY_MINECLIP_AND_DIRT = (
    "tasks:\n"
    "  - {name: cow, instruction: kill a cow, max_steps: 40,"
    " success: {type: mineclip, threshold: 0.001, sustain: 2}}\n"
    "  - {name: dirt, instruction: get dirt, max_steps: 300}\n"
)
"""A task judged by the MineCLIP detector, then one with a programmatic detector."""


def colour_worker_scorers(monkeypatch):
    """Makes evaluation workers build `ColourTower` scorers; returns the list of those built."""
    from steve1_env.evaluation.trial import TrialRunner

    built = []

    def colour_scorer(self):
        if self._scorer is None:
            _, self._scorer = make_scorer()
            built.append(self._scorer)
        return self._scorer

    monkeypatch.setattr(TrialRunner, "_mineclip_scorer", colour_scorer)
    return built


def env(scorer, **kwargs):
    settings = {"policy": "random", "prompt_encoder": "hash", "instruction": "get dirt", "k": 6}
    return Steve1SkillEnv(world_kwargs=SMALL, mineclip_score=scorer, **{**settings, **kwargs})


def test_the_score_is_the_softmax_over_the_instruction_and_the_negatives():
    tower, scorer = make_scorer()
    window = scorer.window()
    frame = np.full((8, 8, 3), [200, 30, 40], dtype=np.uint8)
    scorer.push([window], [frame])
    [score] = scorer.scores([window], ["get dirt"])
    prompts = ["get dirt", *DEFAULT_NEGATIVE_PROMPTS]
    logits = tower.logits_per_video(
        tower.pool(tower.encode_frames(frame[None])[None]), tower.encode_text(prompts)
    )
    assert score == pytest.approx(float(torch.softmax(logits[0], dim=0)[0]), abs=1e-6)
    assert 0.0 < score < 1.0


def test_an_instruction_among_the_negatives_competes_with_the_others_only():
    _, scorer = make_scorer(negatives=["look at the sky", "stand still"])
    window = scorer.window()
    scorer.push([window], [np.zeros((4, 4, 3), np.uint8) + 9])
    [alone] = scorer.scores([window], ["look at the sky"])
    _, pair = make_scorer(negatives=["stand still"])
    other = pair.window()
    pair.push([other], [np.zeros((4, 4, 3), np.uint8) + 9])
    assert alone == pytest.approx(pair.scores([other], ["look at the sky"])[0])


def test_info_reports_the_last_and_highest_score_of_the_step_and_the_dense_reward():
    _, scorer = make_scorer()
    with env(scorer, reward="mineclip") as e:
        _, info = e.reset(seed=0)
        assert info["mineclip"] == {"score": None, "max": None}
        _, reward, *_, info = e.step("")
    scores = list(e._slot.attempt_scores)
    assert len(scores) == 6
    assert info["mineclip"] == {"score": scores[-1], "max": max(scores)}
    prompts = 1 + len(DEFAULT_NEGATIVE_PROMPTS)
    assert reward == pytest.approx(sum(dense_reward(s, prompts) for s in scores))


def test_vector_scores_equal_one_by_one_runs_and_each_frame_is_encoded_once():
    from steve1_env.vector.env import Steve1SkillVectorEnv

    seeds, steps = [3, 4, 5], 3
    single = []
    for seed in seeds:
        _, scorer = make_scorer()
        with env(scorer) as e:
            e.reset(seed=seed)
            single.append([e.step("")[-1]["mineclip"] for _ in range(steps)])
    tower, shared = make_scorer()
    vector = Steve1SkillVectorEnv(
        3,
        policy="random",
        prompt_encoder="hash",
        instruction="get dirt",
        k=6,
        world_kwargs=SMALL,
        mineclip_score=shared,
    )
    try:
        vector.reset(seed=seeds)
        batched = [vector.step([""] * 3)[-1]["mineclip"] for _ in range(steps)]
    finally:
        vector.close()
    # Equal up to float32 rounding: a batched matmul may sum in another order than a single one.
    for i in range(3):
        for key in ("score", "max"):
            np.testing.assert_allclose(
                [step[key][i] for step in batched], [s[key] for s in single[i]], rtol=1e-5
            )
    # Reset frames one by one, then one batch of three per tick: 3 + 3 * 6 * steps frames.
    assert shared.frames_encoded == 3 + 3 * 6 * steps
    assert tower.encoded == [1, 1, 1] + [3] * (6 * steps)


def test_the_mineclip_detector_fires_once_the_score_stays_above_its_threshold():
    _, scorer = make_scorer()
    with env(scorer, k=30) as e:
        e.reset(seed=1)
        e.step("")
        scores = list(e._slot.attempt_scores)
    threshold = float(np.quantile(scores, 0.3))
    with env(scorer, k=30, success=MineCLIPScore(threshold, sustain=3)) as e:
        e.reset(seed=1)
        *_, info = e.step("")
    run = 0
    fired_at = None
    for tick, score in enumerate(scores, start=1):
        run = run + 1 if score >= threshold else 0
        if run == 3 and fired_at is None:
            fired_at = tick
    assert fired_at is not None
    assert info["is_success"] and info["steps"] == fired_at
    assert info["detector"] == f"mineclip>={threshold:g}x3"


def test_fallback_detector_mineclip_covers_undetectable_instructions_only():
    _, scorer = make_scorer()
    with env(scorer, fallback_detector="mineclip", mineclip_threshold=0.01) as e:
        e.reset(seed=0, options={"instruction": "kill a cow"})
        *_, info = e.step("")
        assert info["is_success"] and info["detector"] == "mineclip"
        e.reset(seed=0, options={"instruction": "get dirt"})
        *_, info = e.step("")
        assert info["detector_spec"] != "mineclip"  # the programmatic detector stays


def test_mineclip_options_are_checked():
    with pytest.raises(ConfigurationError, match="mineclip_threshold"):
        env(None, fallback_detector="mineclip")
    with pytest.raises(ConfigurationError, match="reward"):
        env(None, reward="score")
    with pytest.raises(ConfigurationError, match="negatives"):
        make_scorer(negatives=[])
    for bad in ({"threshold": 0}, {"threshold": 1.5}, {"threshold": 0.5, "sustain": 0}):
        with pytest.raises(DetectorError):
            MineCLIPScore(**bad)


def test_a_mineclip_detector_turns_scoring_on(monkeypatch):
    import steve1_env.env as env_module

    built = []

    def build(**kwargs):
        built.append(kwargs)
        return make_scorer()[1]

    monkeypatch.setattr(env_module, "build_mineclip_scorer", build)
    with env(False, success=MineCLIPScore(0.001), mineclip_kwargs={"weights": "w/"}) as e:
        assert e.scorer is not None and built == [{"device": "cpu", "weights": "w/"}]
    with env(False) as e:  # a detector given for one episode only
        e.reset(seed=0, options={"success": MineCLIPScore(0.001)})
        *_, info = e.step("")
        assert e.scorer is not None and info["is_success"] and len(built) == 2


def test_a_mineclip_detector_on_a_world_without_scores_says_how_to_turn_them_on():
    detector = MineCLIPScore(0.5)
    with pytest.raises(DetectorError, match="mineclip_score=True"):
        detector({}, {"inventory": {}}, 1)


def test_task_files_configure_the_mineclip_detector():
    detector = build_detector({"type": "mineclip", "threshold": 0.4, "sustain": 5}, "kill a cow")
    assert detector == MineCLIPScore(0.4, 5)
    with pytest.raises(Exception, match="threshold"):
        build_detector({"type": "mineclip", "threshold": 2}, "kill a cow")


def test_an_engine_groups_slots_by_scorer():
    tower, scorer = make_scorer()
    goals = GoalEncoder(HashPromptEncoder())
    from steve1_env.agent.random_policy import RandomPolicy

    slots = [Slot(SyntheticWorld(**SMALL), RandomPolicy(), goals, scorer) for _ in range(2)]
    engine = SkillEngine(slots)
    for i in range(2):
        engine.reset(i, np.random.default_rng(i), "get dirt", resolve_detectors(None))
        engine.begin(i, "get dirt", 4)
    engine.run()
    assert tower.encoded == [1, 1, 2, 2, 2, 2]
    assert all(engine.end(i).mineclip_max is not None for i in range(2))


# ------------------------------------------------------------ on the real (tiny) MineCLIP
@pytest.fixture(scope="module")
def tiny_scorer_args(golden, tiny_configs):
    video, text = tiny_configs
    return {"weights": str(golden / "mineclip_video_tiny.pth"), "config": video,
            "text_config": text}  # fmt: skip


class CountingTower:
    """Counts the frames the real tower encodes."""

    def __init__(self, model):
        self.model, self.encoded = model, []

    def encode_frames(self, frames):
        self.encoded.append(len(frames))
        return self.model.encode_frames(frames)

    def pool(self, features):
        return self.model.pool(features)

    def logits_per_video(self, video, text):
        return self.model.logits_per_video(video, text)


def test_a_full_window_scores_what_mineclip_gives_its_clip(golden, tiny_scorer_args):
    from steve1_env.prompt.mineclip_score import build_mineclip_scorer

    scorer = build_mineclip_scorer(**tiny_scorer_args)
    model = scorer.video
    clip = np.load(golden / "mineclip_video_io.npz")["videos"][0]
    window = scorer.window()
    for frame in clip:  # one tick at a time, as the engine pushes them
        scorer.push([window], [frame])
    [score] = scorer.scores([window], ["chop a tree"])
    prompts = ["chop a tree", *DEFAULT_NEGATIVE_PROMPTS]
    logits = model.logits_per_video(model.encode_video(clip), model.encode_text(prompts))
    assert score == pytest.approx(float(torch.softmax(logits[0], dim=0)[0]), abs=1e-5)
    assert scorer.frames_encoded == 16


def test_real_scores_in_a_vector_env_equal_one_by_one_runs(tiny_scorer_args):
    from steve1_env.prompt.mineclip_score import build_mineclip_scorer
    from steve1_env.vector.env import Steve1SkillVectorEnv

    model = build_mineclip_scorer(**tiny_scorer_args).video
    seeds, steps = [7, 8], 2
    single = []
    for seed in seeds:
        with env(MineCLIPScorer(model, model.encode_text), k=4) as e:
            e.reset(seed=seed)
            single.append([e.step("")[-1]["mineclip"]["score"] for _ in range(steps)])
    counting = CountingTower(model)
    vector = Steve1SkillVectorEnv(
        2, policy="random", prompt_encoder="hash", instruction="get dirt", k=4,
        world_kwargs=SMALL, mineclip_score=MineCLIPScorer(counting, model.encode_text),
    )  # fmt: skip
    try:
        vector.reset(seed=seeds)
        batched = [vector.step([""] * 2)[-1]["mineclip"]["score"] for _ in range(steps)]
    finally:
        vector.close()
    for i in range(2):
        np.testing.assert_allclose([b[i] for b in batched], single[i], rtol=1e-5, atol=1e-6)
    assert counting.encoded == [1, 1] + [2] * (4 * steps)  # each frame once, batched per tick


# ------------------------------------------------------------ visual goals
def _clip(golden):
    return np.load(golden / "mineclip_video_io.npz")["videos"][0]


@pytest.fixture(scope="module")
def goal_tower_args(tmp_path_factory):
    """A small MineCLIP with 512-wide embeddings, as the (tiny) policy's goals are, saved in
    attn.pth's layout with seeded random weights (the golden tiny MineCLIP embeds in 64)."""
    from steve1_env.prompt.mineclip import TextTowerConfig
    from steve1_env.prompt.mineclip_video import (
        MineCLIPVideo,
        VideoTowerConfig,
        checkpoint_layout,
    )

    video = VideoTowerConfig(width=64, layers=1, heads=1, embed_dim=512)
    text = TextTowerConfig(width=32, layers=1, heads=2, embed_dim=512)
    torch.manual_seed(0)
    model = MineCLIPVideo(video, text)
    state = model.state_dict()
    checkpoint = {
        "state_dict": {key: state[name] for key, name in checkpoint_layout(model).items()}
    }
    path = tmp_path_factory.mktemp("mineclip") / "small.pth"
    torch.save(checkpoint, path)
    return {"weights": str(path), "config": video, "text_config": text}


def _visual_env(goal_tower_args, tiny_policy_files, **kwargs):
    settings = {"policy": "steve1", "prompt_encoder": "hash", "k": 5, **kwargs}
    return Steve1SkillEnv(
        world_kwargs=SMALL,
        policy_kwargs={
            "weights": str(tiny_policy_files["weights"]),
            "model": str(tiny_policy_files["model"]),
        },
        mineclip_kwargs=goal_tower_args,
        **settings,
    )


def test_a_recorded_clip_is_a_visual_goal_the_native_policy_pursues(
    golden, tmp_path, goal_tower_args, tiny_policy_files
):
    from steve1_env.evaluation.video import VideoWriter
    from steve1_env.prompt.mineclip_video import load_mineclip_video

    clip = _clip(golden)
    writer = VideoWriter(tmp_path / "goal.mp4")
    for frame in clip:
        writer.write(frame)
    writer.close()
    model = load_mineclip_video(goal_tower_args["weights"], config=goal_tower_args["config"],
                                text_config=goal_tower_args["text_config"])  # fmt: skip
    with _visual_env(goal_tower_args, tiny_policy_files) as e:
        obs, info = e.reset(seed=0, options={"visual_goal": clip})
        assert info["instruction"] == "visual:clip"
        expected = model.encode_video(clip)[0].numpy()
        np.testing.assert_allclose(obs["goal"], expected, rtol=1e-6, atol=1e-6)
        assert e._slot.goal.cond_scale == 7.0
        obs, *_, info = e.step("")  # "" keeps the visual goal
        np.testing.assert_array_equal(obs["goal"], e._slot.goal.embedding)
        assert info["steps"] == 5
        # The same clip from the recorded file (lossy mp4): close, not equal.
        options = {"visual_goal": tmp_path / "goal.mp4", "instruction": "chop a tree"}
        obs, info = e.reset(seed=0, options={**options, "cond_scale": 5})
        assert info["instruction"] == "chop a tree" and e._slot.goal.cond_scale == 5.0
        cosine = float(
            obs["goal"] @ expected / np.linalg.norm(obs["goal"]) / np.linalg.norm(expected)
        )
        assert cosine > 0.9
        # A text instruction afterwards is a text goal again.
        obs, *_ = e.step("get dirt")
        assert e._slot.goal.cond_scale is None


def test_the_visual_goal_changes_the_native_policys_actions(
    golden, goal_tower_args, tiny_policy_files
):
    def actions(options):
        with _visual_env(goal_tower_args, tiny_policy_files, k=20) as e:
            e.reset(seed=3, options=options)
            e.step("")
            return [e._slot.state.memory[0].keys.sum().item()]

    clip = _clip(golden)
    assert actions({"visual_goal": clip}) != actions({"visual_goal": clip[::-1].copy()})


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        (np.zeros((15, 8, 8, 3), np.uint8), "16 uint8 RGB frames"),
        (np.zeros((16, 8, 8, 3), np.float32), "16 uint8 RGB frames"),
        (np.zeros((16, 8, 8), np.uint8), "16 uint8 RGB frames"),
        ("goal.txt", "paper:<name>"),
        ("paper:nonsense", "dig"),
        (12, "16 uint8 RGB frames"),
    ],
)
def test_a_visual_goal_that_does_not_fit_is_a_clear_error_and_changes_nothing(
    spec, match, goal_tower_args, tiny_policy_files, tmp_path, monkeypatch
):
    monkeypatch.setenv("STEVE1_WEIGHTS_DIR", str(tmp_path))
    with _visual_env(goal_tower_args, tiny_policy_files, instruction="get dirt") as e:
        e.reset(seed=0)
        with pytest.raises(ConfigurationError, match=match):
            e.reset(seed=1, options={"visual_goal": spec})
        assert e.current_instruction == "get dirt"
        with pytest.raises(ConfigurationError, match="visual_goal only"):
            e.reset(seed=1, options={"cond_scale": 7})


def test_the_vector_env_takes_one_visual_goal_per_env(golden, goal_tower_args, tiny_policy_files):
    from steve1_env.vector.env import Steve1SkillVectorEnv

    clip = _clip(golden)
    vector = Steve1SkillVectorEnv(
        2, policy="steve1", prompt_encoder="hash", k=4, world_kwargs=SMALL,
        policy_kwargs={"weights": str(tiny_policy_files["weights"]),
                       "model": str(tiny_policy_files["model"])},
        mineclip_kwargs=goal_tower_args, instruction="get dirt",
    )  # fmt: skip
    try:
        obs, info = vector.reset(seed=0, options={"visual_goal": [clip, None]})
        assert list(info["instruction"]) == ["visual:clip", "get dirt"]
        assert not np.array_equal(obs["goal"][0], obs["goal"][1])
        vector.step(["", ""])
    finally:
        vector.close()


def test_task_files_give_visual_goals_and_evaluation_pursues_them(tmp_path, monkeypatch):
    from steve1_env.evaluation.runner import evaluate
    from steve1_env.evaluation.trial import RunSettings
    from steve1_env.prompt.visual_prompts import PAPER_VISUAL_PROMPT_NAMES, VISUAL_PROMPTS_FILE
    from steve1_env.tasks.spec import load_task_set, parse_task_set

    rng = np.random.default_rng(1)
    names = PAPER_VISUAL_PROMPT_NAMES
    np.savez(tmp_path / VISUAL_PROMPTS_FILE, **{n: rng.random(512, np.float32) for n in names})
    monkeypatch.setenv("STEVE1_WEIGHTS_DIR", str(tmp_path))
    (tmp_path / "goal.mp4").write_bytes(b"")
    text = (
        "tasks:\n"
        "  - {name: dirt, instruction: get dirt, max_steps: 300, visual_goal: 'paper:dirt'}\n"
        "  - {name: logs, instruction: chop a tree, max_steps: 300, visual_goal: goal.mp4,"
        " cond_scale: 5}\n"
    )
    (tmp_path / "tasks.yaml").write_text(text)
    specs = load_task_set(tmp_path / "tasks.yaml").trial_specs(1)
    assert specs[0].visual_goal == "paper:dirt" and specs[0].cond_scale is None
    assert specs[1].visual_goal == str((tmp_path / "goal.mp4").resolve())
    assert specs[1].cond_scale == 5.0
    for bad, match in [
        ("visual_goal: 'paper:nope'", "no visual prompt"),
        ("visual_goal: goal.txt", "video file"),
        ("visual_goal: missing.mp4", "does not exist"),
        ("cond_scale: -7", "expected a number >= 0"),
    ]:
        with pytest.raises(Exception, match=match):
            parse_task_set(f"tasks:\n  - {{name: t, instruction: get dirt, max_steps: 5, {bad}}}\n")
    # The scripted oracle reads the instruction; the goal is the paper's dirt prompt.
    one = parse_task_set(text.splitlines()[0] + "\n" + text.splitlines()[1] + "\n")
    settings = RunSettings(policy="scripted", prompt_encoder="hash", world_kwargs=SMALL, k=50)
    result = evaluate(one, tmp_path / "run", settings, trials=2, progress=False)
    assert [record.outcome for record in result.records] == ["success", "success"]


def test_an_evaluation_task_judged_by_mineclip_scores_its_trials(tmp_path, monkeypatch):
    from steve1_env.evaluation.runner import evaluate
    from steve1_env.evaluation.trial import RunSettings
    from steve1_env.tasks.spec import parse_task_set

    built = colour_worker_scorers(monkeypatch)
    tasks = parse_task_set(COW_BY_MINECLIP_AND_DIRT)
    settings = RunSettings(policy="scripted", prompt_encoder="hash", world_kwargs=SMALL, k=10)
    result = evaluate(tasks, tmp_path / "run", settings, trials=2, envs_per_worker=2,
                      progress=False)  # fmt: skip
    by_task = {record.task: record for record in result.records}
    assert by_task["cow"].outcome == "success" and by_task["cow"].steps == 2
    assert by_task["cow"].detector == "mineclip>=0.001x2"
    assert by_task["dirt"].outcome == "success"
    assert len(built) == 1  # one scorer for the worker's worlds


def test_the_video_overlay_shows_the_mineclip_score_when_one_is_computed(tmp_path, monkeypatch):
    from steve1_env.evaluation import video
    from steve1_env.evaluation.runner import evaluate
    from steve1_env.evaluation.trial import RunSettings
    from steve1_env.tasks.spec import parse_task_set

    colour_worker_scorers(monkeypatch)
    drawn: list[list[str]] = []
    real = video.draw_caption
    monkeypatch.setattr(
        video, "draw_caption", lambda f, lines: drawn.append(lines) or real(f, lines)
    )
    settings = RunSettings(policy="scripted", prompt_encoder="hash", world_kwargs=SMALL, k=10,
                           video_dir=str(tmp_path / "run" / "videos"), overlay=True)  # fmt: skip
    evaluate(parse_task_set(COW_BY_MINECLIP_AND_DIRT), tmp_path / "run", settings, trials=1,
             tasks=["cow"], progress=False)  # fmt: skip
    scores = [line for lines in drawn for line in lines if line.startswith("MineCLIP ")]
    assert drawn and not any(line.startswith("MineCLIP") for line in drawn[0])  # none scored yet
    assert scores and float(scores[-1].split()[1]) >= 0.001  # what made the detector fire
