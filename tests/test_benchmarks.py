"""The benchmark scripts run (figures are for docs/benchmarks.md, not asserted here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def run(script, *args):
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_gpu_check_reproduces_the_upstream_error_and_passes_the_guard_on_cpu(tmp_path, golden):
    out = tmp_path / "gpu.json"
    printed = run("gpu_check.py", "--device", "cpu", "--quick", "--json", str(out))
    report = json.loads(out.read_text())
    assert report["upstream"]["embedding_dtype"] == "torch.float16"
    assert (
        "mat1 and mat2 must have the same dtype, but got Half and Float"
        in (report["upstream"]["error"])
    )
    assert report["guarded"]["goal_dtype"] == "float32"
    assert report["guarded"]["outputs_identical_under_autocast"] is True
    assert report["guarded"]["low_level_steps"] == 5
    assert set(report["throughput"]) == {"float32", "bfloat16", "float16", "bfloat16-mixed"}
    assert set(report["precision"]) == {"bfloat16", "float16", "bfloat16-mixed"}
    assert "2. guarded path under autocast: goal float32" in printed and "PASS" in printed


def test_suite_writes_every_figure(tmp_path, golden):
    out = tmp_path / "suite.json"
    printed = run(
        "suite.py", "--network", "tiny", "--sizes", "1,2", "--vector-envs", "2",
        "--repeats", "1", "--json", str(out),
    )  # fmt: skip
    results = json.loads(out.read_text())
    assert set(results["batching"]) == {"1", "2"}
    for row in results["batching"].values():
        assert row["batched_env_steps_per_s"] > 0 and row["sequential_env_steps_per_s"] > 0
    env = results["env"]
    assert env["env_step_us"] > 0 and env["direct_step_us"] > 0
    assert env["overhead_share_of_tiny_step"] == env["env_overhead_us"] / env["tiny_policy_step_us"]
    assert results["vector_env"]["vector_env_steps_per_s"] > 0
    assert results["prompt"]["cold_ms"] > results["prompt"]["cached_ms"] > 0
    assert results["memory_peak"]["max_rss_mb"] > 0
    assert "env overhead per low-level step" in printed


def test_evaluation_benchmark_measures_the_worlds_per_worker_axis(tmp_path):
    out = tmp_path / "evaluation.json"
    printed = run(
        "bench_evaluation.py", "--axis", "envs", "--trials", "1", "--envs-per-worker", "1,2",
        "--json", str(out),
    )  # fmt: skip
    rows = json.loads(out.read_text())["envs_per_worker"]
    assert set(rows) == {"1", "2"}
    for row in rows.values():
        assert row["trials"] == 2 and row["trials_per_s"] > 0 and row["peak_rss_mb"] > 0
        assert row["same_records_as_first"] is True
    assert rows["1"]["speedup_vs_first"] == 1.0 and "M=2" in printed


@pytest.mark.slow
def test_policy_benchmark_measures_the_fast_mode_against_both_float32s(tmp_path):
    out = tmp_path / "policy.json"
    printed = run("bench_policy.py", "--steps", "3", "--rounds", "1", "--batch", "2",
                  "--json", str(out))  # fmt: skip
    report = json.loads(out.read_text())
    assert set(report["steps_per_s"]) == {"float32", "float32, before issue 17", "bfloat16-mixed"}
    fast = report["fast_modes"]["bfloat16-mixed"]
    assert fast["vs_float32"] > 0 and fast["vs_float32_before"] > 0
    assert 0 < fast["mean_kl_buttons"] < 0.01 and 0 < fast["mean_kl_camera"] < 0.01
    assert "bfloat16-mixed" in printed and "vs float32" in printed


def test_the_previous_releases_float32_is_recreated_whole_and_restored(tiny_policy_files, golden):
    import importlib.util

    import numpy as np
    import torch

    from steve1_env.agent.native import NativeSteve1Policy
    from steve1_env.agent.network import Linear

    spec = importlib.util.spec_from_file_location(
        "bench_policy", ROOT / "benchmarks" / "bench_policy.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    policy = NativeSteve1Policy(
        weights=tiny_policy_files["weights"], model=tiny_policy_files["model"]
    )
    cnn = policy.network.net.img_process.cnn
    conv = cnn.stacks[0].firstconv.layer
    data = np.load(golden / "policy_rollout.npz")
    linear = Linear.forward

    def rollout():
        state, outputs = [policy.initial_state(0)], []
        for t in range(3):
            out, state = policy.forward([data["frames"][t]], [data["goal"][0]], state)
            outputs.append(out.buttons)
        return torch.cat(outputs), state[0]

    today, state = rollout()
    assert state.memory[0].tape is not None and cnn.channels_last
    with bench.float32_before_issue_17(policy):
        assert not cnn.channels_last and conv.weight.is_contiguous()
        before, state = rollout()
        assert state.memory[0].tape is None  # torch.cat, as the previous release
    torch.testing.assert_close(before, today, atol=1e-4, rtol=1e-4)
    assert Linear.forward is linear and cnn.channels_last
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(rollout()[0], today)
