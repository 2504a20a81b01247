"""The run directory: ``run.json`` (settings), ``results.jsonl`` (one line per finished trial).

Each record is written, flushed and fsynced as soon as its trial finishes, so a crash, a
Ctrl-C or a killed machine loses at most the trial in progress. A line cut short by a hard
kill is dropped when the run is resumed. One run writes to a directory at a time (a lock
file says so).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TextIO

from steve1_env.errors import ResultsError, Steve1EnvWarning
from steve1_env.evaluation.records import TrialRecord
from steve1_env.weights import atomic_write_text

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
    "weights",
)
"""`run.json` fields that must match for a run to resume (results must stay comparable)."""


def read_records(path: str | os.PathLike[str], *, repair: bool = False) -> list[TrialRecord]:
    """Reads every trial record of a results file, in file order, without duplicates.

    A trial recorded as crashed and recorded again later (rerun with ``--retry-crashed``) is
    represented by its later record; any other repeat keeps the first, with a warning.

    Args:
        path: The ``results.jsonl`` file.
        repair: Cut off a last line left incomplete by a killed run (otherwise it is ignored).

    Raises:
        ResultsError: If a complete line is not a valid record (naming the line).
    """
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    complete, newline, tail = data.rpartition(b"\n")
    if tail:
        # A hard kill mid-write leaves a line without its newline: that trial was not
        # recorded and will be run again.
        warnings.warn(
            f"{path}: the last line is incomplete (the run was killed while writing it); "
            "ignoring it, its trial will run again.",
            Steve1EnvWarning,
            stacklevel=2,
        )
        if repair:
            with open(path, "r+b") as handle:
                handle.truncate(len(complete) + len(newline))
    records: list[TrialRecord] = []
    seen: dict[str, TrialRecord] = {}
    for number, raw in enumerate(complete.split(b"\n"), start=1):
        if not raw.strip():
            continue
        where = f"{path} line {number}"
        try:
            parsed = json.loads(raw)
        except ValueError as exc:
            raise ResultsError(
                f"{where} is not valid JSON ({exc}). The file was edited or corrupted; fix or "
                "delete that line, then resume."
            ) from exc
        record = TrialRecord.from_json(parsed, where)
        if record.key in seen:
            if seen[record.key].outcome == "crash":
                # A crashed trial run again (eval --resume --retry-crashed): the rerun counts.
                records[records.index(seen[record.key])] = record
                seen[record.key] = record
                continue
            warnings.warn(
                f"{where}: trial {record.key} is recorded twice; keeping the first.",
                Steve1EnvWarning,
                stacklevel=2,
            )
            continue
        seen[record.key] = record
        records.append(record)
    return records


def read_config(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """Returns a run directory's ``run.json``.

    Raises:
        ResultsError: If it is missing or unreadable.
    """
    path = Path(directory) / CONFIG_FILE
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ResultsError(
            f"{path} not found: {directory} is not a steve1-env run directory (made by "
            "`steve1-env eval --out DIR`)."
        ) from None
    except ValueError as exc:
        raise ResultsError(f"{path} is not valid JSON ({exc}).") from exc
    if not isinstance(config, dict):
        raise ResultsError(f"{path} must hold a JSON object.")
    return config


class ResultsStore:
    """The results of one run, appended trial by trial to ``<directory>/results.jsonl``.

    Args:
        directory: The run directory (created if missing).
        config: The run's settings, written to ``run.json`` (see `RESUME_KEYS`).
        resume: Continue the run recorded there; without it, a directory that already holds
            results is refused so that nothing is overwritten.

    Raises:
        ResultsError: If another run holds the directory, results exist and `resume` is
            False, or the recorded run's settings differ from `config`.
    """

    def __init__(
        self, directory: str | os.PathLike[str], config: Mapping[str, Any], *, resume: bool
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / RESULTS_FILE
        self._lock: TextIO | None = open(self.directory / LOCK_FILE, "a")  # noqa: SIM115
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            self._lock = None
            raise ResultsError(
                f"Another run is writing to {self.directory}; wait for it to finish or choose "
                "another output directory."
            ) from None
        self._handle: int | None = None
        try:
            self._open(config, resume)
        except BaseException:
            self.close()
            raise

    def _open(self, config: Mapping[str, Any], resume: bool) -> None:
        has_results = self.path.exists() and self.path.stat().st_size > 0
        if has_results and not resume:
            raise ResultsError(
                f"{self.directory} already holds results; pass --resume (resume=True) to "
                "continue that run, or choose another output directory."
            )
        if resume and (self.directory / CONFIG_FILE).exists():
            _check_same_run(read_config(self.directory), config, self.directory)
        elif has_results:
            raise ResultsError(
                f"{self.directory} has results but no {CONFIG_FILE}, so it cannot be resumed "
                "safely; choose another output directory."
            )
        self.records: list[TrialRecord] = read_records(self.path, repair=True)
        self.keys = {record.key for record in self.records}
        self.crashed = {r.key: r for r in self.records if r.outcome == "crash"}
        atomic_write_text(self.directory / CONFIG_FILE, json.dumps(config, indent=2) + "\n")
        self._handle = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def append(self, record: TrialRecord) -> None:
        """Writes one record and forces it to disk before returning.

        A trial recorded as crashed may be recorded again (its rerun replaces it).

        Raises:
            ResultsError: If the store is closed or the trial is already recorded.
        """
        if self._handle is None:
            raise ResultsError("This results store is closed.")
        earlier = self.crashed.get(record.key)
        if record.key in self.keys and earlier is None:
            raise ResultsError(f"Trial {record.key} is already recorded in {self.path}.")
        line = (json.dumps(record.to_json(), separators=(",", ":")) + "\n").encode()
        # One write to an append-only descriptor: the line lands whole, or (killed hard
        # mid-write) as a tail `read_records` drops.
        written = 0
        while written < len(line):
            written += os.write(self._handle, line[written:])
        os.fsync(self._handle)
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

    def close(self) -> None:
        """Closes the results file and releases the directory. Safe to call twice."""
        if self._handle is not None:
            os.close(self._handle)
            self._handle = None
        if self._lock is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


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
