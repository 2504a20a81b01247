"""The skill engine under every caller: env, vector env and evaluation workers with M worlds."""

from __future__ import annotations

import json
import sys
import warnings

import numpy as np
import pytest

from steve1_env.cli import main
from steve1_env.engine import SkillEngine, Slot
from steve1_env.env import Steve1SkillEnv
from steve1_env.errors import ConfigurationError, DependencyNotInstalledError, WorldCrashError
from steve1_env.evaluation.runner import evaluate
from steve1_env.evaluation.trial import MAX_ENVS_PER_WORKER, RunSettings, TrialRunner
from steve1_env.prompt.goals import GoalEncoder
from steve1_env.prompt.hash_encoder import HashPromptEncoder
from steve1_env.success import resolve_detectors
from steve1_env.tasks.spec import parse_task_set
from steve1_env.worlds.base import InProcessWorld, WorldStep, as_async
from steve1_env.worlds.synthetic import SyntheticWorld

TASKS = """
name: mixed
tasks:
  - {name: dirt, instruction: get dirt, max_steps: 250}
  - {name: logs, instruction: chop a tree, max_steps: 300}
  - {name: sky, instruction: look at the sky, max_steps: 120}
"""
SMALL = {"pov_shape": (48, 64)}


def _tiny(files):
    return {"weights": str(files["weights"]), "model": str(files["model"])}


def _judged(records):
    # Everything a trial's play decides (not its timing or worker).
    return {
        record.key: (
            record.outcome,
            record.reason,
            record.steps,
            record.high_level_steps,
            record.detector,
            record.inventory,
        )
        for record in records
    }


def _run(tmp_path, name, settings, **kwargs):
    result = evaluate(
        parse_task_set(TASKS), tmp_path / name, settings, trials=3, progress=False, **kwargs
    )
    assert result.missing == 0
    return _judged(result.records)


def test_scripted_records_do_not_depend_on_worlds_per_worker(tmp_path):
    settings = RunSettings(policy="scripted", prompt_encoder="hash", world_kwargs=SMALL, k=40)
    one = _run(tmp_path, "one", settings)
    four = _run(tmp_path, "four", settings, envs_per_worker=4)
    assert len(one) == 9 and one == four
    assert {outcome for outcome, *_ in one.values()} >= {"success"}


def test_native_policy_records_do_not_depend_on_worlds_per_worker(tmp_path, tiny_policy_files):
    settings = RunSettings(
        policy="steve1",
        prompt_encoder="hash",
        policy_kwargs=_tiny(tiny_policy_files),
        world_kwargs=SMALL,
        k=25,
    )
    one = _run(tmp_path, "one", settings)
    four = _run(tmp_path, "four", settings, envs_per_worker=4)
    assert len(one) == 9 and one == four


@pytest.mark.slow
def test_process_workers_with_several_worlds_give_the_same_records(tmp_path):
    settings = RunSettings(policy="scripted", prompt_encoder="hash", world_kwargs=SMALL, k=40)
    one = _run(tmp_path, "one", settings)
    two = _run(tmp_path, "two", settings, executor="processes", workers=2, envs_per_worker=3)
    assert one == two


class _CountingPolicy:
    """Wraps a batching policy and counts its calls."""

    def __init__(self, inner):
        self.inner, self.device, self.batches = inner, inner.device, []

    def initial_state(self, seed):
        return self.inner.initial_state(seed)

    def act(self, obs, goal, state):
        raise AssertionError("a batching policy is called through act_batch")

    def act_batch(self, observations, goals, states):
        self.batches.append(len(observations))
        return self.inner.act_batch(observations, goals, states)

    def close(self):
        self.inner.close()


def test_one_worker_makes_one_policy_call_per_tick_for_all_its_worlds(tmp_path, tiny_policy_files):
    from steve1_env.agent.native import NativeSteve1Policy

    counting = _CountingPolicy(NativeSteve1Policy(**_tiny(tiny_policy_files)))
    worlds = [SyntheticWorld(**SMALL) for _ in range(3)]
    goals = GoalEncoder(HashPromptEncoder())
    engine = SkillEngine([Slot(world, counting, goals) for world in worlds])
    rng = [np.random.default_rng(i) for i in range(3)]
    for i in range(3):
        engine.reset(i, rng[i], "get dirt", resolve_detectors(None))
    for i, budget in enumerate((4, 2, 3)):
        engine.begin(i, "get dirt", budget)
    engine.run()
    # Slots leave the batch as their budgets run out: 3 rows, then 3, then 2, then 1.
    assert counting.batches == [3, 3, 2, 1]
    assert [engine.end(i).steps for i in range(3)] == [4, 2, 3]


def test_a_runner_hosts_several_worlds_but_one_policy_and_encoder(tiny_policy_files):
    settings = RunSettings(
        policy="steve1", prompt_encoder="hash", policy_kwargs=_tiny(tiny_policy_files), k=10
    )
    specs = parse_task_set(TASKS).trial_specs(1, 20)
    runner = TrialRunner(settings, envs=3)
    try:
        records = runner.advance([(spec, 0) for spec in specs])
        while runner.busy:
            records += runner.advance()
        envs = [slot.env for slot in runner._slots]
        assert len({id(env.world) for env in envs}) == 3
        assert len({id(env.policy) for env in envs}) == 1
        assert len({id(env.prompt_encoder) for env in envs}) == 1
    finally:
        runner.close()
    assert sorted(record.key for record in records) == sorted(spec.key for spec in specs)


@pytest.mark.parametrize("envs", [0, -1, MAX_ENVS_PER_WORKER + 1, 2.5, True, "4"])
def test_a_bad_number_of_worlds_per_worker_is_refused_before_anything_runs(tmp_path, envs):
    settings = RunSettings(policy="scripted", prompt_encoder="hash")
    with pytest.raises(ConfigurationError, match="envs_per_worker"):
        evaluate(parse_task_set(TASKS), tmp_path / "run", settings, envs_per_worker=envs)
    assert not (tmp_path / "run").exists()


def test_the_cli_takes_envs_per_worker(tmp_path, capsys):
    code = main(
        ["eval", "--out", str(tmp_path / "run"), "--policy", "scripted", "--prompt-encoder",
         "hash", "--trials", "1", "--envs-per-worker", "3", "--quiet"]
    )  # fmt: skip
    assert code == 0
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["invocations"][-1]["envs_per_worker"] == 3


# ------------------------------------------------ configuration errors are not crashes
@pytest.mark.skipif("minerl" in sys.modules, reason="needs an environment without MineRL")
def test_a_missing_world_backend_exits_2_with_the_install_hint_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["eval", "--world", "minerl", "--out", str(out), "--policy", "scripted"])
    err = capsys.readouterr().err
    assert code == 2
    assert 'pip install "steve1-env[minerl]"' in err and "crash" not in err
    assert not out.exists()


def test_a_missing_backend_met_inside_a_trial_stops_the_run_unrecorded(tmp_path, monkeypatch):
    def no_simulator(env_id, **kwargs):
        raise DependencyNotInstalledError('install it with: pip install "steve1-env[minerl]"')

    settings = RunSettings(
        world="minerl",
        policy="random",
        prompt_encoder="hash",
        world_kwargs={"env_factory": no_simulator},
    )
    with pytest.raises(Exception, match=r"steve1-env\[minerl\]") as caught:
        evaluate(parse_task_set(TASKS), tmp_path / "run", settings, trials=1, progress=False)
    assert "world crash" not in str(caught.value).split("This is not")[0]
    results = tmp_path / "run" / "results.jsonl"
    assert not results.exists() or not results.read_text().strip()


def test_the_vector_env_refuses_a_missing_backend_up_front():
    from steve1_env.vector.env import Steve1SkillVectorEnv

    if "minerl" in sys.modules:
        pytest.skip("needs an environment without MineRL")
    with pytest.raises(DependencyNotInstalledError, match="steve1-env\\[minerl\\]"):
        Steve1SkillVectorEnv(2, world="minerl", policy="random", prompt_encoder="hash")


# ------------------------------------------------ the world boundary
class _ErrorInfoWorld(SyntheticWorld):
    """Reports a lost simulator MineRL's way: a random frame and ``info["error"]``."""

    def step(self, action):
        result = super().step(action)
        return WorldStep(result.obs, False, {"error": "SocketException"})


def test_the_in_process_adapter_turns_every_failure_into_a_world_crash():
    world = as_async(_ErrorInfoWorld(**SMALL))
    assert isinstance(world, InProcessWorld)
    world.reset(seed=1)
    world.step_async({"forward": 1})
    with pytest.raises(WorldCrashError, match="SocketException"):
        world.step_wait()


def test_env_public_surface_is_gymnasium_only():
    env = Steve1SkillEnv(policy="random", prompt_encoder="hash", instruction="get dirt")
    try:
        for loop_member in ("begin_step", "advance", "policy_inputs", "end_step", "check_action"):
            assert not hasattr(env, loop_member)
        env.reset(seed=0)
        *_, info = env.step("")
        assert info["steps"] == env.k
    finally:
        env.close()


def test_goal_encoder_computes_each_goal_once_and_forgets_varying_ones():
    class Counting(HashPromptEncoder):
        varies_per_episode = False

        def __init__(self):
            super().__init__()
            self.calls, self.seeds = 0, []

        def encode(self, instruction):
            self.calls += 1
            return super().encode(instruction)

        def start_episode(self, seed):
            self.seeds.append(seed)

    encoder = Counting()
    goals = GoalEncoder(encoder)
    first = goals.embedding("get dirt")
    goals.start_episode(1)
    assert goals.embedding("get dirt") is first and encoder.calls == 1
    assert first.dtype == np.float32 and not first.flags.writeable
    encoder.varies_per_episode = True
    goals.start_episode(2)
    goals.embedding("get dirt")
    assert encoder.calls == 2 and encoder.seeds == [1, 2]


def test_a_slots_tick_observer_sees_every_ticks_world_observation_before_the_judge():
    from steve1_env.agent.scripted import ScriptedPolicy

    world = SyntheticWorld(**SMALL)
    slot = Slot(world, ScriptedPolicy(world), GoalEncoder(HashPromptEncoder()))
    engine = SkillEngine([slot])
    engine.reset(0, np.random.default_rng(0), "chop a tree", resolve_detectors(None))
    seen = []
    slot.on_tick = lambda obs: seen.append((slot.total_steps, dict(obs["inventory"])))
    engine.begin(0, "chop a tree", 400)
    engine.run()
    outcome = engine.end(0)
    # One call per tick, with that tick's observation; the detector fired on the last one.
    assert outcome.reason == "success" and [n for n, _ in seen] == list(range(1, outcome.steps + 1))
    assert seen[-1][1] == dict(slot.obs["inventory"]) and "_log" in str(seen[-1][1])


PROTOCOL = """
tasks:
  - {name: logs, instruction: chop a tree, horizon: 200, prompt_latent: sampled, prompt_seed: 5}
  - {name: sky, instruction: look at the sky, horizon: 100}
"""


def test_fixed_horizon_records_do_not_depend_on_where_they_run(tmp_path):
    # The sampled latent, the metrics and the first success of each trial are the same in
    # one local world and in process workers hosting several.
    settings = RunSettings(
        policy="scripted", prompt_encoder="steve1", prompt_encoder_kwargs={"weights": "random"},
        world_kwargs=SMALL, k=40,
    )  # fmt: skip

    def played(name, **kwargs):
        result = evaluate(
            parse_task_set(PROTOCOL), tmp_path / name, settings, trials=2, progress=False,
            baseline="unconditional" if "base" in name else "none", **kwargs,
        )  # fmt: skip
        return {
            r.key: (r.steps, r.steps_to_success, r.metrics, r.prompt_seed) for r in result.records
        }

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the untrained encoder's warning
        local = played("local")
        base = played("local-base")
        spread = played("spread", executor="processes", workers=2, envs_per_worker=2)
    assert len(local) == 4 and local == spread
    assert {key.removesuffix("/unconditional") for key in base} == set(local)
    assert {steps for steps, *_ in local.values()} == {200, 100}
