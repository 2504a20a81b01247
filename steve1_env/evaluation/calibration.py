"""Calibrating a score threshold on labelled examples: distributions, ROC curve, best F1.

A success detector that fires when a score (MineCLIP's, or any other) passes a threshold is
only as good as that threshold, and a threshold means something only for the weights that
produced the scores. This module measures it on examples whose answer is known:

- *labelled clips*: a folder with ``positive/*.mp4`` (the instruction was achieved at the end
  of the clip) and ``negative/*.mp4`` (it was not), scored for one given instruction;
- *an evaluation run directory* recorded with videos: successful trials are positives, failed
  ones negatives (crashed trials were never judged, so they are left out), each scored for
  its record's instruction;
- *a scores file*: JSON lines ``{"label": "positive"|"negative", "score": 0.73}`` (optional
  ``"instruction"`` and ``"source"``), for scores computed elsewhere, e.g. logged from
  ``info["mineclip"]``; no model needed.

Clips and videos are scored by a callable passed in, ``score(clip, instruction) -> float``,
where a clip is the video's last `CLIP_FRAMES` frames as uint8 ``(16, height, width, 3)`` RGB:
MineCLIP judges the last 16 frames, so the end of a trial's video is what a detector would
have seen when the trial stopped.

The statistics are pure functions of scores and labels (`score_summary`, `roc_curve`,
`best_f1_threshold`); `calibrate` reads a source, scores it and returns a `CalibrationReport`.
Everywhere, a score *passes* a threshold when ``score >= threshold``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from steve1_env.errors import ConfigurationError, ResultsError
from steve1_env.evaluation.records import TrialRecord
from steve1_env.evaluation.results import CONFIG_FILE, RESULTS_FILE, read_records
from steve1_env.files import parse_json, read_regular_file
from steve1_env.prompt.visual_goals import (
    CLIP_FRAMES,
    MAX_CLIP_BYTES,
    MAX_CLIP_PIXELS,
    MAX_VIDEO_FRAMES,
    read_clip,
)
from steve1_env.validation import short_repr

__all__ = [
    "CALIBRATION_SCHEMA",
    "CLIP_FRAMES",
    "LABELS",
    "MAX_CLIP_BYTES",
    "MAX_CLIP_PIXELS",
    "MAX_SCORES_BYTES",
    "MAX_VIDEO_FRAMES",
    "CalibrationReport",
    "LabelledScore",
    "RocCurve",
    "Scorer",
    "ThresholdChoice",
    "best_f1_threshold",
    "calibrate",
    "clip_folder_examples",
    "read_clip",
    "read_scores",
    "roc_curve",
    "run_examples",
    "score_summary",
]

CALIBRATION_SCHEMA = 1
"""Version of the layout of `CalibrationReport.to_json` (``calibration.json``)."""

LABELS = ("positive", "negative")
"""The two labels: the instruction was achieved (``positive``) or not (``negative``)."""

MAX_SCORES_BYTES = 256 << 20
"""Largest scores file read (256 MiB: millions of lines)."""

Scorer = Callable[[np.ndarray, str], float]
"""``score(clip, instruction) -> float``: clip is uint8 ``(CLIP_FRAMES, height, width, 3)``."""

_SCORES_FIX = (
    'Each line must be a JSON object such as {"label": "positive", "score": 0.73}, with '
    'optional "instruction" and "source" strings.'
)


@dataclass(frozen=True)
class LabelledScore:
    """One example's score and whether it is a positive.

    Attributes:
        score: The score, a finite number.
        positive: True when the instruction was achieved in the example.
        instruction: The instruction scored, if known.
        source: Where the example came from (a video path, a trial key), if known.
    """

    score: float
    positive: bool
    instruction: str | None = None
    source: str | None = None

    @property
    def label(self) -> str:
        """``positive`` or ``negative``."""
        return LABELS[0] if self.positive else LABELS[1]

    def to_json(self) -> dict[str, Any]:
        """Returns the example as a line of a scores file (readable by `read_scores`)."""
        data: dict[str, Any] = {"label": self.label, "score": self.score}
        if self.instruction is not None:
            data["instruction"] = self.instruction
        if self.source is not None:
            data["source"] = self.source
        return data


# --------------------------------------------------------------------------------------------
# Statistics


def _scores_and_labels(scores: Sequence[float] | np.ndarray, positive: Any) -> tuple[Any, Any]:
    """Checks and converts the inputs of the statistics; both classes must be present."""
    values = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(positive)
    if values.ndim != 1 or labels.shape != values.shape:
        raise ConfigurationError(
            f"Scores and labels must be two 1-D sequences of the same length, got shapes "
            f"{values.shape} and {labels.shape}."
        )
    if labels.size and labels.dtype != np.bool_:
        raise ConfigurationError(
            f"Labels must be booleans (True: positive), got dtype {labels.dtype}."
        )
    if not np.isfinite(values).all():
        bad = int(np.flatnonzero(~np.isfinite(values))[0])
        raise ConfigurationError(
            f"Every score must be finite, but score {bad} is {values[bad]}; fix the scorer or "
            "drop that example."
        )
    positives = int(labels.sum())
    negatives = len(labels) - positives
    if positives == 0 or negatives == 0:
        raise ConfigurationError(
            f"Calibration needs both positive and negative examples, got {positives} "
            f"positive and {negatives} negative; add examples of the missing kind (a "
            "threshold that separates one class from nothing is not defined)."
        )
    return values, labels


def score_summary(scores: Sequence[float] | np.ndarray) -> dict[str, Any]:
    """Summarises one label's scores: count, min, quartiles, median, max and mean.

    Quartiles are numpy's default (linear interpolation between order statistics).

    Args:
        scores: The scores, finite numbers.

    Returns:
        ``{"count", "min", "q1", "median", "q3", "max", "mean"}``; for no scores, count 0
        and None elsewhere.
    """
    values = np.asarray(scores, dtype=np.float64)
    if values.size == 0:
        return dict.fromkeys(("min", "q1", "median", "q3", "max", "mean"), None) | {"count": 0}
    q1, median, q3 = (float(v) for v in np.percentile(values, [25, 50, 75]))
    return {
        "count": int(values.size),
        "min": float(values.min()),
        "q1": q1,
        "median": median,
        "q3": q3,
        "max": float(values.max()),
        "mean": float(values.mean()),
    }


@dataclass(frozen=True)
class RocCurve:
    """The receiver operating characteristic of a score: one point per distinct score.

    Point ``i`` classifies as positive every example with ``score >= thresholds[i]``;
    thresholds are the distinct scores, highest first, so the rates only grow. The curve
    starts at (0, 0) (no threshold passed) before the first point and ends at (1, 1).

    Attributes:
        thresholds: The distinct scores, descending.
        tpr: True positive rate (recall) at each threshold.
        fpr: False positive rate at each threshold.
        auc: Area under the curve, with (0, 0) prepended: the chance that a random positive
            scores above a random negative, ties counting one half.
    """

    thresholds: list[float]
    tpr: list[float]
    fpr: list[float]
    auc: float

    def to_json(self) -> dict[str, Any]:
        """Returns the curve as a JSON-ready dict."""
        return asdict(self)


def _cumulative_counts(scores: Any, positive: Any) -> tuple[Any, Any, Any, int, int]:
    """Checked inputs' distinct thresholds and counts.

    Returns the distinct scores (descending), the positives and negatives at or above each,
    and the numbers of positives and negatives.
    """
    values, labels = _scores_and_labels(scores, positive)
    order = np.argsort(-values, kind="stable")
    ordered, hits = values[order], labels[order]
    # The last index of each run of equal scores: ties pass or fail a threshold together.
    ends = np.append(np.flatnonzero(np.diff(ordered)), len(ordered) - 1)
    true_positives = np.cumsum(hits)[ends]
    false_positives = np.cumsum(~hits)[ends]
    positives = int(labels.sum())
    return ordered[ends], true_positives, false_positives, positives, len(labels) - positives


def roc_curve(scores: Sequence[float] | np.ndarray, positive: Any) -> RocCurve:
    """Computes the ROC curve and its area.

    Args:
        scores: One finite score per example.
        positive: One boolean per example, True for positives.

    Raises:
        ConfigurationError: If the lengths differ, a score is not finite, the labels are not
            booleans, or only one class is present.
    """
    thresholds, tp, fp, positives, negatives = _cumulative_counts(scores, positive)
    tpr, fpr = tp / positives, fp / negatives
    xs, ys = np.append(0.0, fpr), np.append(0.0, tpr)
    auc = float(np.sum(np.diff(xs) * (ys[1:] + ys[:-1]) / 2))  # trapezoids: ties count half
    return RocCurve(
        thresholds=[float(t) for t in thresholds],
        tpr=[float(v) for v in tpr],
        fpr=[float(v) for v in fpr],
        auc=auc,
    )


@dataclass(frozen=True)
class ThresholdChoice:
    """The threshold that maximises F1 on the examples, and how it classifies them.

    Attributes:
        threshold: The threshold to use (``score >= threshold`` is positive): halfway
            between the lowest score classified positive (`cut`) and the next lower score,
            so that ``>`` and ``>=`` classify the examples alike.
        cut: The lowest score classified positive.
        f1: The F1 score at the threshold.
        precision: Positives among the examples passing the threshold.
        recall: Passing examples among the positives (the true positive rate).
        true_positives: Positives that pass.
        false_positives: Negatives that pass.
        false_negatives: Positives that do not.
        true_negatives: Negatives that do not.
    """

    threshold: float
    cut: float
    f1: float
    precision: float
    recall: float
    true_positives: int
    false_positives: int
    false_negatives: int
    true_negatives: int

    def to_json(self) -> dict[str, Any]:
        """Returns the choice as a JSON-ready dict."""
        return asdict(self)


def best_f1_threshold(scores: Sequence[float] | np.ndarray, positive: Any) -> ThresholdChoice:
    """Finds the threshold that maximises F1 = 2TP / (2TP + FP + FN).

    Every distinct score is tried as the lowest one classified positive. F1 values are
    compared exactly (as fractions of integers), and among equal F1 the *highest* threshold
    wins: it is the one with the fewest false alarms among the best, the safer choice for a
    detector that ends an episode when it fires.

    Args:
        scores: One finite score per example.
        positive: One boolean per example, True for positives.

    Raises:
        ConfigurationError: As `roc_curve` does.
    """
    thresholds, tp, fp, positives, negatives = _cumulative_counts(scores, positive)
    best = 0
    for i in range(1, len(thresholds)):
        # F1_i > F1_best, cross-multiplied; strict, so the earlier (higher) threshold keeps ties.
        if int(tp[i]) * (positives + int(tp[best]) + int(fp[best])) > int(tp[best]) * (
            positives + int(tp[i]) + int(fp[i])
        ):
            best = i
    cut = float(thresholds[best])
    if best + 1 < len(thresholds):
        below = float(thresholds[best + 1])
        threshold = below + (cut - below) / 2
        if not below < threshold <= cut:  # adjacent floats: no number lies between them
            threshold = cut
    else:
        threshold = float(np.nextafter(cut, -math.inf))  # everything passes, even with ">"
    true_positives, false_positives = int(tp[best]), int(fp[best])
    return ThresholdChoice(
        threshold=threshold,
        cut=cut,
        f1=2 * true_positives / (positives + true_positives + false_positives),
        precision=true_positives / (true_positives + false_positives),
        recall=true_positives / positives,
        true_positives=true_positives,
        false_positives=false_positives,
        false_negatives=positives - true_positives,
        true_negatives=negatives - false_positives,
    )


# --------------------------------------------------------------------------------------------
# The report


@dataclass(frozen=True)
class CalibrationReport:
    """What a calibration found: per-label distributions, the ROC curve, the best threshold.

    Attributes:
        source: The clips folder, run directory or scores file read.
        kind: ``clips``, ``run`` or ``scores``.
        instruction: The instruction calibrated for (given, or the only one of the
            examples), or None when the examples hold several.
        examples: Every example's score, in reading order.
        distributions: ``positive`` and ``negative`` -> `score_summary` of their scores.
        roc: The ROC curve.
        best: The threshold maximising F1.
        excluded: Examples of the source left out, by reason (``crash``, ``instruction``).
    """

    source: str
    kind: str
    instruction: str | None
    examples: list[LabelledScore]
    distributions: dict[str, dict[str, Any]]
    roc: RocCurve
    best: ThresholdChoice
    excluded: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_examples(
        cls,
        examples: Sequence[LabelledScore],
        *,
        source: str = "",
        kind: str = "scores",
        instruction: str | None = None,
        excluded: Mapping[str, int] | None = None,
    ) -> CalibrationReport:
        """Computes the report of labelled scores.

        Args:
            examples: The scored examples; both labels must be present.
            source: Names where they came from, for the report.
            kind: ``clips``, ``run`` or ``scores``.
            instruction: The instruction calibrated for; None takes the examples' own when
                they all share one.
            excluded: Counts of examples left out, by reason.

        Raises:
            ConfigurationError: If a score is not finite or only one label is present.
        """
        examples = list(examples)
        scores = [e.score for e in examples]
        positive = np.array([e.positive for e in examples], dtype=bool)
        roc = roc_curve(scores, positive)
        best = best_f1_threshold(scores, positive)
        if instruction is None:
            named = {e.instruction for e in examples}
            instruction = named.pop() if len(named) == 1 else None
        distributions = {
            label: score_summary([e.score for e in examples if e.label == label])
            for label in LABELS
        }
        return cls(
            source=source,
            kind=kind,
            instruction=instruction,
            examples=examples,
            distributions=distributions,
            roc=roc,
            best=best,
            excluded=dict(excluded or {}),
        )

    def to_json(self) -> dict[str, Any]:
        """Returns the report as a JSON-ready dict (``calibration.json``)."""
        return {
            "schema": CALIBRATION_SCHEMA,
            "source": self.source,
            "kind": self.kind,
            "instruction": self.instruction,
            "distributions": self.distributions,
            "best": self.best.to_json(),
            "roc": self.roc.to_json(),
            "excluded": self.excluded,
            "examples": [e.to_json() for e in self.examples],
        }


# --------------------------------------------------------------------------------------------
# Sources


def clip_folder_examples(folder: str | os.PathLike[str]) -> list[tuple[Path, bool]]:
    """Lists a labelled clips folder: ``positive/*.mp4`` and ``negative/*.mp4``.

    Args:
        folder: The folder holding ``positive`` and ``negative`` sub-folders (one may be
            missing here; calibration then refuses the single class).

    Returns:
        ``(video path, positive)`` pairs, positives first, each label's files sorted by name.

    Raises:
        ConfigurationError: If `folder` holds neither sub-folder, or holds another folder
            (a misspelled label would silently lose its clips).
    """
    folder = Path(folder)
    others = sorted(
        p.name for p in folder.iterdir() if p.is_dir() and p.name not in LABELS
    )  # fmt: skip
    if others or not any((folder / label).is_dir() for label in LABELS):
        raise ConfigurationError(
            f"A clips folder holds the sub-folders {' and '.join(LABELS)} (videos where the "
            f"instruction is achieved, and where it is not); {folder} holds "
            f"{', '.join(others) or 'neither'}. Rename or move its folders."
        )
    return [
        (path, label == LABELS[0])
        for label in LABELS
        if (folder / label).is_dir()
        for path in sorted((folder / label).glob("*.mp4"))
    ]


def run_examples(
    directory: str | os.PathLike[str], instruction: str | None = None
) -> tuple[list[tuple[Path, bool, TrialRecord]], dict[str, int]]:
    """Lists an evaluation run's videos: successes are positives, failures negatives.

    Args:
        directory: The run directory (``results.jsonl``, ``run.json``, videos).
        instruction: Keep only trials of this instruction; None keeps all.

    Returns:
        ``(video path, positive, record)`` per judged trial in results order, and the
        counts left out: ``crash`` (never judged), ``instruction`` (another one) and, when
        there are any, ``fixed_horizon`` (trials of the paper's protocol: they run on after
        success, so the end of their video is not what the detector judged).

    Raises:
        ResultsError: If the directory holds no results, a judged trial has no video (the
            run was recorded without videos), or a video path leaves the directory.
    """
    directory = Path(directory)
    if not (directory / RESULTS_FILE).is_file():
        raise ResultsError(
            f"{directory} holds no {RESULTS_FILE}; give a run directory written by "
            "`steve1_env.evaluation.runner.evaluate` with videos."
        )
    root = directory.resolve()
    examples = []
    excluded = {"crash": 0, "instruction": 0}
    for record in read_records(directory / RESULTS_FILE):
        if record.outcome == "crash":
            excluded["crash"] += 1
            continue
        if instruction is not None and record.instruction != instruction:
            excluded["instruction"] += 1
            continue
        if record.horizon is not None:
            # It ran on after its success to its horizon: its video's last frames are not what
            # the detector saw when it fired, so its label says nothing about them.
            excluded["fixed_horizon"] = excluded.get("fixed_horizon", 0) + 1
            continue
        if record.video is None:
            raise ResultsError(
                f"Trial {record.key} of {directory} has no video; calibration scores the "
                "videos, so evaluate again with videos recorded (video_dir)."
            )
        path = (directory / record.video).resolve()
        if not path.is_relative_to(root):
            raise ResultsError(
                f"Trial {record.key} of {directory} names the video {record.video!r}, which "
                "is outside the run directory; the results file was edited."
            )
        examples.append((path, record.success, record))
    return examples, excluded


def read_scores(path: str | os.PathLike[str]) -> list[LabelledScore]:
    """Reads a scores file: one JSON object per line, blank lines skipped.

    Each line is ``{"label": "positive"|"negative", "score": number}`` with optional
    ``"instruction"`` and ``"source"`` strings; `LabelledScore.to_json` writes such lines.

    Raises:
        ConfigurationError: If the file is missing, larger than `MAX_SCORES_BYTES`, or a
            line is not such an object (naming the line).
    """
    path = Path(path)
    try:
        data = read_regular_file(
            path, MAX_SCORES_BYTES, "scores file", limit_name="MAX_SCORES_BYTES"
        )
    except OSError as exc:
        raise ConfigurationError(f"Cannot read the scores file {path} ({exc}).") from exc
    examples = []
    for number, line in enumerate(data.split(b"\n"), start=1):
        if not line.strip():
            continue
        where = f"{path} line {number}"
        item = parse_json(line, where, _SCORES_FIX)
        examples.append(_labelled_score(item, where))
    return examples


def _labelled_score(item: Any, where: str) -> LabelledScore:
    if not isinstance(item, Mapping):
        raise ConfigurationError(f"{where} is not a JSON object. {_SCORES_FIX}")
    unknown = sorted(set(item) - {"label", "score", "instruction", "source"})
    label, score = item.get("label"), item.get("score")
    number = _finite_number(score)
    problem = ""
    if unknown:
        problem = f"unknown field(s) {', '.join(unknown)}"
    elif label not in LABELS:
        problem = f"label {label!r} is not positive or negative"
    elif number is None:
        problem = f"score {short_repr(score)} is not a finite number"
    elif any(not isinstance(item.get(k, ""), str) for k in ("instruction", "source")):
        problem = "instruction and source must be strings"
    if problem or number is None:
        raise ConfigurationError(f"{where}: {problem}. {_SCORES_FIX}")
    return LabelledScore(
        score=number,
        positive=label == LABELS[0],
        instruction=item.get("instruction"),
        source=item.get("source"),
    )


def _finite_number(value: Any) -> float | None:
    """The value as a float if it is a finite real number (not a bool), else None."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | float | np.number):
        return None
    try:
        number = float(value)
    except (OverflowError, TypeError):  # an int past float's range; a complex number
        return None
    return number if math.isfinite(number) else None


def _checked_score(scorer: Scorer, clip: np.ndarray, instruction: str, where: str) -> float:
    value = scorer(clip, instruction)
    number = _finite_number(value)
    if number is None:
        raise ConfigurationError(
            f"The scorer returned {short_repr(value)} for {where}; it must return a finite number."
        )
    return number


def calibrate(
    source: str | os.PathLike[str],
    score: Scorer | None = None,
    *,
    instruction: str | None = None,
    frames: int = CLIP_FRAMES,
) -> CalibrationReport:
    """Scores labelled examples and finds the threshold that maximises F1.

    The source's kind is recognised from what it holds: a file is a scores file
    (`read_scores`); a folder with ``run.json`` or ``results.jsonl`` is an evaluation run
    (`run_examples`); a folder with ``positive``/``negative`` sub-folders is labelled clips
    (`clip_folder_examples`).

    Args:
        source: The scores file, run directory or clips folder.
        score: ``score(clip, instruction) -> float`` for clips and runs; unused for a
            scores file.
        instruction: For clips, the instruction they are scored for (required). For a run
            or a scores file, keep only examples of this instruction.
        frames: Frames per clip, taken from the end of each video.

    Raises:
        ConfigurationError: If the source is of no kind above, a clip cannot be read, the
            scorer is missing or returns a non-finite value, or only one label is present.
        ResultsError: If a run directory cannot be read (see `run_examples`).
    """
    path = Path(source)
    if path.is_file():
        read = read_scores(path)
        kept = [e for e in read if instruction is None or e.instruction == instruction]
        excluded = {"instruction": len(read) - len(kept)} if instruction is not None else {}
        _check_instruction_found(path, instruction, kept, excluded)
        return CalibrationReport.from_examples(
            kept, source=str(path), kind="scores", instruction=instruction, excluded=excluded
        )
    if not path.is_dir():
        raise ConfigurationError(
            f"The calibration source {path} does not exist; give a scores file, an "
            "evaluation run directory or a clips folder."
        )
    is_run = (path / CONFIG_FILE).exists() or (path / RESULTS_FILE).exists()
    if score is None:
        raise ConfigurationError(
            f"Scoring the videos of {path} needs a scorer (score=); or give a scores file "
            "of precomputed scores."
        )
    if is_run:
        trials, excluded = run_examples(path, instruction)
        _check_instruction_found(path, instruction, trials, excluded)
        examples = [
            _scored(score, video, positive, record.instruction, record.key, frames)
            for video, positive, record in trials
        ]
        return CalibrationReport.from_examples(
            examples, source=str(path), kind="run", instruction=instruction, excluded=excluded
        )
    if instruction is None:
        raise ConfigurationError(
            f"The clips of {path} carry no instruction; give the instruction they are scored "
            "for (instruction=)."
        )
    examples = [
        _scored(score, video, positive, instruction, str(video.relative_to(path)), frames)
        for video, positive in clip_folder_examples(path)
    ]
    return CalibrationReport.from_examples(
        examples, source=str(path), kind="clips", instruction=instruction
    )


def _check_instruction_found(
    path: Path, instruction: str | None, kept: Sequence[Any], excluded: Mapping[str, int]
) -> None:
    if instruction is not None and not kept and excluded.get("instruction"):
        raise ConfigurationError(
            f"None of the {excluded['instruction']} example(s) of {path} is of the instruction "
            f"{instruction!r}; check its spelling, or leave the instruction out to use all."
        )


def _scored(
    scorer: Scorer, video: Path, positive: bool, instruction: str, name: str, frames: int
) -> LabelledScore:
    clip = read_clip(video, frames)
    value = _checked_score(scorer, clip, instruction, f"the clip {video}")
    return LabelledScore(score=value, positive=positive, instruction=instruction, source=name)
