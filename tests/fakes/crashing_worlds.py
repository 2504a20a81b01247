"""Synthetic worlds that fail on purpose, importable by worker processes and Ray actors.

Each failure happens once per marker file: the first process to see the trigger creates the
marker and fails, every later attempt (a retry) runs normally. Marker files live where the
test says, so runs never share them.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from steve1_env.worlds.base import WorldStep
from steve1_env.worlds.synthetic import SyntheticWorld


def _first_time(marker_dir: str, name: str) -> bool:
    try:
        fd = os.open(Path(marker_dir) / name, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.close(fd)
    return True


def _count(marker_dir: str, prefix: str) -> int:
    """Returns 1, 2, ... across all processes sharing `marker_dir`."""
    number = 1
    while not _first_time(marker_dir, f"{prefix}-{number}"):
        number += 1
    return number


class DyingWorld(SyntheticWorld):
    """Kills its whole process (like a segfaulting simulator) at the `die_at`-th reset.

    Resets are counted over every process sharing `marker_dir`, so exactly one dies.
    """

    def __init__(self, marker_dir: str, die_at: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.marker_dir, self.die_at = marker_dir, die_at

    def reset(self, seed: int | None = None) -> dict[str, Any]:
        if _count(self.marker_dir, "reset") == self.die_at:
            os._exit(3)
        return super().reset(seed)


class AlwaysDyingWorld(SyntheticWorld):
    """Kills its process on every reset for `instruction`'s trials' seed: they never finish.

    The env draws the world seed from the trial seed, so the world is told which world seed
    to die on (`die_on_world_seed`).
    """

    def __init__(self, die_on_world_seed: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.die_on_world_seed = die_on_world_seed

    def reset(self, seed: int | None = None) -> dict[str, Any]:
        if seed == self.die_on_world_seed:
            os._exit(3)
        return super().reset(seed)


class SocketErrorWorld(SyntheticWorld):
    """Reports a socket error (as MineRL does) after `after` steps, `times` times in all."""

    def __init__(self, marker_dir: str, after: int = 5, times: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.marker_dir, self.after, self.times = marker_dir, after, times
        self.ticks = 0

    def reset(self, seed: int | None = None) -> dict[str, Any]:
        self.ticks = 0
        return super().reset(seed)

    def step(self, action: Any) -> WorldStep:
        self.ticks += 1
        if self.ticks == self.after:
            for index in range(self.times):
                if _first_time(self.marker_dir, f"socket-{index}"):
                    return WorldStep(super().reset(999), True, {"error": "SocketException"})
        return super().step(action)


class SlowWorld(SyntheticWorld):
    """Sleeps `step_delay` seconds per step, so a test can interrupt a run part-way."""

    def __init__(self, step_delay: float = 0.002, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.step_delay = step_delay

    def step(self, action: Any) -> WorldStep:
        time.sleep(self.step_delay)
        return super().step(action)


class StepDyingWorld(SyntheticWorld):
    """Kills its process on its `die_at`-th step (counted over the run via `marker_dir`)."""

    def __init__(self, marker_dir: str, die_at: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.marker_dir, self.die_at = marker_dir, die_at

    def step(self, action: Any) -> WorldStep:
        if _count(self.marker_dir, "step") == self.die_at:
            os._exit(3)
        return super().step(action)


class HangingWorld(SyntheticWorld):
    """Hangs (sleeps for an hour) on its `hang_at`-th step, counted over the run."""

    def __init__(self, marker_dir: str, hang_at: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.marker_dir, self.hang_at = marker_dir, hang_at

    def step(self, action: Any) -> WorldStep:
        if _count(self.marker_dir, "step") == self.hang_at:
            time.sleep(3600)
        return super().step(action)
