"""The run directory: ``run.json`` (settings), ``results.jsonl`` (one line per finished trial).

Each record is written, flushed and fsynced as soon as its trial finishes, so a crash, a
Ctrl-C or a killed machine loses at most the trial in progress. A line cut short by a hard
kill is dropped when the run is resumed. One run writes to a directory at a time (a lock
file says so).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import filelock

from steve1_env.errors import ClosedError, ResultsError, warn_caller
from steve1_env.evaluation.records import TrialRecord
from steve1_env.files import (
    atomic_write_text,
    file_lock,
    make_folder,
    open_regular_file,
    parse_json,
    read_regular_file,
    write_error,
)

RESULTS_FILE = "results.jsonl"
CONFIG_FILE = "run.json"
LOCK_FILE = ".lock"

RESUME_KEYS = (
    "task_set_sha256",
    "world",
    "policy",
    "prompt_encoder",
    "kwargs",
    "max_steps",
    "horizon",
    "weights",
)
"""`run.json` fields that must match for a run to resume (results must stay comparable)."""

MAX_RESULTS_LINE_BYTES = 1 << 20
"""Longest line of ``results.jsonl`` read back (1 MiB); a record takes about 1 KB."""

MAX_CONFIG_BYTES = 16 << 20
"""Largest ``run.json`` read back (16 MiB)."""

HISTORY_KEY = "invocations"
"""`run.json` field listing every call that wrote to the directory, oldest first."""

MAX_INVOCATIONS = 1000
"""Entries `HISTORY_KEY` keeps; older ones are dropped (and counted) so the file stays small."""

_EDITED = "The file was edited or corrupted; fix or delete that line, then resume."


def report_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """Returns the part of ``run.json`` a report shows: the settings, not the call history.

    The history (`HISTORY_KEY`) grows with every ``--resume``; a report names how many calls
    wrote the run (``invocation_count``) and leaves the entries to ``run.json``.

    Args:
        config: A run directory's ``run.json``, as `read_config` returns it.
    """
    shown = {k: v for k, v in config.items() if k not in (HISTORY_KEY, "invocations_dropped")}
    history = config.get(HISTORY_KEY)
    if isinstance(history, list):
        dropped = config.get("invocations_dropped")
        extra = dropped if isinstance(dropped, int) and not isinstance(dropped, bool) else 0
        shown["invocation_count"] = len(history) + extra
    return shown


def read_records(path: str | os.PathLike[str], *, repair: bool = False) -> list[TrialRecord]:
    """Reads every trial record of a results file, in file order, without duplicates.

    A trial recorded as crashed and recorded again later (rerun with ``--retry-crashed``) is
    represented by its later record; any other repeat keeps the first, with a warning. The file
    is read line by line: a line longer than `MAX_RESULTS_LINE_BYTES` or nesting deeper than
    `steve1_env.files.MAX_JSON_DEPTH` is refused without being held in memory or parsed recursively.

    Args:
        path: The ``results.jsonl`` file.
        repair: Cut off a last line left incomplete by a killed run (otherwise it is ignored).

    Raises:
        ResultsError: If a complete line is not a valid record (naming the line).
    """
    path = Path(path)
    if not path.exists():
        return []
    try:
        descriptor = open_regular_file(path, "results file", error=ResultsError)
    except OSError as exc:
        raise ResultsError(f"Cannot read {path} ({exc}); it must be a readable file.") from exc
    handle = os.fdopen(descriptor, "rb")
    records: list[TrialRecord] = []
    position: dict[str, int] = {}  # key -> index in records
    repeats: list[str] = []
    with handle:
        size = os.fstat(handle.fileno()).st_size
        number = offset = 0
        while raw := handle.readline(MAX_RESULTS_LINE_BYTES + 1):
            number += 1
            where = f"{path} line {number}"
            if not raw.endswith(b"\n"):
                if handle.tell() < size:  # cut at the limit, not at the end of the file
                    raise ResultsError(
                        f"{where} is longer than {MAX_RESULTS_LINE_BYTES} bytes, which no "
                        f"trial record is. {_EDITED}"
                    )
                _incomplete_tail(path, offset, repair)
                break
            offset += len(raw)
            if not raw.strip():
                continue
            parsed = parse_json(raw, where, _EDITED, error=ResultsError)
            record = TrialRecord.from_json(parsed, where)
            index = position.get(record.key)
            if index is None:
                position[record.key] = len(records)
                records.append(record)
            elif records[index].outcome == "crash":
                # A crashed trial run again (eval --resume --retry-crashed): the rerun counts.
                records[index] = record
            else:
                repeats.append(f"line {number}: trial {record.key} is recorded twice")
    if repeats:
        # One warning, however many repeats a damaged file holds.
        shown = "; ".join(repeats[:3]) + ("; ..." if len(repeats) > 3 else "")
        warn_caller(
            f"{path}: {shown} ({len(repeats)} repeated line(s) in all); keeping the first "
            "record of each trial.",
        )
    return records


def _incomplete_tail(path: Path, complete_bytes: int, repair: bool) -> None:
    # A hard kill mid-write leaves a line without its newline: that trial was not recorded
    # and will be run again.
    warn_caller(
        f"{path}: the last line is incomplete (the run was killed while writing it); "
        "ignoring it, its trial will run again.",
    )
    if repair:
        try:
            with open(path, "r+b") as handle:
                handle.truncate(complete_bytes)
        except OSError as exc:
            raise write_error(exc, path, "the results file", error=ResultsError) from exc


def read_config(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """Returns a run directory's ``run.json``.

    Raises:
        ResultsError: If it is missing, unreadable, larger than `MAX_CONFIG_BYTES` or nested
            deeper than `steve1_env.files.MAX_JSON_DEPTH`.
    """
    path = Path(directory) / CONFIG_FILE
    fix = "Restore it from a backup, or evaluate again into a new directory."
    try:
        data = read_regular_file(
            path, MAX_CONFIG_BYTES, "run settings file", error=ResultsError,
            limit_name="MAX_CONFIG_BYTES",
        )  # fmt: skip
    except FileNotFoundError:
        raise ResultsError(
            f"{path} not found: {directory} is not a steve1-env run directory (made by "
            "`steve1_env.evaluation.runner.evaluate` or `steve1-env eval`)."
        ) from None
    except OSError as exc:
        raise ResultsError(f"Cannot read {path} ({exc}).") from exc
    config = parse_json(data, str(path), fix, error=ResultsError)
    if not isinstance(config, dict):
        raise ResultsError(f"{path} must hold a JSON object. {fix}")
    return config


class ResultsStore:
    """The results of one run, appended trial by trial to ``<directory>/results.jsonl``.

    ``run.json`` keeps the run's settings and, under ``invocations``, one entry per call that
    wrote to the directory (when, what it was asked, what it added): `config` holds this
    call's entry last, and resuming appends it to the recorded ones. Call `finish` at the end
    to record what the call added.

    Args:
        directory: The run directory (created if missing).
        config: The run's settings, written to ``run.json`` (see `RESUME_KEYS`).
        resume: Continue the run recorded there; without it, a directory that already holds
            results is refused so that nothing is overwritten.

    Raises:
        ResultsError: If another run holds the directory, results exist and `resume` is
            False, the recorded run's settings differ from `config`, or the directory cannot
            be written (a file in its place, a full disk, a read-only file system).
    """

    def __init__(
        self, directory: str | os.PathLike[str], config: Mapping[str, Any], *, resume: bool
    ) -> None:
        self.directory = make_folder(directory, "the run directory", error=ResultsError)
        self.path = self.directory / RESULTS_FILE
        lock_path = self.directory / LOCK_FILE
        try:
            lock = file_lock(lock_path, "lock file", error=ResultsError)
            lock.acquire(timeout=0)  # another run holds it: refuse at once, do not wait
        except filelock.Timeout:
            raise ResultsError(
                f"Another run is writing to {self.directory}; wait for it to finish or choose "
                "another output directory."
            ) from None
        except OSError as exc:
            raise write_error(exc, lock_path, "the lock file", error=ResultsError) from exc
        self._lock: filelock.BaseFileLock | None = lock
        self._handle: int | None = None
        self.config: dict[str, Any] = {}
        try:
            self._open(config, resume)
        except BaseException:
            self.close()
            raise

    def _open(self, config: Mapping[str, Any], resume: bool) -> None:
        has_results = self.path.exists() and self.path.stat().st_size > 0
        if has_results and not resume:
            raise ResultsError(
                f"{self.directory} already holds results; pass resume=True to continue that "
                "run, or choose another output directory."
            )
        recorded: dict[str, Any] | None = None
        if resume and (self.directory / CONFIG_FILE).exists():
            recorded = read_config(self.directory)
            if has_results:  # with no trial recorded there is nothing to keep comparable
                _check_same_run(recorded, config, self.directory)
        elif has_results:
            raise ResultsError(
                f"{self.directory} has results but no {CONFIG_FILE}, so it cannot be resumed "
                "safely; choose another output directory."
            )
        self.records: list[TrialRecord] = read_records(self.path, repair=True)
        self.keys = {record.key for record in self.records}
        self.crashed = {r.key: r for r in self.records if r.outcome == "crash"}
        self.config = with_history(recorded, config)
        self._write_config()
        try:
            self._handle = open_regular_file(
                self.path, "results file", append=True, error=ResultsError
            )
        except OSError as exc:
            raise write_error(exc, self.path, "the results file", error=ResultsError) from exc

    def _write_config(self) -> None:
        text = json.dumps(self.config, indent=2) + "\n"
        atomic_write_text(
            self.directory / CONFIG_FILE, text, "the run settings file", error=ResultsError
        )

    def append(self, record: TrialRecord) -> None:
        """Writes one record and forces it to disk before returning.

        A trial recorded as crashed may be recorded again (its rerun replaces it). If the
        write fails (a full disk), the part of the line written is cut off again, so the file
        holds exactly the trials recorded before.

        Raises:
            ClosedError: If the store is closed.
            ResultsError: If the trial is already recorded, or the line cannot be written
                (the message says how to continue).
        """
        if self._handle is None:
            raise ClosedError(
                "This results store is closed; open a new ResultsStore with resume=True to "
                "record more."
            )
        earlier = self.crashed.get(record.key)
        if record.key in self.keys and earlier is None:
            raise ResultsError(f"Trial {record.key} is already recorded in {self.path}.")
        # Only a line every reader accepts is written: one invalid record would make the whole
        # file unreadable (no report, no resume).
        record.check(
            f"The record of trial {record.key}",
            "It was not recorded (its trial spec or its world produced the value).",
        )
        line = (json.dumps(record.to_json(), separators=(",", ":")) + "\n").encode()
        if len(line) > MAX_RESULTS_LINE_BYTES:
            raise ResultsError(
                f"The record of trial {record.key} takes {len(line)} bytes, more than the "
                f"{MAX_RESULTS_LINE_BYTES} a results line may hold; it was not recorded."
            )
        end = os.lseek(self._handle, 0, os.SEEK_END)
        try:
            # One write to an append-only descriptor: the line lands whole, or (killed hard
            # mid-write) as a tail `read_records` drops.
            written = 0
            while written < len(line):
                written += os.write(self._handle, line[written:])
            os.fsync(self._handle)
        except OSError as exc:
            # Cut the partial line off now (we hold the lock), rather than leave it to resume.
            with contextlib.suppress(OSError):
                os.ftruncate(self._handle, end)
            safe = len(self.records)
            raise write_error(
                exc,
                self.path,
                "the results file",
                f"Trial {record.key} was not recorded; the {safe} trial(s) recorded before it "
                "are safe there. Then run the evaluation again with resume=True to finish the "
                "run.",
                error=ResultsError,
            ) from exc
        if earlier is not None:  # a crashed trial, run again
            self.records.remove(earlier)
            del self.crashed[record.key]
        self.records.append(record)
        self.keys.add(record.key)
        if record.outcome == "crash":
            self.crashed[record.key] = record

    def extend(self, records: Iterable[TrialRecord]) -> None:
        """Appends several records (see `append`)."""
        for record in records:
            self.append(record)

    def finish(self, status: str, ran: int) -> None:
        """Records in ``run.json`` how this call ended and how many trials it added.

        Args:
            status: ``finished``, ``interrupted`` or ``failed`` (an entry still reading
                ``running`` was killed).
            ran: Trials this call recorded.

        Raises:
            ResultsError: If ``run.json`` cannot be rewritten (it keeps its earlier content).
        """
        history = self.config.get(HISTORY_KEY)
        if self._lock is None or not history:
            return
        history[-1].update(
            status=status,
            finished_at=_now(),
            ran=ran,
            recorded_after=len(self.records),
        )
        self.config["updated_at"] = history[-1]["finished_at"]
        self._write_config()

    def close(self) -> None:
        """Closes the results file and releases the directory. Safe to call twice."""
        if self._handle is not None:
            os.close(self._handle)
            self._handle = None
        if self._lock is not None:
            with contextlib.suppress(OSError):
                self._lock.release()
            self._lock = None

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def with_history(recorded: Mapping[str, Any] | None, config: Mapping[str, Any]) -> dict[str, Any]:
    """Returns the ``run.json`` to write: `config`, after the invocations `recorded` holds.

    `config` describes this call, its own entry last under ``invocations``. The recorded
    entries are kept (up to `MAX_INVOCATIONS`, oldest dropped first and counted), the
    creation time is the first call's, and the task list is the union of every call's (in
    first-run order), since the report orders tasks by it.

    Args:
        recorded: The ``run.json`` already in the directory (a resumed run), or None.
        config: This call's settings (see `steve1_env.evaluation.runner.run_config`).
    """
    merged = json.loads(json.dumps(config))  # a deep, plain copy
    now = merged.setdefault("updated_at", _now())
    mine = merged.get(HISTORY_KEY) or []
    merged.setdefault("created_at", now)
    if recorded is None:
        merged[HISTORY_KEY] = mine
        return merged
    earlier = recorded.get(HISTORY_KEY)
    if not isinstance(earlier, list):
        # A run.json from before the history: its single-call fields become one entry.
        earlier = [
            {
                "started_at": recorded.get("updated_at"),
                "trials": recorded.get("trials"),
                "executor": recorded.get("executor"),
                "settings": recorded.get("settings"),
                "status": "unknown (recorded before steve1-env kept a history)",
            }
        ]
    history = [*earlier, *mine]
    dropped = len(history) - MAX_INVOCATIONS
    if dropped > 0:
        history = history[dropped:]
    previously_dropped = recorded.get("invocations_dropped")
    previously_dropped = previously_dropped if isinstance(previously_dropped, int) else 0
    if dropped > 0 or previously_dropped:
        merged["invocations_dropped"] = previously_dropped + max(dropped, 0)
    merged[HISTORY_KEY] = history
    created = recorded.get("created_at")
    first = history[0] if history and isinstance(history[0], dict) else {}
    merged["created_at"] = created if isinstance(created, str) else first.get("started_at", now)
    old_set, new_set = recorded.get("task_set"), merged.get("task_set")
    if isinstance(old_set, dict) and isinstance(new_set, dict):
        old_tasks, new_tasks = old_set.get("tasks"), new_set.get("tasks")
        if isinstance(old_tasks, list) and isinstance(new_tasks, list):
            union = [t for t in old_tasks if isinstance(t, str)]
            new_set["tasks"] = union + [t for t in new_tasks if t not in union]
    return merged


def _check_same_run(recorded: Mapping[str, Any], config: Mapping[str, Any], where: Path) -> None:
    differing = [key for key in RESUME_KEYS if recorded.get(key) != config.get(key)]
    if differing:
        details = "; ".join(
            f"{key}: recorded {recorded.get(key)!r}, now {config.get(key)!r}" for key in differing
        )
        raise ResultsError(
            f"Cannot resume {where}: the run there used other settings ({details}). Results "
            "from different settings are not comparable; evaluate into another directory."
        )
