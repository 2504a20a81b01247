"""The paper's 11 visual prompts: downloaded once, stored safely, resolved as ``paper:<name>``.

Upstream ships the visual goal embeddings (MineCLIP embeddings of 16-frame clips) as one
pickle per paper prompt name inside a zip on Google Drive. `download_visual_prompts` fetches
the zip with the package's verified downloader, reads each pickle with `load_numpy_pickle` (an
unpickler that admits only what a plain numpy array's pickle needs, so no code can run), checks
each embedding (512 finite values) and stores all 11 in ``visual_prompts.npz``, written without
pickle and read back without it. `visual_goal_from_spec` turns ``"paper:dirt"`` into its goal.
"""

from __future__ import annotations

import io
import math
import os
import pickle
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from steve1_env.download import (
    CHECKSUMS_FILE,
    Expected,
    FileStatus,
    download,
    read_checksums,
    record_checksum,
)
from steve1_env.errors import ConfigurationError, Steve1EnvError, UnsafeFileError, WeightsError
from steve1_env.files import atomic_write_bytes, describe_content, read_regular_file
from steve1_env.precision import GOAL_DIM
from steve1_env.prompt.precomputed import PrecomputedPromptEncoder
from steve1_env.skill_kinds import PAPER_PROMPTS
from steve1_env.weights import file_digests, hash_file, weights_dir

PAPER_VISUAL_PROMPT_NAMES: tuple[str, ...] = tuple(PAPER_PROMPTS)
"""The 11 names of the paper's visual prompts (the same as its text prompts' kinds)."""
PAPER_VISUAL_COND_SCALE = 7.0
"""The classifier-free guidance scale the paper used with its visual prompts."""
PAPER_SPEC_PREFIX = "paper:"
"""``visual_goal: paper:<name>`` names one of the paper's visual prompts."""

VISUAL_PROMPTS_FILE = "visual_prompts.npz"
"""The stored embeddings, in the weights directory (one ``(512,)`` float32 array per name)."""
VISUAL_PROMPTS_ZIP = "visual_prompt_embeds.zip"
"""Upstream's archive, as downloaded (deleted once converted)."""
VISUAL_PROMPTS_DRIVE_ID = "1K--DOHMDKjtklTK6SbpH11wrI2j_61mu"
VISUAL_PROMPTS_URL = f"https://drive.google.com/uc?export=download&id={VISUAL_PROMPTS_DRIVE_ID}"

MAX_ZIP_BYTES = 4 * 2**20
"""Largest archive accepted (11 pickles of 512 float32 values take about 25 KB)."""
MAX_ZIP_MEMBERS = 256
"""Most members the archive may list (11 pickles, their folders, macOS resource forks)."""
MAX_PICKLE_BYTES = 64 * 2**10
"""Largest pickle read, uncompressed (a ``(1, 512)`` float64 array pickles to about 4.3 KB)."""
MAX_ARRAY_VALUES = 4 * GOAL_DIM
"""Most values an array in a prompt pickle may be created with."""

_ZIP_CENTRAL_ENTRY = b"PK\x01\x02"
_ZIP_READ_ERRORS = (
    zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError,
    RuntimeError,  # an encrypted member
)  # fmt: skip
_DOWNLOAD_HINT = (
    "steve1_env.prompt.visual_prompts.download_visual_prompts() fetches them into the weights "
    "directory."
)


# --- The restricted unpickler ------------------------------------------------------------


class _Frozen:
    """What the pickle gets for an admitted name: no attribute of it can be set.

    A pickle's BUILD opcode sets attributes on whatever object is on its stack; the stand-ins
    below live for the whole process, so the file must not be able to change them.
    """

    __slots__ = ("_call",)
    _call: Any

    def __init__(self, call: Any = None) -> None:
        object.__setattr__(self, "_call", call)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"a pickle cannot set {name!r} here")

    def __call__(self, *args: Any) -> Any:
        if self._call is None:
            raise TypeError("numpy.ndarray cannot be called from a pickle")
        return self._call(*args)


# Stands for numpy.ndarray in a pickle, as the subtype given to `_reconstruct`. The class
# itself is never handed to the pickle, so it cannot be called with arguments of the file's
# choosing (an array of any size); only `_reconstruct` accepts this marker.
_NDARRAY = _Frozen()


def _dtype(spec: Any, align: Any = False, copy: Any = True) -> np.dtype[Any]:
    # Always a copy: a pickle then restores the byte order on its own dtype, never on numpy's
    # shared float32 descriptor (which copy=False would hand it).
    if not isinstance(spec, str) or len(spec) > 8:
        raise _refusal(f"a dtype from {spec!r}")
    dtype = np.dtype(spec, align=bool(align), copy=True)
    if dtype.kind not in "fiub" or dtype.fields is not None or dtype.subdtype is not None:
        raise _refusal(f"the dtype {dtype}")
    return dtype


def _reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    # numpy pickles create an empty array here and fill it from the state that follows.
    if subtype is not _NDARRAY:
        raise _refusal(f"an array of subtype {type(subtype).__name__}")
    return np.ndarray.__new__(np.ndarray, _bounded_shape(shape), _dtype_of(dtype))


def _frombuffer(buffer: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    # Protocol 5 pickles an array as its raw bytes, a dtype, a shape and an order.
    if not isinstance(buffer, (bytes, bytearray, pickle.PickleBuffer)):
        raise _refusal(f"an array from a {type(buffer).__name__}")
    if not isinstance(dtype, np.dtype) or order not in ("C", "F"):
        raise _refusal("an array of that dtype or order")
    flat = np.frombuffer(bytes(buffer), dtype=dtype)
    return flat.reshape(_bounded_shape(shape), order=order).copy()


def _latin1_bytes(text: Any, encoding: Any = "utf-8") -> bytes:
    # Pickle protocols 0-2 store bytes as latin-1 text passed to _codecs.encode.
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _refusal("an encoding other than latin-1 text to bytes")
    return text.encode("latin-1")


def _bounded_shape(shape: Any) -> tuple[int, ...]:
    if not isinstance(shape, tuple) or not all(
        isinstance(size, int) and not isinstance(size, bool) and size >= 0 for size in shape
    ):
        raise _refusal(f"an array of shape {shape!r}"[:120])
    if len(shape) > 4 or math.prod(shape) > MAX_ARRAY_VALUES:
        raise _refusal(f"an array of shape {shape} (more than {MAX_ARRAY_VALUES} values)")
    return shape


def _dtype_of(value: Any) -> np.dtype[Any]:
    if isinstance(value, np.dtype):
        return value
    if isinstance(value, bytes) and len(value) <= 8:
        return _dtype(value.decode("ascii", "replace"))
    raise _refusal(f"an array of dtype {value!r}"[:120])


class _Refused(Exception):
    """An admitted function was called with arguments a plain array's pickle never passes."""


def _refusal(what: str) -> _Refused:
    return _Refused(f"it asks for {what}, which no plain numpy array's pickle does")


_ADMITTED_GLOBALS: dict[str, Any] = {
    # numpy 1.x wrote numpy.core, numpy 2.x writes numpy._core: both spell the same function.
    "numpy.core.multiarray._reconstruct": _Frozen(_reconstruct),
    "numpy._core.multiarray._reconstruct": _Frozen(_reconstruct),
    "numpy.core.numeric._frombuffer": _Frozen(_frombuffer),
    "numpy._core.numeric._frombuffer": _Frozen(_frombuffer),
    "numpy.ndarray": _NDARRAY,
    "numpy.dtype": _Frozen(_dtype),
    "_codecs.encode": _Frozen(_latin1_bytes),
}
"""What a numpy array's pickle names -> what it gets: our own checked stand-ins, never numpy's
or Python's callables themselves."""


class _NumpyArrayUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, what: str) -> None:
        super().__init__(io.BytesIO(data))
        self._what = what

    def find_class(self, module: str, name: str) -> Any:
        key = f"{module}.{name}"
        if key in _ADMITTED_GLOBALS:
            return _ADMITTED_GLOBALS[key]
        raise UnsafeFileError(
            f"Refusing to load {self._what}: its pickle would import {key[:120]}, and only a "
            "plain numpy array is expected (numpy's array reconstruction and dtype, nothing "
            "else), so loading it could run code. Do not load it; only use files from sources "
            "you trust."
        )

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafeFileError(
            f"Refusing to load {self._what}: its pickle refers to outside objects (persistent "
            "ids), which a plain numpy array's pickle never does."
        )


def load_numpy_pickle(data: bytes, what: str = "the pickle") -> np.ndarray:
    """Reads a pickled plain numpy array without running code from it.

    The unpickler admits only the globals a numpy array's pickle names (numpy's
    ``_reconstruct``, ``_frombuffer``, ``ndarray`` and ``dtype``, and ``_codecs.encode`` for
    protocols 0-2), each replaced by a stand-in that accepts only the arguments such a pickle
    passes: numeric dtypes, shapes of at most `MAX_ARRAY_VALUES` values, latin-1 bytes.

    Args:
        data: The pickle's bytes (at most `MAX_PICKLE_BYTES`).
        what: Names the pickle in error messages.

    Returns:
        The array. A pickled list of numbers (or a list holding one such list), a form upstream
        also saved embeddings in, comes back as a float64 array of shape ``(1, n)``.

    Raises:
        UnsafeFileError: If the pickle names any other global (its name is in the message) or
            uses persistent ids; nothing it names is imported or called.
        WeightsError: If it is too large, malformed, not an array, or asks the admitted
            functions for something a plain array's pickle never does.
    """
    if len(data) > MAX_PICKLE_BYTES:
        raise WeightsError(
            f"{what} has {len(data):,} bytes, more than the {MAX_PICKLE_BYTES:,} a pickled "
            "embedding of 512 values can take."
        )
    try:
        loaded = _NumpyArrayUnpickler(data, what).load()
    except UnsafeFileError:
        raise
    except _Refused as exc:
        raise UnsafeFileError(f"Refusing to load {what}: {exc}.") from None
    except Exception as exc:  # a malformed pickle raises many kinds (even IndexError)
        raise WeightsError(
            f"Cannot read {what}: it is {describe_content(data[:64])}, not a pickle of a numpy "
            f"array ({type(exc).__name__})."
        ) from None
    if type(loaded) is np.ndarray:
        return loaded
    numbers = _plain_numbers(loaded)
    if numbers is None:
        raise WeightsError(
            f"{what} holds a {type(loaded).__name__}, expected a numpy array of 512 values."
        )
    return numbers


def _is_real(value: Any) -> bool:
    return type(value) in (int, float)


def _plain_numbers(value: Any) -> np.ndarray | None:
    """A list of numbers (or a list holding one), as upstream also saved embeddings, as floats."""
    if type(value) is list and len(value) == 1 and type(value[0]) is list:
        value = value[0]
    if type(value) is not list or not all(_is_real(item) for item in value):
        return None
    return np.array(value, dtype=np.float64).reshape(1, -1)


def _embedding(array: np.ndarray, what: str) -> np.ndarray:
    """The array as a ``(512,)`` float32 goal, checked: floating point, 512 values, finite."""
    if array.dtype.kind != "f":
        raise WeightsError(f"{what} holds a {array.dtype} array, expected floating point values.")
    if array.shape not in ((GOAL_DIM,), (1, GOAL_DIM)):
        raise WeightsError(
            f"{what} holds an array of shape {array.shape}, expected ({GOAL_DIM},) or "
            f"(1, {GOAL_DIM}) (one MineCLIP embedding)."
        )
    embedding = np.ascontiguousarray(array.reshape(GOAL_DIM), dtype=np.float32)
    if not np.isfinite(embedding).all():
        raise WeightsError(f"{what} holds NaN or infinite values.")
    return embedding


# --- The archive ---------------------------------------------------------------------------


def _member_prompt_name(name: str, archive: Path) -> str | None:
    """The prompt a member holds (None: a folder or a file not used), its name checked safe."""
    parts = PurePosixPath(name).parts
    unsafe = (
        not name
        or "\x00" in name
        or "\\" in name
        or name.startswith("/")
        or ".." in parts
        or (parts and ":" in parts[0])
    )
    if unsafe:
        raise WeightsError(
            f"{archive} has a member named {name[:120]!r}, a path that leads outside the "
            "archive's folder (absolute, '..', a drive or a backslash): refused. Upstream's "
            "archive holds <name>.pkl files only; delete it and download it again."
        )
    if name.endswith("/") or "__MACOSX" in parts or parts[-1].startswith("._"):
        return None  # folders and macOS resource forks hold no embedding
    if not parts[-1].endswith(".pkl"):
        return None
    prompt = parts[-1][: -len(".pkl")]
    if prompt not in PAPER_VISUAL_PROMPT_NAMES or len(parts) > 2:
        raise WeightsError(
            f"{archive} has an unexpected member {name[:120]!r}; expected <name>.pkl (at most "
            f"one folder deep) for the names {', '.join(PAPER_VISUAL_PROMPT_NAMES)}."
        )
    return prompt


def read_visual_prompt_zip(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Reads upstream's archive of visual prompt pickles, in memory (nothing is extracted).

    Args:
        path: The zip: at most `MAX_ZIP_BYTES`, `MAX_ZIP_MEMBERS` members, each pickle at
            most `MAX_PICKLE_BYTES` uncompressed (checked while reading too, so a member whose
            header understates its size is still stopped), read with `load_numpy_pickle`.

    Returns:
        Prompt name -> its ``(512,)`` float32 embedding, for all 11 names.

    Raises:
        UnsafeFileError: If a pickle would import anything but numpy's array reconstruction.
        WeightsError: If the archive is not a zip, over a limit, has a member whose name leads
            outside it, an unexpected or repeated ``.pkl`` member, a missing prompt, or an
            embedding that is not 512 finite floating point values.
    """
    path = Path(path)
    data = read_regular_file(path, MAX_ZIP_BYTES, "visual prompts archive", error=WeightsError)
    if not data.startswith(b"PK"):
        raise WeightsError(
            f"{path} is {describe_content(data[:64])}, not a zip archive of the visual prompts."
        )
    if data.count(_ZIP_CENTRAL_ENTRY) > MAX_ZIP_MEMBERS:
        raise WeightsError(f"{path} lists more than {MAX_ZIP_MEMBERS} members: refused.")
    found: dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for member in archive.infolist():
                prompt = _member_prompt_name(member.filename, path)
                if prompt is None:
                    continue
                what = f"{path.name}:{member.filename}"
                if prompt in found:
                    raise WeightsError(f"{path} holds {prompt}.pkl twice: refused.")
                if member.file_size > MAX_PICKLE_BYTES:
                    raise WeightsError(
                        f"{what} expands to {member.file_size:,} bytes, more than the "
                        f"{MAX_PICKLE_BYTES:,} a pickled embedding can take: refused."
                    )
                with archive.open(member) as stream:
                    pickled = stream.read(MAX_PICKLE_BYTES + 1)
                found[prompt] = _embedding(load_numpy_pickle(pickled, what), what)
    except WeightsError:
        raise
    except _ZIP_READ_ERRORS as exc:
        raise WeightsError(
            f"{path} is a damaged zip archive ({type(exc).__name__}: {exc})."
        ) from exc
    missing = [name for name in PAPER_VISUAL_PROMPT_NAMES if name not in found]
    if missing:
        raise WeightsError(
            f"{path} lacks the visual prompts {', '.join(missing)} (expected one <name>.pkl "
            f"for each of {', '.join(PAPER_VISUAL_PROMPT_NAMES)})."
        )
    return {name: found[name] for name in PAPER_VISUAL_PROMPT_NAMES}


def _npz_bytes(embeddings: Mapping[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, allow_pickle=False, **dict(embeddings))
    return buffer.getvalue()


# --- Download, store, read ------------------------------------------------------------------


def visual_prompts_path(directory: str | os.PathLike[str] | None = None) -> Path:
    """Returns where the visual prompts are stored: ``<weights dir>/visual_prompts.npz``.

    That file is also a table `PrecomputedPromptEncoder` reads (``path=`` it), keyed by name.
    """
    return weights_dir(directory) / VISUAL_PROMPTS_FILE


def download_visual_prompts(
    directory: str | os.PathLike[str] | None = None,
    *,
    url: str = VISUAL_PROMPTS_URL,
    progress: bool = True,
    retries: int = 5,
    backoff: float = 1.0,
    timeout: float = 60.0,
) -> Path:
    """Fetches the paper's visual prompts and stores them as ``visual_prompts.npz``.

    The archive is downloaded with `steve1_env.download.download` (resumed, retried, capped at
    `MAX_ZIP_BYTES`, never a web page, checked against the SHA-256 recorded by an earlier
    download), read with `read_visual_prompt_zip` (no code can run), and deleted; the
    embeddings are written atomically without pickle and the SHA-256 of both files recorded in
    ``checksums.json``. A stored file already present is kept (delete it to fetch again).

    Args:
        directory: The weights directory (default: `steve1_env.weights.weights_dir`'s).
        url: Where the archive is served (default: upstream's Google Drive file).
        progress: Print download progress to stderr.
        retries: As for `steve1_env.download.download`.
        backoff: As for `steve1_env.download.download`.
        timeout: As for `steve1_env.download.download`.

    Returns:
        The path of ``visual_prompts.npz``.

    Raises:
        UnsafeFileError: If a pickle in the archive would import anything else than numpy's
            array reconstruction (the archive is deleted, nothing is stored).
        WeightsError: If the download fails or the archive is not what upstream ships (the
            archive is deleted, nothing is stored).
    """
    folder = weights_dir(directory)
    target = folder / VISUAL_PROMPTS_FILE
    if target.is_file():
        return target
    archive = folder / VISUAL_PROMPTS_ZIP
    recorded = read_checksums(folder) if folder.is_dir() else {}
    download(url, archive, expected=Expected(sha256=recorded.get(VISUAL_PROMPTS_ZIP)),
             max_bytes=MAX_ZIP_BYTES, progress=progress, retries=retries, backoff=backoff,
             timeout=timeout)  # fmt: skip
    try:
        embeddings = read_visual_prompt_zip(archive)
        record_checksum(folder, VISUAL_PROMPTS_ZIP)  # a later download must match this one
    finally:
        archive.unlink(missing_ok=True)  # refused or converted: only the .npz stays
    atomic_write_bytes(target, _npz_bytes(embeddings), "the visual prompts", error=WeightsError)
    record_checksum(folder, VISUAL_PROMPTS_FILE)
    return target


def _read_stored(path: Path) -> dict[str, np.ndarray]:
    try:
        table = PrecomputedPromptEncoder(path=path).embeddings
    except Steve1EnvError as exc:
        raise WeightsError(
            f"The visual prompts file is damaged: {exc} Delete it; {_DOWNLOAD_HINT}"
        ) from None
    if sorted(table) != sorted(PAPER_VISUAL_PROMPT_NAMES):
        raise WeightsError(
            f"{path} holds the prompts {sorted(table)[:12]}, expected exactly "
            f"{', '.join(PAPER_VISUAL_PROMPT_NAMES)}. Delete it; {_DOWNLOAD_HINT}"
        )
    return {name: table[name] for name in PAPER_VISUAL_PROMPT_NAMES}


def load_visual_prompts(
    weights_dir: str | os.PathLike[str] | None = None,
) -> dict[str, np.ndarray]:
    """Returns the paper's visual prompts: name -> ``(512,)`` float32 goal embedding.

    The file is read once per process while its size, modification time and inode stay the
    same (every reset with ``paper:<name>`` asks for it); each call returns new arrays.

    Args:
        weights_dir: The weights directory (default: ``$STEVE1_WEIGHTS_DIR``, else the user
            cache).

    Raises:
        WeightsError: If ``visual_prompts.npz`` is missing (the message says how to get it) or
            damaged (read without pickle; it must hold exactly the 11 names).
    """
    path = visual_prompts_path(weights_dir)
    if not path.is_file():
        raise WeightsError(f"The paper's visual prompts are not in {path.parent}. {_DOWNLOAD_HINT}")
    stat = path.stat()
    stamp = (stat.st_size, stat.st_mtime_ns, stat.st_ino)
    key = str(path.resolve())
    cached = _READ.get(key)
    if cached is None or cached[0] != stamp:
        cached = (stamp, _read_stored(path))
        _READ[key] = cached
    return {name: embedding.copy() for name, embedding in cached[1].items()}


# Resolved path -> (size, mtime, inode) and what was read: one read per unchanged file.
_READ: dict[str, tuple[tuple[int, int, int], dict[str, np.ndarray]]] = {}


def is_paper_spec(spec: Any) -> bool:
    """Whether `spec` names one of the paper's visual prompts (``"paper:<name>"``)."""
    return isinstance(spec, str) and spec.startswith(PAPER_SPEC_PREFIX)


def visual_goal_from_spec(
    spec: str, weights_dir: str | os.PathLike[str] | None = None
) -> np.ndarray:
    """Returns the goal embedding ``"paper:<name>"`` names (use `PAPER_VISUAL_COND_SCALE`).

    Args:
        spec: ``"paper:"`` and one of `PAPER_VISUAL_PROMPT_NAMES`, e.g. ``"paper:dirt"``.
        weights_dir: As for `load_visual_prompts`.

    Returns:
        A new ``(512,)`` float32 array.

    Raises:
        ConfigurationError: If `spec` is not ``paper:<name>`` or the name is not one of the 11.
        WeightsError: As `load_visual_prompts`.
    """
    names = ", ".join(PAPER_VISUAL_PROMPT_NAMES)
    if not is_paper_spec(spec):
        raise ConfigurationError(
            f"A paper visual prompt is named 'paper:<name>', got {str(spec)[:80]!r}; the names "
            f"are {names}."
        )
    name = spec[len(PAPER_SPEC_PREFIX) :].strip()
    if name not in PAPER_VISUAL_PROMPT_NAMES:
        raise ConfigurationError(
            f"{spec[:80]!r} names no visual prompt of the paper; the names are {names}."
        )
    return load_visual_prompts(weights_dir)[name].copy()


def check_visual_prompts(
    directory: str | os.PathLike[str] | None = None, *, memoised: bool = False
) -> FileStatus:
    """Checks the stored visual prompts for ``weights verify`` and ``doctor``.

    The file is optional: missing is reported as not present (not as damage). A present file
    must match the SHA-256 recorded when it was written and read back as the 11 embeddings.

    Args:
        directory: The weights directory.
        memoised: Use the remembered digests (``doctor``); False hashes the file again.
    """
    folder = weights_dir(directory)
    path = folder / VISUAL_PROMPTS_FILE
    if not path.is_file():
        detail = "missing (optional)" if not path.exists() else "not a regular file"
        return FileStatus(VISUAL_PROMPTS_FILE, path.exists(), False, detail)
    try:
        recorded = read_checksums(folder)
        digest = (file_digests if memoised else hash_file)(path)["sha256"]
    except (OSError, WeightsError) as exc:
        detail = getattr(exc, "strerror", None) or str(exc)
        return FileStatus(VISUAL_PROMPTS_FILE, True, False, f"unreadable: {detail}")
    wanted = recorded.get(VISUAL_PROMPTS_FILE)
    if wanted is not None and digest != wanted:
        return FileStatus(
            VISUAL_PROMPTS_FILE, True, False,
            f"sha256 {digest[:16]}... != recorded {wanted[:16]}... (a checksum mismatch: "
            f"delete it and download it again)",
        )  # fmt: skip
    try:
        _read_stored(path)
    except WeightsError as exc:
        return FileStatus(VISUAL_PROMPTS_FILE, True, False, str(exc))
    checksum = "recorded sha256" if wanted else f"no checksum in {CHECKSUMS_FILE}"
    return FileStatus(VISUAL_PROMPTS_FILE, True, True, f"ok ({checksum}; 11 visual prompts)")
