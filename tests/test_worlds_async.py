"""The world boundary: `AsyncWorld`, its in-process adapter, world processes and the worker
primitive under them (`steve1_env.workers`), and the timeouts each world kind declares."""

from __future__ import annotations

import pickle
import time

import numpy as np
import pytest

from steve1_env.errors import (
    ConfigurationError,
    DependencyNotInstalledError,
    InvalidActionError,
    WorldCrashError,
)
from steve1_env.registry import WORLDS
from steve1_env.workers import (
    ABANDON_GRACE_S,
    WorkerError,
    WorkerLostError,
    WorkerProcess,
    WorkerStateError,
    abandon_all,
    close_all,
    worker_traceback,
)
from steve1_env.worlds.base import (
    DEFAULT_WORLD_TIMEOUTS,
    WATCHDOG_MARGIN_S,
    AsyncWorld,
    InProcessWorld,
    WorldStep,
    WorldTimeouts,
    as_async,
    world_timeouts,
)
from steve1_env.worlds.minerl import MineRLWorld
from steve1_env.worlds.minestudio import MineStudioWorld
from steve1_env.worlds.synthetic import SyntheticWorld
from steve1_env.worlds.world_process import WorldProcess
from tests.fakes.workers import Echo, broken

SMALL = {"size": 32, "pov_shape": (32, 32)}


# ---------------------------------------------------------------- the in-process adapter
class _Scripted:
    """A world whose step does what it is told."""

    def __init__(self, step: object = None, reset: Exception | None = None) -> None:
        self.next_step, self.reset_error, self.closed = step, reset, False

    def reset(self, seed=None):
        if self.reset_error is not None:
            raise self.reset_error
        return {"pov": np.zeros((2, 2, 3), np.uint8), "seed": seed}

    def step(self, action):
        if isinstance(self.next_step, Exception):
            raise self.next_step
        return self.next_step or WorldStep({"pov": np.zeros((2, 2, 3), np.uint8)}, False, {})

    def close(self):
        self.closed = True


def test_as_async_wraps_a_sync_world_and_keeps_an_async_one():
    world = SyntheticWorld(**SMALL)
    adapted = as_async(world)
    assert isinstance(adapted, InProcessWorld) and isinstance(adapted, AsyncWorld)
    assert as_async(adapted) is adapted
    process = WorldProcess("synthetic", SMALL)
    assert as_async(process) is process  # no adapter over a world process
    assert isinstance(process, AsyncWorld)


def test_the_adapter_steps_in_two_halves():
    world = as_async(SyntheticWorld(**SMALL))
    world.reset(seed=3)
    world.step_async({"forward": 1})
    result = world.step_wait()
    assert result.obs["pov"].shape == (32, 32, 3) and not result.done
    with pytest.raises(WorldCrashError, match="step_wait"):
        world.step_wait()
    world.step_async({})
    with pytest.raises(WorldCrashError, match="twice"):
        world.step_async({})
    world.close()


@pytest.mark.parametrize(
    "step",
    [RuntimeError("socket closed"), WorldStep({}, True, {"error": "socket closed"})],
    ids=["raised", "info-error"],
)
def test_the_adapter_turns_every_simulator_failure_into_a_world_crash(step):
    world = InProcessWorld(_Scripted(step))
    world.reset()
    world.step_async({})  # the failure waits for step_wait
    with pytest.raises(WorldCrashError, match="socket closed"):
        world.step_wait()


@pytest.mark.parametrize(
    "error",
    [
        InvalidActionError("bad action"),
        ConfigurationError("bad argument"),
        DependencyNotInstalledError("pip install it"),
    ],
)
def test_caller_mistakes_pass_the_adapter_as_they_are(error):
    world = InProcessWorld(_Scripted(error, reset=error))
    with pytest.raises(type(error)) as caught:
        world.reset()
    assert caught.value is error
    world.world.reset_error = None
    world.reset()
    with pytest.raises(type(error)):
        world.step_async({})


def test_a_failed_reset_is_a_world_crash():
    world = InProcessWorld(_Scripted(reset=OSError("no display")))
    with pytest.raises(WorldCrashError, match="OSError: no display"):
        world.reset()


# ---------------------------------------------------------------- timeouts per world kind
def test_each_built_in_world_kind_declares_its_timeouts():
    assert MineRLWorld.timeouts == WorldTimeouts(step_s=120.0, reset_s=1800.0, watchdog=True)
    assert MineStudioWorld.timeouts == WorldTimeouts(step_s=120.0, reset_s=1800.0)
    assert SyntheticWorld.timeouts == DEFAULT_WORLD_TIMEOUTS
    assert world_timeouts(lambda **kw: None) == DEFAULT_WORLD_TIMEOUTS  # declares none


def test_minerl_world_watchdog_reads_the_declared_timeouts():
    world = MineRLWorld()
    declared = MineRLWorld.timeouts
    assert (world.step_timeout, world.reset_timeout) == (declared.step_s, declared.reset_s)
    world.close()


def test_a_minerl_world_process_gets_minerl_timeouts_without_building_a_world(monkeypatch):
    built = []
    monkeypatch.setattr(MineRLWorld, "__init__", lambda self, **kw: built.append(kw))
    process = WorldProcess("minerl")
    assert process.reset_timeout == 1800.0 and process.step_timeout == 120.0
    assert process.reset_timeout > DEFAULT_WORLD_TIMEOUTS.reset_s  # no shorter generic limit
    assert process.pid is None and not built  # nothing started, nothing built here
    # MineRL's watchdog ends a hung call (and kills Java) before the process limit does.
    assert process._reset_limit == 1800.0 + WATCHDOG_MARGIN_S
    assert WorldProcess("minerl", reset_timeout=5)._reset_limit == 5.0
    # The world's own watchdog arguments are its process's limits too; explicit ones win.
    assert WorldProcess("minerl", {"reset_timeout": 3600}).reset_timeout == 3600.0
    assert WorldProcess("minerl", {"reset_timeout": 3600}, reset_timeout=5).reset_timeout == 5.0
    assert WorldProcess("minestudio").reset_timeout == 1800.0
    assert WorldProcess("synthetic").step_timeout == DEFAULT_WORLD_TIMEOUTS.step_s


def test_a_user_world_kind_can_declare_its_timeouts():
    class Slow(SyntheticWorld):
        timeouts = WorldTimeouts(step_s=5.0, reset_s=7.0)

    WORLDS.register("slow-for-timeouts", Slow, overwrite=True)
    process = WorldProcess("slow-for-timeouts")
    assert (process.step_timeout, process.reset_timeout) == (5.0, 7.0)


def test_declared_timeouts_are_checked():
    class Wrong:
        timeouts = WorldTimeouts(step_s=-1.0, reset_s=7.0)

    with pytest.raises(ConfigurationError, match="step_timeout must be a positive"):
        world_timeouts(Wrong)


# ---------------------------------------------------------------- world processes
def test_a_world_process_steps_in_two_halves_and_matches_the_world_in_process():
    local = SyntheticWorld(**SMALL)
    remote = WorldProcess("synthetic", SMALL)
    try:
        assert np.array_equal(remote.reset(seed=4)["pov"], local.reset(seed=4)["pov"])
        for action in ({"forward": 1}, {"attack": 1}, {"camera": [0.0, 15.0]}):
            remote.step_async(action)
            assert remote.waiting
            expected, got = local.step(action), remote.step_wait()
            assert np.array_equal(got.obs["pov"], expected.obs["pov"])
            assert not remote.waiting
    finally:
        remote.close()
        remote.close()  # twice is fine


def test_a_world_reporting_info_error_in_a_process_is_a_world_crash(tmp_path):
    world = WorldProcess(
        "tests.fakes.crashing_worlds:SocketErrorWorld",
        {"marker_dir": str(tmp_path), "after": 1, **SMALL},
    )
    try:
        world.reset(seed=0)
        with pytest.raises(WorldCrashError):
            world.step({})
    finally:
        world.close()


def test_a_world_that_cannot_be_built_is_a_configuration_error_not_a_crash():
    world = WorldProcess("synthetic", {"size": 3})
    with pytest.raises(ConfigurationError, match="size must be"):
        world.reset(seed=0)
    assert world.pid is None  # the child has gone; a later reset starts a new one
    world.close()


def test_a_dead_world_process_is_a_crash_and_restarts_at_the_next_reset(tmp_path):
    world = WorldProcess(
        "tests.fakes.crashing_worlds:DyingWorld", {"marker_dir": str(tmp_path), "die_at": 1}
    )
    try:
        with pytest.raises(WorldCrashError, match=r"died \(EOFError\), exit code 3; it is killed"):
            world.reset(seed=0)
        assert world.pid is None
        world.reset(seed=0)  # a new child; the marker makes this one live
        assert world.pid is not None
    finally:
        world.close()


# ---------------------------------------------------------------- the worker primitive
def test_a_worker_answers_calls_by_method_name():
    worker = WorkerProcess(Echo, (), "echo")
    try:
        worker.wait_started(60)
        assert worker.started
        assert worker.call("echo", "a", suffix="b", timeout=60) == "ab"
        worker.send("pid")
        assert worker.waiting and worker.wait(60) == worker.pid
        with pytest.raises(WorkerStateError, match="no call"):
            worker.wait(1)
    finally:
        worker.close()


def test_the_first_wait_reads_the_start_handshake_and_counts_it():
    worker = WorkerProcess(Echo, (None, 0.5), "echo")
    try:
        worker.send("echo", 1)  # before the build has finished: the child reads it after
        assert worker.wait(60) == 1 and worker.started
    finally:
        worker.close()


def test_a_failed_build_comes_back_with_its_traceback():
    worker = WorkerProcess(broken, ("no reason",), "broken")
    with pytest.raises(ValueError, match="cannot build: no reason") as caught:
        worker.wait_started(60)
    assert "in broken" in worker_traceback(caught.value)  # not a package error: traced
    assert not worker.started and not worker.is_alive()


def test_exceptions_come_back_as_themselves_or_by_name():
    worker = WorkerProcess(Echo, (), "echo")
    try:
        with pytest.raises(ValueError, match="bad value") as caught:
            worker.call("fail", "value", timeout=60)
        assert "raise ValueError" in worker_traceback(caught.value)
        with pytest.raises(WorkerError, match="Unpicklable: first/second") as named:
            worker.call("fail", "unpicklable", timeout=60)
        assert named.value.type_name == "Unpicklable"
        assert worker.call("echo", "still here", timeout=60) == "still here"
    finally:
        worker.close()


def test_a_hung_call_abandons_the_worker_so_its_late_answer_is_never_read():
    worker = WorkerProcess(Echo, (), "echo")
    worker.wait_started(60)
    pid = worker.pid
    worker.send("sleep", 30, "late")
    start = time.monotonic()
    with pytest.raises(WorkerLostError, match=r"did not answer a sleep within 0\.5 s") as caught:
        worker.wait(0.5)
    assert caught.value.hung and caught.value.started and caught.value.pid == pid
    assert time.monotonic() - start < 0.5 + ABANDON_GRACE_S + 5
    assert not worker.is_alive() and worker.connection.closed  # nothing left to read


def test_a_dead_worker_is_lost_with_its_exit_code():
    worker = WorkerProcess(Echo, (), "echo")
    with pytest.raises(WorkerLostError) as caught:
        worker.call("fail", "exit", timeout=60)
    assert caught.value.exit_code == 7 and not caught.value.hung and caught.value.started
    copy = pickle.loads(pickle.dumps(caught.value))  # crosses processes as itself
    assert str(copy) == str(caught.value) and copy.exit_code == 7
    assert str(pickle.loads(pickle.dumps(WorkerError("Odd", "a: b")))) == "Odd: a: b"


def test_an_argument_that_cannot_be_pickled_sends_nothing():
    worker = WorkerProcess(Echo, (), "echo")
    try:
        with pytest.raises(Exception, match="pickle"):
            worker.send("echo", lambda: 0)
        assert not worker.waiting
        assert worker.call("echo", 2, timeout=60) == 2
    finally:
        worker.close()


def test_many_workers_are_abandoned_at_once(tmp_path):
    workers = [WorkerProcess(Echo, (str(tmp_path / str(i)),), f"echo {i}") for i in range(3)]
    for i, worker in enumerate(workers):
        (tmp_path / str(i)).mkdir()
        worker.wait_started(60)
        worker.send("sleep", 30)
    start = time.monotonic()
    abandon_all(workers)
    assert time.monotonic() - start < ABANDON_GRACE_S + 2  # one grace for all, not one each
    assert not any(worker.is_alive() for worker in workers)
    # SIGTERM first: each closed its object on the way out.
    assert all((tmp_path / str(i) / "closed").exists() for i in range(3))


def test_close_drains_an_answer_on_its_way_and_closes_the_object(tmp_path):
    worker = WorkerProcess(Echo, (str(tmp_path),), "echo")
    worker.send("sleep", 0.5, "x" * 1_000_000)  # a large answer the child blocks sending
    close_all([worker], timeout=60)
    assert worker.process.exitcode == 0  # it read the close message and exited by itself
    assert (tmp_path / "closed").read_text() == "yes"
    close_all([worker])  # twice is fine
