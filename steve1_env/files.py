"""Bounded reads of user-supplied files.

A path handed to the package may name anything: a FIFO (a plain ``open`` then blocks forever), a
device such as ``/dev/zero`` (reading never ends), a directory, or a regular file far larger
than its format allows. `read_regular_file` refuses all of these before reading a byte of
content, so a hostile path costs neither a hang nor the process's memory.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from steve1_env.errors import ConfigurationError, Steve1EnvError

# O_NONBLOCK: opening a FIFO must not wait for a writer; it is harmless on regular files.
_READ_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_BINARY", 0)
)


def read_regular_file(
    path: str | os.PathLike[str],
    max_bytes: int,
    what: str,
    *,
    error: type[Steve1EnvError] = ConfigurationError,
) -> bytes:
    """Returns the whole content of a regular file of at most `max_bytes` bytes.

    Args:
        path: The file (symbolic links are followed; their target is what is checked).
        max_bytes: The largest size accepted.
        what: What the file is, for messages (``"precomputed embeddings"``).
        error: The `steve1_env` error class raised for a file that is not acceptable.

    Raises:
        OSError: If the file cannot be opened (`FileNotFoundError` when it does not exist).
        Steve1EnvError: `error`, if the path is not a regular file or is over `max_bytes`.
    """
    path = Path(path)
    descriptor = os.open(path, _READ_FLAGS)
    try:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            kind = "a directory" if stat.S_ISDIR(info.st_mode) else "a FIFO, socket or device"
            raise error(f"The {what} {path} is {kind}, not a regular file; give a regular file.")
        # The size is checked before reading; a file grown since is caught below.
        data = b""
        if info.st_size <= max_bytes:
            with os.fdopen(os.dup(descriptor), "rb") as handle:
                # read(n) allocates n bytes up front: ask for the file's size, not the limit.
                data = handle.read(info.st_size + 1)
    finally:
        os.close(descriptor)
    if len(data) > info.st_size and info.st_size <= max_bytes:
        raise error(f"The {what} {path} grew while it was read; read it again once it is written.")
    if info.st_size > max_bytes:
        raise error(
            f"The {what} {path} is larger than the {max_bytes:,} bytes accepted; it cannot be "
            "a valid file of this kind (split it or check that it is the right file)."
        )
    return data
