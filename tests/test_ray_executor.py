"""The Ray executor, on a real local Ray (``ray.init(num_cpus=2)``)."""

from __future__ import annotations

import pytest

from steve1_env.evaluation.executors import RayExecutor
from steve1_env.evaluation.runner import evaluate
from steve1_env.tasks.spec import load_task_set

from .test_evaluation import OFFLINE, dying_settings, outcomes

ray = pytest.importorskip("ray", reason="the ray extra is not installed")
pytestmark = pytest.mark.slow


def test_ray_executor_starts_and_stops_its_own_ray(tmp_path):
    # Runs first, before the module's shared Ray is started.
    if ray.is_initialized():
        pytest.skip("needs a process without Ray running")
    executor = RayExecutor(OFFLINE, workers=1, num_cpus=1)
    try:
        specs = load_task_set("quick_harvest").trial_specs(1)[:1]
        (record,) = list(executor.run(specs))
        assert record.outcome == "success" and record.worker == "ray-0"
    finally:
        executor.close()
    assert not ray.is_initialized()


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield
    ray.shutdown()


def test_ray_gives_the_same_trials_as_local_and_retries_a_dead_actor(local_ray, tmp_path):
    tasks = load_task_set("quick_harvest")
    local = evaluate(tasks, tmp_path / "local", OFFLINE, trials=2, progress=False)

    dying = dying_settings(tmp_path / "markers", die_at=2)
    distributed = evaluate(tasks, tmp_path / "ray", dying, trials=2, executor="ray",
                           workers=2, progress=False)  # fmt: skip
    assert outcomes(distributed.records) == outcomes(local.records)
    assert {r.worker for r in distributed.records} <= {"ray-0", "ray-1"}
    died = [r for r in distributed.records if r.crashes]
    assert len(died) == 1 and "Ray actor died" in died[0].errors[0]
    assert died[0].outcome == "success"
    # Results streamed into the same kind of file, readable by the same reports.
    assert distributed.summary["totals"]["trials"] == 6
    assert ray.is_initialized()  # a Ray the caller started is left running


def test_more_actors_than_the_cluster_holds_is_refused(local_ray):
    from steve1_env.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="can hold 2 actor"):
        RayExecutor(OFFLINE, workers=3)
    with pytest.raises(ConfigurationError, match="can hold 0 actor"):
        RayExecutor(OFFLINE, workers=1, gpus_per_actor=1)
