"""A live progress line for evaluations: trials, tasks, steps and the success rate so far."""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Sequence
from typing import TextIO

from steve1_env.evaluation.records import TrialRecord, TrialSpec


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes:02d}:{seconds:02d}"


class Progress:
    """Shows how far an evaluation is, on one line rewritten in place on a terminal.

    Elsewhere (a log file, CI) it prints one line per finished trial instead.

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
        if self.live and now - self._last_draw > 0.1:
            self._draw()

    def trial_done(self, record: TrialRecord) -> None:
        """Counts a finished trial and redraws."""
        self._count(record)
        self.current = ""
        if self.live:
            self._draw()
        elif self.enabled:
            outcome = record.outcome + _steps_text(record)
            print(f"{self._line()}  <- {record.key}: {outcome}", file=self.stream, flush=True)

    def _line(self) -> str:
        tasks_done = sum(1 for left in self.remaining_per_task.values() if left <= 0)
        rate = f"{100 * self.successes / self.judged:.0f}%" if self.judged else "-"
        elapsed = time.monotonic() - self.started
        ran = self.finished - self.resumed
        eta = ""
        if 0 < ran < self.total - self.resumed:
            eta = f", ~{_clock(elapsed / ran * (self.total - self.finished))} left"
        crashes = f" | crashed {self.crashes}" if self.crashes else ""
        return (
            f"trials {self.finished}/{self.total} | tasks {tasks_done}/{self.tasks_total} | "
            f"success {self.successes}/{self.judged} ({rate}){crashes} | steps {self.steps:,} | "
            f"{_clock(elapsed)}{eta}"
        )

    def _draw(self) -> None:
        self._last_draw = time.monotonic()
        self.stream.write("\r\x1b[2K" + self._line() + self.current)
        self.stream.flush()

    def finish(self) -> None:
        """Ends the live line."""
        if self.live:
            self._draw()
            self.stream.write("\n")
            self.stream.flush()


def _steps_text(record: TrialRecord) -> str:
    # A fixed-horizon trial runs on after its success: say when it succeeded, of how many.
    if not record.steps:
        return ""
    if record.horizon is not None and record.steps_to_success is not None:
        return f" at step {record.steps_to_success} of {record.steps}"
    return f" after {record.steps} steps"
