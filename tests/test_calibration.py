"""Calibration of a score threshold: statistics, sources, reports and the CLI."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from steve1_env.cli import main
from steve1_env.errors import ConfigurationError, ResultsError
from steve1_env.evaluation.calibration import (
    CLIP_FRAMES,
    CalibrationReport,
    LabelledScore,
    best_f1_threshold,
    calibrate,
    read_clip,
    read_scores,
    roc_curve,
    score_summary,
)
from steve1_env.evaluation.calibration_report import render_html, write_calibration_report
from steve1_env.evaluation.records import TrialRecord
from steve1_env.evaluation.results import ResultsStore
from steve1_env.evaluation.video import VideoWriter


def brute_force_best(scores, positive):
    """Best F1 over every candidate threshold (each score), the highest threshold on ties."""
    best = None
    for cut in sorted(set(scores), reverse=True):
        tp = sum(1 for s, p in zip(scores, positive, strict=True) if s >= cut and p)
        fp = sum(1 for s, p in zip(scores, positive, strict=True) if s >= cut and not p)
        fn = sum(positive) - tp
        f1 = Fraction(2 * tp, 2 * tp + fp + fn)
        if best is None or f1 > best[1]:
            best = (cut, f1)
    return best


def brute_force_auc(scores, positive):
    pos = [s for s, p in zip(scores, positive, strict=True) if p]
    neg = [s for s, p in zip(scores, positive, strict=True) if not p]
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in pos for b in neg)
    return wins / (len(pos) * len(neg))


def classify(scores, threshold, strict=False):
    return [s > threshold if strict else s >= threshold for s in scores]


def test_separable_scores_get_a_threshold_between_the_classes():
    negatives = [0.05, 0.1, 0.2, 0.3]
    positives = [0.6, 0.7, 0.9]
    scores = negatives + positives
    positive = np.array([False] * 4 + [True] * 3)
    choice = best_f1_threshold(scores, positive)
    assert choice.cut == 0.6
    assert 0.3 < choice.threshold < 0.6
    assert (choice.f1, choice.precision, choice.recall) == (1.0, 1.0, 1.0)
    assert (choice.true_positives, choice.false_positives) == (3, 0)
    assert (choice.false_negatives, choice.true_negatives) == (0, 4)
    assert roc_curve(scores, positive).auc == 1.0


@pytest.mark.parametrize("seed", range(6))
def test_overlapping_scores_get_the_brute_force_best_threshold(seed):
    rng = np.random.default_rng(seed)
    # Rounded so that ties across and within classes occur.
    positives = np.round(rng.normal(0.6, 0.15, 40), 2)
    negatives = np.round(rng.normal(0.45, 0.15, 60), 2)
    scores = [float(s) for s in np.concatenate([positives, negatives])]
    positive = [True] * 40 + [False] * 60
    cut, f1 = brute_force_best(scores, positive)
    choice = best_f1_threshold(scores, np.array(positive))
    assert choice.cut == cut
    assert choice.f1 == pytest.approx(float(f1), abs=1e-12)
    assert f1 < 1  # the classes overlap: no threshold is perfect
    # The threshold classifies the examples as the cut does, under ">=" and ">" alike.
    assert classify(scores, choice.threshold) == classify(scores, cut)
    assert classify(scores, choice.threshold, strict=True) == classify(scores, cut)
    predicted = classify(scores, choice.threshold)
    tp = sum(p and q for p, q in zip(predicted, positive, strict=True))
    assert choice.precision == pytest.approx(tp / sum(predicted))
    assert choice.recall == pytest.approx(tp / 40)
    assert roc_curve(scores, np.array(positive)).auc == pytest.approx(
        brute_force_auc(scores, positive)
    )


def test_equal_f1_prefers_the_higher_threshold():
    # cut 0.9: TP 1, FP 0, FN 1 -> F1 2/3; cut 0.5: TP 2, FP 2, FN 0 -> F1 2/3.
    scores = [0.9, 0.5, 0.5, 0.5]
    positive = np.array([True, True, False, False])
    assert best_f1_threshold(scores, positive).cut == 0.9


def test_everything_positive_threshold_still_passes_the_lowest_score():
    scores = [0.5, 0.5, 0.5]
    choice = best_f1_threshold(scores, np.array([True, True, False]))
    assert choice.cut == 0.5
    assert choice.threshold < 0.5
    assert all(classify(scores, choice.threshold, strict=True))


def test_roc_on_known_cases():
    roc = roc_curve([0.1, 0.4, 0.35, 0.8], np.array([False, False, True, True]))
    assert roc.thresholds == [0.8, 0.4, 0.35, 0.1]
    assert roc.tpr == [0.5, 0.5, 1.0, 1.0]
    assert roc.fpr == [0.0, 0.5, 0.5, 1.0]
    assert roc.auc == 0.75
    # Reversed: every negative above every positive.
    assert roc_curve([0.9, 0.1], np.array([False, True])).auc == 0.0
    # All tied: one point, the diagonal, area one half.
    tied = roc_curve([0.3] * 4, np.array([True, False, True, False]))
    assert (tied.thresholds, tied.tpr, tied.fpr, tied.auc) == ([0.3], [1.0], [1.0], 0.5)


@pytest.mark.parametrize(
    ("scores", "positive", "match"),
    [
        ([0.1, 0.2], [True, True], "both positive and negative"),
        ([0.1, 0.2], [False, False], "both positive and negative"),
        ([], [], "both positive and negative"),
        ([0.1, float("nan")], [True, False], "finite"),
        ([0.1, 0.2], [True], "same length"),
        ([0.1, 0.2], [1, 0], "booleans"),
    ],
)
def test_degenerate_inputs_are_clear_errors(scores, positive, match):
    for function in (roc_curve, best_f1_threshold):
        with pytest.raises(ConfigurationError, match=match):
            function(scores, np.array(positive))


def test_score_summary():
    summary = score_summary([1.0, 2.0, 3.0, 4.0, 5.0])
    assert summary == {
        "count": 5, "min": 1.0, "q1": 2.0, "median": 3.0, "q3": 4.0, "max": 5.0, "mean": 3.0
    }  # fmt: skip
    assert score_summary([])["count"] == 0
    assert score_summary([])["median"] is None


def test_report_json_round_trips_its_examples_through_a_scores_file(tmp_path):
    examples = [
        LabelledScore(0.9, True, "chop a tree", "a.mp4"),
        LabelledScore(0.2, False, "chop a tree", "b.mp4"),
        LabelledScore(0.4, False, "chop a tree"),
    ]
    report = CalibrationReport.from_examples(examples, source="x")
    data = json.loads(json.dumps(report.to_json(), allow_nan=False))
    assert data["instruction"] == "chop a tree"
    assert data["distributions"]["positive"]["count"] == 1
    assert data["best"]["threshold"] == pytest.approx(0.65)
    path = tmp_path / "scores.jsonl"
    path.write_text("\n".join(json.dumps(e) for e in data["examples"]) + "\n")
    assert read_scores(path) == examples


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ('{"label": "yes", "score": 0.5}', "not positive or negative"),
        ('{"label": "positive", "score": "high"}', "not a finite number"),
        ('{"label": "positive", "score": true}', "not a finite number"),
        ('{"label": "positive", "score": 1e999}', "not a finite number"),
        ('{"label": "positive", "score": 1' + "0" * 400 + "}", "not a finite number"),
        ('{"label": "positive", "score": 0.5, "extra": 1}', "unknown field"),
        ("[1, 2]", "not a JSON object"),
        ("{oops", "not valid JSON"),
    ],
)
def test_bad_scores_lines_name_the_line(tmp_path, line, match):
    path = tmp_path / "scores.jsonl"
    path.write_text('{"label": "negative", "score": 0.1}\n' + line + "\n")
    with pytest.raises(ConfigurationError, match=match) as caught:
        read_scores(path)
    assert "line 2" in str(caught.value)


# --------------------------------------------------------------------------------------------
# Videos


def write_video(path: Path, brightness: list[int], size: tuple[int, int] = (32, 48)) -> Path:
    writer = VideoWriter(path)
    for value in brightness:
        writer.write(np.full((*size, 3), value, dtype=np.uint8))
    assert writer.close() == path
    return path


def brightness_score(calls: list[tuple[tuple[int, ...], str]]):
    def score(clip: np.ndarray, instruction: str) -> float:
        calls.append((clip.shape, instruction))
        assert clip.dtype == np.uint8
        return np.float32(clip.mean() / 255)  # numpy scalars are numbers too

    return score


def test_read_clip_keeps_the_last_16_frames(tmp_path):
    # 10 dark frames, then 16 bright: only the bright end is the clip.
    path = write_video(tmp_path / "v.mp4", [10] * 10 + [200] * CLIP_FRAMES)
    clip = read_clip(path)
    assert clip.shape == (CLIP_FRAMES, 32, 48, 3)
    assert clip.dtype == np.uint8
    assert abs(float(clip.mean()) - 200) < 8  # mp4 is lossy
    assert abs(float(read_clip(path, frames=26)[0].mean()) - 10) < 8


def test_read_clip_refuses_short_unreadable_and_missing_videos(tmp_path):
    short = write_video(tmp_path / "short.mp4", [100] * 5)
    with pytest.raises(ConfigurationError, match="5 decodable frame"):
        read_clip(short)
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 10)
    with pytest.raises(ConfigurationError, match="decod"):
        read_clip(junk)
    with pytest.raises(ConfigurationError, match="Cannot read"):
        read_clip(tmp_path / "missing.mp4")
    with pytest.raises(ConfigurationError, match="not a regular file"):
        read_clip(tmp_path)


def test_read_clip_refuses_too_many_frames_before_decoding_them_all(tmp_path, monkeypatch):
    import steve1_env.prompt.visual_goals as calibration  # where the clip reader lives

    path = write_video(tmp_path / "v.mp4", [100] * 40)
    monkeypatch.setattr(calibration, "MAX_VIDEO_FRAMES", 20)
    with pytest.raises(ConfigurationError, match="more than 20 frames"):
        read_clip(path)
    monkeypatch.setattr(calibration, "MAX_VIDEO_FRAMES", 100)
    monkeypatch.setattr(calibration, "MAX_CLIP_PIXELS", 100)
    with pytest.raises(ConfigurationError, match="pixels per frame"):
        read_clip(path)


def test_calibrate_a_clips_folder(tmp_path):
    for i, value in enumerate([180, 200, 220]):
        write_video(tmp_path / "clips" / "positive" / f"{i}.mp4", [value] * CLIP_FRAMES)
    for i, value in enumerate([20, 60, 90, 120]):
        write_video(tmp_path / "clips" / "negative" / f"{i}.mp4", [0] * 5 + [value] * 16)
    calls: list = []
    report = calibrate(tmp_path / "clips", brightness_score(calls), instruction="chop a tree")
    assert calls == [((CLIP_FRAMES, 32, 48, 3), "chop a tree")] * 7
    assert report.kind == "clips"
    assert report.instruction == "chop a tree"
    assert [e.source for e in report.examples][:2] == ["positive/0.mp4", "positive/1.mp4"]
    assert report.best.f1 == 1.0
    assert 120 / 255 < report.best.threshold < 180 / 255
    assert report.distributions["negative"]["count"] == 4


def test_clips_folder_errors(tmp_path):
    score = brightness_score([])
    write_video(tmp_path / "clips" / "positive" / "a.mp4", [200] * CLIP_FRAMES)
    with pytest.raises(ConfigurationError, match="instruction"):
        calibrate(tmp_path / "clips", score)
    with pytest.raises(ConfigurationError, match="scorer"):
        calibrate(tmp_path / "clips", instruction="x")
    with pytest.raises(ConfigurationError, match="both positive and negative"):
        calibrate(tmp_path / "clips", score, instruction="x")
    (tmp_path / "clips" / "negatives").mkdir()
    with pytest.raises(ConfigurationError, match="negatives"):
        calibrate(tmp_path / "clips", score, instruction="x")
    with pytest.raises(ConfigurationError, match="does not exist"):
        calibrate(tmp_path / "nowhere", score)


_REASONS = {"success": "success", "failure": "budget", "crash": "crash"}


def trial(index: int, outcome: str, instruction: str, video: str | None) -> TrialRecord:
    steps = 40
    return TrialRecord(
        task="wood", instruction=instruction, instruction_index=0, trial=index,
        seed=index, outcome=outcome, reason=_REASONS[outcome], steps=steps,
        steps_to_success=steps if outcome == "success" else None, max_steps=3000,
        detector=None, detector_spec="inventory", crashes=1 if outcome == "crash" else 0,
        errors=["boom"] if outcome == "crash" else [], high_level_steps=1, inventory={},
        duration_s=1.0, worker="local", finished_at="2026-01-01T00:00:00+00:00", video=video,
    )  # fmt: skip


def make_run(directory: Path, with_videos: bool = True) -> Path:
    plan = [
        ("success", "chop a tree", 210), ("success", "chop a tree", 190),
        ("failure", "chop a tree", 40), ("failure", "chop a tree", 90),
        ("crash", "chop a tree", None), ("success", "get dirt", 30),
    ]  # fmt: skip
    with ResultsStore(directory, {"world": "synthetic"}, resume=False) as store:
        for i, (outcome, instruction, value) in enumerate(plan):
            video = None
            if value is not None and with_videos:
                video = f"videos/wood/0-{i}.mp4"
                write_video(directory / video, [value] * 20)
            store.append(trial(i, outcome, instruction, video))
    return directory


def test_calibrate_an_evaluation_run(tmp_path):
    run = make_run(tmp_path / "run")
    calls: list = []
    report = calibrate(run, brightness_score(calls))
    assert report.kind == "run"
    assert report.excluded == {"crash": 1, "instruction": 0}
    assert [e.positive for e in report.examples] == [True, True, False, False, True]
    assert [c[1] for c in calls] == ["chop a tree"] * 4 + ["get dirt"]
    assert report.examples[0].source == "wood/0/0"
    assert report.instruction is None
    # "get dirt" scored dark but succeeded: with it, no threshold is perfect.
    assert report.best.f1 < 1.0

    with pytest.raises(ConfigurationError, match="None of the 5 example"):
        calibrate(run, brightness_score([]), instruction="chop a tre")
    only = calibrate(run, brightness_score([]), instruction="chop a tree")
    assert only.excluded == {"crash": 1, "instruction": 1}
    assert only.instruction == "chop a tree"
    assert only.best.f1 == 1.0
    assert 90 / 255 < only.best.threshold < 190 / 255


def test_fixed_horizon_trials_are_left_out_of_a_run_calibration(tmp_path):
    # A fixed-horizon trial succeeded at some step and ran on to its horizon: the last 16
    # frames of its video are not what its detector saw, so it was a mislabelled positive.
    import dataclasses

    run = tmp_path / "run"
    with ResultsStore(run, {"world": "synthetic"}, resume=False) as store:
        for i, (outcome, value) in enumerate([("success", 210), ("failure", 40)]):
            write_video(run / f"videos/wood/0-{i}.mp4", [value] * 20)
            store.append(trial(i, outcome, "chop a tree", f"videos/wood/0-{i}.mp4"))
        write_video(run / "videos/wood/0-2.mp4", [10] * 20)
        ran_on = trial(2, "success", "chop a tree", "videos/wood/0-2.mp4")
        store.append(
            dataclasses.replace(
                ran_on, reason="budget", steps=3000, steps_to_success=12, horizon=3000
            )
        )
    report = calibrate(run, brightness_score([]))
    assert report.excluded == {"crash": 0, "instruction": 0, "fixed_horizon": 1}
    assert [e.source for e in report.examples] == ["wood/0/0", "wood/0/1"]


def test_run_without_videos_or_with_escaping_paths_is_refused(tmp_path):
    run = make_run(tmp_path / "novideo", with_videos=False)
    with pytest.raises(ResultsError, match="has no video"):
        calibrate(run, brightness_score([]))
    escaping = tmp_path / "escaping"
    write_video(tmp_path / "outside.mp4", [100] * 20)
    with ResultsStore(escaping, {"world": "synthetic"}, resume=False) as store:
        store.append(trial(0, "success", "x", "../outside.mp4"))
    with pytest.raises(ResultsError, match="outside the run directory"):
        calibrate(escaping, brightness_score([]))


def test_bad_scorer_values_are_clear_errors(tmp_path):
    run = make_run(tmp_path / "run")
    for value in (float("nan"), "0.5", None, True):
        with pytest.raises(ConfigurationError, match="finite number"):
            calibrate(run, lambda clip, text, v=value: v)


# --------------------------------------------------------------------------------------------
# Reports and the CLI


def overlapping_examples() -> list[LabelledScore]:
    scores = [0.9, 0.8, 0.55, 0.3, 0.6, 0.4, 0.2, 0.1]
    labels = [True] * 4 + [False] * 4
    return [
        LabelledScore(s, p, "kill a <cow>", f"clip {i}")
        for i, (s, p) in enumerate(zip(scores, labels, strict=True))
    ]


def test_html_report_holds_the_roc_svg_and_escapes_text(tmp_path):
    report = CalibrationReport.from_examples(overlapping_examples(), source="s.jsonl")
    page = render_html(report)
    assert page.count("<svg") == 2
    assert "<polyline" in page and "ROC curve" in page
    # The curve: (0,0) then one point per distinct score.
    points = page.split("<polyline")[1].split('points="')[1].split('"')[0].split()
    assert len(points) == 1 + len(report.roc.thresholds)
    assert "kill a &lt;cow&gt;" in page and "<cow>" not in page
    assert "http" not in page.replace("http-equiv", "")  # self-contained
    paths = write_calibration_report(tmp_path / "out", report)
    assert {p.name for p in paths.values()} == {
        "calibration.json", "calibration.md", "calibration.html"
    }  # fmt: skip
    saved = json.loads(paths["json"].read_text())
    assert saved["best"] == report.best.to_json()
    assert "| positive | 4 |" in paths["markdown"].read_text()


def test_cli_scores_mode_end_to_end(tmp_path, capsys):
    scores = tmp_path / "scores.jsonl"
    scores.write_text("".join(json.dumps(e.to_json()) + "\n" for e in overlapping_examples()))
    out = tmp_path / "report"
    assert main(["calibrate", "--scores", str(scores), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    expected_cut, f1 = brute_force_best(
        [e.score for e in overlapping_examples()], [e.positive for e in overlapping_examples()]
    )
    saved = json.loads((out / "calibration.json").read_text())
    assert saved["best"]["cut"] == expected_cut
    assert saved["best"]["f1"] == pytest.approx(float(f1))
    assert f"F1 {float(f1):.3f}" in printed
    assert "<svg" in (out / "calibration.html").read_text()

    assert main(["calibrate", "--scores", str(scores), "--instruction", "other"]) == 2
    assert "None of the 8 example(s)" in capsys.readouterr().err


def test_cli_clip_modes_load_mineclip_from_the_weights(tmp_path, capsys):
    run = make_run(tmp_path / "run")
    missing = tmp_path / "no-weights"
    missing.mkdir()
    code = main(["calibrate", str(run), "--out", str(tmp_path / "out"), "--weights", str(missing)])
    assert code == 2
    assert "attn.pth" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_clips_calibrate_with_the_mineclip_scorer(tmp_path, golden, tiny_configs):
    from steve1_env.prompt.mineclip_score import build_mineclip_scorer

    video, text = tiny_configs
    scorer = build_mineclip_scorer(
        weights=golden / "mineclip_video_tiny.pth", config=video, text_config=text
    )
    for i, value in enumerate([180, 200]):
        write_video(tmp_path / "clips" / "positive" / f"{i}.mp4", [value] * CLIP_FRAMES)
    for i, value in enumerate([20, 60]):
        write_video(tmp_path / "clips" / "negative" / f"{i}.mp4", [value] * CLIP_FRAMES)
    report = calibrate(tmp_path / "clips", scorer.score_clip, instruction="get dirt")
    scores = [example.score for example in report.examples]
    assert len(scores) == 4 and all(0.0 < score < 1.0 for score in scores)
    assert scorer.frames_encoded == 4 * CLIP_FRAMES
