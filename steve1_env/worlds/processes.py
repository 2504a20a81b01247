"""Processes around worlds: finding and killing simulators.

MineRL launches Minecraft as a Java child process; after a crash or a hang it must be killed,
with everything it started, before a new world is made, or it keeps its memory and ports. (The
processes this package spawns itself are `steve1_env.workers.WorkerProcess` children: they close
their worlds on SIGTERM and die with their parent, so no simulator outlives a run.)
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def child_processes(parent: int | None = None) -> set[int]:
    """Returns the pids of every descendant of `parent` (default: this process)."""
    parent = os.getpid() if parent is None else parent
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # The field after the ")" that closes the command name is the state, then the ppid.
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # the process ended while we looked
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: set[int] = set()
    stack = [parent]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def kill_processes(pids: set[int], grace: float = 2.0) -> None:
    """Sends SIGTERM, waits up to `grace` seconds, then SIGKILLs what is left; reaps children."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = {pid for pid in pids if _signal(pid, sig)}
        deadline = time.monotonic() + (grace if sig == signal.SIGTERM else 1.0)
        while alive and time.monotonic() < deadline:
            alive = {pid for pid in alive if _running(pid)}
            time.sleep(0.02)
        if not alive:
            return


def _signal(pid: int, sig: int) -> bool:
    try:
        os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False


def command_line(pid: int) -> str:
    """Returns a process's command line ('' if it is gone)."""
    try:
        return (
            (Path("/proc") / str(pid) / "cmdline")
            .read_bytes()
            .replace(b"\0", b" ")
            .decode("utf-8", "replace")
        )
    except OSError:
        return ""


def _running(pid: int) -> bool:
    # Never waitpid here: the process may belong to a Popen whose owner wants its exit status.
    # A zombie counts as gone.
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"
