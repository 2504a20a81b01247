"""Writing a `CalibrationReport` as three files: JSON, Markdown and HTML with an ROC curve.

The HTML page is self-contained like the evaluation report (inline CSS and SVG drawn with the
same helpers, no scripts): the ROC curve with the chosen threshold marked, and a strip of
every example's score per label with the threshold as a line.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from steve1_env.errors import ResultsError
from steve1_env.evaluation.calibration import LABELS, CalibrationReport
from steve1_env.evaluation.report import (
    _AXIS,
    _CSS,
    _DOT,
    _GRID,
    _MEDIAN,
    _f,
    _h,
    _html_table,
    _line,
    _md,
    _md_table,
    _svg_open,
    _text,
    _tip,
)
from steve1_env.files import atomic_write_text, make_folder

__all__ = ["CALIBRATION_TITLE", "render_html", "render_markdown", "write_calibration_report"]

CALIBRATION_TITLE = "Score threshold calibration"

_CAVEAT = (
    "A threshold holds only for the weights, negative prompts and kind of footage that "
    "produced these scores; calibrate again when any of them changes."
)
_DISTRIBUTION_COLUMNS = ("Label", "Count", "Min", "Q1", "Median", "Q3", "Max", "Mean")
_CURVE = 'fill="none" stroke="#4e79a7" stroke-width="2"'
_CHANCE = 'stroke="#9aa4ad" stroke-width="1" stroke-dasharray="4 4"'
_NEGATIVE_DOT = 'fill="#e15759" fill-opacity="0.65"'


def _score(value: float | None) -> str:
    return "—" if value is None else f"{value:.4g}"


def _instruction(report: CalibrationReport) -> str:
    if report.instruction is not None:
        return report.instruction
    return "several" if any(e.instruction for e in report.examples) else "not recorded"


def _overview(report: CalibrationReport) -> list[tuple[str, str]]:
    best = report.best
    rows = [
        ("Source", f"{report.source} ({report.kind})"),
        ("Instruction", _instruction(report)),
        ("Examples", f"{best.true_positives + best.false_negatives} positive, "
         f"{best.false_positives + best.true_negatives} negative"),
        ("Threshold (best F1)", f"score >= {best.threshold:.6g}"),
        ("F1", f"{best.f1:.3f}"),
        ("Precision", f"{best.precision:.3f}"),
        ("Recall", f"{best.recall:.3f}"),
        ("ROC AUC", f"{report.roc.auc:.3f}"),
    ]  # fmt: skip
    left_out = ", ".join(f"{n} ({why})" for why, n in report.excluded.items() if n)
    if left_out:
        rows.append(("Left out", left_out))
    return rows


def _distribution_rows(report: CalibrationReport) -> list[list[str]]:
    rows = []
    for label in LABELS:
        row = report.distributions[label]
        stats = [_score(row[k]) for k in ("min", "q1", "median", "q3", "max", "mean")]
        rows.append([label, str(row["count"]), *stats])
    return rows


def render_markdown(report: CalibrationReport) -> str:
    """Renders a calibration report as Markdown: overview and score distributions."""
    parts = [f"# {CALIBRATION_TITLE}", ""]
    parts += [f"- **{name}**: {_md(value)}" for name, value in _overview(report)]
    parts += ["", _md(_CAVEAT), "", "## Scores by label", ""]
    parts.append(_md_table(_DISTRIBUTION_COLUMNS, _distribution_rows(report), bold_last=False))
    return "\n".join(parts) + "\n"


def _roc_chart(report: CalibrationReport) -> str:
    """The ROC curve on a unit square, the chance diagonal dashed, the chosen point marked."""
    side, left, top, right, bottom = 300.0, 56.0, 16.0, 16.0, 48.0
    width, height = left + side + right, top + side + bottom

    def x(rate: float) -> float:
        return left + side * rate

    def y(rate: float) -> float:
        return top + side * (1.0 - rate)

    parts = [_svg_open(width, height, f"ROC curve, area {report.roc.auc:.3f}")]
    for tick in range(0, 11, 2):
        rate = tick / 10
        parts.append(_line(x(0), y(rate), x(1), y(rate), _GRID))
        parts.append(_line(x(rate), y(0), x(rate), y(1), _GRID))
        parts.append(_text(left - 6, y(rate) + 4, f"{rate:.1f}", anchor="end"))
        parts.append(_text(x(rate), y(0) + 16, f"{rate:.1f}"))
    parts.append(_line(x(0), y(0), x(1), y(1), _CHANCE, "chance"))
    roc = report.roc
    points = [(0.0, 0.0), *zip(roc.fpr, roc.tpr, strict=True)]
    path = " ".join(f"{_f(x(fp))},{_f(y(tp))}" for fp, tp in points)
    parts.append(f'<polyline {_CURVE} points="{path}">{_tip(f"AUC {roc.auc:.3f}")}</polyline>')
    best = report.best
    negatives = best.false_positives + best.true_negatives
    fpr = best.false_positives / negatives
    tip = (
        f"threshold {best.threshold:.6g}: recall {best.recall:.3f}, false positive rate "
        f"{fpr:.3f}, precision {best.precision:.3f}, F1 {best.f1:.3f}"
    )
    parts.append(
        f'<circle fill="#e15759" cx="{_f(x(fpr))}" cy="{_f(y(best.recall))}" r="5">'
        f"{_tip(tip)}</circle>"
    )
    parts.append(_line(x(0), y(0), x(1), y(0), _AXIS))
    parts.append(_line(x(0), y(0), x(0), y(1), _AXIS))
    parts.append(_text(x(0.5), y(0) + 36, "False positive rate"))
    parts.append(
        f'<text transform="translate({_f(left - 40)},{_f(y(0.5))}) rotate(-90)" '
        'text-anchor="middle">True positive rate</text>'
    )
    parts.append("</svg>")
    return "\n".join(parts)


def _strip_chart(report: CalibrationReport) -> str:
    """A row of dots per label at each example's score; the threshold as a vertical line."""
    row_h, plot_w, left, top, right, bottom = 40.0, 520.0, 80.0, 12.0, 24.0, 40.0
    scores = [e.score for e in report.examples] + [report.best.threshold]
    low, high = min(scores), max(scores)
    span = (high - low) or 1.0
    width, plot_bottom = left + plot_w + right, top + row_h * len(LABELS)

    def x(value: float) -> float:
        return left + plot_w * (value - low) / span

    parts = [_svg_open(width, plot_bottom + bottom, "Scores per label with the threshold")]
    for i, label in enumerate(LABELS):
        cy = top + row_h * (i + 0.5)
        parts.append(_text(left - 8, cy + 4, label, anchor="end"))
        style = _DOT if label == LABELS[0] else _NEGATIVE_DOT
        chosen = [e for e in report.examples if e.label == label]
        for j, example in enumerate(chosen):
            jitter = ((j * 5) % 7 - 3) * 2.0  # fixed spread keeps equal scores apart
            tip = f"{example.source or label}: {example.score:.6g}"
            parts.append(
                f'<circle {style} cx="{_f(x(example.score))}" cy="{_f(cy + jitter)}" r="3.5">'
                f"{_tip(tip)}</circle>"
            )
    threshold = report.best.threshold
    parts.append(
        _line(x(threshold), top, x(threshold), plot_bottom, _MEDIAN, f"threshold {threshold:.6g}")
    )
    parts.append(_line(left, plot_bottom, left + plot_w, plot_bottom, _AXIS))
    parts.append(_text(left, plot_bottom + 16, f"{low:.4g}"))
    parts.append(_text(left + plot_w, plot_bottom + 16, f"{high:.4g}"))
    parts.append(_text(left + plot_w / 2, plot_bottom + 32, "Score"))
    parts.append("</svg>")
    return "\n".join(parts)


def render_html(report: CalibrationReport) -> str:
    """Renders a calibration report as one self-contained HTML page.

    Returns:
        The page: overview (threshold, precision, recall, AUC), the score distribution per
        label, the ROC curve as inline SVG, and a strip of every score with the threshold.
        All text from the examples is HTML-escaped.
    """
    body = [f"<h1>{_h(CALIBRATION_TITLE)}</h1>", '<dl class="overview">']
    body += [f"<div><dt>{_h(k)}</dt><dd>{_h(v)}</dd></div>" for k, v in _overview(report)]
    body += ["</dl>", f'<p class="note">{_h(_CAVEAT)}</p>', "<h2>Scores by label</h2>"]
    numeric = set(range(1, len(_DISTRIBUTION_COLUMNS)))
    body.append(_html_table(_DISTRIBUTION_COLUMNS, _distribution_rows(report), numeric, False))
    body += [
        "<figure>",
        _strip_chart(report),
        "<figcaption>Each dot is one example's score (blue: positive, red: negative); the "
        "red line is the threshold maximising F1.</figcaption>",
        "</figure>",
        "<h2>ROC curve</h2>",
        "<figure>",
        _roc_chart(report),
        f"<figcaption>True against false positive rate for every threshold (area "
        f"{report.roc.auc:.3f}); the dot is the threshold maximising F1, the dashed line "
        "chance.</figcaption>",
        "</figure>",
    ]
    head = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_h(CALIBRATION_TITLE)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
    )
    return head + "\n".join(body) + "\n</body>\n</html>\n"


def write_calibration_report(
    directory: str | os.PathLike[str], report: CalibrationReport
) -> dict[str, Path]:
    """Writes ``calibration.json``, ``calibration.md`` and ``calibration.html`` into `directory`.

    Each file is written atomically (a temporary file, then a rename).

    Args:
        directory: Where to write; created if missing.
        report: What `steve1_env.evaluation.calibration.calibrate` returned.

    Returns:
        ``{"json": path, "markdown": path, "html": path}``.

    Raises:
        ResultsError: If the folder or a file cannot be written.
    """
    data: dict[str, Any] = report.to_json()
    texts = {
        "json": (
            "calibration.json",
            json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False) + "\n",
        ),
        "markdown": ("calibration.md", render_markdown(report)),
        "html": ("calibration.html", render_html(report)),
    }
    folder = make_folder(directory, "the calibration report folder", error=ResultsError)
    paths = {}
    for kind, (name, text) in texts.items():
        paths[kind] = folder / name
        atomic_write_text(paths[kind], text, f"the {kind} calibration report", error=ResultsError)
    return paths
