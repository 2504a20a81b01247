"""Writing and reading the files of a run, with errors that say what to do.

Every file the evaluation writes (``run.json``, ``results.jsonl``, the lock file, the reports,
the videos) goes through this module, so that a full disk, a read-only file system or an output
path that is a file ends as one of the package's errors naming the file and the fix, not as a
bare `OSError`. Whole files are written atomically (a temporary file, fsynced, then renamed), so
a failure leaves the previous version intact. JSON read back is bounded in size and depth, so a
hostile file cannot exhaust memory or the interpreter's stack.
"""

from __future__ import annotations

import errno
import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from steve1_env.errors import ResultsError, Steve1EnvError

MAX_JSON_DEPTH = 64
"""Deepest nesting of arrays and objects accepted in ``run.json`` and results lines."""

MAX_RESULTS_LINE_BYTES = 1 << 20
"""Longest line of ``results.jsonl`` read back (1 MiB); a record takes about 1 KB."""

MAX_CONFIG_BYTES = 16 << 20
"""Largest ``run.json`` read back (16 MiB)."""

ErrorClass = Callable[[str], Steve1EnvError]

_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_READ_ONLY = (errno.EROFS, errno.EACCES, errno.EPERM)


def os_error_message(error: OSError, path: str | os.PathLike[str], what: str) -> str:
    """Returns what went wrong writing `path` (`what` names it) and what to do about it.

    Args:
        error: The error the operating system raised.
        path: The file or folder being written.
        what: What the file is, for the message ("the results file").
    """
    reason = os.strerror(error.errno) if error.errno else str(error)
    if error.errno in _FULL:
        advice = "the disk (or your quota) is full; free some space"
    elif error.errno in _READ_ONLY:
        advice = (
            "it cannot be written there (a read-only file system, or no permission); "
            "choose a writable location"
        )
    elif error.errno in (errno.ENOTDIR, errno.EEXIST):
        advice = "a part of the path is a file where a folder should be; choose another path"
    elif error.errno == errno.EISDIR:
        advice = "it is a folder; give a file name"
    else:
        advice = "check the path and the file system"
    return f"Cannot write {what} {os.fspath(path)} ({reason}): {advice}."


def write_error(
    error: OSError,
    path: str | os.PathLike[str],
    what: str,
    hint: str = "",
    kind: ErrorClass = ResultsError,
) -> Steve1EnvError:
    """Returns the package error (of class `kind`) for an `OSError` met writing `path`.

    Args:
        error: The operating system's error.
        path: The file or folder being written.
        what: What the file is ("the results file").
        hint: A sentence added to the message (what is safe, how to continue).
        kind: The error class to return.
    """
    message = os_error_message(error, path, what)
    return kind(f"{message} {hint}".strip())


def make_folder(
    folder: str | os.PathLike[str],
    what: str,
    hint: str = "",
    kind: ErrorClass = ResultsError,
    *,
    check_writable: bool = False,
) -> Path:
    """Creates `folder` (and its parents) if missing and returns it.

    Args:
        folder: The folder.
        what: What it is, for the error message ("the run directory").
        hint: Added to the error message.
        kind: The error class raised.
        check_writable: Also prove a file can be created there (one is made, then removed):
            for a check before work whose output goes there, so that a read-only or
            misplaced folder is reported before the work, not after it.

    Raises:
        Steve1EnvError: Of class `kind`, if it is a file, or cannot be created (or written).
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        message = (
            f"{what.capitalize()} {folder} is a file, not a folder; give a folder path, or "
            "move the file away."
        )
        raise kind(f"{message} {hint}".strip())
    probe = folder / f".write-check.{os.getpid()}.{uuid.uuid4().hex}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if check_writable:
            os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            probe.unlink()
    except OSError as exc:
        raise write_error(exc, folder, what, hint, kind) from exc
    return folder


def atomic_write_text(
    path: str | os.PathLike[str],
    text: str,
    what: str,
    hint: str = "",
    kind: ErrorClass = ResultsError,
) -> None:
    """Writes `text` (UTF-8) to `path` through a temporary file, fsync and an atomic rename.

    On any failure the temporary file is removed and the previous `path`, if any, is intact.

    Args:
        path: The file to (re)write.
        text: Its new content.
        what: What the file is, for the error message.
        hint: Added to the error message.
        kind: The error class raised for an `OSError`.

    Raises:
        Steve1EnvError: Of class `kind`, if the file cannot be written (full disk, read-only).
    """
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        # Mode "x" honours the umask (unlike mkstemp's 0600), so the files stay shareable.
        with open(temporary, "x", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise write_error(exc, path, what, hint, kind) from exc
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def json_depth_exceeds(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """True if `value` nests lists and dicts deeper than `limit` (walked without recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def parse_json(data: str | bytes, where: str, fix: str) -> Any:
    """Parses JSON text, refusing nesting deeper than `MAX_JSON_DEPTH`.

    Args:
        data: The text.
        where: Names the source in errors ("run/results.jsonl line 3").
        fix: What the user should do, appended to errors.

    Raises:
        ResultsError: If the text is not JSON or nests too deep.
    """
    too_deep = (
        f"{where} nests arrays or objects deeper than {MAX_JSON_DEPTH} levels, which no file "
        f"steve1-env writes has. {fix}"
    )
    try:
        value = json.loads(data)
    except RecursionError:  # deeper than the interpreter's stack: certainly too deep
        raise ResultsError(too_deep) from None
    except ValueError as exc:
        raise ResultsError(f"{where} is not valid JSON ({exc}). {fix}") from exc
    if json_depth_exceeds(value):
        raise ResultsError(too_deep)
    return value
