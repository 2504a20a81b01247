from __future__ import annotations

import dataclasses
import io
import json
import re
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from steve1_env.errors import (
    ClosedError,
    ConfigurationError,
    DependencyNotInstalledError,
    EvaluationError,
    ResultsError,
    Steve1EnvWarning,
)
from steve1_env.evaluation.executors import LocalExecutor, ProcessExecutor, make_executor
from steve1_env.evaluation.records import TrialRecord
from steve1_env.evaluation.results import ResultsStore, read_records
from steve1_env.evaluation.runner import evaluate, report
from steve1_env.evaluation.trial import RunSettings, TrialRunner
from steve1_env.tasks.spec import load_task_set, parse_task_set

ROOT = Path(__file__).resolve().parents[1]
OFFLINE = RunSettings(
    world="synthetic",
    policy="scripted",
    prompt_encoder="hash",
    world_kwargs={"pov_shape": (48, 64)},
)
CRASHING = "tests.fakes.crashing_worlds"


def outcomes(records):
    """The part of a record that depends on the trial only (not timing or worker)."""
    return sorted(
        (r.key, r.seed, r.outcome, r.reason, r.steps, r.steps_to_success, r.detector,
         tuple(sorted(r.inventory.items())))
        for r in records
    )  # fmt: skip


def per_task(summary):
    return [{k: v for k, v in task.items()} for task in summary["tasks"]]


def test_end_to_end_report_matches_results_file(tmp_path):
    result = evaluate("quick_harvest", tmp_path / "run", OFFLINE, trials=3, progress=False)
    assert not result.interrupted and result.ran == result.planned == 9
    lines = (tmp_path / "run" / "results.jsonl").read_text().splitlines()
    assert len(lines) == 9
    stored = [json.loads(line) for line in lines]
    saved = json.loads((tmp_path / "run" / "report.json").read_text())
    for task in saved["tasks"]:
        rows = [r for r in stored if r["task"] == task["task"]]
        judged = [r for r in rows if r["outcome"] != "crash"]
        successes = sum(r["outcome"] == "success" for r in rows)
        assert task["trials"] == len(rows) == 3
        assert task["successes"] == successes
        assert task["success_rate"] == pytest.approx(successes / len(judged))
        assert task["steps_to_success"]["values"] == sorted(
            r["steps_to_success"] for r in rows if r["outcome"] == "success"
        )
    assert saved["totals"]["success_rate"] == 1.0  # the scripted oracle
    assert (tmp_path / "run" / "report.md").read_text().count("100.0%") >= 3
    assert "<svg" in (tmp_path / "run" / "report.html").read_text()
    config = json.loads((tmp_path / "run" / "run.json").read_text())
    assert config["policy"] == "scripted" and config["task_set"]["name"] == "quick_harvest"
    # Regenerating the reports from the file gives the same numbers.
    summary, _ = report(tmp_path / "run")
    assert summary["tasks"] == saved["tasks"]


def test_runs_are_reproducible_and_seeded(tmp_path):
    one = evaluate("quick_harvest", tmp_path / "a", OFFLINE, trials=2, progress=False)
    two = evaluate("quick_harvest", tmp_path / "b", OFFLINE, trials=2, progress=False)
    assert outcomes(one.records) == outcomes(two.records)
    assert {r.seed for r in one.records} == {0, 1}


def _cli(*args, **kwargs):
    return subprocess.Popen(
        [sys.executable, "-m", "steve1_env.cli", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


SLOW_EVAL = (
    "eval", "--task-set", "early_game", "--trials", "3", "--policy", "scripted",
    "--prompt-encoder", "hash", "--world", f"{CRASHING}:SlowWorld",
    "--world-option", "step_delay=0.002", "--world-option", "pov_shape=[48, 64]", "--quiet",
)  # fmt: skip


def _wait_for_lines(path: Path, count: int, process, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_bytes().count(b"\n") >= count:
            return
        if process.poll() is not None:
            raise AssertionError(f"the run ended early: {process.communicate()}")
        time.sleep(0.01)
    raise AssertionError("the run recorded too few trials in time")


@pytest.mark.slow
@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGINT])
def test_killed_run_resumes_to_the_same_report(tmp_path, how):
    out = tmp_path / "killed"
    process = _cli(*SLOW_EVAL, "--out", str(out))
    _wait_for_lines(out / "results.jsonl", 4, process)
    process.send_signal(how)
    _, stderr = process.communicate(timeout=120)
    before = read_records(out / "results.jsonl")
    assert 4 <= len(before) < 33, "the run was not stopped part-way"
    if how == signal.SIGINT:
        assert process.returncode == 130
        assert "--resume" in stderr
        assert (out / "report.json").exists()  # the partial report
    # Without --resume the directory is refused rather than overwritten.
    refused = _cli(*SLOW_EVAL, "--out", str(out))
    _, stderr = refused.communicate(timeout=120)
    assert refused.returncode == 2 and "--resume" in stderr

    resumed = _cli(*SLOW_EVAL, "--out", str(out), "--resume")
    _, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stderr
    after = read_records(out / "results.jsonl")
    # Raw lines, not read_records (which drops repeats): a duplicate would show here.
    raw_keys = [
        "{task}/{instruction_index}/{trial}".format(**json.loads(line))
        for line in (out / "results.jsonl").read_text().splitlines()
    ]
    assert len(raw_keys) == len(set(raw_keys)) == 33, "a trial was lost or duplicated"
    assert outcomes(after[: len(before)]) == outcomes(before)  # earlier trials kept as recorded

    whole = _cli(*SLOW_EVAL, "--out", str(tmp_path / "whole"))
    assert whole.wait(timeout=300) == 0
    uninterrupted = json.loads((tmp_path / "whole" / "report.json").read_text())
    final = json.loads((out / "report.json").read_text())
    assert final["tasks"] == uninterrupted["tasks"]
    assert final["totals"] == uninterrupted["totals"]


def dying_settings(markers: Path, die_at: int) -> RunSettings:
    """Offline settings whose world kills its process at the `die_at`-th reset of the run."""
    markers.mkdir()
    return RunSettings(**{
        **OFFLINE.to_json(),
        "world": f"{CRASHING}:DyingWorld",
        "world_kwargs": {"marker_dir": str(markers), "die_at": die_at, "pov_shape": (48, 64)},
    })  # fmt: skip


def _record(**overrides):
    fields = dict(
        task="t", instruction="get dirt", instruction_index=0, trial=0, seed=0,
        outcome="success", reason="success", steps=3, steps_to_success=3, max_steps=10,
        detector="dirt", detector_spec="dirt", crashes=0, errors=[], high_level_steps=1,
        inventory={"dirt": 1}, duration_s=0.1, worker="local", finished_at="2026-01-01T00:00:00",
    )  # fmt: skip
    fields.update(overrides)
    return TrialRecord(**fields)


CONFIG = {"task_set_sha256": "abc", "world": "synthetic", "policy": "scripted"}


def test_store_appends_durable_lines_and_refuses_to_overwrite(tmp_path):
    with ResultsStore(tmp_path, CONFIG, resume=False) as store:
        store.append(_record())
        with pytest.raises(ResultsError, match="already recorded"):
            store.append(_record())
        # A second run cannot write to the same directory at the same time.
        with pytest.raises(ResultsError, match="Another run"):
            ResultsStore(tmp_path, CONFIG, resume=True)
    assert read_records(tmp_path / "results.jsonl") == [_record()]
    with pytest.raises(ResultsError, match="already holds results"):
        ResultsStore(tmp_path, CONFIG, resume=False)
    with pytest.raises(ResultsError, match="policy: recorded 'scripted', now 'random'"):
        ResultsStore(tmp_path, {**CONFIG, "policy": "random"}, resume=True)
    with ResultsStore(tmp_path, CONFIG, resume=True) as store:
        assert store.keys == {"t/0/0"}
    with pytest.raises(ClosedError, match=r"store is closed.*resume=True"):
        store.append(_record(trial=1))


def test_a_run_directory_is_locked_without_posix_locks(tmp_path):
    # Where the platform has no fcntl (Windows), the lock still refuses a second run.
    code = (
        "import sys, warnings; sys.modules['fcntl'] = None; warnings.simplefilter('ignore')\n"
        "from steve1_env.evaluation.results import ResultsStore\n"
        "from steve1_env.errors import ResultsError\n"
        "with ResultsStore(sys.argv[1], {}, resume=False):\n"
        "    try:\n"
        "        ResultsStore(sys.argv[1], {}, resume=True)\n"
        "    except ResultsError as exc:\n"
        "        print(exc)\n"
        "with ResultsStore(sys.argv[1], {}, resume=True):\n"
        "    print('reopened')\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                         text=True, check=True)  # fmt: skip
    assert out.stdout.splitlines() == [
        f"Another run is writing to {tmp_path}; wait for it to finish or choose another output "
        "directory.",
        "reopened",
    ]


def test_store_drops_a_line_cut_short_by_a_kill(tmp_path):
    with ResultsStore(tmp_path, CONFIG, resume=False) as store:
        store.append(_record())
    path = tmp_path / "results.jsonl"
    whole = json.dumps(_record(trial=1).to_json())
    with open(path, "a") as handle:
        handle.write(whole[:40])  # killed mid-write
    with pytest.warns(Steve1EnvWarning, match="incomplete"):
        assert len(read_records(path)) == 1
    with pytest.warns(Steve1EnvWarning), ResultsStore(tmp_path, CONFIG, resume=True) as store:
        store.append(_record(trial=1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [r.trial for r in read_records(path)] == [0, 1]


def test_store_reports_corrupt_lines_and_duplicates(tmp_path):
    path = tmp_path / "results.jsonl"
    line = json.dumps(_record().to_json())
    path.write_text(line + "\n" + line + "\n")
    with pytest.warns(Steve1EnvWarning, match="line 2: trial t/0/0 is recorded twice"):
        assert len(read_records(path)) == 1
    path.write_text(line + "\n{oops\n")
    with pytest.raises(ResultsError, match="line 2 is not valid JSON"):
        read_records(path)
    broken = dict(_record().to_json(), outcome="maybe")
    path.write_text(json.dumps(broken) + "\n")
    with pytest.raises(ResultsError, match="line 1: outcome must be one of"):
        read_records(path)
    path.write_text(json.dumps({"task": "t"}) + "\n")
    with pytest.raises(ResultsError, match="missing: crashes, detector"):
        read_records(path)


def _world_seed(trial_seed: int) -> int:
    """The world seed the env draws for a trial seed (the first draw of its RNG)."""
    import numpy as np

    return int(np.random.default_rng(trial_seed).integers(2**31 - 1))


def _socket_settings(marker_dir, times):
    return RunSettings(
        world=f"{CRASHING}:SocketErrorWorld",
        policy="scripted",
        prompt_encoder="hash",
        world_kwargs={
            "marker_dir": str(marker_dir),
            "after": 3,
            "times": times,
            "pov_shape": (48, 64),
        },
        crash_retries=2,
    )


def test_world_crashes_are_retried_and_counted_apart_from_failures(tmp_path):
    tasks = parse_task_set("tasks:\n  - {name: logs, instruction: chop a tree, max_steps: 400}\n")
    spec = tasks.trial_specs(1)[0]
    runner = TrialRunner(_socket_settings(tmp_path / "once", 1))
    (tmp_path / "once").mkdir()
    try:
        record = runner.run(spec)
    finally:
        runner.close()
    assert record.outcome == "success" and record.crashes == 1
    assert record.errors == ["SocketException"]

    (tmp_path / "always").mkdir()
    runner = TrialRunner(_socket_settings(tmp_path / "always", 3))
    try:
        record = runner.run(spec)
    finally:
        runner.close()
    assert record.outcome == "crash" and record.crashes == 3 and record.steps_to_success is None

    (tmp_path / "run-markers").mkdir()
    settings = _socket_settings(tmp_path / "run-markers", 3)
    result = evaluate(tasks, tmp_path / "run", settings, trials=1, progress=False)
    row = result.summary["tasks"][0]
    assert (row["crashes"], row["judged"], row["success_rate"]) == (1, 0, None)
    # Resuming skips the crashed trial; --retry-crashed runs it again (the world is fine now).
    again = evaluate(tasks, tmp_path / "run", settings, trials=1, resume=True, progress=False)
    assert again.ran == 0
    retried = evaluate(tasks, tmp_path / "run", settings, trials=1, resume=True,
                       retry_crashed=True, progress=False)  # fmt: skip
    assert retried.ran == 1 and [r.outcome for r in retried.records] == ["success"]
    assert retried.summary["tasks"][0]["success_rate"] == 1.0
    assert len((tmp_path / "run" / "results.jsonl").read_text().splitlines()) == 2
    with pytest.raises(ConfigurationError, match="retry_crashed=True needs resume=True"):
        evaluate(tasks, tmp_path / "x", settings, retry_crashed=True, progress=False)


def test_videos_hold_every_low_level_frame(tmp_path):
    import cv2

    settings = RunSettings(**{**OFFLINE.to_json(), "video_dir": str(tmp_path / "videos")})
    result = evaluate("quick_harvest", tmp_path, settings, trials=1, tasks=["dirt"],
                      progress=False)  # fmt: skip
    (record,) = result.records
    assert record.video == "videos/dirt/0-0.mp4"
    capture = cv2.VideoCapture(str(tmp_path / record.video))
    frames = 0
    while capture.read()[0]:
        frames += 1
    assert frames == record.steps + 1  # the first frame and one after every step
    assert not list(tmp_path.glob("videos/**/*.partial.mp4"))


@pytest.mark.slow
def test_process_workers_match_local_and_survive_a_dying_worker(tmp_path):
    tasks = load_task_set("quick_harvest")
    local = evaluate(tasks, tmp_path / "local", OFFLINE, trials=2, progress=False)
    dying = dying_settings(tmp_path / "markers", die_at=3)
    parallel = evaluate(tasks, tmp_path / "procs", dying, trials=2, executor="processes",
                        workers=2, progress=False)  # fmt: skip
    assert outcomes(parallel.records) == outcomes(local.records)
    died = [r for r in parallel.records if r.crashes]
    assert len(died) == 1 and "died with exit code 3" in died[0].errors[0]
    assert died[0].outcome == "success"  # retried on a fresh worker
    assert {r.worker for r in parallel.records} <= {"process-0", "process-1"}


@pytest.mark.slow
def test_a_trial_whose_worker_always_dies_is_recorded_as_a_crash(tmp_path):
    tasks = parse_task_set("tasks:\n  - {name: logs, instruction: chop a tree, max_steps: 300}\n")
    settings = RunSettings(**{
        **OFFLINE.to_json(),
        "world": f"{CRASHING}:AlwaysDyingWorld",
        "world_kwargs": {"die_on_world_seed": _world_seed(0), "pov_shape": (48, 64)},
        "crash_retries": 1,
    })  # fmt: skip
    executor = ProcessExecutor(settings, workers=2)
    try:
        records = list(executor.run(tasks.trial_specs(2)))
    finally:
        executor.close()
    by_seed = {r.seed: r for r in records}
    assert by_seed[0].outcome == "crash" and by_seed[0].crashes == 2
    assert by_seed[1].outcome == "success"


def test_configuration_errors_stop_the_run_instead_of_counting_as_crashes(tmp_path):
    tasks = load_task_set("quick_harvest")
    bad = RunSettings(policy="scripted", prompt_encoder="hash", world_kwargs={"size": 3})
    with pytest.raises(EvaluationError) as caught:
        evaluate(tasks, tmp_path / "a", bad, trials=1, progress=False)
    message = str(caught.value)
    assert "Trial logs/0/0 (task 'logs', instruction 'chop a tree') failed" in message
    assert "size must be between 16 and 512 blocks" in message
    assert "got 3. This is not a world crash" in message
    assert read_records(tmp_path / "a" / "results.jsonl") == []


@pytest.mark.slow
def test_process_worker_errors_stop_the_run(tmp_path):
    bad = RunSettings(policy="scripted", prompt_encoder="hash", world_kwargs={"size": 3})
    expected = r"failed in worker process-\d: ConfigurationError: size must"
    with pytest.raises(EvaluationError, match=expected):
        evaluate("quick_harvest", tmp_path, bad, trials=1, executor="processes",
                 progress=False)  # fmt: skip


def test_executor_choice_is_checked(tmp_path):
    with pytest.raises(ConfigurationError, match="choose one of local, processes, ray"):
        make_executor("threads", OFFLINE)
    with pytest.raises(ConfigurationError, match="one trial at a time"):
        make_executor("local", OFFLINE, workers=4)
    with pytest.raises(ConfigurationError, match="address=, gpus_per_actor= apply to"):
        make_executor("processes", OFFLINE, address="auto", gpus_per_actor=1)
    assert isinstance(make_executor("local", OFFLINE), LocalExecutor)
    # Checked before the run directory is touched.
    with pytest.raises(ConfigurationError, match="address= apply to executor='ray' only"):
        evaluate("quick_harvest", tmp_path / "never", OFFLINE, address="auto", progress=False)
    assert not (tmp_path / "never").exists()


@pytest.mark.slow
def test_a_script_without_a_main_guard_gets_told(tmp_path):
    # Spawned workers import the caller's script; unguarded, each would start its own run.
    script = tmp_path / "unguarded.py"
    script.write_text(
        "from steve1_env.evaluation.runner import evaluate\n"
        "from steve1_env.evaluation.trial import RunSettings\n"
        f"evaluate('quick_harvest', {str(tmp_path / 'out')!r}, RunSettings(policy='scripted', "
        "prompt_encoder='hash'), trials=1, executor='processes', progress=False)\n"
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)  # fmt: skip
    assert done.returncode != 0
    assert "if __name__ == '__main__':" in done.stderr
    assert read_records(tmp_path / "out" / "results.jsonl") == []  # no bogus crash records


def test_settings_are_checked():
    with pytest.raises(Exception, match="crash_retries must be an integer >= 0"):
        RunSettings(crash_retries=-1)
    with pytest.raises(Exception, match="world_kwargs must map"):
        RunSettings(world_kwargs=[1])
    with pytest.raises(Exception, match="k must be a positive integer"):
        RunSettings(k=0)


def test_progress_reports_trials_tasks_steps_and_success(tmp_path):
    import io

    stream = io.StringIO()
    evaluate("quick_harvest", tmp_path, OFFLINE, trials=1, progress=True, stream=stream)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3
    assert lines[-1].startswith("trials 3/3 | tasks 3/3 | success 3/3 (100%)")
    assert "steps " in lines[-1] and "<- seeds/0/0: success" in lines[-1]


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_on_a_terminal_progress_is_a_bar_redrawn_in_place_and_quiet_is_silent(tmp_path):
    stream = _Terminal()
    evaluate("quick_harvest", tmp_path / "a", OFFLINE, trials=1, progress=True, stream=stream)
    text = stream.getvalue()
    assert text.endswith("\n") and text.count("\n") == 1  # one line, redrawn with \r
    states = text.rstrip("\n").split("\r")
    assert all(state.startswith("trials ") for state in states if state)
    # The trial in progress, with its steps (drawn at most 10 times a second).
    assert any(re.search(r" \| logs#0 \d+/\d+ steps \| ", state) for state in states)
    last = states[-1]
    assert last.startswith("trials 3/3 |") and "| tasks 3/3 | success 3/3 (100%) | steps " in last
    # Every drawn state agrees with its own count (no bar drawn before its status).
    for state in states:
        if state.startswith("trials 3/3"):
            assert "tasks 3/3" in state
    quiet = _Terminal()
    evaluate("quick_harvest", tmp_path / "b", OFFLINE, trials=1, progress=False, stream=quiet)
    assert quiet.getvalue() == ""


def test_importing_the_runner_loads_neither_ray_nor_the_env():
    # Importing the evaluation package loads neither Ray nor the env module.
    code = (
        "import sys, steve1_env.evaluation.runner; "
        "print('ray' in sys.modules, 'steve1_env.env' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_report_records_the_weight_checksums_of_the_steve1_stack(tmp_path, tiny_policy_files):
    from steve1_env.weights import file_digests

    settings = RunSettings(
        policy="steve1",
        prompt_encoder="hash",
        policy_kwargs={
            "weights": str(tiny_policy_files["weights"]),
            "model": str(tiny_policy_files["model"]),
        },
        world_kwargs={"pov_shape": (48, 64)},
    )
    result = evaluate("quick_harvest", tmp_path, settings, trials=1, tasks=["dirt"],
                      max_steps=20, progress=False)  # fmt: skip
    weights = result.summary["config"]["weights"]
    assert weights == {
        "policy_tiny.model": file_digests(tiny_policy_files["model"]),
        "policy_tiny.weights": file_digests(tiny_policy_files["weights"]),
    }
    assert result.records[0].steps <= 20
    assert "policy_tiny.weights" in (tmp_path / "report.html").read_text()
    from steve1_env.evaluation.runner import weight_checksums

    random = RunSettings(
        policy="steve1", prompt_encoder="steve1", policy_kwargs={"weights": "random"}
    )
    official = ("2x.model", "steve1.weights", "steve1_prior.pt", "attn.pth")
    assert weight_checksums(random) == {
        "random": "untrained networks (weights='random')",
        **dict.fromkeys(official, "missing"),  # the encoder looks in the default directory
    }


# --------------------------------------------------------------------------------------------
# H.264 videos, overlays and thumbnails


def decoded(path: Path) -> tuple[str, str, list[np.ndarray]]:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
        return stream.codec_context.name, stream.codec_context.pix_fmt, frames


def test_videos_are_h264_yuv420p_with_every_frame(tmp_path):
    from steve1_env.evaluation.video import VideoWriter

    writer = VideoWriter(tmp_path / "v.mp4")
    for value in range(30):
        writer.write(np.full((48, 64, 3), value * 8, np.uint8))
    assert writer.close() == tmp_path / "v.mp4"
    codec, pixels, frames = decoded(tmp_path / "v.mp4")
    assert (codec, pixels, len(frames)) == ("h264", "yuv420p", 30)
    assert frames[0].shape == (48, 64, 3)
    assert abs(float(frames[-1].mean()) - 29 * 8) < 3  # lossy, but the picture is kept
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.mp4"]


def _top_level_boxes(data: bytes) -> list[str]:
    boxes, at = [], 0
    while at + 8 <= len(data):
        size = int.from_bytes(data[at : at + 4], "big")
        boxes.append(data[at + 4 : at + 8].decode("latin-1"))
        if size < 8:
            break
        at += size
    return boxes


def test_videos_are_what_a_browser_plays_as_it_downloads(tmp_path):
    # What Chromium's <video> needs, checked in the file (no browser runs here): an H.264
    # stream whose avcC names a Constrained Baseline profile ("avc1.42E0xx", the codecs string
    # canPlayType answers "probably" for), and the index (moov) before the frames (mdat).
    from steve1_env.evaluation.video import VideoWriter

    writer = VideoWriter(tmp_path / "v.mp4")
    for value in range(10):
        writer.write(np.full((48, 64, 3), value * 20, np.uint8))
    writer.close()
    data = (tmp_path / "v.mp4").read_bytes()
    boxes = _top_level_boxes(data)
    assert boxes[0] == "ftyp" and boxes.index("moov") < boxes.index("mdat")
    avcc = data.index(b"avcC") + 4
    version, profile, compatibility = data[avcc], data[avcc + 1], data[avcc + 2]
    assert (version, profile) == (1, 0x42)  # baseline
    assert compatibility & 0x40  # constraint_set1: Constrained Baseline


def test_odd_sized_frames_are_padded_to_even_sides(tmp_path):
    from steve1_env.evaluation.video import VideoWriter

    writer = VideoWriter(tmp_path / "odd.mp4")
    frame = np.zeros((15, 21, 3), np.uint8)
    frame[:, -1] = 200  # the last column is repeated into the padding
    writer.write(frame)
    writer.close()
    _, _, (got,) = decoded(tmp_path / "odd.mp4")
    assert got.shape == (16, 22, 3)
    assert got[:, -1].mean() > 150 and got[:, 0].mean() < 50


def test_a_frame_of_another_size_is_refused(tmp_path):
    from steve1_env.evaluation.video import VideoWriter

    writer = VideoWriter(tmp_path / "v.mp4")
    writer.write(np.zeros((16, 16, 3), np.uint8))
    with pytest.raises(ConfigurationError, match="16x16"):
        writer.write(np.zeros((16, 18, 3), np.uint8))
    writer.discard()
    assert not list(tmp_path.iterdir())


def test_an_eval_video_gets_a_thumbnail_and_plays_its_trial(tmp_path):
    settings = RunSettings(**{**OFFLINE.to_json(), "video_dir": str(tmp_path / "videos")})
    result = evaluate("quick_harvest", tmp_path, settings, trials=1, tasks=["dirt"],
                      progress=False)  # fmt: skip
    (record,) = result.records
    codec, pixels, frames = decoded(tmp_path / record.video)
    assert (codec, pixels, len(frames)) == ("h264", "yuv420p", record.steps + 1)
    thumbnail = (tmp_path / record.video).with_suffix(".webp").read_bytes()
    assert thumbnail[:4] == b"RIFF" and thumbnail[8:12] == b"WEBP"
    assert 1 <= thumbnail.count(b"ANMF") <= 8  # an animation of a few frames
    page = (tmp_path / "report.html").read_text()
    poster = 'poster="videos/dirt/0-0.webp"'  # the thumbnail shows before the video plays
    assert f'preload="metadata" width="320" {poster} src="{record.video}"' in page
    assert 'src="videos/dirt/0-0.webp"' in page
    assert "Scripted oracle evaluation report" in page
    report(tmp_path)  # what `steve1-env report` does: the same page from the results
    assert (tmp_path / "report.html").read_text() == page


def test_the_overlay_draws_what_the_trial_did(tmp_path, monkeypatch):
    from steve1_env.evaluation import video

    drawn: list[list[str]] = []
    real = video.draw_caption

    def spy(frame, lines):
        drawn.append(list(lines))
        return real(frame, lines)

    monkeypatch.setattr(video, "draw_caption", spy)
    plain = RunSettings(**{**OFFLINE.to_json(), "video_dir": str(tmp_path / "plain")})
    shown = dataclasses.replace(plain, video_dir=str(tmp_path / "shown"), overlay=True)
    (record,) = evaluate("quick_harvest", tmp_path / "a", plain, trials=1, tasks=["dirt"],
                         progress=False).records  # fmt: skip
    assert not drawn
    (same,) = evaluate("quick_harvest", tmp_path / "b", shown, trials=1, tasks=["dirt"],
                       progress=False).records  # fmt: skip
    assert same.outcome == record.outcome == "success"
    assert len(drawn) == record.steps + 1
    assert drawn[0][:2] == [record.instruction, "tick 0"]
    assert drawn[-1][1] == f"tick {record.steps}"
    assert drawn[-1][2] == "trial: success (success)"
    assert "inv dirt +1" in drawn[-1]
    _, _, plain_frames = decoded(tmp_path / "plain" / "dirt" / "0-0.mp4")
    _, _, shown_frames = decoded(tmp_path / "shown" / "dirt" / "0-0.mp4")
    small, big = plain_frames[-1], shown_frames[-1]
    factor = big.shape[0] // small.shape[0]
    assert factor >= 4 and big.shape[0] >= video.OVERLAY_MIN_HEIGHT
    enlarged = np.repeat(np.repeat(small, factor, 0), factor, 1).astype(int)
    difference = np.abs(enlarged - big.astype(int)).mean(axis=2)
    band = 4 + 5 * 15  # the text's rows, top left
    assert difference[:band].mean() > 20  # the caption is there
    assert difference[band + 10 :].mean() < 8  # the rest is the picture, enlarged


def test_caption_lines_leave_out_what_is_not_known():
    from steve1_env.evaluation.video import FrameCaption, inventory_changes

    assert FrameCaption("chop a tree", 3).lines() == ["chop a tree", "tick 3"]
    full = FrameCaption("chop a tree", 9, "step: budget", {"log": 2, "dirt": -1}, 0.25)
    assert full.lines() == [
        "chop a tree", "tick 9", "step: budget", "inv dirt -1, log +2", "MineCLIP 0.250"
    ]  # fmt: skip
    assert inventory_changes({"log": 1, "dirt": 2}, {"log": 3, "dirt": 2}) == {"log": 2}


def test_a_long_caption_line_is_cut_with_a_few_measures(monkeypatch):
    # A long instruction or a big inventory change is drawn on every frame: measuring the
    # line once per character cut made a 5,000-character line take seconds per frame.
    import cv2

    from steve1_env.evaluation import video

    font, scale, thickness = cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1
    real, calls = cv2.getTextSize, []

    def counted(*args):
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(cv2, "getTextSize", counted)
    text = "dirt +1, " * 600
    cut = video._fit(text, 248, font, scale, thickness)
    assert len(calls) < 40
    kept = cut.removesuffix("...")
    assert cut.endswith("...") and text.startswith(kept)
    # The longest prefix that fits: one more character would not.
    assert real(cut, font, scale, thickness)[0][0] <= 248
    assert real(text[: len(kept) + 1] + "...", font, scale, thickness)[0][0] > 248
    assert video._fit("short", 248, font, scale, thickness) == "short"
    assert video._fit("wide", 1, font, scale, thickness) == "..."


def test_videos_without_pyav_fail_before_anything_is_written(tmp_path, monkeypatch):
    from steve1_env.cli import main

    monkeypatch.setitem(sys.modules, "av", None)  # what a missing package looks like
    settings = RunSettings(**{**OFFLINE.to_json(), "video_dir": str(tmp_path / "run" / "v")})
    with pytest.raises(DependencyNotInstalledError, match=r"steve1-env\[video\]"):
        evaluate("quick_harvest", tmp_path / "run", settings, trials=1, progress=False)
    assert not (tmp_path / "run").exists()
    argv = ["run", "get dirt", "--policy", "scripted", "--video", str(tmp_path / "a.mp4")]
    assert main(argv) == 2
    assert not list(tmp_path.iterdir())


def test_run_overlay_captions_the_episode(tmp_path, monkeypatch, capsys):
    from steve1_env.cli import main
    from steve1_env.evaluation import video

    drawn: list[list[str]] = []
    real = video.draw_caption
    monkeypatch.setattr(
        video, "draw_caption", lambda f, lines: drawn.append(lines) or real(f, lines)
    )
    path = tmp_path / "run.mp4"
    argv = ["run", "get dirt", "--policy", "scripted", "--world-option", "pov_shape=[48, 64]",
            "--video", str(path), "--overlay"]  # fmt: skip
    assert main(argv) == 0
    codec, _, frames = decoded(path)
    assert codec == "h264" and len(frames) == len(drawn) >= 2
    assert frames[0].shape[0] >= video.OVERLAY_MIN_HEIGHT
    assert drawn[0][:2] == ["get dirt", "tick 0"]
    assert drawn[-1][1] == f"tick {len(drawn) - 1}"
    assert drawn[-1][2] == "result: success (dirt)" and "inv dirt +1" in drawn[-1]
    assert main(["run", "get dirt", "--policy", "scripted", "--overlay"]) == 2
    assert "--video" in capsys.readouterr().err
