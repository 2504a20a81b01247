"""The STEVE-1 paper's evaluation protocol: fixed horizons, metrics, baselines, sampled latents."""

from __future__ import annotations

import copy
import json
import math
import warnings

import numpy as np
import pytest

from steve1_env.cli import main
from steve1_env.errors import ConfigurationError, ResultsError, TaskSpecError
from steve1_env.evaluation.runner import evaluate
from steve1_env.evaluation.trial import RunSettings, TrialRunner
from steve1_env.skill_kinds import PAPER_PROMPTS
from steve1_env.tasks.metrics import PAPER_METRICS, MetricConfigError, MetricTracker
from steve1_env.tasks.spec import load_task_set, parse_task_set
from steve1_env.worlds.synthetic import SyntheticWorld

SMALL = {"pov_shape": [48, 64]}
WORLDS: list[RecordingWorld] = []
GOALS: list[tuple[str, bool, np.ndarray]] = []


class RecordingWorld(SyntheticWorld):
    """The synthetic world, keeping a copy of every observation but the frame."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.seeds: list[int | None] = []
        self.observed: list[dict] = []
        WORLDS.append(self)

    def reset(self, seed=None):
        obs = super().reset(seed)
        self.seeds.append(seed)
        self.observed = [_copy(obs)]
        return obs

    def step(self, action):
        result = super().step(action)
        self.observed.append(_copy(result.obs))
        return result


def _copy(obs):
    return {key: copy.deepcopy(value) for key, value in obs.items() if key != "pov"}


class GoalRecordingPolicy:
    """The scripted oracle, keeping each goal it is asked to pursue."""

    def __init__(self, world, device="cpu"):
        from steve1_env.agent.scripted import ScriptedPolicy

        self.inner = ScriptedPolicy(world, device)
        self.device = device

    def initial_state(self, seed):
        return self.inner.initial_state(seed)

    def act(self, obs, goal, state):
        GOALS.append((goal.instruction, goal.unconditional, goal.embedding, goal.cond_scale))
        return self.inner.act(obs, goal, state)

    def close(self):
        self.inner.close()


def recording_world(pov_shape=(64, 64), **kwargs):
    """Builds a `RecordingWorld` (named by import path: registering would leak into the
    registries' listings that other tests check)."""
    return RecordingWorld(pov_shape=tuple(pov_shape), **kwargs)


@pytest.fixture
def recording():
    WORLDS.clear()
    GOALS.clear()
    yield WORLDS
    WORLDS.clear()
    GOALS.clear()


def tasks(body: str, defaults: str = "") -> str:
    head = f"defaults: {{{defaults}}}\n" if defaults else ""
    return f"{head}tasks:\n{body}"


RECORDING_WORLD, GOAL_RECORDING = f"{__name__}:recording_world", f"{__name__}:GoalRecordingPolicy"
WOOD = "  - {name: wood, instruction: chop a tree, horizon: 300, seeds: [3]}\n"
SETTINGS = RunSettings(
    world=RECORDING_WORLD, policy=GOAL_RECORDING, prompt_encoder="hash",
    world_kwargs=SMALL, k=50,
)  # fmt: skip


def paper_values(spawn, observed):
    """The paper's metrics recomputed as its evaluator does: substrings, maxima from 0."""
    values = {"log": 0.0, "dirt": 0.0, "seed": 0.0, "travel_distance": 0.0}
    for obs in observed:
        for name, part in (("log", "_log"), ("dirt", "dirt"), ("seed", "seed")):
            count = sum(v for k, v in obs["inventory"].items() if part in k)
            values[name] = max(values[name], float(count))
        dx = obs["location_stats"]["xpos"] - spawn["location_stats"]["xpos"]
        dz = obs["location_stats"]["zpos"] - spawn["location_stats"]["zpos"]
        values["travel_distance"] = max(values["travel_distance"], math.hypot(dx, dz))
    return values


def run_one(spec, settings=SETTINGS, envs=1):
    runner = TrialRunner(settings, envs=envs)
    try:
        return runner.run(spec)
    finally:
        runner.close()


# ------------------------------------------------------------------ fixed horizons
def test_a_fixed_horizon_trial_runs_all_its_ticks_and_records_the_papers_metrics(recording):
    spec = parse_task_set(tasks(WOOD)).trial_specs()[0]
    record = run_one(spec)
    world = recording[-1]
    ticks = world.observed[1:]
    assert len(ticks) == 300 and record.steps == 300 and record.reason == "budget"
    assert record.horizon == 300 and record.max_steps == 300

    # It kept going after its first success: the first tick with a log more than the spawn.
    def logs_in(obs):
        return sum(v for k, v in obs["inventory"].items() if k.endswith("_log"))

    spawn, logs = logs_in(world.observed[0]), [logs_in(o) for o in ticks]
    first = next(i for i, n in enumerate(logs, 1) if n - spawn >= 1)
    assert record.outcome == "success" and record.steps_to_success == first < 300
    assert logs[-1] > logs[first - 1], "it gathered more logs after its first success"
    assert record.detector == "wood"
    assert record.metrics == pytest.approx(paper_values(world.observed[0], ticks))
    assert record.metrics["log"] == max(logs) > 1


def test_a_horizon_trial_whose_detector_never_fires_is_a_failure_at_the_horizon(recording):
    text = "  - {name: sky, instruction: look at the sky, horizon: 120, success: dirt}\n"
    record = run_one(parse_task_set(tasks(text)).trial_specs(1)[0])
    assert (record.outcome, record.reason, record.steps) == ("failure", "budget", 120)
    assert record.steps_to_success is None and record.detector is None
    assert set(record.metrics) == set(PAPER_METRICS)


def test_a_task_declares_its_own_metrics_next_to_the_papers(recording):
    text = (
        "  - name: wood\n    instruction: chop a tree\n    horizon: 200\n    seeds: [3]\n"
        "    metrics:\n      oak: {type: inventory, items: oak_log}\n"
        "      mined: {type: counter, counter: mine_block, items: '*_log'}\n"
        "      down: {type: depth}\n"
    )
    record = run_one(parse_task_set(tasks(text)).trial_specs()[0])
    ticks = recording[-1].observed[1:]
    assert set(record.metrics) == {*PAPER_METRICS, "oak", "mined", "down"}
    assert record.metrics["oak"] == max(o["inventory"].get("oak_log", 0) for o in ticks)
    assert record.metrics["mined"] == max(
        sum(v for k, v in o["mine_block"].items() if k.endswith("_log")) for o in ticks
    )
    assert record.metrics["down"] == 0.0  # it never went below its spawn height


def test_a_stop_at_success_trial_tracks_only_the_tasks_own_metrics(recording):
    text = (
        "  - {name: wood, instruction: chop a tree, max_steps: 400, seeds: [3],"
        " metrics: {oak: {type: inventory, items: '*_log'}}}\n"
    )
    record = run_one(parse_task_set(tasks(text)).trial_specs()[0])
    assert record.reason == "success" and record.horizon is None
    assert record.metrics == {"oak": 1.0}


def test_the_paper_metrics_are_the_papers_substring_filters():
    inventory = {"oak_log": 2, "stripped_birch_log": 1, "log_pile": 5, "dirt": 3,
                 "coarse_dirt": 1, "wheat_seeds": 4, "seedling": 1, "stone": 9}  # fmt: skip
    spawn = {"inventory": {}, "location_stats": {"xpos": 1.0, "zpos": 1.0, "ypos": 60.0}}
    tracker = MetricTracker(PAPER_METRICS, spawn)
    assert tracker.values == dict.fromkeys(PAPER_METRICS, 0.0)  # from 0, like the paper
    obs = {"inventory": inventory, "location_stats": {"xpos": 4.0, "zpos": 5.0, "ypos": 64.0}}
    tracker.update(obs)
    tracker.update({"inventory": {}, "location_stats": spawn["location_stats"]})
    assert tracker.values == paper_values(spawn, [obs])
    assert tracker.values == {"log": 3.0, "dirt": 4.0, "seed": 5.0, "travel_distance": 5.0}


def test_metrics_stay_finite_whatever_the_world_reports():
    # A NaN or infinite position, or a count that is no finite number, is no value: the tick
    # is skipped (records hold finite numbers only, and a results line must read back).
    spawn = {"inventory": {}, "location_stats": {"xpos": 0.0, "zpos": 0.0, "ypos": 64.0}}
    tracker = MetricTracker(PAPER_METRICS, spawn)
    good = {"inventory": {"oak_log": 2}, "location_stats": {"xpos": 3.0, "zpos": 4.0}}
    tracker.update(good)
    for x in (math.nan, math.inf, -math.inf, "far", None):
        tracker.update({"inventory": {}, "location_stats": {"xpos": x, "zpos": 0.0}})
    for count in (math.inf, math.nan, 10**400, "9", True):
        tracker.update({"inventory": {"oak_log": count, "dirt": count}, "location_stats": {}})
    tracker.update({"inventory": {"dirt": 1e308, "coarse_dirt": 1e308}})  # sums to infinity
    tracker.update({"inventory": "garbage", "location_stats": "garbage"})
    assert tracker.values == {"log": 2.0, "dirt": 0.0, "seed": 0.0, "travel_distance": 5.0}


def test_metrics_match_each_item_name_once_not_every_tick(monkeypatch):
    # A MineRL inventory lists 976 items every tick; matching each against every pattern of
    # every metric cost 1.6 ms a tick (per world: 16 worlds a worker, 25 ms a tick).
    import fnmatch

    inventory = {f"item_{i}": 1 for i in range(976)} | {"oak_log": 2, "dirt": 3}
    obs = {"inventory": inventory, "location_stats": {"xpos": 0.0, "zpos": 0.0, "ypos": 1.0}}
    tracker = MetricTracker(PAPER_METRICS, obs)
    calls = []
    real = fnmatch.fnmatchcase
    monkeypatch.setattr(fnmatch, "fnmatchcase", lambda *a: calls.append(a) or real(*a))
    tracker.update(obs)
    first = len(calls)
    for _ in range(10):
        tracker.update(obs)
    assert first > 0 and len(calls) == first
    assert tracker.values == {"log": 2.0, "dirt": 3.0, "seed": 0.0, "travel_distance": 0.0}


def test_a_world_without_positions_has_no_travel_distance_but_runs(recording):
    # The paper's travel distance is what the world provides: absent, never invented. A
    # task's own travel metric cannot be measured there and says so.
    tracker = MetricTracker(PAPER_METRICS, {"inventory": {}})
    tracker.update({"inventory": {"wheat_seeds": 1}})
    assert tracker.values == {"log": 0.0, "dirt": 0.0, "seed": 1.0}
    nan_spawn = {"location_stats": {"xpos": math.nan, "zpos": 0.0, "ypos": 1.0}}
    assert "travel_distance" not in MetricTracker(PAPER_METRICS, nan_spawn).values
    from steve1_env.errors import DetectorError

    with pytest.raises(DetectorError, match="'far' is measured from the spawn's location_stats"):
        MetricTracker({"far": {"type": "travel"}}, {"inventory": {}})
    text = "  - {name: dirt, instruction: get dirt, horizon: 40, seeds: [1]}\n"
    settings = RunSettings(
        world=f"{__name__}:positionless_world", policy="random", prompt_encoder="hash",
        world_kwargs=SMALL, k=20,
    )  # fmt: skip
    record = run_one(parse_task_set(tasks(text)).trial_specs()[0], settings)
    assert record.steps == 40 and set(record.metrics) == {"log", "dirt", "seed"}


def test_an_infinite_position_leaves_a_results_file_that_reads_back(tmp_path, recording):
    # It used to be recorded as travel_distance Infinity, a line the store then refused to
    # read ("not written by steve1-env"), so the run could neither report nor resume.
    text = "  - {name: far, instruction: go explore, horizon: 30, seeds: [1, 2]}\n"
    settings = RunSettings(
        world=f"{__name__}:runaway_world", policy="random", prompt_encoder="hash",
        world_kwargs=SMALL, k=10,
    )  # fmt: skip
    task_set = parse_task_set(tasks(text))
    evaluate(task_set, tmp_path / "run", settings, trials=1, progress=False)
    result = evaluate(task_set, tmp_path / "run", settings, trials=2, resume=True, progress=False)
    assert result.ran == 1
    from steve1_env.evaluation.results import read_records

    records = read_records(tmp_path / "run" / "results.jsonl")
    assert len(records) == 2
    assert all(math.isfinite(r.metrics["travel_distance"]) for r in records)


class PositionlessWorld(SyntheticWorld):
    """The synthetic world, reporting no ``location_stats`` (a world without positions)."""

    def reset(self, seed=None):
        return _without_location(super().reset(seed))

    def step(self, action):
        result = super().step(action)
        return result._replace(obs=_without_location(result.obs))


def _without_location(obs):
    return {key: value for key, value in obs.items() if key != "location_stats"}


class RunawayWorld(SyntheticWorld):
    """The synthetic world whose player's x position becomes infinite after five steps."""

    def reset(self, seed=None):
        self.ticks = 0
        return super().reset(seed)

    def step(self, action):
        result = super().step(action)
        self.ticks += 1
        if self.ticks > 5:
            result.obs["location_stats"] = {**result.obs["location_stats"], "xpos": math.inf}
        return result


def positionless_world(pov_shape=(64, 64), **kwargs):
    """Builds a `PositionlessWorld` (named by import path, as `recording_world`)."""
    return PositionlessWorld(pov_shape=tuple(pov_shape), **kwargs)


def runaway_world(pov_shape=(64, 64), **kwargs):
    """Builds a `RunawayWorld` (named by import path, as `recording_world`)."""
    return RunawayWorld(pov_shape=tuple(pov_shape), **kwargs)


# ------------------------------------------------------------------ baselines
def test_the_unconditional_baseline_pursues_the_zero_goal_on_the_same_seeds(recording):
    specs = parse_task_set(tasks(WOOD)).trial_specs(baseline="both")
    assert [s.key for s in specs] == ["wood/0/0", "wood/0/0/unconditional"]
    prompt = run_one(specs[0])
    seen_prompt, GOALS[:] = list(GOALS), []
    baseline = run_one(specs[1])
    assert recording[0].seeds == recording[1].seeds  # the same episode seed, the same world
    assert all(not unconditional for _, unconditional, _, _ in seen_prompt)
    assert GOALS and all(
        instruction == "chop a tree" and unconditional and not embedding.any()
        for instruction, unconditional, embedding, _ in GOALS
    )
    assert baseline.condition == "unconditional" and baseline.steps == 300
    observed = recording[1].observed
    assert baseline.metrics == pytest.approx(paper_values(observed[0], observed[1:]))
    # Judged by the same detector (logs gained); the wandering baseline gathers fewer.
    assert (baseline.outcome == "success") == (baseline.metrics["log"] > 0)
    assert baseline.detector in (None, "wood")
    assert baseline.metrics["travel_distance"] > 0
    assert prompt.metrics["log"] > baseline.metrics["log"]


def test_a_baseline_trial_records_its_own_video(tmp_path, recording):
    # Both conditions share a trial index: the baseline's video overwrote the prompt's, and
    # both records named the same file.
    import dataclasses

    text = "  - {name: wood, instruction: chop a tree, horizon: 20, seeds: [3]}\n"
    settings = dataclasses.replace(SETTINGS, video_dir=str(tmp_path / "videos"))
    prompt, baseline = (
        run_one(spec, settings) for spec in parse_task_set(tasks(text)).trial_specs(baseline="both")
    )
    assert prompt.video == "videos/wood/0-0.mp4"
    assert baseline.video == "videos/wood/0-0-unconditional.mp4"
    assert (tmp_path / prompt.video).is_file() and (tmp_path / baseline.video).is_file()


def test_a_plan_with_a_horizon_or_a_baseline_keeps_the_seeds(recording):
    task_set = load_task_set("early_game")
    plain = task_set.trial_specs(2)
    fixed = task_set.trial_specs(2, horizon=300, baseline="both")
    assert len(fixed) == 2 * len(plain)
    assert [s.seed for s in fixed[::2]] == [s.seed for s in plain] == [s.seed for s in fixed[1::2]]
    assert {s.horizon for s in fixed} == {300} and {s.max_steps for s in fixed} == {300}
    assert all(set(s.metrics) == set(PAPER_METRICS) for s in fixed)
    assert {s.horizon for s in plain} == {None} and all(not s.metrics for s in plain)
    only = task_set.trial_specs(1, baseline="unconditional")
    assert {s.condition for s in only} == {"unconditional"}
    paper = load_task_set("paper")
    shorter = paper.trial_specs(1, max_steps=50)  # a fixed-horizon task stays one
    assert {(s.horizon, s.max_steps) for s in shorter} == {(50, 50)}
    with pytest.raises(TaskSpecError, match="not both"):
        task_set.trial_specs(1, max_steps=10, horizon=10)
    with pytest.raises(TaskSpecError, match="baseline must be one of none, unconditional"):
        task_set.trial_specs(1, baseline="zeros")


def test_existing_task_sets_keep_their_digests():
    # Recorded with runs: resuming an earlier run of a built-in set must still be allowed.
    assert load_task_set("early_game").sha256.startswith("0095971eed3ec6c7")
    assert load_task_set("quick_harvest").sha256.startswith("8e052607426592ee")


# ------------------------------------------------------------------ the paper set
def test_the_paper_set_holds_the_papers_prompts_horizon_guidance_and_latents():
    paper = load_task_set("paper")
    assert {t.name: t.instructions for t in paper.tasks} == {
        k: (v,) for k, v in PAPER_PROMPTS.items()
    }
    assert {(t.horizon, t.cond_scale, t.prompt_latent) for t in paper.tasks} == {
        (3000, 6.0, "sampled")
    }
    seeds = [t.prompt_seed for t in paper.tasks]
    assert len(set(seeds)) == len(seeds) and None not in seeds
    early = load_task_set("early_game")
    assert [t.success for t in paper.tasks] == [t.success for t in early.tasks]


# ------------------------------------------------------------------ sampled prompt latents
@pytest.fixture(scope="module")
def random_steve1():
    from steve1_env.prompt.steve1_encoder import Steve1PromptEncoder

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        encoder = Steve1PromptEncoder(weights="random")
    yield encoder
    encoder.close()


def test_a_sampled_latent_is_drawn_from_its_seed(random_steve1):
    text = "chop a tree"
    one, again = random_steve1.encode_sampled(text, 7), random_steve1.encode_sampled(text, 7)
    other, zeros = random_steve1.encode_sampled(text, 8), random_steve1.encode(text)
    assert np.array_equal(one, again)
    assert not np.allclose(one, other) and not np.allclose(one, zeros)
    with pytest.raises(ConfigurationError, match="seed"):
        random_steve1.encode_sampled(text, -1)
    # torch's generators take 64-bit seeds: a larger one is refused in our words, not torch's.
    assert np.isfinite(random_steve1.encode_sampled(text, 2**64 - 1)).all()
    from steve1_env.prompt.hash_encoder import HashPromptEncoder

    for encoder in (random_steve1, HashPromptEncoder()):
        with pytest.raises(
            ConfigurationError,
            match=r"seed must be between 0 and 18446744073709551615 \(MAX_SEED\)",
        ):
            encoder.encode_sampled(text, 2**64)


SAMPLED = RunSettings(
    world=RECORDING_WORLD, policy=GOAL_RECORDING, prompt_encoder="steve1",
    prompt_encoder_kwargs={"weights": "random"}, world_kwargs=SMALL, k=50,
)  # fmt: skip


def test_a_sampled_prompt_trial_pursues_its_seeded_embedding(recording, random_steve1):
    text = (
        "  - {name: wood, instruction: chop a tree, horizon: 60, seeds: [3, 4],"
        " prompt_latent: sampled, prompt_seed: 11, cond_scale: 6.0}\n"
    )
    specs = parse_task_set(tasks(text)).trial_specs()
    assert [(s.prompt_latent, s.prompt_seed) for s in specs] == [("sampled", 11)] * 2
    runner = TrialRunner(SAMPLED, envs=2)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            records = runner.advance([(s, 0) for s in specs])
            while len(records) < 2:
                records += runner.advance()
    finally:
        runner.close()
    expected = random_steve1.encode_sampled("chop a tree", 11)
    embeddings = {embedding.tobytes() for _, _, embedding, _ in GOALS}
    assert embeddings == {expected.tobytes()}  # one embedding for every trial
    assert {scale for *_, scale in GOALS} == {6.0}
    assert {(r.prompt_latent, r.prompt_seed) for r in records} == {("sampled", 11)}


def test_the_hash_stand_in_draws_its_sampled_goal_from_the_seed_too():
    from steve1_env.prompt.hash_encoder import HashPromptEncoder

    encoder, text = HashPromptEncoder(), "chop a tree"
    one, again = encoder.encode_sampled(text, 7), encoder.encode_sampled(text, 7)
    assert np.array_equal(one, again) and one.dtype == np.float32
    assert not np.allclose(one, encoder.encode_sampled(text, 8))
    assert not np.allclose(one, encoder.encode(text))


def test_a_sampled_latent_needs_an_encoder_that_can_draw_one(tmp_path):
    paper = load_task_set("paper")
    settings = RunSettings(
        policy="scripted", prompt_encoder="precomputed",
        prompt_encoder_kwargs={"path": str(tmp_path / "goals.npz")}, world_kwargs=SMALL,
    )  # fmt: skip
    with pytest.raises(ConfigurationError, match="'precomputed' cannot draw the prior's latent"):
        evaluate(paper, tmp_path / "run", settings, trials=1, horizon=10, progress=False)
    assert not (tmp_path / "run").exists()
    # The baseline alone embeds no prompt, so any encoder serves it.
    from steve1_env.evaluation.trial import check_run_arguments

    check_run_arguments(settings, paper.trial_specs(1, horizon=10, baseline="unconditional"))


def test_records_do_not_depend_on_the_worlds_per_worker(recording):
    text = "  - {name: wood, instruction: chop a tree, horizon: 150, seeds: [3, 4, 5]}\n"
    specs = parse_task_set(tasks(text)).trial_specs(baseline="both")
    runs = []
    for envs in (1, 3):
        runner = TrialRunner(SETTINGS, envs=envs)
        try:
            pending, records = list(specs), []
            while pending or runner.busy:
                new = [(pending.pop(0), 0) for _ in range(min(runner.free, len(pending)))]
                records += runner.advance(new)
        finally:
            runner.close()
        runs.append(
            sorted((r.key, r.steps, r.steps_to_success, json.dumps(r.metrics)) for r in records)
        )
    assert runs[0] == runs[1]


# ------------------------------------------------------------------ task files
@pytest.mark.parametrize(
    ("text", "match"),
    [
        (
            tasks("  - {name: t, instruction: get dirt, max_steps: 5, horizon: 5}\n"),
            r"task 't', field 'horizon', line 2: give max_steps .* or horizon .*not both",
        ),
        (
            tasks("  - {name: t, instruction: get dirt}\n", "max_steps: 5, horizon: 5"),
            r"field 'defaults.horizon', line 1: give max_steps",
        ),
        (
            tasks("  - {name: t, instruction: get dirt, horizon: 0}\n"),
            r"field 'horizon', line 2: expected an integer >= 1, got 0",
        ),
        (
            tasks("  - {name: t, instruction: get dirt}\n"),
            r"field 'max_steps', line 2: missing; .*or a fixed horizon",
        ),
        (
            tasks("  - {name: t, instruction: get dirt, horizon: 5, metrics: [log]}\n"),
            r"field 'metrics', line 2: expected a mapping of metric names",
        ),
        (
            tasks(
                "  - name: t\n    instruction: get dirt\n    horizon: 5\n    metrics:\n"
                "      planks: {type: inventry, items: '*_planks'}\n"
            ),
            r"field 'metrics.planks.type', line 6: unknown metric type 'inventry'.*"
            r"Did you mean 'inventory'",
        ),
        (
            tasks(
                "  - name: t\n    instruction: get dirt\n    horizon: 5\n    metrics:\n"
                "      planks: {type: inventory}\n"
            ),
            r"field 'metrics.planks.items', line 6: missing; expected an item name",
        ),
        (
            tasks(
                "  - name: t\n    instruction: get dirt\n    horizon: 5\n    metrics:\n"
                "      planks: {type: travel, distance: 3}\n"
            ),
            r"field 'metrics.planks.distance', line 6: not a field of a travel metric",
        ),
        (
            tasks(
                "  - {name: t, instruction: get dirt, horizon: 5, metrics: {log: {type: travel}}}\n"
            ),
            r"field 'metrics.log', line 2: 'log' is one of the paper's metrics",
        ),
        (
            tasks("  - {name: t, instruction: get dirt, horizon: 5, prompt_latent: random}\n"),
            r"field 'prompt_latent', line 2: expected one of zeros, sampled",
        ),
        (
            tasks("  - {name: t, instruction: get dirt, horizon: 5, prompt_seed: 3}\n"),
            r"field 'prompt_seed', line 2: applies to prompt_latent: sampled only",
        ),
        (
            tasks(
                "  - {name: t, instruction: get dirt, horizon: 5, prompt_seed: -3}\n",
                "prompt_latent: sampled",
            ),
            r"field 'prompt_seed', line 3: expected an integer >= 0, got -3",
        ),
        (
            tasks(
                "  - {name: t, instruction: get dirt, horizon: 5,"
                " prompt_seed: 18446744073709551616}\n",
                "prompt_latent: sampled",
            ),
            r"field 'prompt_seed', line 3: expected an integer <= 18446744073709551615",
        ),
        (
            tasks(
                "  - {name: t, instruction: get dirt, horizon: 5, visual_goal: 'paper:dirt',"
                " prompt_latent: sampled}\n"
            ),
            r"field 'prompt_latent', line 2: a visual goal is embedded from its clip",
        ),
        (
            tasks("  - {name: t, instruction: get dirt, max_steps: 5, cond_scale: -1}\n"),
            r"field 'cond_scale', line 2: expected a number >= 0",
        ),
    ],
)
def test_task_file_errors_of_the_protocol_fields(text, match):
    with pytest.raises(TaskSpecError, match=match):
        parse_task_set(text, "tasks.yaml")


def test_a_tasks_own_budget_replaces_the_defaults_horizon():
    text = tasks(
        "  - {name: a, instruction: get dirt}\n"
        "  - {name: b, instruction: get dirt, max_steps: 9}\n",
        "horizon: 40, prompt_latent: sampled",
    )
    a, b = parse_task_set(text).tasks
    assert (a.horizon, a.max_steps, a.prompt_seed) == (40, 40, 0)
    assert (b.horizon, b.max_steps) == (None, 9)


def test_metric_configs_are_checked_in_python_too():
    with pytest.raises(MetricConfigError, match=r"oak\.items: expected an item name"):
        MetricTracker({"oak": {"type": "inventory", "items": []}}, {})


# ------------------------------------------------------------------ evaluate and the CLI
def test_a_changed_horizon_cannot_resume_a_run(tmp_path, recording):
    task_set = parse_task_set(tasks(WOOD.replace("horizon: 300", "max_steps: 300")))
    evaluate(task_set, tmp_path / "run", SETTINGS, horizon=60, progress=False)
    config = json.loads((tmp_path / "run" / "run.json").read_text())
    assert config["horizon"] == 60 and config["invocations"][0]["baseline"] == "none"
    with pytest.raises(ResultsError, match="horizon: recorded 60, now 80"):
        evaluate(task_set, tmp_path / "run", SETTINGS, horizon=80, resume=True, progress=False)


def test_adding_the_baseline_resumes_a_run_on_the_same_seeds(tmp_path, recording):
    task_set = parse_task_set(tasks(WOOD))
    evaluate(task_set, tmp_path / "run", SETTINGS, horizon=60, progress=False)
    result = evaluate(
        task_set, tmp_path / "run", SETTINGS, horizon=60, baseline="unconditional",
        resume=True, progress=False,
    )  # fmt: skip
    assert result.ran == 1


@pytest.mark.parametrize(
    "encoder", [[], ["--prompt-encoder", "steve1", "--weights", "random"]], ids=["hash", "steve1"]
)
def test_the_cli_runs_the_paper_protocol_with_both_conditions(tmp_path, capsys, encoder):
    out = tmp_path / "paper"
    argv = [
        "eval", "--task-set", "paper", "--tasks", "wood", "explore", "--trials", "1",
        "--horizon", "300", "--baseline", "both", "--policy", "scripted", *encoder,
        "--world-option", "pov_shape=[48, 64]", "--out", str(out), "--quiet",
    ]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    assert (out / "report.json").is_file() and (out / "report.html").is_file()
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted((r["task"], r["condition"]) for r in records) == [
        ("explore", "prompt"), ("explore", "unconditional"),
        ("wood", "prompt"), ("wood", "unconditional"),
    ]  # fmt: skip
    assert all(r["steps"] == 300 and set(r["metrics"]) == set(PAPER_METRICS) for r in records)
    embedded = {r["condition"]: (r["prompt_latent"], r["prompt_seed"] is None) for r in records}
    # The baseline embeds no prompt: its records name no latent seed.
    assert embedded == {"prompt": ("sampled", False), "unconditional": ("zeros", True)}
    config = json.loads((out / "run.json").read_text())
    assert config["horizon"] == 300 and config["invocations"][-1]["baseline"] == "both"
    # The terminal shows each prompt's metric means with the ratio to the baseline.
    printed = capsys.readouterr().out
    assert "metric means" in printed and "travel_distance" in printed
    summary = json.loads((out / "report.json").read_text())["metrics"]
    wood = next(p for p in summary["prompts"] if p["task"] == "wood")
    mean = wood["conditions"]["prompt"]["metrics"]["log"]["mean"]
    table = printed.split("metric means", 1)[1].splitlines()
    line = next(line for line in table if line.startswith("wood "))
    assert f"{mean:.2f}" in line
    assert any(line.startswith("(baseline) ") for line in table)
    assert "unconditional baseline (apart from the rows above): " in printed


def test_cli_errors_of_the_protocol_flags(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["eval", "--max-steps", "5", "--horizon", "5", "--out", str(tmp_path / "o")])
    assert "not allowed with argument --max-steps" in capsys.readouterr().err
    from steve1_env.cli import in_cli_words
    from steve1_env.evaluation.trial import sampled_latent_unsupported

    said = in_cli_words(sampled_latent_unsupported("precomputed"))
    assert "--prompt-encoder steve1 (with --weights random to run offline)" in said
    assert "prompt_encoder_kwargs" not in said


def test_the_paper_report_equals_what_the_results_file_recomputes(tmp_path, capsys):
    # The CI command, with a small horizon: every number of the metric report is
    # recomputed here from results.jsonl alone, by the paper's definitions, not by report.py.
    out = tmp_path / "paper"
    argv = [
        "eval", "--task-set", "paper", "--horizon", "40", "--baseline", "both", "--trials", "3",
        "--policy", "scripted", "--k", "20", "--world-option", "pov_shape=[32, 32]",
        "--world-option", "size=32", "--out", str(out), "--quiet",
    ]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    report = json.loads((out / "report.json").read_text())["metrics"]
    paper_tasks = [task.name for task in load_task_set("paper").tasks]
    assert len(rows) == len(paper_tasks) * 3 * 2 and all(r["steps"] == 40 for r in rows)
    assert report["names"] == list(PAPER_METRICS) and report["interval"] == "student_t"

    t_975_df2 = math.sqrt(2 * 0.95**2 / (1 - 0.95**2))  # Student t, 2 degrees of freedom

    def stats(values):
        n = len(values)
        mean = sum(values) / n
        sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
        half = t_975_df2 * sd / math.sqrt(n)
        return {"n": n, "mean": mean, "std": sd, "ci95": [mean - half, mean + half],
                "min": min(values), "max": max(values)}  # fmt: skip

    def close(got, want):
        if isinstance(want, dict):
            assert got.keys() == want.keys()
            for key in want:
                close(got[key], want[key])
        else:
            assert got == pytest.approx(want, rel=1e-12, abs=1e-12)

    assert [p["task"] for p in report["prompts"]] == paper_tasks
    for prompt in report["prompts"]:
        mine = [r for r in rows if r["task"] == prompt["task"]]
        by = {c: sorted((r for r in mine if r["condition"] == c), key=lambda r: r["trial"])
              for c in ("prompt", "unconditional")}  # fmt: skip
        assert [r["seed"] for r in by["prompt"]] == [r["seed"] for r in by["unconditional"]]
        for condition, records in by.items():
            got = prompt["conditions"][condition]
            assert (got["trials"], got["judged"], got["crashes"]) == (3, 3, 0)
            for name in PAPER_METRICS:
                close(got["metrics"][name], stats([r["metrics"][name] for r in records]))
        for name in PAPER_METRICS:
            p = [r["metrics"][name] for r in by["prompt"]]
            b = [r["metrics"][name] for r in by["unconditional"]]
            ratio = prompt["ratio_to_baseline"][name]
            assert ratio["pairs"] == 3
            close([ratio["prompt_mean"], ratio["baseline_mean"]], [sum(p) / 3, sum(b) / 3])
            if sum(b) == 0:
                assert ratio["ratio"] is None
            else:
                close(ratio["ratio"], sum(p) / sum(b))
    spread = [
        stats_["std"] for p in report["prompts"] for c in p["conditions"].values()
        for stats_ in c["metrics"].values()
    ]  # fmt: skip
    ratios = [r["ratio"] for p in report["prompts"] for r in p["ratio_to_baseline"].values()]
    assert max(spread) > 0 and any(r not in (None, 0.0) for r in ratios), "a test that can fail"
    pooled = report["baseline"]
    baseline = [r for r in rows if r["condition"] == "unconditional"]
    seeds = sorted({r["seed"] for r in baseline})
    assert (pooled["seeds"], pooled["trials"]) == (3, len(paper_tasks) * 3)
    for name in PAPER_METRICS:
        per_seed = []
        for seed in seeds:
            values = [r["metrics"][name] for r in baseline if r["seed"] == seed]
            per_seed.append(sum(values) / len(values))
        close(pooled["metrics"][name], stats(per_seed))
    summary = json.loads((out / "report.json").read_text())
    for key, condition in (("tasks", "prompt"), ("baseline", "unconditional")):
        tasks_ = summary["tasks"] if key == "tasks" else summary["baseline"]["tasks"]
        for entry in tasks_:
            mine = [r for r in rows if r["task"] == entry["task"] and r["condition"] == condition]
            assert entry["successes"] == sum(r["outcome"] == "success" for r in mine)
            assert entry["judged"] == 3
    page = (out / "report.html").read_text()
    assert page.count('class="heat-cell"') == (len(paper_tasks) + 1) * len(PAPER_METRICS)
    markdown = (out / "report.md").read_text()
    assert "### Prompt" in markdown and "### Unconditional baseline" in markdown


def test_the_progress_line_says_when_a_fixed_horizon_trial_succeeded(tmp_path):
    import io

    from steve1_env.evaluation.progress import Progress

    task_set = parse_task_set(tasks(WOOD))
    stream = io.StringIO()
    result = evaluate(task_set, tmp_path / "run", SETTINGS, horizon=80, stream=stream)
    (record,) = result.records
    assert record.outcome == "success" and record.steps == 80
    out = io.StringIO()  # not a terminal: one line per trial
    Progress([], [], stream=out, enabled=True).trial_done(record)
    assert f"success at step {record.steps_to_success} of 80" in out.getvalue()
