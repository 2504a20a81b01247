"""Goal embeddings from a file instead of an encoder (``prompt_encoder="precomputed"``).

For embeddings computed elsewhere, such as the paper's visual prompts (a MineCLIP embedding of a
video clip), which no text encoder can produce. Once downloaded
(`steve1_env.prompt.visual_prompts.download_visual_prompts`), those are such a table, keyed by
name: ``path=visual_prompts_path()`` makes the instruction ``"dirt"`` give the visual prompt.
"""

from __future__ import annotations

import io
import os
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from steve1_env import precision
from steve1_env.errors import ConfigurationError, InvalidInstructionError
from steve1_env.files import describe_content, parse_json, read_regular_file
from steve1_env.instructions import normalize_instruction
from steve1_env.prompt.npy import read_npy_bytes
from steve1_env.validation import optional_path, short_repr

MAX_NPZ_BYTES = 256 * 2**20
"""Largest ``.npz`` table read (about 100,000 float32 embeddings)."""
MAX_JSON_BYTES = 32 * 2**20
"""Largest ``.json`` table read (parsed JSON numbers take ~10x their text in memory)."""
MAX_ENTRIES = 100_000
"""Most instructions one table may hold."""
MAX_NPZ_MEMBER_BYTES = 64 * 2**10
"""Largest uncompressed ``.npz`` member: a ``(512,)`` float64 ``.npy`` takes 4,224 bytes."""

_ZIP_CENTRAL_ENTRY = b"PK\x01\x02"  # starts each entry of a zip's central directory
_NPZ_READ_ERRORS = (
    zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError,
    RuntimeError,  # an encrypted member
)  # fmt: skip


def _npz_format_error(path: Path, what: str) -> ConfigurationError:
    return ConfigurationError(
        f"{path} is not a valid .npz table of embeddings: {what}. Expected a zip archive of "
        "one .npy array per instruction, as written by np.savez(path, **{instruction: "
        "embedding}) with float embeddings of shape (512,)."
    )


def _read_npz(path: Path, data: bytes) -> dict[str, np.ndarray]:
    if not data.startswith(b"PK"):
        raise _npz_format_error(path, f"the file is {describe_content(data[:64])}")
    # Each central-directory entry starts with this signature, so its count bounds the entries
    # ZipFile would parse (and hold in memory) before we could count them.
    if data.count(_ZIP_CENTRAL_ENTRY) > MAX_ENTRIES:
        raise _npz_format_error(path, f"it has more than {MAX_ENTRIES:,} members")
    table: dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for member in archive.infolist():
                name = member.filename
                if not name.endswith(".npy"):
                    raise _npz_format_error(path, f"member {name!r} is not an .npy array")
                if member.file_size > MAX_NPZ_MEMBER_BYTES:
                    raise _npz_format_error(
                        path,
                        f"member {name!r} holds {member.file_size:,} bytes uncompressed, more "
                        f"than the {MAX_NPZ_MEMBER_BYTES:,} a (512,) embedding can take",
                    )
                with archive.open(member) as stream:  # reads at most file_size bytes
                    array = read_npy_bytes(stream.read(MAX_NPZ_MEMBER_BYTES + 1))
                table[name[: -len(".npy")]] = _embedding(name[: -len(".npy")], array)
    except ConfigurationError:
        raise
    except _NPZ_READ_ERRORS as exc:
        raise _npz_format_error(path, f"{type(exc).__name__}: {exc}") from exc
    return table


def _read_json(path: Path, data: bytes) -> dict[str, Any]:
    expected = "Expected a JSON object mapping each instruction to a list of 512 numbers."
    if data.lstrip()[:1] not in (b"{", b"["):
        raise ConfigurationError(f"{path} is {describe_content(data[:64])}, not JSON. {expected}")
    loaded = parse_json(data, str(path), expected)
    if not isinstance(loaded, dict):
        raise ConfigurationError(f"{path} holds a JSON {type(loaded).__name__}. {expected}")
    if len(loaded) > MAX_ENTRIES:
        raise ConfigurationError(
            f"{path} holds {len(loaded):,} instructions, more than the {MAX_ENTRIES:,} accepted."
        )
    return loaded


def _embedding(instruction: str, value: Any) -> np.ndarray:
    try:
        return precision.as_goal_embedding(value)
    except (ValueError, TypeError) as exc:  # numpy raises plain ValueError on ragged lists
        raise ConfigurationError(f"Embedding of {instruction!r}: {exc}") from exc


def _embedding_table(embeddings: Any) -> dict[str, Any]:
    expected = (
        "embeddings must be a dict mapping each instruction (a str) to its embedding (512 "
        "numbers), such as {'chop a tree': [0.1, ...]}"
    )
    if not isinstance(embeddings, Mapping):
        raise ConfigurationError(
            f"{expected}, got {type(embeddings).__name__} {short_repr(embeddings)}."
        )
    for instruction in embeddings:
        if not isinstance(instruction, str):
            raise ConfigurationError(
                f"{expected}; got the key {type(instruction).__name__} {short_repr(instruction)}."
            )
    return dict(embeddings)


class PrecomputedPromptEncoder:
    """Looks instructions up in a table of embeddings.

    Args:
        path: An ``.npz`` (one array per instruction, the key being the instruction) or a
            ``.json`` object mapping instructions to lists of 512 numbers. Lookups try the exact
            instruction, then its lower-cased, whitespace-collapsed form. The file must be a
            regular file of at most `MAX_NPZ_BYTES` / `MAX_JSON_BYTES` with at most
            `MAX_ENTRIES` instructions; ``.npz`` members are read without pickle, each at most
            `MAX_NPZ_MEMBER_BYTES` uncompressed.
        embeddings: The table itself, instead of a file.
        device: Ignored; accepted so every encoder factory has the same signature.

    Raises:
        ConfigurationError: If the file is missing, of the wrong format (the message says what
            it looks like and what is expected), over a limit, or an embedding is not a finite
            real ``(512,)``/``(1, 512)`` array.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        embeddings: dict[str, Any] | None = None,
        device: Any = "cpu",
    ) -> None:
        if (path is None) == (embeddings is None):
            raise ConfigurationError(
                "PrecomputedPromptEncoder needs exactly one of path= (an .npz or .json file) "
                "or embeddings= (a dict instruction -> embedding)."
            )
        file = optional_path(path, "path", "'embeddings.npz'")
        table = self._read(file) if file is not None else _embedding_table(embeddings)
        if not table:
            raise ConfigurationError("The precomputed embedding table is empty.")
        self.device = device
        self.embeddings: dict[str, np.ndarray] = {}
        for instruction, value in table.items():
            self.embeddings[str(instruction)] = _embedding(str(instruction), value)
        self._normalized: dict[str, np.ndarray] = {}
        for instruction, embedding in self.embeddings.items():
            key = normalize_instruction(instruction)
            if key in self._normalized and not np.array_equal(self._normalized[key], embedding):
                raise ConfigurationError(
                    f"Two entries differ only in case or spacing ({key!r}) but have different "
                    "embeddings; keep one."
                )
            self._normalized[key] = embedding

    @staticmethod
    def _read(path: Path) -> dict[str, Any]:
        if path.suffix not in (".npz", ".json"):
            raise ConfigurationError(f"Precomputed embeddings must be .npz or .json, got {path}.")
        limit = MAX_NPZ_BYTES if path.suffix == ".npz" else MAX_JSON_BYTES
        try:
            data = read_regular_file(path, limit, "precomputed embeddings file")
        except OSError as exc:
            raise ConfigurationError(
                f"Cannot read precomputed embeddings from {path}: {exc}"
            ) from exc
        if path.suffix == ".npz":
            return _read_npz(path, data)
        return _read_json(path, data)

    def encode(self, instruction: str) -> np.ndarray:
        """Returns the stored embedding of `instruction`.

        Raises:
            InvalidInstructionError: If the table has no entry for it; the message lists some.
        """
        found = self.embeddings.get(instruction)
        if found is None:
            found = self._normalized.get(normalize_instruction(instruction))
        if found is None:
            known = ", ".join(repr(k) for k in list(self.embeddings)[:5])
            raise InvalidInstructionError(
                f"No precomputed embedding for {instruction!r}. The table has "
                f"{len(self.embeddings)} instructions, e.g. {known}."
            )
        return found.copy()

    def close(self) -> None:
        """Nothing to release."""
