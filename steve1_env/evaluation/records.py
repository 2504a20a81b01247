"""What one evaluation trial produced (`TrialRecord`), and the trial it ran (`TrialSpec`).

A trial is one episode: one instruction of one task, pursued from one seed until the success
detector fires, the world ends or the low-level step budget runs out. Records are plain JSON,
one per line of the results file, so they survive crashes and can be read by any tool.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from steve1_env.errors import ResultsError

# TrialSpec belongs to the task plan (tasks/ makes it); re-exported here, its earlier home.
from steve1_env.tasks.trials import TrialSpec, trial_key
from steve1_env.validation import short_repr

__all__ = [
    "DURATION_DECIMALS",
    "OUTCOMES",
    "REASONS",
    "RECORD_SCHEMA",
    "TrialRecord",
    "TrialSpec",
    "trial_key",
]

RECORD_SCHEMA = 1
"""Version of the JSON layout of `TrialRecord`; bumped when fields change meaning."""

DURATION_DECIMALS = 4
"""Decimals kept of durations in seconds (records and summaries): 0.1 ms, far below noise."""

OUTCOMES = ("success", "failure", "crash")
"""A trial's outcome. ``crash``: the world kept crashing, so the skill was never judged."""

REASONS = ("success", "budget", "world_done", "crash")
"""Why a trial's last try ended: the env's ``REASONS`` (``info["reason"]``), spelled out here so
that reading a results file does not import the env (a test keeps the two equal)."""


@dataclass(frozen=True)
class TrialRecord:
    """The result of one trial, as stored in one line of ``results.jsonl``.

    Attributes:
        task: The task's name.
        instruction: The instruction pursued.
        instruction_index: Its position among the task's instructions.
        trial: The trial's index within the task.
        seed: The episode seed.
        outcome: ``success``, ``failure`` (the skill did not succeed) or ``crash`` (the world
            crashed on every try, so the skill was not judged).
        reason: Why the last try ended: ``success``, ``budget``, ``world_done`` or ``crash``.
        steps: Low-level steps of the last try.
        steps_to_success: Low-level steps until the detector fired, or None.
        max_steps: The low-level step budget.
        detector: Name of the detector (part) that fired, or None.
        detector_spec: Name of the task's detector.
        crashes: World crashes met (each one retried while retries were left).
        errors: The crash messages, oldest first.
        high_level_steps: Env steps of the last try.
        inventory: Final inventory, item -> count.
        duration_s: Wall time of all tries, in seconds.
        worker: Which worker ran the trial (``local``, ``process-2``, ``ray-<id>``).
        finished_at: UTC time the trial finished, ISO 8601.
        video: Path of the trial's video relative to the output directory, or None.
        schema: `RECORD_SCHEMA` of the writer.
    """

    task: str
    instruction: str
    instruction_index: int
    trial: int
    seed: int
    outcome: str
    reason: str
    steps: int
    steps_to_success: int | None
    max_steps: int
    detector: str | None
    detector_spec: str | None
    crashes: int
    errors: list[str]
    high_level_steps: int
    inventory: dict[str, int]
    duration_s: float
    worker: str
    finished_at: str
    video: str | None = None
    schema: int = RECORD_SCHEMA

    @property
    def key(self) -> str:
        """Identifies the trial: ``task/instruction_index/trial``."""
        return trial_key(self.task, self.instruction_index, self.trial)

    @property
    def success(self) -> bool:
        """True when the skill succeeded."""
        return self.outcome == "success"

    def to_json(self) -> dict[str, Any]:
        """Returns the record as a JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any, where: str = "a results record") -> TrialRecord:
        """Builds a record from a parsed JSON object, checking every field.

        Args:
            data: The parsed JSON value.
            where: Names the source in errors, e.g. ``"results.jsonl line 7"``.

        Raises:
            ResultsError: If a field is missing, unknown or of the wrong type.
        """
        if not isinstance(data, Mapping):
            raise ResultsError(f"{where}: expected a JSON object, got {type(data).__name__}.")
        names = {f.name for f in fields(cls)}
        required = {f.name for f in fields(cls) if f.name not in ("video", "schema")}
        missing = sorted(required - set(data))
        unknown = sorted(set(data) - names)
        if missing or unknown:
            raise ResultsError(
                f"{where}: not a trial record of this version "
                f"(missing: {', '.join(missing) or '-'}; unknown: {', '.join(unknown) or '-'})."
            )
        schema = data.get("schema", RECORD_SCHEMA)
        if schema != RECORD_SCHEMA:
            raise ResultsError(
                f"{where}: record schema {schema!r}, but this steve1-env reads schema "
                f"{RECORD_SCHEMA}. Evaluate again into a new directory."
            )
        record = cls(**{name: data[name] for name in names if name in data})
        record._check(where)
        return record

    def _check(self, where: str) -> None:
        def need(ok: bool, name: str, expected: str) -> None:
            if not ok:
                value = getattr(self, name)
                raise ResultsError(
                    f"{where}: {name} must be {expected}, got {type(value).__name__} "
                    f"{short_repr(value)}. The file was not written by steve1-env as it is; "
                    "evaluate again into a new directory."
                )

        def count(value: Any) -> bool:
            return isinstance(value, int) and not isinstance(value, bool) and value >= 0

        def optional_text(value: Any) -> bool:
            return value is None or isinstance(value, str)

        for name in ("task", "instruction", "worker", "finished_at"):
            need(isinstance(getattr(self, name), str), name, "a string")
        for name in (
            "instruction_index", "trial", "seed", "steps", "max_steps", "crashes",
            "high_level_steps",
        ):  # fmt: skip
            need(count(getattr(self, name)), name, "an integer >= 0")
        need(self.outcome in OUTCOMES, "outcome", f"one of {', '.join(OUTCOMES)}")
        need(self.reason in REASONS, "reason", f"one of {', '.join(REASONS)}")
        # trial_record derives the outcome from the reason; any other pair is a forgery.
        need(
            self.outcome == _outcome_of(self.reason),
            "outcome",
            f"{_outcome_of(self.reason)!r} for the reason {self.reason!r}",
        )
        steps_to_success: Any = self.steps_to_success
        if self.outcome == "success":
            need(
                count(steps_to_success) and steps_to_success <= self.steps,
                "steps_to_success",
                f"an integer from 0 to steps ({self.steps}) when the outcome is success",
            )
        else:
            need(steps_to_success is None, "steps_to_success", "null unless a success")
        for name in ("detector", "detector_spec", "video"):
            need(optional_text(getattr(self, name)), name, "a string or null")
        need(
            isinstance(self.errors, list) and all(isinstance(e, str) for e in self.errors),
            "errors",
            "a list of strings",
        )
        need(
            isinstance(self.inventory, dict)
            and all(isinstance(k, str) and count(v) for k, v in self.inventory.items()),
            "inventory",
            "an object mapping item names to integers >= 0",
        )
        need(
            isinstance(self.duration_s, int | float)
            and not isinstance(self.duration_s, bool)
            and math.isfinite(self.duration_s)
            and self.duration_s >= 0,
            "duration_s",
            "a finite number of seconds >= 0",
        )


def _outcome_of(reason: str) -> str:
    return {"success": "success", "crash": "crash"}.get(reason, "failure")
