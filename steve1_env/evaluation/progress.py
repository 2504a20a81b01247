"""Evaluation progress: trials, tasks, steps and the success rate so far.

On a terminal it is a `tqdm` bar; elsewhere (a log file, CI) one plain line per trial.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Sequence
from typing import TextIO

from tqdm import tqdm

from steve1_env.evaluation.records import TrialRecord, TrialSpec


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes:02d}:{seconds:02d}"


class Progress:
    """Shows how far an evaluation is: a `tqdm` bar on a terminal, redrawn in place.

    Elsewhere (a log file, CI) it prints one line per finished trial instead (a bar redrawn
    with carriage returns would be one unreadable line there).

    Args:
        planned: Every trial of the run, including those already recorded.
        done: Records already in the results file (a resumed run).
        stream: Where to write (default: standard error).
        enabled: False prints nothing.
    """

    def __init__(
        self,
        planned: Sequence[TrialSpec],
        done: Sequence[TrialRecord] = (),
        stream: TextIO | None = None,
        enabled: bool = True,
    ) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.live = enabled and self.stream.isatty()
        self.total = len(planned)
        self.remaining_per_task = Counter(spec.task for spec in planned)
        self.tasks_total = len(self.remaining_per_task)
        planned_keys = {spec.key for spec in planned}
        self.finished = self.successes = self.judged = self.crashes = self.steps = 0
        self.resumed = 0
        for record in done:
            if record.key in planned_keys:
                self._count(record)
                self.resumed += 1
        self.started = time.monotonic()
        self.current = ""
        self._last_draw = 0.0
        self._bar: tqdm | None = None
        if self.live:
            # tqdm times the rate from `initial` on: resumed trials do not shorten the ETA.
            self._bar = tqdm(
                total=self.total,
                initial=self.resumed,
                file=self.stream,
                bar_format="trials {n_fmt}/{total_fmt} |{bar:16}| {desc} | {elapsed}<{remaining}",
                dynamic_ncols=True,
                leave=True,
            )
            self._bar.set_description_str(self._status(), refresh=True)

    def _count(self, record: TrialRecord) -> None:
        self.finished += 1
        self.remaining_per_task[record.task] -= 1
        self.steps += record.steps
        if record.outcome == "crash":
            self.crashes += 1
        else:
            self.judged += 1
            self.successes += record.success

    def steps_update(self, spec: TrialSpec, steps: int) -> None:
        """Shows the steps of the trial in progress (drawn at most 10 times a second)."""
        self.current = f" | {spec.task}#{spec.trial} {steps}/{spec.max_steps} steps"
        now = time.monotonic()
        if self._bar is not None and now - self._last_draw > 0.1:
            self._draw()

    def trial_done(self, record: TrialRecord) -> None:
        """Counts a finished trial and redraws."""
        self._count(record)
        self.current = ""
        if self._bar is not None:
            self._bar.set_description_str(self._status(), refresh=False)
            self._bar.update(1)  # counted first, so no state is drawn with the old count
            self._draw()
        elif self.enabled:
            outcome = record.outcome + _steps_text(record)
            print(f"{self._line()}  <- {record.key}: {outcome}", file=self.stream, flush=True)

    def _status(self) -> str:
        tasks_done = sum(1 for left in self.remaining_per_task.values() if left <= 0)
        rate = f"{100 * self.successes / self.judged:.0f}%" if self.judged else "-"
        crashes = f" | crashed {self.crashes}" if self.crashes else ""
        return (
            f"tasks {tasks_done}/{self.tasks_total} | success {self.successes}/{self.judged} "
            f"({rate}){crashes} | steps {self.steps:,}"
        )

    def _line(self) -> str:
        elapsed = time.monotonic() - self.started
        ran = self.finished - self.resumed
        eta = ""
        if 0 < ran < self.total - self.resumed:
            eta = f", ~{_clock(elapsed / ran * (self.total - self.finished))} left"
        return f"trials {self.finished}/{self.total} | {self._status()} | {_clock(elapsed)}{eta}"

    def _draw(self) -> None:
        assert self._bar is not None
        self._last_draw = time.monotonic()
        self._bar.set_description_str(self._status() + self.current, refresh=True)

    def finish(self) -> None:
        """Ends the bar (its last state stays on the terminal)."""
        if self._bar is not None:
            self._draw()
            self._bar.close()
            self._bar = None


def _steps_text(record: TrialRecord) -> str:
    # A fixed-horizon trial runs on after its success: say when it succeeded, of how many.
    if not record.steps:
        return ""
    if record.horizon is not None and record.steps_to_success is not None:
        return f" at step {record.steps_to_success} of {record.steps}"
    return f" after {record.steps} steps"
