"""What one evaluation trial produced (`TrialRecord`), and the trial it ran (`TrialSpec`).

A trial is one episode: one instruction of one task, pursued from one seed until the success
detector fires, the world ends or the low-level step budget runs out (a fixed-horizon trial runs
its whole horizon and records its first success and its metrics). Records are plain JSON,
one per line of the results file, so they survive crashes and can be read by any tool.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from steve1_env.errors import ResultsError

# TrialSpec belongs to the task plan (tasks/ makes it); re-exported here, its earlier home.
from steve1_env.tasks.trials import CONDITIONS, PROMPT_LATENTS, TrialSpec, trial_key
from steve1_env.validation import short_repr

__all__ = [
    "CONDITIONS",
    "DURATION_DECIMALS",
    "OUTCOMES",
    "REASONS",
    "RECORD_SCHEMA",
    "TrialRecord",
    "TrialSpec",
    "trial_key",
]

RECORD_SCHEMA = 2
"""Version of the JSON layout of `TrialRecord`; bumped when fields change meaning. Schema 2
added ``condition``, ``horizon`` and ``metrics``; schema-1 records are still read (as prompt
trials without a horizon or metrics)."""
READABLE_SCHEMAS = (1, 2)
"""Record schemas this version reads."""
_SCHEMA_2_FIELDS = ("condition", "horizon", "metrics", "prompt_latent", "prompt_seed")
_LATER_FIELDS = ("video", "schema", *_SCHEMA_2_FIELDS)
"""Fields a record may lack: added after schema 1, or optional."""

FORGED = "The file was not written by steve1-env as it is; evaluate again into a new directory."
"""What a record read back with an invalid field was: edited, or written by something else."""

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
        condition: ``"prompt"`` or ``"unconditional"`` (the zero-goal baseline of the same
            trial), see `CONDITIONS`.
        horizon: The fixed horizon of a trial that ran without stopping at success (its
            reason is then ``budget`` when it ran all of it, and its outcome ``success`` when
            the detector fired at some step, `steps_to_success` being the first); None for a
            trial that stopped at its first success.
        metrics: Metric name -> value over the episode (the paper's ``log``, ``dirt``,
            ``seed``, ``travel_distance`` and the task's own); empty when none was tracked.
        prompt_latent: How the text goal was embedded: ``"zeros"`` or ``"sampled"`` (see
            `steve1_env.tasks.trials.PROMPT_LATENTS`).
        prompt_seed: The seed of the sampled latent; None with ``"zeros"``.
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
    condition: str = "prompt"
    horizon: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    prompt_latent: str = "zeros"
    prompt_seed: int | None = None

    @property
    def key(self) -> str:
        """Identifies the trial: ``task/instruction_index/trial``."""
        return trial_key(self.task, self.instruction_index, self.trial, self.condition)

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
        required = {f.name for f in fields(cls) if f.name not in _LATER_FIELDS}
        missing = sorted(required - set(data))
        unknown = sorted(set(data) - names)
        if missing or unknown:
            raise ResultsError(
                f"{where}: not a trial record of this version "
                f"(missing: {', '.join(missing) or '-'}; unknown: {', '.join(unknown) or '-'})."
            )
        schema = data.get("schema", 1)
        if isinstance(schema, bool) or schema not in READABLE_SCHEMAS:
            raise ResultsError(
                f"{where}: record schema {short_repr(schema)}, but this steve1-env reads schemas "
                f"{', '.join(map(str, READABLE_SCHEMAS))}. Evaluate again into a new directory."
            )
        later = sorted(set(data) & set(_SCHEMA_2_FIELDS))
        if schema == 1 and later:
            raise ResultsError(
                f"{where}: a schema-1 record cannot hold {', '.join(later)} (added in schema "
                "2). The file was not written by steve1-env as it is; evaluate again into a "
                "new directory."
            )
        record = cls(**{name: data[name] for name in names if name in data})
        record.check(where)
        return record

    def check(self, where: str, advice: str = FORGED) -> None:
        """Checks every field as `from_json` does (a results file holds only such records).

        Args:
            where: Names the record in errors, e.g. ``"results.jsonl line 7"``.
            advice: What the error adds after naming the field (default: the file was edited).

        Raises:
            ResultsError: Naming the first invalid field, what it must be, and `advice`.
        """

        def need(ok: bool, name: str, expected: str) -> None:
            if not ok:
                value = getattr(self, name)
                raise ResultsError(
                    f"{where}: {name} must be {expected}, got {type(value).__name__} "
                    f"{short_repr(value)}. {advice}"
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
        need(self.condition in CONDITIONS, "condition", f"one of {', '.join(CONDITIONS)}")
        need(
            self.prompt_latent in PROMPT_LATENTS,
            "prompt_latent",
            f"one of {', '.join(PROMPT_LATENTS)}",
        )
        prompt_seed: Any = self.prompt_seed
        need(
            (prompt_seed is None) == (self.prompt_latent == "zeros")
            and (prompt_seed is None or count(prompt_seed)),
            "prompt_seed",
            "an integer >= 0 with a sampled prompt latent, else null",
        )
        horizon: Any = self.horizon
        need(
            horizon is None or (count(horizon) and horizon == self.max_steps),
            "horizon",
            f"null or the step budget max_steps ({self.max_steps})",
        )
        steps_to_success: Any = self.steps_to_success
        if horizon is None:
            # trial_record derives the outcome from the reason; any other pair is a forgery.
            need(
                self.outcome == _outcome_of(self.reason),
                "outcome",
                f"{_outcome_of(self.reason)!r} for the reason {self.reason!r}",
            )
        else:
            # A fixed-horizon trial never stops at success: it ends at its horizon (budget),
            # when its world ends, or on a crash; the outcome says whether it ever succeeded.
            need(self.reason != "success", "reason", "budget, world_done or crash with a horizon")
            need(
                (self.outcome == "crash") == (self.reason == "crash"),
                "outcome",
                "crash exactly when the reason is crash",
            )
            need(
                self.reason != "budget" or self.steps == horizon,
                "steps",
                f"the horizon ({horizon}) when the reason is budget",
            )
        # Every metric is an episode maximum starting from 0; a crashed trial measured nothing.
        need(
            isinstance(self.metrics, dict)
            and all(isinstance(k, str) and _finite(v) and v >= 0 for k, v in self.metrics.items())
            and not (self.outcome == "crash" and self.metrics),
            "metrics",
            "an object mapping metric names to finite numbers >= 0 (empty for a crash)",
        )
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
            _finite(self.duration_s) and self.duration_s >= 0,
            "duration_s",
            "a finite number of seconds >= 0",
        )


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _outcome_of(reason: str) -> str:
    return {"success": "success", "crash": "crash"}.get(reason, "failure")
