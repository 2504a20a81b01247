"""Objects for `steve1_env.workers.WorkerProcess` tests, importable by the spawned children."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any


class Unpicklable(Exception):
    """An error whose constructor needs two arguments: it does not unpickle as itself."""

    def __init__(self, a: str, b: str) -> None:
        super().__init__(f"{a}/{b}")


class Echo:
    """Answers calls; writes ``closed`` into `marker_dir` (if given) when closed."""

    def __init__(self, marker_dir: str | None = None, build_delay: float = 0.0) -> None:
        time.sleep(build_delay)
        self.marker_dir = marker_dir

    def echo(self, value: Any, suffix: str = "") -> Any:
        return f"{value}{suffix}" if suffix else value

    def sleep(self, seconds: float, value: Any = None) -> Any:
        time.sleep(seconds)
        return value

    def pid(self) -> int:
        return os.getpid()

    def fail(self, kind: str) -> None:
        if kind == "value":
            raise ValueError("bad value")
        if kind == "unpicklable":
            raise Unpicklable("first", "second")
        os._exit(7)

    def close(self) -> None:
        if self.marker_dir is not None:
            (Path(self.marker_dir) / "closed").write_text("yes")


def broken(reason: str) -> Any:
    """A build that fails."""
    raise ValueError(f"cannot build: {reason}")
