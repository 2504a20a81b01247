"""Review of the skill engine redesign: the edges where the engine's callers must keep behaving
as they did before it (an encoder error mid-step, a world process refusing an action, workers
hosting several trials)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from steve1_env.engine import SkillEngine, Slot
from steve1_env.env import Steve1SkillEnv
from steve1_env.errors import InvalidActionError, InvalidInstructionError
from steve1_env.evaluation.executors import _answers, _WorkerPool
from steve1_env.evaluation.trial import RunSettings, TrialFailedError, TrialRunner
from steve1_env.prompt.goals import GoalEncoder
from steve1_env.prompt.hash_encoder import HashPromptEncoder
from steve1_env.prompt.precomputed import PrecomputedPromptEncoder
from steve1_env.success import resolve_detectors
from steve1_env.tasks.spec import parse_task_set
from steve1_env.worlds.synthetic import SyntheticWorld
from steve1_env.worlds.world_process import WorldProcess

from .conftest import FunctionPolicy

SMALL = {"pov_shape": (48, 64)}
OFFLINE = RunSettings(policy="scripted", prompt_encoder="hash", world_kwargs=SMALL, k=20)
# Two trials of very different lengths: the short one ends long before the other.
UNEVEN = """
name: uneven
tasks:
  - {name: long, instruction: get dirt, max_steps: 250}
  - {name: short, instruction: look at the sky, max_steps: 60}
"""


# ------------------------------------------------ an encoder error before the step starts
def _known_only():
    table = {"get dirt": np.ones(512), "chop a tree": np.full(512, 2.0)}
    return PrecomputedPromptEncoder(embeddings=table)


def test_an_instruction_the_encoder_refuses_leaves_the_env_usable():
    # Nothing ran: the episode goes on with the next (known) instruction, as before the engine.
    env = Steve1SkillEnv(
        policy="scripted", prompt_encoder=_known_only(), instruction="get dirt",
        world_kwargs=SMALL, k=5,
    )  # fmt: skip
    try:
        env.reset(seed=0)
        with pytest.raises(InvalidInstructionError, match="No precomputed embedding"):
            env.step("dance")
        *_, info = env.step("chop a tree")
        assert info["reason"] == "budget" and info["instruction"] == "chop a tree"
    finally:
        env.close()


def test_an_instruction_the_encoder_refuses_does_not_wedge_a_vector_env():
    from steve1_env.vector.env import Steve1SkillVectorEnv

    envs = Steve1SkillVectorEnv(
        2, policy="scripted", prompt_encoder="precomputed", instruction="get dirt",
        prompt_encoder_kwargs={"embeddings": {"get dirt": [1.0] * 512}},
        world_kwargs=SMALL, k=5,
    )  # fmt: skip
    try:
        envs.reset(seed=0)
        with pytest.raises(InvalidInstructionError):
            envs.step(["get dirt", "dance"])
        # Env 0 had begun (it starts over); env 1 never moved and steps on.
        _, _, terminated, truncated, info = envs.step(["get dirt", "get dirt"])
        assert not terminated.any() and not truncated.any()
        assert list(info["reason"]) == [None, "budget"]
    finally:
        envs.close()


# ------------------------------------------------ a world process refusing an action
def test_an_action_a_world_process_refuses_is_an_error_and_spares_the_other_worlds():
    # The in-process adapter raises InvalidActionError from step_async; a world in its process
    # may only tell at step_wait. Either way it is the caller's mistake, as before the engine:
    # no crash is recorded, and the other worlds (a Minecraft server each) are not killed.
    worlds = [WorldProcess("synthetic", SMALL) for _ in range(2)]
    healthy = {"forward": 1}
    refused_in_child = FunctionPolicy(lambda call: {"attack": 7} if call == 1 else healthy)
    refused_here = FunctionPolicy(lambda call: ["forward"] if call == 2 else healthy)
    goals = GoalEncoder(HashPromptEncoder())
    engine = SkillEngine(
        [Slot(worlds[0], refused_in_child, goals), Slot(worlds[1], refused_here, goals)]
    )
    try:
        for i in range(2):
            engine.reset(i, np.random.default_rng(i), "get dirt", resolve_detectors(None))
        pids = [world.pid for world in worlds]
        for refusing, match in ((0, "attack"), (1, "must be a dict")):
            for i in range(2):
                engine.begin(i, "get dirt", 5)
            with pytest.raises(InvalidActionError, match=match):
                engine.run()
            assert engine.failed_slot == refusing
            engine.abort(range(2))
            assert [world.pid for world in worlds] == pids
            assert not any(world.waiting for world in worlds)  # every answer was read
    finally:
        for world in worlds:
            world.close()


# ------------------------------------------------ the worker pool with several worlds
class _Call:
    def __init__(self, new):
        self.new = new


class _InlinePool(_WorkerPool):
    """A worker pool whose workers are `TrialRunner`s in this process (no processes)."""

    def _start(self, index):
        return TrialRunner(self.settings, worker=f"inline-{index}", envs=self.envs_per_worker)

    def _submit(self, worker, new):
        return _Call(list(new))

    def _wait(self, pending):
        return list(pending)

    def _result(self, worker, pending, running):
        return _answers(worker.advance(pending.new))

    def _stop(self, worker):
        worker.close()


def test_a_pool_waits_for_every_trial_a_worker_still_hosts():
    specs = parse_task_set(UNEVEN).trial_specs(2)
    pool = _InlinePool(OFFLINE, workers=1, envs_per_worker=4)
    try:
        records = list(pool.run(specs))
    finally:
        pool.close()
    assert sorted(r.key for r in records) == sorted(s.key for s in specs)


# ------------------------------------------------ a failed trial crosses process boundaries
def test_a_failed_trial_pickles_with_its_trial_and_cause():
    spec = parse_task_set(UNEVEN).trial_specs(1)[0]
    error = pickle.loads(pickle.dumps(TrialFailedError(spec, ValueError("boom"))))
    assert error.spec == spec and isinstance(error.cause, ValueError)
    assert str(error) == "ValueError: boom"


class _SilentPool(_InlinePool):
    """Its one worker answers a call without any record, then must not be asked again."""

    answered = 0

    def _result(self, worker, pending, running):
        self.answered += 1
        if self.answered > 1:
            raise AssertionError("the pool asked again a worker that answers nothing")
        return []


def test_a_worker_answering_no_record_stops_the_run_instead_of_looping():
    from steve1_env.errors import EvaluationError

    pool = _SilentPool(OFFLINE, workers=1, envs_per_worker=2)
    try:
        with pytest.raises(EvaluationError, match="without a record"):
            list(pool.run(parse_task_set(UNEVEN).trial_specs(1)))
    finally:
        pool.close()


class _DyingPool(_InlinePool):
    """Its first call dies with every trial it was given (a worker killed mid-call)."""

    calls = 0

    def _result(self, worker, pending, running):
        from steve1_env.evaluation.executors import _WorkerLost

        self.calls += 1
        if self.calls == 1:
            raise _WorkerLost("worker inline-0 died with exit code -9")
        return super()._result(worker, pending, running)


@pytest.mark.parametrize("retries", [0, 1])
def test_a_worker_dying_with_several_trials_costs_each_of_them_one_try(retries):
    from dataclasses import replace

    specs = parse_task_set(UNEVEN).trial_specs(1)
    pool = _DyingPool(replace(OFFLINE, crash_retries=retries), workers=1, envs_per_worker=2)
    try:
        records = {r.key: r for r in pool.run(specs)}
    finally:
        pool.close()
    assert sorted(records) == sorted(s.key for s in specs)
    for record in records.values():
        assert record.crashes == 1 and "exit code -9" in record.errors[0]
        if retries:  # retried on a fresh worker, and played to its end
            assert record.outcome != "crash" and record.worker == "inline-0"
        else:  # no try left: recorded as lost
            assert record.outcome == "crash" and record.worker == "lost"


# ------------------------------------------------ a detector error names its own trial
def exploding_detector(start, obs, steps):
    """A user's detector that breaks after a few ticks."""
    if steps >= 3:
        raise ZeroDivisionError("the detector divided by zero")
    return False


BROKEN_SECOND = """
name: broken
tasks:
  - {name: fine, instruction: get dirt, max_steps: 250}
  - name: broken
    instruction: get dirt
    max_steps: 250
    success: {type: custom, function: "tests.test_engine_review:exploding_detector"}
"""


def test_a_detector_error_among_several_worlds_is_blamed_on_its_own_trial():
    specs = parse_task_set(BROKEN_SECOND, allow_imports=True).trial_specs(1)
    runner = TrialRunner(OFFLINE, envs=2)
    try:
        with pytest.raises(TrialFailedError) as caught:
            runner.advance([(spec, 0) for spec in specs])
    finally:
        runner.close()
    assert caught.value.spec.task == "broken"
    assert isinstance(caught.value.cause, ZeroDivisionError)


# ------------------------------------------------ world crashes among several worlds
def test_a_world_crash_among_several_worlds_retries_that_trial_alone_on_a_fresh_world(tmp_path):
    from dataclasses import replace

    from steve1_env.evaluation.runner import evaluate

    markers = tmp_path / "markers"
    markers.mkdir()
    crashing = replace(
        OFFLINE,
        world="tests.fakes.crashing_worlds:SocketErrorWorld",
        world_kwargs={**SMALL, "marker_dir": str(markers), "after": 5},
    )
    tasks = parse_task_set(UNEVEN)
    clean = evaluate(tasks, tmp_path / "clean", OFFLINE, trials=2, progress=False)
    run = evaluate(tasks, tmp_path / "crash", crashing, trials=2, envs_per_worker=3, progress=False)

    def played(records):
        return {r.key: (r.outcome, r.reason, r.steps, r.inventory) for r in records}

    assert played(run.records) == played(clean.records)
    crashed = [r for r in run.records if r.crashes]
    assert len(crashed) == 1 and crashed[0].errors == ["SocketException"]


# ------------------------------------------------ Ctrl-C in the middle of a tick
class InterruptingWorld(SyntheticWorld):
    """Raises KeyboardInterrupt at the `at`-th step of all such worlds, once (Ctrl-C)."""

    steps = 0
    at: int | None = None

    def step(self, action):
        InterruptingWorld.steps += 1
        if InterruptingWorld.steps == InterruptingWorld.at:
            raise KeyboardInterrupt
        return super().step(action)


def test_ctrl_c_mid_tick_drops_every_trial_and_video_and_the_runner_goes_on(tmp_path):
    from dataclasses import replace

    world = "tests.test_engine_review:InterruptingWorld"
    settings = replace(OFFLINE, world=world, video_dir=str(tmp_path / "videos"))
    specs = parse_task_set(UNEVEN).trial_specs(1)

    def run_all(runner):
        records = runner.advance([(spec, 0) for spec in specs])
        while runner.busy:
            records += runner.advance()
        return {r.key: (r.outcome, r.steps, r.inventory) for r in records}

    runner = TrialRunner(settings, envs=2)
    try:
        # The 8th world step is the second world's in the fourth tick: the first world has
        # stepped in that tick (its answer never read), the second never answers.
        InterruptingWorld.steps, InterruptingWorld.at = 0, 8
        with pytest.raises(KeyboardInterrupt):
            runner.advance([(spec, 0) for spec in specs])
        assert not runner.busy and runner.free == 2
        assert not list((tmp_path / "videos").rglob("*.mp4"))  # partial videos are deleted
        InterruptingWorld.at = None
        again = run_all(runner)
    finally:
        runner.close()
    fresh = TrialRunner(settings, envs=2)
    try:
        assert again == run_all(fresh)
    finally:
        fresh.close()
    assert len(list((tmp_path / "videos").rglob("*.mp4"))) == 2
