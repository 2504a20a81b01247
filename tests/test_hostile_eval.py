"""Hostile input and hostile file systems for the evaluation (issue 12).

Full disks and read-only folders are simulated (we run as root, so chmod does not stop
writes): by monkeypatching the system call that writes a given file to raise the error the
kernel would, or by putting a regular file where a folder should be.
"""

from __future__ import annotations

import builtins
import dataclasses
import errno
import json
import os
import warnings
from pathlib import Path

import pytest

from steve1_env import files
from steve1_env.cli import main
from steve1_env.errors import (
    ConfigurationError,
    EvaluationError,
    ResultsError,
    Steve1EnvWarning,
    TaskSpecError,
)
from steve1_env.evaluation import results
from steve1_env.evaluation.records import TrialRecord, TrialSpec
from steve1_env.evaluation.report import summarize
from steve1_env.evaluation.results import ResultsStore, read_config, read_records
from steve1_env.evaluation.runner import evaluate, report
from steve1_env.evaluation.trial import Episode, RunSettings, TrialRunner, trial_record
from steve1_env.evaluation.video import FrameCaption, VideoWriter
from steve1_env.registry import WORLDS

OFFLINE = RunSettings(
    world="synthetic",
    policy="scripted",
    prompt_encoder="hash",
    world_kwargs={"pov_shape": (48, 64)},
)
OFFLINE_ARGS = ["--policy", "scripted", "--world-option", "pov_shape=[48, 64]"]
ONE_TASK = "name: one\ntasks:\n  - {name: dirt, instruction: get dirt, max_steps: 300}\n"


def task_file(tmp_path: Path, text: str = ONE_TASK) -> Path:
    path = tmp_path / "tasks.yaml"
    path.write_text(text)
    return path


def record(trial: int = 0, duration_s: float = 1.0, errors: list[str] | None = None):
    return TrialRecord(
        task="dirt", instruction="get dirt", instruction_index=0, trial=trial, seed=trial,
        outcome="success", reason="success", steps=10, steps_to_success=10, max_steps=300,
        detector="dirt", detector_spec="dirt", crashes=len(errors or []), errors=errors or [],
        high_level_steps=1, inventory={"dirt": 1}, duration_s=duration_s, worker="local",
        finished_at="2026-01-01T00:00:00+00:00",
    )  # fmt: skip


def fd_path(fd: int) -> str:
    return os.readlink(f"/proc/self/fd/{fd}")


def no_traceback(err: str) -> None:
    assert "Traceback" not in err and err.startswith("steve1-env: error: ")


# ----------------------------------------------------------------- case 6: nested JSON


def made_run(tmp_path: Path) -> Path:
    out = tmp_path / "run"
    evaluate(task_file(tmp_path), out, OFFLINE, trials=2, progress=False)
    return out


DEEP = "[" * 100_000 + "]" * 100_000


def test_deeply_nested_results_line_is_a_results_error_naming_the_line(tmp_path, capsys):
    out = made_run(tmp_path)
    with open(out / "results.jsonl", "a") as handle:
        handle.write(DEEP + "\n")
    with pytest.raises(ResultsError, match=r"results\.jsonl line 3 nests .* deeper than 64"):
        read_records(out / "results.jsonl")
    assert main(["report", str(out)]) == 2
    no_traceback(capsys.readouterr().err)
    with pytest.raises(ResultsError, match="line 3 nests"):
        evaluate(task_file(tmp_path), out, OFFLINE, trials=3, resume=True, progress=False)


def test_nesting_below_the_interpreter_limit_is_bounded_too():
    nested: object = 1
    for _ in range(200):
        nested = {"a": nested}
    with pytest.raises(ResultsError, match="deeper than 64"):
        files.parse_json(json.dumps(nested), "x", "fix it", error=ResultsError)
    assert files.parse_json(json.dumps({"a": [[1, {"b": 2}]]}), "x", "") == {"a": [[1, {"b": 2}]]}


def test_deeply_nested_run_json_is_a_results_error(tmp_path, capsys):
    out = made_run(tmp_path)
    (out / "run.json").write_text('{"kwargs": ' + DEEP + "}")
    with pytest.raises(ResultsError, match=r"run\.json nests"):
        read_config(out)
    assert main(["report", str(out)]) == 2
    no_traceback(capsys.readouterr().err)


@pytest.mark.parametrize("task_set", [5, {"tasks": "dirt"}, {"tasks": [["dirt"]]}])
def test_run_json_of_the_wrong_shape_is_a_results_error(tmp_path, capsys, task_set):
    out = made_run(tmp_path)
    config = json.loads((out / "run.json").read_text())
    (out / "run.json").write_text(json.dumps({**config, "task_set": task_set}))
    if isinstance(task_set, dict):
        with pytest.raises(ResultsError, match=r"run\.json: task_set\.tasks must be a list"):
            report(out)
    code, err = main(["report", str(out)]), capsys.readouterr().err
    if task_set == 5:  # no task list to order by: tasks come in the order of the records
        assert (code, err) == (0, "")
    else:
        assert code == 2
        no_traceback(err)


def test_overlong_results_line_is_refused_without_reading_it_whole(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_bytes(b'{"task": "' + b"x" * (results.MAX_RESULTS_LINE_BYTES + 10) + b'"}\n{}\n')
    with pytest.raises(ResultsError, match="line 1 is longer than"):
        read_records(path)


def test_oversized_run_json_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(results, "MAX_CONFIG_BYTES", 100)
    (tmp_path / "run.json").write_text(json.dumps({"pad": "x" * 200}))
    with pytest.raises(ResultsError, match="larger than the 100 bytes accepted"):
        read_config(tmp_path)


def test_incomplete_last_line_is_still_dropped_and_repaired(tmp_path):
    path = tmp_path / "results.jsonl"
    line = json.dumps(record().to_json())
    path.write_text(line + "\n" + line[:50])
    with pytest.warns(UserWarning, match="incomplete"):
        assert len(read_records(path, repair=True)) == 1
    assert path.read_text() == line + "\n"


def test_many_repeated_lines_give_one_warning(tmp_path):
    path = tmp_path / "results.jsonl"
    crash = {**record().to_json(), "outcome": "crash", "reason": "crash", "steps_to_success": None}
    lines = [json.dumps(record(i).to_json()) for i in range(3000)]
    path.write_text("\n".join([*lines, *lines, json.dumps(crash)]) + "\n")
    with pytest.warns(Steve1EnvWarning) as caught:
        assert len(read_records(path)) == 3000
    assert len(caught) == 1 and "3001 repeated line(s) in all" in str(caught[0].message)
    assert "line 3001: trial dirt/0/0 is recorded twice" in str(caught[0].message)


def test_long_crash_messages_are_clipped_so_records_stay_readable(tmp_path):
    from steve1_env.evaluation.records import TrialSpec
    from steve1_env.evaluation.trial import MAX_ERROR_CHARS, Episode

    spec = TrialSpec("dirt", "get dirt", 0, 0, 0, 300)
    episode = Episode("crash", 0, 0, None, "dirt", {}, "boom")
    made = trial_record(spec, episode, ["x" * (results.MAX_RESULTS_LINE_BYTES * 2)], 1.0, "local")
    assert len(made.errors[0]) < MAX_ERROR_CHARS + 100
    with ResultsStore(tmp_path, {}, resume=False) as store:
        store.append(made)
    assert read_records(tmp_path / "results.jsonl")[0].errors == made.errors


# ------------------------------------------------- case 15: world options, run.json history

TWO_TASKS = """name: two
tasks:
  - {name: dirt, instruction: get dirt, max_steps: 300}
  - name: wood
    instruction: chop a tree
    max_steps: 300
    world_options: {tree_densty: 0.05}
"""


def test_a_misspelt_world_option_of_a_later_task_fails_before_anything_is_written(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(TaskSpecError, match=r"Task 'wood' of .*tasks\.yaml.*tree_densty") as got:
        evaluate(task_file(tmp_path, TWO_TASKS), out, OFFLINE, trials=1, progress=False)
    assert "It accepts: size, pov_shape, fov, tree_density, max_steps" in str(got.value)
    assert not out.exists()  # no run.json, no results: the first task did not run either


def test_a_misspelt_run_world_argument_fails_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["eval", "--task-set", str(task_file(tmp_path)), "--out", str(out), "--quiet",
            "--policy", "scripted", "--world-option", "tree_densty=0.1"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    no_traceback(err)
    assert "tree_densty" in err and "--world-option" in err
    assert not out.exists()


def open_world(**options):
    """A third-party world that passes any option on (like MineRL's and MineStudio's)."""
    from steve1_env.worlds.synthetic import SyntheticWorld

    return SyntheticWorld(pov_shape=options.get("pov_shape", (48, 64)))


def flavoured_world(flavour: str, pov_shape=(48, 64)):
    """A third-party world with a required argument, which the tasks give."""
    from steve1_env.worlds.synthetic import SyntheticWorld

    return SyntheticWorld(pov_shape=pov_shape)


def test_a_required_world_argument_may_come_from_the_tasks(tmp_path):
    WORLDS.register("hostile-test-flavoured-world", flavoured_world, overwrite=True)
    text = ONE_TASK.replace("max_steps: 300", "max_steps: 300, world_options: {flavour: mint}")
    settings = RunSettings(
        world="hostile-test-flavoured-world", policy="random", prompt_encoder="hash"
    )
    result = evaluate(task_file(tmp_path, text), tmp_path / "a", settings, trials=1, progress=False)
    assert result.ran == 1
    with pytest.raises(TaskSpecError, match="missing a required argument: 'flavour'"):
        evaluate(task_file(tmp_path), tmp_path / "b", settings, trials=1, progress=False)
    assert not (tmp_path / "b").exists()


def test_worlds_taking_any_option_and_import_paths_are_not_refused(tmp_path):
    WORLDS.register("hostile-test-open-world", open_world, overwrite=True)
    text = ONE_TASK.replace("max_steps: 300", "max_steps: 300, world_options: {anything: 1}")
    settings = RunSettings(world="hostile-test-open-world", policy="random", prompt_encoder="hash")
    result = evaluate(task_file(tmp_path, text), tmp_path / "a", settings, trials=1, progress=False)
    assert result.ran == 1
    # An import path is checked through the factory it names (a real signature here).
    named = RunSettings(
        world="steve1_env.worlds.synthetic:SyntheticWorld", policy="random",
        prompt_encoder="hash", world_kwargs={"pov_shape": (48, 64), "treees": 1},
    )  # fmt: skip
    with pytest.raises(ConfigurationError, match="treees"):
        evaluate(task_file(tmp_path), tmp_path / "b", named, trials=1, progress=False)
    assert not (tmp_path / "b").exists()


def test_run_json_keeps_one_entry_per_invocation(tmp_path):
    tasks, out = task_file(tmp_path), tmp_path / "run"
    evaluate(tasks, out, OFFLINE, trials=2, progress=False)
    evaluate(tasks, out, OFFLINE, trials=5, resume=True, progress=False)
    config = json.loads((out / "run.json").read_text())
    history = config["invocations"]
    assert [h["trials"] for h in history] == [2, 5]
    assert [h["ran"] for h in history] == [2, 3]
    assert [h["recorded_after"] for h in history] == [2, 5]
    assert [h["status"] for h in history] == ["finished", "finished"]
    assert [h["resume"] for h in history] == [False, True]
    assert all(h["started_at"] <= h["finished_at"] for h in history)
    assert config["created_at"] == history[0]["started_at"]
    assert "trials" not in config  # no single top-level value that each call overwrites
    # Reports count the calls (the entries stay in run.json, so reports do not grow with
    # every resume), and --resume's consistency checks still hold.
    report_config = json.loads((out / "report.json").read_text())["config"]
    assert report_config["invocation_count"] == 2 and "invocations" not in report_config
    assert "invocation\\_count**: `2`" in (out / "report.md").read_text()
    with pytest.raises(ResultsError, match="max_steps: recorded None, now 100"):
        evaluate(tasks, out, OFFLINE, trials=5, max_steps=100, resume=True, progress=False)
    assert len(json.loads((out / "run.json").read_text())["invocations"]) == 2


def test_a_run_json_without_history_still_resumes_and_gains_one(tmp_path):
    tasks, out = task_file(tmp_path), tmp_path / "run"
    evaluate(tasks, out, OFFLINE, trials=1, progress=False)
    old = json.loads((out / "run.json").read_text())
    del old["invocations"]
    old.update(trials=1, executor="local", updated_at="2026-01-01T00:00:00+00:00")
    (out / "run.json").write_text(json.dumps(old))
    evaluate(tasks, out, OFFLINE, trials=2, resume=True, progress=False)
    history = json.loads((out / "run.json").read_text())["invocations"]
    assert [h["trials"] for h in history] == [1, 2]
    assert history[0]["started_at"] == "2026-01-01T00:00:00+00:00"


def test_history_is_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(results, "MAX_INVOCATIONS", 2)
    tasks, out = task_file(tmp_path), tmp_path / "run"
    for trials in (1, 2, 3):
        evaluate(tasks, out, OFFLINE, trials=trials, resume=trials > 1, progress=False)
    config = json.loads((out / "run.json").read_text())
    assert [h["trials"] for h in config["invocations"]] == [2, 3]
    assert config["invocations_dropped"] == 1
    assert json.loads((out / "report.json").read_text())["config"]["invocation_count"] == 3


# ------------------------------------------------------------------------- full disks


def fail_os_write_to(monkeypatch, suffix: str, partial: int = 0, after: int = 0):
    """Makes `os.write` to a file ending in `suffix` fail with ENOSPC after `after` writes."""
    real = os.write
    calls = {"n": 0}

    def write(fd: int, data: bytes) -> int:
        if fd_path(fd).endswith(suffix):
            calls["n"] += 1
            if calls["n"] > after:
                if partial:
                    real(fd, data[:partial])
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd, data)

    monkeypatch.setattr(os, "write", write)


def test_full_disk_on_the_results_file_leaves_it_clean_and_says_how_to_resume(
    tmp_path, monkeypatch
):
    tasks, out = task_file(tmp_path), tmp_path / "run"
    fail_os_write_to(monkeypatch, "results.jsonl", partial=245, after=2)
    with pytest.raises(ResultsError) as got:
        evaluate(tasks, out, OFFLINE, trials=4, progress=False)
    message = str(got.value)
    assert "No space left on device" in message and "full" in message
    assert "2 trial(s) recorded before it are safe" in message and "resume=True" in message
    monkeypatch.undo()
    # The 245 bytes of the cut line were taken off again: the file is clean.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(read_records(out / "results.jsonl")) == 2
    history = json.loads((out / "run.json").read_text())["invocations"]
    assert history[-1]["status"] == "failed" and history[-1]["ran"] == 2
    result = evaluate(tasks, out, OFFLINE, trials=4, resume=True, progress=False)
    assert result.ran == 2 and len(result.records) == 4


def test_full_disk_in_eval_exits_with_a_message(tmp_path, monkeypatch, capsys):
    fail_os_write_to(monkeypatch, "results.jsonl")
    argv = ["eval", "--task-set", str(task_file(tmp_path)), "--out", str(tmp_path / "run"),
            "--trials", "2", "--quiet", *OFFLINE_ARGS]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    no_traceback(err)
    assert "No space left on device" in err and "--resume" in err


def test_fsync_failing_is_handled_like_a_failed_write(tmp_path, monkeypatch):
    real = os.fsync

    def fsync(fd: int) -> None:
        if fd_path(fd).endswith("results.jsonl"):
            raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with ResultsStore(tmp_path, {}, resume=False) as store, pytest.raises(ResultsError) as got:
        store.append(record())
    assert "quota" in str(got.value)
    assert (tmp_path / "results.jsonl").read_bytes() == b""


class _FailingFile:
    """A file whose writes fail as on a full disk (the real file is made, then left empty)."""

    def __init__(self, handle) -> None:
        self.handle = handle

    def write(self, text) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self.handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.handle.close()


def fail_opened_writes(monkeypatch, marker: str) -> None:
    """Makes files whose name contains `marker`, opened for writing with `open`, fail."""
    real = builtins.open

    def fake_open(file, mode="r", *args, **kwargs):
        handle = real(file, mode, *args, **kwargs)
        if marker in os.fspath(file) and any(m in mode for m in "wxa"):
            return _FailingFile(handle)
        return handle

    monkeypatch.setattr(builtins, "open", fake_open)


def test_reports_on_a_full_disk_keep_the_earlier_reports_and_say_what_to_do(
    tmp_path, monkeypatch, capsys
):
    out = made_run(tmp_path)
    before = {name: (out / name).read_text() for name in ("report.md", "report.html")}
    fail_opened_writes(monkeypatch, "report.md")
    with pytest.raises(ResultsError) as got:
        report(out)
    message = str(got.value)
    assert "No space left on device" in message and f"steve1-env report {out}" in message
    assert main(["report", str(out)]) == 2
    no_traceback(capsys.readouterr().err)
    monkeypatch.undo()
    assert {name: (out / name).read_text() for name in before} == before
    json.loads((out / "report.json").read_text())  # rewritten whole, still valid
    assert not list(out.glob(".*.tmp"))  # no temporary file left behind


def test_run_json_on_a_full_disk_keeps_the_old_one(tmp_path, monkeypatch):
    out = made_run(tmp_path)
    before = (out / "run.json").read_text()
    fail_opened_writes(monkeypatch, "run.json")
    with pytest.raises(ResultsError, match=r"run settings file .*No space left"):
        evaluate(task_file(tmp_path), out, OFFLINE, trials=3, resume=True, progress=False)
    monkeypatch.undo()
    assert (out / "run.json").read_text() == before
    assert not list(out.glob(".*.tmp"))


def test_report_timing_is_rounded():
    records = [record(i, duration_s=d) for i, d in enumerate((0.1, 0.2, 0.6733))]
    timing = summarize(records)["timing"]
    assert repr(timing["total_duration_s"]) == "0.9733"
    assert repr(timing["mean_duration_s"]) == "0.3244"


# ------------------------------------------------------------- bad or read-only paths


def test_eval_out_naming_a_file_is_a_clear_error(tmp_path, capsys):
    target = tmp_path / "notes.txt"
    target.write_text("keep me")
    argv = ["eval", "--task-set", str(task_file(tmp_path)), "--out", str(target), "--quiet",
            *OFFLINE_ARGS]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    no_traceback(err)
    assert f"run directory {target} is a file, not a folder" in err
    assert target.read_text() == "keep me"
    # Below a file: the same class of error, from the operating system's answer.
    assert main([*argv[:4], str(target / "run"), *argv[5:]]) == 2
    assert "a part of the path is a file" in capsys.readouterr().err


def test_read_only_lock_file_is_a_clear_error(tmp_path, monkeypatch):
    real = os.open

    def fake_open(file, flags, *args, **kwargs):
        if os.fspath(file).endswith(".lock"):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(file))
        return real(file, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", fake_open)
    with pytest.raises(ResultsError, match=r"lock file .*Read-only file system.*writable"):
        evaluate(task_file(tmp_path), tmp_path / "run", OFFLINE, trials=1, progress=False)


def test_run_video_below_a_file_fails_before_the_episode(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    argv = ["run", "chop a tree", "--k", "10", "--video", str(blocker / "v.mp4"), *OFFLINE_ARGS]
    assert main(argv) == 2
    captured = capsys.readouterr()
    no_traceback(captured.err)
    assert "video folder" in captured.err and "is a file, not a folder" in captured.err
    assert "step" not in captured.out  # the episode never started
    assert main([*argv[:5], str(blocker / "sub" / "v.mp4"), *argv[6:]]) == 2
    assert "a part of the path is a file" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("code", "words"), [(errno.EROFS, "Read-only file system"), (errno.EACCES, "Permission")]
)
def test_run_video_into_a_read_only_folder_fails_before_the_episode(
    tmp_path, monkeypatch, capsys, code, words
):
    real = os.open

    def fake_open(path, flags, *args, **kwargs):
        if Path(path).parent == tmp_path / "videos" and flags & os.O_CREAT:
            raise OSError(code, os.strerror(code), os.fspath(path))
        return real(path, flags, *args, **kwargs)

    (tmp_path / "videos").mkdir()
    monkeypatch.setattr(os, "open", fake_open)
    argv = ["run", "chop a tree", "--k", "10", "--video", str(tmp_path / "videos" / "v.mp4"),
            *OFFLINE_ARGS]  # fmt: skip
    assert main(argv) == 2
    captured = capsys.readouterr()
    no_traceback(captured.err)
    assert words in captured.err and "choose a writable location" in captured.err
    assert "step" not in captured.out


def test_eval_video_into_a_bad_folder_fails_before_any_trial(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "videos").write_text("in the way")
    settings = dataclasses.replace(OFFLINE, video_dir=str(out / "videos"))
    with pytest.raises(ResultsError, match=r"video folder .* is a file"):
        evaluate(task_file(tmp_path), out, settings, trials=2, progress=False)
    assert read_records(out / "results.jsonl") == []
    history = json.loads((out / "run.json").read_text())["invocations"]
    assert history[-1]["status"] == "failed" and history[-1]["ran"] == 0


def test_video_on_a_full_disk_is_an_error_and_leaves_no_file(tmp_path, monkeypatch):
    import numpy as np

    from steve1_env.evaluation import video

    real_open = open

    def full_disk_open(*args, **kwargs):
        # The encoder writes through this file: the third write finds the disk full.
        return _FailingAfter(real_open(*args, **kwargs), writes=2)

    monkeypatch.setattr(video, "open", full_disk_open, raising=False)
    writer = VideoWriter(tmp_path / "v.mp4")
    rng = np.random.default_rng(0)
    with pytest.raises(ConfigurationError, match="No space left on device") as got:
        for _ in range(200):  # noise: the encoder has to write long before the end
            writer.write(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8))
        writer.close()
    assert "free some space" in str(got.value)
    assert not list(tmp_path.iterdir())


class _FailingAfter:
    """A binary file whose writes fail as on a full disk after the first `writes`."""

    def __init__(self, handle, writes: int) -> None:
        self.handle, self.writes = handle, writes

    def write(self, data) -> int:
        if self.writes <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.writes -= 1
        return self.handle.write(data)

    def __getattr__(self, name):
        return getattr(self.handle, name)


def test_checks_name_no_problem_on_a_healthy_folder(tmp_path):
    folder = files.make_folder(tmp_path / "a" / "b", "the folder", check_writable=True)
    assert folder.is_dir() and not list(folder.iterdir())
    files.atomic_write_text(folder / "x.txt", "hi\n", "the file")
    assert (folder / "x.txt").read_text() == "hi\n"


def test_a_results_file_that_is_a_folder_is_a_results_error(tmp_path, capsys):
    out = made_run(tmp_path)
    (out / "results.jsonl").unlink()
    (out / "results.jsonl").mkdir()
    with pytest.raises(ResultsError, match="is a directory, not a regular file"):
        read_records(out / "results.jsonl")
    assert main(["report", str(out)]) == 2
    no_traceback(capsys.readouterr().err)


def test_misspelt_policy_and_encoder_arguments_fail_before_anything_is_written(tmp_path):
    for settings, words in (
        (dataclasses.replace(OFFLINE, policy_kwargs={"nope": 1}), "policy 'scripted'"),
        (dataclasses.replace(OFFLINE, prompt_encoder_kwargs={"dimm": 8}), "encoder 'hash'"),
    ):
        with pytest.raises(ConfigurationError, match=words) as got:
            evaluate(task_file(tmp_path), tmp_path / "run", settings, trials=1, progress=False)
        assert "nothing was run" in str(got.value)
        assert not (tmp_path / "run").exists()


def test_failed_and_interrupted_calls_are_recorded_as_such(tmp_path, monkeypatch):
    tasks, out = task_file(tmp_path), tmp_path / "run"
    bad_value = dataclasses.replace(OFFLINE, world_kwargs={"tree_density": 0.9})  # at build
    with pytest.raises(EvaluationError, match="tree_density"):
        evaluate(tasks, out, bad_value, trials=1, progress=False)
    history = json.loads((out / "run.json").read_text())["invocations"]
    assert [(h["status"], h["ran"]) for h in history] == [("failed", 0)]
    real = TrialRunner.advance
    calls = []

    def run_then_interrupt(self, new=(), *args, **kwargs):
        calls.extend(spec.key for spec, _ in new)
        if len(calls) > 1:
            raise KeyboardInterrupt
        return real(self, new, *args, **kwargs)

    monkeypatch.setattr(TrialRunner, "advance", run_then_interrupt)
    # No results were recorded, so another run may start there afresh (without history).
    result = evaluate(tasks, out, OFFLINE, trials=3, progress=False)
    assert result.interrupted
    history = json.loads((out / "run.json").read_text())["invocations"]
    assert [(h["status"], h["ran"]) for h in history] == [("interrupted", 1)]


# ------------------------------------------------------ deep arguments never reach run.json
@pytest.mark.parametrize("depth", [70, 20_000])
def test_deep_world_options_are_refused_before_anything_is_written(tmp_path, capsys, depth):
    deep = "[" * depth + "]" * depth
    argv = ["eval", "--task-set", str(task_file(tmp_path)), "--quiet", *OFFLINE_ARGS]
    assert main([*argv, "--out", str(tmp_path / "cli"), "--world-option", f"a={deep}"]) == 2
    assert "deeper than 64 levels" in capsys.readouterr().err
    nested: object = []
    for _ in range(depth if depth < 1000 else 1000):
        nested = [nested]
    settings = dataclasses.replace(OFFLINE, world_kwargs={**OFFLINE.world_kwargs, "size": nested})
    with pytest.raises(ConfigurationError, match=r"run\.json may hold"):
        evaluate(task_file(tmp_path), tmp_path / "py", settings, trials=1, progress=False)
    assert not (tmp_path / "cli").exists() and not (tmp_path / "py").exists()


def test_a_bracketed_world_option_that_is_not_json_is_an_error(tmp_path, capsys):
    argv = ["eval", "--task-set", str(task_file(tmp_path)), "--quiet", *OFFLINE_ARGS]
    assert main([*argv, "--out", str(tmp_path / "r"), "--world-option", "pov_shape=[48, 64"]) == 2
    assert "--world-option pov_shape is not valid JSON" in capsys.readouterr().err


def test_a_run_that_recorded_nothing_resumes_with_corrected_settings(tmp_path):
    # A bad world option *value* is found by the world at the first trial, after run.json was
    # written; with nothing recorded, the corrected command may resume there.
    tasks, out = task_file(tmp_path), tmp_path / "run"
    bad = dataclasses.replace(OFFLINE, world_kwargs={**OFFLINE.world_kwargs, "size": 10**6})
    with pytest.raises(EvaluationError, match="start a new run directory"):
        evaluate(tasks, out, bad, trials=1, progress=False)
    assert read_records(out / "results.jsonl") == []
    done = evaluate(tasks, out, OFFLINE, trials=1, resume=True, progress=False)
    assert [r.outcome for r in done.records] == ["success"]
    # Once trials are recorded, other settings are refused as before.
    with pytest.raises(ResultsError, match="used other settings"):
        evaluate(tasks, out, bad, trials=2, resume=True, progress=False)


def test_the_cli_prints_package_warnings_as_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    evaluate(task_file(tmp_path), out, OFFLINE, trials=1, progress=False)
    with open(out / "results.jsonl", "ab") as handle:
        handle.write(b'{"task": "dirt", "instru')  # cut short by a hard kill
    assert main(["report", str(out)]) == 0
    err = capsys.readouterr().err
    assert "steve1-env: warning: " in err and "the last line is incomplete" in err
    assert "Steve1EnvWarning" not in err and ".py:" not in err  # no source-line format


# ------------------------------------------------------------ FIFOs never hang a run directory
@pytest.mark.parametrize("name", ["run.json", "results.jsonl", ".lock"])
def test_a_fifo_in_the_run_directory_is_refused_at_once(tmp_path, name):
    out = tmp_path / "run"
    evaluate(task_file(tmp_path), out, OFFLINE, trials=1, progress=False)
    (out / name).unlink()
    os.mkfifo(out / name)  # a plain open() would wait forever for a writer or a reader
    with pytest.raises(ResultsError, match=r"FIFO, socket or device|Cannot write"):
        if name == "run.json":
            read_config(out)
        elif name == "results.jsonl":
            read_records(out / name)
        else:
            evaluate(task_file(tmp_path), out, OFFLINE, trials=2, resume=True, progress=False)


# ------------------------------------------------- every field of a results record is checked
@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("steps_to_success", -5, r"steps_to_success must be an integer from 0 to steps \(10\)"),
        ("steps_to_success", 11, r"steps_to_success must be an integer from 0 to steps"),
        ("steps_to_success", True, r"steps_to_success must be .* got bool True"),
        ("detector", [1], r"detector must be a string or null, got list \[1\]"),
        ("detector_spec", {"a": 1}, r"detector_spec must be a string or null, got dict"),
        ("duration_s", True, r"duration_s must be a finite number of seconds >= 0, got bool"),
        ("duration_s", -1.0, r"duration_s must be a finite number of seconds >= 0"),
        ("high_level_steps", -1, r"high_level_steps must be an integer >= 0, got int -1"),
        ("inventory", {"dirt": -3}, r"inventory must be an object mapping item names to"),
        ("reason", "budget", r"outcome must be 'failure' for the reason 'budget'"),
        ("video", 3, r"video must be a string or null, got int 3"),
    ],
)
def test_a_forged_results_field_is_a_results_error_naming_the_line(tmp_path, field, value, match):
    out = made_run(tmp_path)
    forged = {**record(trial=5).to_json(), field: value}
    with open(out / "results.jsonl", "a") as handle:
        handle.write(json.dumps(forged) + "\n")
    with pytest.raises(ResultsError, match=rf"results\.jsonl line 3: {match}"):
        read_records(out / "results.jsonl")


def test_records_the_package_writes_read_back_for_every_outcome(tmp_path):
    spec_fields = {"task": "dirt", "instruction": "get dirt", "instruction_index": 0, "seed": 3}
    spec = TrialSpec(trial=0, max_steps=300, **spec_fields)
    for reason, detector in (("success", "dirt"), ("budget", None), ("crash", None)):
        episode = Episode(reason, 12, 2, detector, "dirt", {"dirt": 1}, None)
        written = trial_record(spec, episode, ["boom"], 0.0, "local")
        assert TrialRecord.from_json(json.loads(json.dumps(written.to_json()))) == written


def test_records_accept_exactly_the_reasons_the_env_gives():
    from steve1_env import env
    from steve1_env.evaluation import records

    assert records.REASONS == env.REASONS


# ------------------------------------------ schema 2: baselines, fixed horizons and metrics
def horizon_record(**changes):
    fields = {
        **record(trial=0).to_json(), "reason": "budget", "steps": 300, "steps_to_success": 40,
        "horizon": 300, "metrics": {"log": 2.0, "travel_distance": 12.5},
    }  # fmt: skip
    return {**fields, **changes}


def test_a_fixed_horizon_record_reads_back_with_its_first_success_and_metrics():
    read = TrialRecord.from_json(horizon_record())
    assert read.outcome == "success" and read.reason == "budget" and read.steps_to_success == 40
    assert read.metrics == {"log": 2.0, "travel_distance": 12.5}
    sampled = TrialRecord.from_json(horizon_record(prompt_latent="sampled", prompt_seed=4))
    assert (sampled.prompt_latent, sampled.prompt_seed) == ("sampled", 4)
    baseline = TrialRecord.from_json(horizon_record(condition="unconditional"))
    assert baseline.key == "dirt/0/0/unconditional" and read.key == "dirt/0/0"


def test_a_schema_1_record_reads_as_a_prompt_trial_without_horizon_or_metrics():
    later = ("condition", "horizon", "prompt_latent", "prompt_seed")
    old = {k: v for k, v in record().to_json().items() if k not in later}
    old.pop("metrics")
    old["schema"] = 1
    read = TrialRecord.from_json(old)
    assert (read.condition, read.horizon, read.metrics) == ("prompt", None, {})
    with pytest.raises(ResultsError, match="a schema-1 record cannot hold metrics"):
        TrialRecord.from_json({**old, "metrics": {}})
    with pytest.raises(ResultsError, match="reads schemas 1, 2"):
        TrialRecord.from_json({**old, "schema": 3})


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"horizon": 200}, r"horizon must be null or the step budget max_steps \(300\)"),
        ({"reason": "success"}, r"reason must be budget, world_done or crash with a horizon"),
        ({"steps": 120}, r"steps must be the horizon \(300\) when the reason is budget"),
        ({"reason": "crash"}, r"outcome must be crash exactly when the reason is crash"),
        ({"condition": "zero"}, r"condition must be one of prompt, unconditional"),
        ({"metrics": {"log": float("nan")}}, r"metrics must be an object mapping metric names"),
        ({"metrics": {"log": True}}, r"metrics must be an object mapping metric names"),
        ({"outcome": "failure"}, r"steps_to_success must be null unless a success"),
        ({"prompt_latent": "random"}, r"prompt_latent must be one of zeros, sampled"),
        ({"prompt_seed": 3}, r"prompt_seed must be an integer >= 0 with a sampled prompt"),
        ({"prompt_latent": "sampled"}, r"prompt_seed must be an integer >= 0 with a sampled"),
        (
            {"prompt_latent": "sampled", "prompt_seed": -1},
            r"prompt_seed must be an integer >= 0 with a sampled",
        ),
        # Metrics are episode maxima from 0, and a crashed trial measured nothing.
        ({"metrics": {"log": -2.0}}, r"metrics must be an object mapping .* >= 0"),
        (
            {"outcome": "crash", "reason": "crash", "steps_to_success": None, "steps": 7},
            r"metrics must be .*\(empty for a crash\)",
        ),
    ],
)
def test_a_forged_horizon_record_is_refused(changes, match):
    with pytest.raises(ResultsError, match=match):
        TrialRecord.from_json(horizon_record(**changes))


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"metrics": {"travel_distance": float("nan")}}, "metrics must be"),
        ({"metrics": {"travel_distance": float("inf")}}, "metrics must be"),
        ({"duration_s": float("nan")}, "duration_s must be"),
        ({"prompt_latent": "Sampled"}, "prompt_latent must be one of zeros, sampled"),
    ],
)
def test_the_store_never_writes_a_line_it_would_refuse_to_read(tmp_path, changes, match):
    # json.dumps wrote NaN/Infinity and any field as given; from_json then refused the line
    # as a forgery, which made the whole file unreadable (no report, no resume).
    with ResultsStore(tmp_path, {}, resume=False) as store:
        store.append(record(trial=0))
        bad = dataclasses.replace(record(trial=1), **changes)
        with pytest.raises(ResultsError, match=rf"trial dirt/0/1: {match}.*not recorded"):
            store.append(bad)
        store.append(record(trial=2))
    assert [r.trial for r in read_records(tmp_path / "results.jsonl")] == [0, 2]


def test_ctrl_c_while_a_video_is_finished_leaves_no_file(tmp_path, monkeypatch):
    # Finishing flushes the encoder and writes the thumbnail (seconds for a long trial): a
    # Ctrl-C then must not leave the half-finished video, whose writer the trial has dropped.
    import numpy as np

    writer = VideoWriter(tmp_path / "v.mp4", thumbnail=True)
    for _ in range(5):
        writer.write(np.zeros((16, 16, 3), dtype=np.uint8))

    def interrupted() -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(writer, "_write_thumbnail", interrupted)
    with pytest.raises(KeyboardInterrupt):
        writer.close()
    assert not list(tmp_path.iterdir())


def test_a_video_that_cannot_be_moved_in_place_leaves_no_thumbnail(tmp_path, monkeypatch):
    import numpy as np

    from steve1_env.evaluation import video

    writer = VideoWriter(tmp_path / "v.mp4", thumbnail=True)
    for _ in range(5):
        writer.write(np.zeros((16, 16, 3), dtype=np.uint8))

    def refused(source, target):
        if str(target).endswith(".mp4"):
            raise OSError(errno.EACCES, os.strerror(errno.EACCES))
        return os.rename(source, target)

    monkeypatch.setattr(video.os, "replace", refused)
    with pytest.raises(ConfigurationError, match="Permission denied"):
        writer.close()
    assert not list(tmp_path.iterdir())


def test_a_frame_the_encoder_refuses_says_its_size_and_the_fix(tmp_path):
    import numpy as np

    # A frame 20,000 pixels wide is beyond libx264.
    writer = VideoWriter(tmp_path / "v.mp4")
    with pytest.raises(ConfigurationError) as got:
        writer.write(np.zeros((2, 20_000, 3), dtype=np.uint8))
    message = str(got.value)
    assert "20000x2 pixels, which the H.264 encoder refused: record smaller frames" in message
    assert not list(tmp_path.iterdir())


def test_the_overlay_enlarges_a_flat_wide_frame_only_as_far_as_it_stays_encodable(tmp_path):
    import av
    import numpy as np

    from steve1_env.evaluation.video import OVERLAY_MAX_WIDTH, overlay_factor

    # 2 x 160 would need x128 (20,480 pixels wide); it is enlarged x25 instead (4000 x 50).
    assert overlay_factor(160, 2) == OVERLAY_MAX_WIDTH // 160 == 25
    assert overlay_factor(64, 64) == 4 and overlay_factor(9000, 1) == 1
    writer = VideoWriter(tmp_path / "v.mp4", overlay=True)
    for tick in range(3):
        writer.write(np.zeros((2, 160, 3), dtype=np.uint8), FrameCaption("x", tick))
    writer.close()
    with av.open(str(tmp_path / "v.mp4")) as video:
        context = video.streams.video[0].codec_context
        assert (context.width, context.height) == (4000, 50)
