"""Reading and writing files safely, with errors that say what to do.

Every file the package reads from a user (task files, weight records, embedding tables, cache
entries, run directories) and every file it writes (results, reports, caches, checksums) goes
through this module, so each guarantee holds in one place:

- a read never hangs on a FIFO or device, never reads a directory, and never takes more memory
  than its format's documented maximum (`read_regular_file`);
- JSON read back never nests deeper than `MAX_JSON_DEPTH` (`parse_json`), so a hostile file
  cannot exhaust the interpreter's stack;
- a whole-file write is atomic (a temporary file, fsynced, then renamed): a full disk, a
  read-only file system or Ctrl-C leaves the previous version intact and no temporary file
  (`atomic_write_bytes`, `atomic_write_text`);
- an `OSError` met writing becomes one of the package's errors naming the file and the fix
  (`write_error`, `make_folder`);
- a lock file is a regular file, locked through `filelock` (any platform: `file_lock`).
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat
import uuid
from pathlib import Path
from typing import Any

import filelock

from steve1_env.errors import ConfigurationError, Steve1EnvError

MAX_JSON_DEPTH = 64
"""Deepest nesting of arrays and objects accepted in any JSON file the package reads."""

ErrorClass = type[Steve1EnvError]

# O_NONBLOCK: opening a FIFO must not wait for the other end; it is harmless on regular files.
_NEVER_BLOCK = (
    getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
)
_READ_FLAGS = os.O_RDONLY | _NEVER_BLOCK
_APPEND_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | _NEVER_BLOCK
_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_READ_ONLY = (errno.EROFS, errno.EACCES, errno.EPERM)


# ----------------------------------------------------------------------------- reading


def open_regular_file(
    path: str | os.PathLike[str],
    what: str,
    *,
    append: bool = False,
    error: ErrorClass = ConfigurationError,
) -> int:
    """Opens a regular file without ever blocking, and returns its descriptor.

    A plain ``open`` of a FIFO waits forever for the other end; here it either fails at once
    or is refused, as are directories and devices.

    Args:
        path: The file (symbolic links are followed; their target is what is checked).
        what: What the file is, for messages (``"results file"``).
        append: Open for appending, creating the file if missing (mode 0o644 less the umask);
            else for reading.
        error: The `steve1_env` error class raised for a path that is not a regular file.

    Raises:
        OSError: If the file cannot be opened (`FileNotFoundError` when it does not exist).
        Steve1EnvError: `error`, if the path is not a regular file.
    """
    path = Path(path)
    descriptor = os.open(path, _APPEND_FLAGS if append else _READ_FLAGS, 0o644)
    try:
        _require_regular(os.fstat(descriptor).st_mode, path, what, error)
    except BaseException:
        os.close(descriptor)
        raise
    return descriptor


def file_lock(
    path: str | os.PathLike[str], what: str, *, error: ErrorClass = ConfigurationError
) -> filelock.BaseFileLock:
    """Returns an (unacquired) exclusive lock on `path`, once it is known to be a regular file.

    A path already there must be a regular file (a FIFO or a device planted under its name is
    refused at once, not waited on), and not a symbolic link: filelock releases before 4.x
    open the lock with ``O_TRUNC``, which would empty the file a planted link points at.
    `filelock` creates a missing one when the lock is taken.
    The lock works across processes on every platform `filelock` supports (where the file
    system has no locking call, `filelock` falls back to a lock file's mere existence); it is
    not tied to the thread that takes it, so another thread may release it.

    Args:
        path: The lock file.
        what: What the file is, for messages (``"lock file"``).
        error: The `steve1_env` error class raised for a path that is not a regular file.

    Raises:
        OSError: If the path cannot be inspected (acquiring the lock raises `OSError` too
            when the file cannot be created or opened: a read-only file system, ...).
        Steve1EnvError: `error`, if the path is not a regular file.
    """
    try:
        mode = os.lstat(path).st_mode  # the link itself, not what it points at
    except FileNotFoundError:
        pass
    else:
        if stat.S_ISLNK(mode):
            raise error(
                f"The {what} {path} is a symbolic link; a lock file is taken only as a "
                "regular file of its own. Delete the link."
            )
        _require_regular(mode, Path(path), what, error)
    return filelock.FileLock(path, thread_local=False)


def _require_regular(mode: int, path: Path, what: str, error: ErrorClass) -> None:
    if not stat.S_ISREG(mode):
        kind = "a directory" if stat.S_ISDIR(mode) else "a FIFO, socket or device"
        raise error(f"The {what} {path} is {kind}, not a regular file; give a regular file.")


def read_regular_file(
    path: str | os.PathLike[str],
    max_bytes: int,
    what: str,
    *,
    error: ErrorClass = ConfigurationError,
    limit_name: str = "",
) -> bytes:
    """Returns the whole content of a regular file of at most `max_bytes` bytes.

    Args:
        path: The file (symbolic links are followed; their target is what is checked).
        max_bytes: The largest size accepted.
        what: What the file is, for messages (``"precomputed embeddings"``).
        error: The `steve1_env` error class raised for a file that is not acceptable.
        limit_name: The documented constant behind `max_bytes`, named in the message.

    Raises:
        OSError: If the file cannot be opened (`FileNotFoundError` when it does not exist).
        Steve1EnvError: `error`, if the path is not a regular file or is over `max_bytes`.
    """
    path = Path(path)
    descriptor = open_regular_file(path, what, error=error)
    with os.fdopen(descriptor, "rb") as handle:
        size = os.fstat(descriptor).st_size
        data = b""
        if size <= max_bytes:
            # Sized to the file, not to the limit (read(n) reserves n bytes up front), then
            # on in bounded chunks should the file still be growing.
            data = handle.read(size + 1)
            while len(data) <= max_bytes and (more := handle.read(min(1 << 16, max_bytes))):
                data += more
    if size > max_bytes or len(data) > max_bytes:
        limit = f" ({limit_name})" if limit_name else ""
        raise error(
            f"The {what} {path} is larger than the {max_bytes:,} bytes accepted{limit}; it "
            "cannot be a valid file of this kind (check that it is the right file)."
        )
    return data


_TEXT_PADDING = b"\xef\xbb\xbf \t\r\n"  # a UTF-8 byte order mark and whitespace


def describe_content(head: bytes) -> str:
    """Says what a file is from its first bytes, for messages about a file of the wrong kind.

    Args:
        head: The file's first bytes (a few dozen are enough).

    Returns:
        One of ``"an empty file"``, ``"an HTML page"``, ``"markup (HTML or XML)"``, ``"a zip
        archive"``, ``"a Python pickle"``, ``"a single .npy array (np.save)"``, ``"JSON
        text"``, or ``"not a known format (it starts with ...)"``.
    """
    if not head:
        return "an empty file"
    text = head.lstrip(_TEXT_PADDING)
    if text[:1] == b"<":
        page = re.match(rb"<(!doctype\s+html|html|head|body)", text[:64], re.IGNORECASE)
        return "an HTML page" if page else "markup (HTML or XML)"
    if head.startswith(b"PK"):
        return "a zip archive"
    if head[:1] == b"\x80":  # protocol 2 or later
        return "a Python pickle"
    if head.startswith(b"\x93NUMPY"):
        return "a single .npy array (np.save)"
    if text[:1] in (b"{", b"["):
        return "JSON text"
    return f"not a known format (it starts with {head[:8]!r})"


def is_markup(head: bytes) -> bool:
    """True if a file's first bytes are markup (a web page saved in place of a binary file)."""
    return head.lstrip(_TEXT_PADDING)[:1] == b"<"


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


def parse_json(
    data: str | bytes, where: str, fix: str, *, error: ErrorClass = ConfigurationError
) -> Any:
    """Parses JSON text (bytes must be UTF-8), refusing nesting deeper than `MAX_JSON_DEPTH`.

    Args:
        data: The text.
        where: Names the source in errors (``"run/results.jsonl line 3"``).
        fix: What the user should do, appended to errors.
        error: The `steve1_env` error class raised.

    Raises:
        Steve1EnvError: `error`, if the text is not UTF-8 JSON or nests too deep.
    """
    too_deep = (
        f"{where} nests arrays or objects deeper than {MAX_JSON_DEPTH} levels, which no file "
        f"of this kind has. {fix}"
    )
    try:
        # Decoded here: given bytes, json would guess UTF-16 or UTF-32 from the first bytes.
        value = json.loads(data.decode("utf-8") if isinstance(data, bytes) else data)
    except RecursionError:  # deeper than the interpreter's stack: certainly too deep
        raise error(too_deep) from None
    except UnicodeDecodeError as exc:
        raise error(f"{where} is not UTF-8 text ({exc}). {fix}") from None
    except ValueError as exc:
        raise error(f"{where} is not valid JSON ({exc}). {fix}") from None
    if json_depth_exceeds(value):
        raise error(too_deep)
    return value


# ----------------------------------------------------------------------------- writing


def os_error_message(exc: OSError, path: str | os.PathLike[str], what: str) -> str:
    """Returns what went wrong writing `path` (`what` names it) and what to do about it.

    Args:
        exc: The error the operating system raised.
        path: The file or folder being written.
        what: What the file is, for the message (``"the results file"``).
    """
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    if exc.errno in _FULL:
        advice = "the disk (or your quota) is full; free some space"
    elif exc.errno in _READ_ONLY:
        advice = (
            "it cannot be written there (a read-only file system, or no permission); "
            "choose a writable location"
        )
    elif exc.errno in (errno.ENOTDIR, errno.EEXIST):
        advice = "a part of the path is a file where a folder should be; choose another path"
    elif exc.errno == errno.EISDIR:
        advice = "it is a folder; give a file name"
    else:
        advice = "check the path and the file system"
    return f"Cannot write {what} {os.fspath(path)} ({reason}): {advice}."


def write_error(
    exc: OSError,
    path: str | os.PathLike[str],
    what: str,
    hint: str = "",
    *,
    error: ErrorClass = ConfigurationError,
) -> Steve1EnvError:
    """Returns the package error (of class `error`) for an `OSError` met writing `path`.

    Args:
        exc: The operating system's error.
        path: The file or folder being written.
        what: What the file is (``"the results file"``).
        hint: A sentence added to the message (what is safe, how to continue).
        error: The error class to return.
    """
    message = os_error_message(exc, path, what)
    return error(f"{message} {hint}".strip())


def make_folder(
    folder: str | os.PathLike[str],
    what: str,
    hint: str = "",
    *,
    error: ErrorClass = ConfigurationError,
    check_writable: bool = False,
) -> Path:
    """Creates `folder` (and its parents) if missing and returns it.

    Args:
        folder: The folder.
        what: What it is, for the error message (``"the run directory"``).
        hint: Added to the error message.
        error: The error class raised.
        check_writable: Also prove a file can be created there (one is made, then removed):
            for a check before work whose output goes there, so that a read-only or
            misplaced folder is reported before the work, not after it.

    Raises:
        Steve1EnvError: Of class `error`, if it is a file, or cannot be created (or written).
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        message = (
            f"{what.capitalize()} {folder} is a file, not a folder; give a folder path, or "
            "move the file away."
        )
        raise error(f"{message} {hint}".strip())
    probe = folder / f".write-check.{os.getpid()}.{uuid.uuid4().hex}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if check_writable:
            os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            probe.unlink()
    except OSError as exc:
        raise write_error(exc, folder, what, hint, error=error) from exc
    return folder


def atomic_write_bytes(
    path: str | os.PathLike[str],
    data: bytes,
    what: str,
    hint: str = "",
    *,
    error: ErrorClass = ConfigurationError,
) -> None:
    """Writes `data` to `path` through a temporary file, fsync and an atomic rename.

    On any failure (Ctrl-C included) the temporary file is removed and the previous `path`,
    if any, is intact.

    Args:
        path: The file to (re)write.
        data: Its new content.
        what: What the file is, for the error message.
        hint: Added to the error message.
        error: The error class raised for an `OSError`.

    Raises:
        Steve1EnvError: Of class `error`, if the file cannot be written (full disk, read-only).
    """
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        # Mode "x" honours the umask (unlike mkstemp's 0600), so the files stay shareable.
        with open(temporary, "xb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise write_error(exc, path, what, hint, error=error) from exc
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def atomic_write_text(
    path: str | os.PathLike[str],
    text: str,
    what: str,
    hint: str = "",
    *,
    error: ErrorClass = ConfigurationError,
) -> None:
    """Writes `text` as UTF-8 to `path` atomically (see `atomic_write_bytes`).

    Args:
        path: The file to (re)write.
        text: Its new content.
        what: What the file is, for the error message.
        hint: Added to the error message.
        error: The error class raised for an `OSError`.

    Raises:
        Steve1EnvError: Of class `error`, if the file cannot be written (full disk, read-only).
    """
    atomic_write_bytes(path, text.encode("utf-8"), what, hint, error=error)
