"""Locate and safely load STEVE-1 weight and model files.

Loading never runs code from a file: ``.model`` files (pickles of plain dicts) go through an
unpickler that refuses every class and function, and weight files through
``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import pickle
import pickletools
import re
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from steve1_env.errors import Steve1EnvError, UnsafeFileError, WeightsError
from steve1_env.files import (
    atomic_write_text,
    describe_content,
    is_markup,
    parse_json,
    read_regular_file,
)

_log = logging.getLogger(__name__)

WEIGHTS_DIR_ENV = "STEVE1_WEIGHTS_DIR"

OFFICIAL_FILES: dict[str, str] = {
    "model": "2x.model",
    "policy": "steve1.weights",
    "prior": "steve1_prior.pt",
    "mineclip": "attn.pth",
}
"""Role -> official file name."""

GOOGLE_DRIVE_IDS: dict[str, str] = {
    "steve1.weights": "1E3fd_-H1rRZqMkUKHfiMhx-ppLLehQPI",
    "steve1_prior.pt": "1OdX5wiybK8jALVfP5_dEo0CWm9BQbDES",
    "attn.pth": "1uaZM1ZLBz2dZWcn85rZmjP7LV6Sg5PZW",
}
DIRECT_URLS: dict[str, str] = {
    "2x.model": "https://openaipublic.blob.core.windows.net/minecraft-rl/models/2x.model",
}


def official_url(name: str) -> str:
    """Returns the download URL of an official file."""
    if name in DIRECT_URLS:
        return DIRECT_URLS[name]
    if name in GOOGLE_DRIVE_IDS:
        return f"https://drive.google.com/uc?export=download&id={GOOGLE_DRIVE_IDS[name]}"
    known = list(OFFICIAL_FILES.values())
    raise WeightsError(f"No known source for {name!r}; official files: {known}.")


KNOWN_MD5: dict[str, str] = {"attn.pth": "b5ece9198337cfd117a3bfbd921e56da"}
"""Published checksums of official files (MineCLIP's md5 is in STEVE-1's config)."""

_STRIPPED_PREFIXES = ("module.policy.", "policy.", "module.")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class FileSpec:
    """What an official file must be before it is accepted (downloaded, verified, reported ok).

    Attributes:
        kind: ``"model"`` (a ``.model`` pickle of plain values) or ``"state_dict"`` (a torch
            state dict of tensors).
        min_bytes: The smallest size the file can have.
        max_bytes: The largest; a download stops as soon as it passes this.
        required_key_prefix: For a state dict, a prefix some key must start with (what the
            file is used for lives there); empty: none required.
    """

    kind: str
    min_bytes: int
    max_bytes: int
    required_key_prefix: str = ""


# Parameter counts summed from the shapes in the released architectures' key manifests
# (golden/manifests.json), not measured files.
POLICY_PARAMETERS = 249_545_918
"""Parameters of the STEVE-1 policy (VPT 2x; 136 tensors)."""
PRIOR_PARAMETERS = 2_366_976
"""Parameters of the prior (conditional VAE 512/512/512; 20 tensors)."""
MINECLIP_PARAMETERS = 158_537_730
"""Distinct parameters of MineCLIP's checkpoint: its 788 keys hold 394,295,811 values, but
``image_encoder`` is ``clip_model.vision_model`` and ``reward_head.clip_model`` is
``clip_model``, and torch.save stores a shared tensor once."""
MINECLIP_STORED_VALUES = 394_295_811
"""Values under MineCLIP's 788 checkpoint keys, counting shared tensors once per key."""
OFFICIAL_TOTAL_BYTES = 4 * (POLICY_PARAMETERS + PRIOR_PARAMETERS + MINECLIP_PARAMETERS)
"""About what the official files take on disk together (float32; 1.64 GB)."""
MINECLIP_TEXT_PREFIX = "model.clip_model.text_model."
"""Where the text tower (the part used here) lives in MineCLIP's checkpoint."""

_MB = 1_000_000
_ARCHIVE_OVERHEAD = _MB  # zip headers, pickled key names: ~1 KB per tensor at most


def _state_dict_spec(parameters: int, *, fp16: bool = True, prefix: str = "") -> FileSpec:
    # From 90% of the parameters in float16 (float32 if not `fp16`) to 110% of them in
    # float32 plus the archive's overhead.
    smallest = 0.9 * parameters * (2 if fp16 else 4)
    largest = 1.1 * parameters * 4 + _ARCHIVE_OVERHEAD
    return FileSpec("state_dict", int(smallest), int(largest), prefix)


OFFICIAL_SPECS: dict[str, FileSpec] = {
    # A pickle of about 20 constructor arguments (the golden copy is 581 bytes).
    "2x.model": FileSpec("model", 256, 64 * 1024),
    "steve1.weights": _state_dict_spec(POLICY_PARAMETERS),  # 449 MB .. 1,099 MB
    "steve1_prior.pt": _state_dict_spec(PRIOR_PARAMETERS),  # 4.3 MB .. 11.4 MB
    # Its md5 is pinned, so only one file passes anyway; its size was never measured here, so
    # the bounds allow float32 with shared tensors stored once (634 MB) or each key's tensor
    # stored apart (1.58 GB): 571 MB .. 1,736 MB.
    "attn.pth": FileSpec(
        "state_dict",
        int(0.9 * MINECLIP_PARAMETERS * 4),
        int(1.1 * MINECLIP_STORED_VALUES * 4) + _ARCHIVE_OVERHEAD,
        MINECLIP_TEXT_PREFIX,
    ),
}
"""Official file name -> its kind and size bounds (see `check_file_content`)."""

REDOWNLOAD_HINT = (
    "Delete it and download it again (`steve1-env weights download` fetches the official files)."
)
MIRROR_REDOWNLOAD_HINT = (
    "Delete it and download the mirror again (steve1_env.download.download_hub fetches it "
    "from the Hugging Face Hub)."
)


def weights_dir(directory: str | os.PathLike[str] | None = None) -> Path:
    """Returns the weights directory.

    That is `directory` if given, else ``$STEVE1_WEIGHTS_DIR``, else the user cache
    (``$XDG_CACHE_HOME/steve1_env/weights``, by default under ``~/.cache``).

    Raises:
        WeightsError: If the path cannot even be looked up (a name too long, no permission
            to search a folder on the way); a path that does not exist yet is fine.
    """
    if directory is not None:
        path = Path(directory).expanduser()
    elif os.environ.get(WEIGHTS_DIR_ENV):
        path = Path(os.environ[WEIGHTS_DIR_ENV]).expanduser()
    else:
        path = user_cache_dir() / "weights"
    try:
        path.stat()
    except (FileNotFoundError, NotADirectoryError):
        pass  # not there (yet): each caller says what that means for it
    except OSError as exc:  # checked once here, so every later lookup below it works
        raise WeightsError(
            f"The weights directory {str(path)[:200]!r} cannot be used ({exc.strerror}); "
            f"give another one (the `directory` argument or ${WEIGHTS_DIR_ENV})."
        ) from None
    return path


def user_cache_dir() -> Path:
    """Returns ``$XDG_CACHE_HOME/steve1_env`` (by default ``~/.cache/steve1_env``)."""
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "steve1_env"


def locate(role: str, directory: str | os.PathLike[str] | None = None) -> Path:
    """Returns the path of an official file (`role` as in `OFFICIAL_FILES`), checked to exist.

    Raises:
        WeightsError: If the file is not there; the message lists every official file missing
            from the directory, how to download them and how to run offline instead.
    """
    folder = weights_dir(directory)
    path = folder / OFFICIAL_FILES[role]
    if not path.is_file():
        missing = [name for name in OFFICIAL_FILES.values() if not (folder / name).is_file()]
        raise WeightsError(
            f"{path.name} not found in {folder} (missing there: {', '.join(missing)}). Get the "
            "official files with `steve1-env weights download` (or MineStudio's Hugging Face "
            "mirror of the three models with `steve1_env.download.download_hub`), or point "
            f"${WEIGHTS_DIR_ENV} or the weights argument at a directory holding them. To run "
            "offline without them: untrained networks with gym.make('Steve1Skill-v0', "
            "policy_kwargs={'weights': 'random'}, prompt_encoder_kwargs={'weights': 'random'}) "
            "or the synthetic world's oracle with gym.make('Steve1Skill-v0', "
            "policy='scripted', prompt_encoder='hash')."
        )
    _log.debug("found the %s file %s", role, path)
    return path


def weight_file(
    role: str, given: str | os.PathLike[str] | None, directory: str | os.PathLike[str] | None
) -> Path:
    """Returns the file given for `role` (an argument such as ``mineclip=``), else `locate`'s.

    Raises:
        WeightsError: If the given file does not exist, or (nothing given) as `locate`.
    """
    if given is None:
        return locate(role, directory)
    path = Path(given).expanduser()
    _log.debug("using the %s file given: %s", role, path)
    if not path.is_file():
        raise WeightsError(
            f"{role}={os.fspath(given)!r}: no such file. Give the path of the {role} file, or "
            "leave it out to use the weights directory (get the official files with "
            "`steve1-env weights download`)."
        )
    return path


_MEMO_BYTES = 4096  # a memo holds one path, a few numbers and two digests


def _digest_memo(path: Path) -> Path:
    key = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:32]
    return user_cache_dir() / "digests" / f"{key}.json"


def hash_file(path: str | os.PathLike[str]) -> dict[str, str]:
    """Returns ``{"sha256": ..., "md5": ...}`` of a file, always reading it."""
    sha256, md5 = hashlib.sha256(), hashlib.md5()  # md5: the published checksum, not security
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            sha256.update(chunk)
            md5.update(chunk)
    return {"sha256": sha256.hexdigest(), "md5": md5.hexdigest()}


def file_digests(path: str | os.PathLike[str]) -> dict[str, str]:
    """Returns ``{"sha256": ..., "md5": ...}`` of a file, remembered between runs.

    The memo lives in the user cache (never beside the file) and is reused only while the
    file's size, modification and change times and inode are unchanged, so large weight files
    are hashed once. `steve1_env.download.verify` always re-reads the files.
    """
    path = Path(path)
    stat = path.stat()
    stamp = {
        "path": str(path.resolve()),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "ctime_ns": stat.st_ctime_ns,
        "inode": stat.st_ino,
    }
    memo = _digest_memo(path)
    try:
        saved = parse_json(read_regular_file(memo, _MEMO_BYTES, "checksum memo"), "", "")
        if {key: saved.get(key) for key in stamp} == stamp:
            return {"sha256": str(saved["sha256"]), "md5": str(saved["md5"])}
    except (OSError, Steve1EnvError, KeyError, AttributeError):
        pass  # a missing or damaged memo (it is only a cache): hash again
    digests = hash_file(path)
    with contextlib.suppress(OSError, Steve1EnvError):  # an unwritable cache: hash next time
        memo.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(memo, json.dumps({**stamp, **digests}), "the checksum memo")
    return digests


def file_digest(path: str | os.PathLike[str]) -> str:
    """Returns a file's SHA-256 (see `file_digests`)."""
    return file_digests(path)["sha256"]


def verify_known_digest(
    path: str | os.PathLike[str], expected: str | None = None, official_name: str | None = None
) -> None:
    """Checks a file against the published md5 of the official file it stands for.

    Args:
        path: The file.
        expected: The md5 it must have; default: the published one of `official_name`
            (`KNOWN_MD5`), and nothing is checked when there is none.
        official_name: The official file it stands for (default: its own name).

    Raises:
        WeightsError: If its md5 differs.
    """
    path = Path(path)
    official_name = path.name if official_name is None else official_name
    expected = KNOWN_MD5.get(official_name) if expected is None else expected
    if expected is None:
        return
    actual = file_digests(path)["md5"]
    _log.debug("%s: md5 %s, published %s", path, actual, expected)
    if actual != expected:
        raise WeightsError(
            f"{path} has md5 {actual}, but the official {official_name} has {expected}: the "
            "file is corrupt or not the official one. Download it again (`steve1-env weights "
            "download`)."
        )


class _PlainValuesUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        raise UnsafeFileError(
            f"Refusing to load {module}.{name}: this file would create objects or call "
            "functions when unpickled. A .model file holds only plain values (dicts, lists, "
            "strings, numbers); do not load a file from an untrusted source."
        )


@dataclass(frozen=True)
class ModelFile:
    """The contents of a VPT ``.model`` file.

    Attributes:
        policy_kwargs: The network's constructor arguments.
        pi_head_kwargs: The action heads' arguments (``temperature``).
    """

    policy_kwargs: dict[str, Any]
    pi_head_kwargs: dict[str, Any] = field(default_factory=dict)


def load_model_file(path: str | os.PathLike[str]) -> ModelFile:
    """Reads a ``.model`` file without running code from it.

    Raises:
        UnsafeFileError: If the pickle names any class or function.
        WeightsError: If the file is unreadable or lacks ``["model"]["args"]["net"]["args"]``.
    """
    try:
        with open(path, "rb") as handle:
            data = _PlainValuesUnpickler(handle).load()
    except UnsafeFileError:
        raise
    except OSError as exc:
        raise WeightsError(f"Cannot read the model file {path}: {exc}") from exc
    except Exception:  # a malformed pickle raises many kinds (even IndexError, MemoryError)
        raise WeightsError(
            f"Cannot read the model file {path}: it is {describe_file(path)}, not a pickle of "
            f"plain values. {REDOWNLOAD_HINT}"
        ) from None
    expected = (
        f"{path} is not a VPT .model file: expected a dict with "
        "['model']['args']['net']['args'] holding the policy's arguments by name"
    )
    try:
        args = data["model"]["args"]
        net_args, head_args = args["net"]["args"], args.get("pi_head_opts") or {}
    except (KeyError, TypeError, AttributeError) as exc:
        raise WeightsError(f"{expected}.") from exc
    for name, value in (("['net']['args']", net_args), ("['pi_head_opts']", head_args)):
        if not isinstance(value, Mapping) or not all(isinstance(key, str) for key in value):
            raise WeightsError(f"{expected}; its {name} is a {type(value).__name__}.")
    if not net_args:
        raise WeightsError(f"{expected}; they are empty.")
    return ModelFile(dict(net_args), dict(head_args))


_SNIFF_BYTES = 1 << 20
# Globals a torch file of the legacy (pickle) format names: tensors and plain containers.
_TORCH_GLOBAL = re.compile(r"(torch|collections\.OrderedDict)\b")


def _head(path: str | os.PathLike[str]) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(_SNIFF_BYTES)


def describe_file(path: str | os.PathLike[str]) -> str:
    """Says what a file looks like from its first bytes, for error messages.

    Never loads it: pickles (plain, or inside a torch zip archive) are only scanned
    (`pickle_globals`) for what they would import.

    Returns:
        A phrase such as ``"an HTML page"``, ``"a damaged zip archive (truncated or
        corrupted)"`` or ``"a plain Python pickle that would import posix.system"``.
    """
    try:
        head = _head(path)
    except OSError as exc:
        return f"unreadable ({exc.strerror})"
    kind = describe_content(head)
    if kind == "a zip archive":
        if not zipfile.is_zipfile(path):
            return "a damaged zip archive (truncated or corrupted)"
        if _torch_pickle(path) is None:
            return "a zip archive without a torch checkpoint inside"
        foreign = ", ".join(_foreign_globals(path)[:5])
        return f"a torch file that would import {foreign}" if foreign else "a torch file"
    if kind == "a Python pickle":
        foreign = ", ".join(_foreign_globals(path)[:5])
        if foreign:
            return f"a plain Python pickle that would import {foreign}"
        return "a plain Python pickle (torch.save writes a zip archive)"
    return kind


def _torch_pickle(path: str | os.PathLike[str]) -> bytes | None:
    """The start of the pickle inside a torch zip archive (``<name>/data.pkl``), if any."""
    try:
        with zipfile.ZipFile(path) as archive:
            member = next((n for n in archive.namelist() if n.endswith("/data.pkl")), None)
            if member is None:
                return None
            with archive.open(member) as handle:
                return handle.read(_SNIFF_BYTES)
    except (OSError, zipfile.BadZipFile, ValueError, EOFError):
        return None


def _foreign_globals(path: str | os.PathLike[str]) -> list[str]:
    """What a file's pickle (plain or in a torch zip) would import beyond tensors and dicts."""
    try:
        head = _head(path)
    except OSError:
        return []
    if head.startswith(b"PK\x03\x04"):
        head = _torch_pickle(path) or b""
    if head[:1] != b"\x80":
        return []
    return [name for name in pickle_globals(head) if not _TORCH_GLOBAL.match(name)]


def pickle_globals(data: bytes) -> list[str]:
    """Returns the ``module.name`` of every class or function a pickle would import.

    Scans the opcodes without executing them; a truncated pickle yields what precedes the cut.
    """
    names: list[str] = []
    strings: list[str] = []  # the last strings pushed: STACK_GLOBAL takes its names from them
    try:
        for opcode, argument, _ in pickletools.genops(io.BytesIO(data)):
            if opcode.name in ("GLOBAL", "INST"):
                names.append(str(argument).replace(" ", "."))
            elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                names.append(f"{strings[-2]}.{strings[-1]}")
            elif isinstance(argument, str):
                strings = [*strings[-1:], argument]
    except Exception:  # cut short or malformed: report what was found before
        pass
    return list(dict.fromkeys(names))


def _refused_global(message: str) -> str | None:
    # torch names what it refused ("... unsupported GLOBAL posix.system ..." or "Unsupported
    # global: GLOBAL posix.system was not an allowed global ..."); only the name is kept, never
    # torch's advice (which is to load unsafely or allowlist it).
    match = re.search(r"GLOBAL ([\w.]+)", message)
    return None if match is None else match.group(1).rstrip(".")


_TORCH_PROTOCOL_WARNING = r"Detected pickle protocol \d+ in the checkpoint"
"""The start of torch's warning about the protocol of a pickle its safe unpickler reads."""


_ZIP_EXPANSION_SLACK = 1 << 20  # member headers and the pickle; torch stores tensors as they are


def _check_zip_expansion(path: Path) -> None:
    """Refuses a zip whose members would expand past the file's own size when read.

    torch writes its zip files uncompressed, so a real checkpoint's members add up to about the
    file's size; a deflate-compressed member could instead expand a few MB into many GB inside
    `torch.load`, past every size bound checked on disk.

    Raises:
        WeightsError: If the members' uncompressed sizes add up to more than the file holds.
    """
    try:
        if not zipfile.is_zipfile(path):
            return  # the legacy format, or not a torch file: torch.load says which
        with zipfile.ZipFile(path) as archive:
            expanded = sum(member.file_size for member in archive.infolist())
    except (OSError, zipfile.BadZipFile, ValueError):
        return  # torch.load reports an unreadable or damaged file in its own words
    on_disk = path.stat().st_size
    if expanded > on_disk + _ZIP_EXPANSION_SLACK:
        raise WeightsError(
            f"{path} is a zip archive whose members expand to {expanded:,} bytes from "
            f"{on_disk:,} on disk; torch stores its tensors uncompressed, so this is not a "
            f"torch checkpoint as torch.save writes it. {REDOWNLOAD_HINT}"
        )


def load_state_dict(path: str | os.PathLike[str], map_location: Any = "cpu") -> dict[str, Any]:
    """Loads a ``torch.save``-d state dict safely and strips training-wrapper prefixes.

    A checkpoint that wraps the weights (``{"state_dict": {...}, "epoch": ...}``) is unwrapped.
    ``module.policy.`` (the official prefix), ``policy.`` and ``module.`` are removed when
    every key carries them.

    Raises:
        UnsafeFileError: If the file names classes or functions beyond tensors and plain
            containers (loading it would run code).
        WeightsError: If it is unreadable, corrupt, a zip whose members would expand past the
            file's size, or not a mapping of names to tensors.
    """
    import torch

    _check_zip_expansion(Path(path))
    _log.info("loading the weights %s", path)
    try:
        with warnings.catch_warnings():
            # torch warns that its safe unpickler may not support a pickle protocol above 2
            # (legacy files, or files saved with a newer protocol): it is our chosen loader,
            # and a file it cannot read gets our own error below, so the warning only alarms.
            warnings.filterwarnings(
                "ignore", _TORCH_PROTOCOL_WARNING, category=UserWarning, module=r"torch(\.|$)"
            )
            data = torch.load(path, map_location=map_location, weights_only=True)
    except OSError as exc:
        raise WeightsError(f"Cannot read the weight file {path}: {exc}") from exc
    except Exception as exc:  # torch raises many kinds on corrupt files (even IndexError)
        # torch's own message advises weights_only=False; it is replaced, not chained.
        raise _unloadable(path, exc) from None
    if isinstance(data, Mapping) and isinstance(data.get("state_dict"), Mapping):
        data = data["state_dict"]
    if not isinstance(data, Mapping) or not all(isinstance(k, str) for k in data):
        raise WeightsError(
            f"{path} is not a state dict (a mapping of parameter names to tensors); got "
            f"{type(data).__name__}."
        )
    state = dict(data)
    for prefix in _STRIPPED_PREFIXES:
        if state and all(key.startswith(prefix) for key in state):
            state = {key[len(prefix) :]: value for key, value in state.items()}
    return state


def _unloadable(path: str | os.PathLike[str], exc: Exception) -> WeightsError:
    """The error for a file ``torch.load(weights_only=True)`` refused: what the file is."""
    refused = _refused_global(str(exc)) or ", ".join(_foreign_globals(path)[:5]) or None
    if refused is not None:
        return UnsafeFileError(
            f"Refusing to load {path}: it would import {refused} when loaded, so loading it "
            "could run code; weight files hold only tensors and plain containers. "
            f"{REDOWNLOAD_HINT} Only load weight files from sources you trust."
        )
    found = describe_file(path)
    if found == "a torch file":  # nothing foreign in it, yet the safe loader failed
        found = (
            "a torch file that torch's safe loader cannot read (damaged, or saved with a "
            "pickle protocol it does not support)"
        )
        return WeightsError(f"Cannot read the weight file {path}: it is {found}. {REDOWNLOAD_HINT}")
    return WeightsError(
        f"Cannot read the weight file {path}: it is not a readable torch file but "
        f"{found}. {REDOWNLOAD_HINT}"
    )


def check_state_dict(expected: Mapping[str, Any], given: Mapping[str, Any], what: str) -> None:
    """Checks that `given` has exactly the keys and shapes of `expected`.

    Raises:
        WeightsError: Listing missing, unexpected and mis-shaped keys (the first few of each).
    """

    def listed(keys: list[str]) -> str:
        shown = ", ".join(keys[:8])
        return shown + (f" (+{len(keys) - 8} more)" if len(keys) > 8 else "")

    not_tensors = sorted(
        key for key, value in given.items() if not hasattr(value, "is_floating_point")
    )
    if not_tensors:
        raise WeightsError(
            f"The {what} weights hold values that are not tensors: {', '.join(not_tensors[:8])}."
        )
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    not_float = sorted(
        key
        for key in set(expected) & set(given)
        if expected[key].is_floating_point() and not given[key].is_floating_point()
    )
    misshaped = sorted(
        f"{key} {tuple(given[key].shape)} != {tuple(expected[key].shape)}"
        for key in set(expected) & set(given)
        if tuple(getattr(given[key], "shape", ())) != tuple(expected[key].shape)
    )
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing: {listed(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected: {listed(unexpected)}")
    if misshaped:
        problems.append(f"{len(misshaped)} with the wrong shape: {listed(misshaped)}")
    if not_float:
        problems.append(f"{len(not_float)} not floating point: {listed(not_float)}")
    if problems:
        raise WeightsError(
            f"The {what} weights do not fit the network: {'; '.join(problems)}. Check that the "
            "file and the .model file (architecture) belong together."
        )


def official_spec(name: str, specs: Mapping[str, FileSpec] | None = None) -> FileSpec:
    """Returns what the official file `name` must be (from `specs`, default `OFFICIAL_SPECS`).

    Raises:
        WeightsError: If `name` is not an official file.
    """
    specs = OFFICIAL_SPECS if specs is None else specs
    if name not in specs:
        raise WeightsError(f"{name!r} is not an official file; official files: {list(specs)}.")
    return specs[name]


def check_file_content(
    path: str | os.PathLike[str],
    name: str | None = None,
    *,
    specs: Mapping[str, FileSpec] | None = None,
) -> str:
    """Checks that a file is what the official file `name` (default: its own name) must be.

    The one content check behind ``weights download`` (before a file gets its final name),
    ``weights verify`` and ``doctor``: the file is not markup, its size lies within the
    official bounds (`FileSpec`), and it loads safely as what it is (a ``.model`` pickle of plain
    values with the policy's arguments; a torch state dict of tensors; for MineCLIP, one that
    holds the text tower). Checksums are checked separately.

    Args:
        path: The file.
        name: The official file it must be.
        specs: Name -> `FileSpec`; default `OFFICIAL_SPECS` (tests pass bounds for small files).

    Returns:
        What the file was found to be, e.g. ``"a torch state dict of 136 tensors"``.

    Raises:
        UnsafeFileError: If loading the file would import classes or functions.
        WeightsError: If it is markup, out of bounds, or does not load as what it should be.
    """
    path = Path(path)
    name = path.name if name is None else name
    spec = official_spec(name, specs)
    try:
        size = path.stat().st_size
        head = _head(path)[:64]
    except OSError as exc:
        raise WeightsError(f"Cannot read {path}: {exc.strerror}.") from exc
    if is_markup(head):
        raise WeightsError(
            f"{path} is {describe_file(path)} ({size} bytes), not the official {name} (a web "
            f"page saved in its place: access denied, quota exceeded?). {REDOWNLOAD_HINT}"
        )
    if not spec.min_bytes <= size <= spec.max_bytes:
        raise WeightsError(
            f"{path} is {size:,} bytes; the official {name} is expected to have between "
            f"{spec.min_bytes:,} and {spec.max_bytes:,} bytes. It is {describe_file(path)}, "
            f"truncated or not the official file. {REDOWNLOAD_HINT}"
        )
    if spec.kind == "model":
        model = load_model_file(path)
        return f"a .model file with {len(model.policy_kwargs)} policy arguments"
    state = load_state_dict(path)
    not_tensors = [key for key, value in state.items() if not _is_tensor(value)]
    if not state or not_tensors:
        raise WeightsError(
            f"{path} is not a state dict of tensors (empty, or values that are not tensors: "
            f"{', '.join(not_tensors[:5])}). {REDOWNLOAD_HINT}"
        )
    prefix = spec.required_key_prefix
    if prefix and not any(key.startswith(prefix) for key in state):
        raise WeightsError(
            f"{path} holds none of the official {name}'s keys that are used (no key starts "
            f"with {prefix!r}): it is not the official {name}. {REDOWNLOAD_HINT}"
        )
    return f"a torch state dict of {len(state)} tensors"


_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_VERDICT_BYTES = 4096  # a verdict memo holds a digest, a name, a spec and a short phrase


def _verdict_memo(sha256: str) -> Path:
    return user_cache_dir() / "content-checks" / f"{sha256}.json"


def remembered_content_check(
    path: str | os.PathLike[str],
    sha256: str,
    name: str | None = None,
    *,
    specs: Mapping[str, FileSpec] | None = None,
    reuse: bool = True,
) -> str:
    """`check_file_content`, remembered by the file's SHA-256 so an unchanged file loads once.

    A file that passed is recorded in the user cache (``content-checks/<sha256>.json``, never
    beside the file) with the name and `FileSpec` it passed as; while its SHA-256 is the same,
    the check is not run again. Failures are not recorded. A missing, unreadable or damaged
    memo counts as no memo. The memo only spares the check: loading the file later is as
    safe as ever (`load_state_dict`), whatever the memo says.

    Args:
        path: The file.
        sha256: The file's SHA-256, computed by the caller from its content (`file_digests`).
        name: The official file it must be (default: its own name).
        specs: As for `check_file_content`.
        reuse: Trust a memo (``doctor``); False re-checks and records (``weights verify``).

    Returns:
        What `check_file_content` found, marked when it comes from an earlier run.

    Raises:
        UnsafeFileError: As `check_file_content`.
        WeightsError: As `check_file_content`.
    """
    path = Path(path)
    name = path.name if name is None else name
    spec = official_spec(name, specs)
    record = {"sha256": sha256, "name": name, "spec": asdict(spec)}
    memo = _verdict_memo(sha256) if _SHA256_HEX.fullmatch(sha256) else None
    if reuse and memo is not None:
        with contextlib.suppress(OSError, Steve1EnvError):  # no memo, or a damaged one
            saved = parse_json(read_regular_file(memo, _VERDICT_BYTES, "content memo"), "", "")
            found = saved.get("found") if isinstance(saved, dict) else None
            if isinstance(found, str) and {key: saved.get(key) for key in record} == record:
                return f"{found[:200]}, content checked on an earlier run"
    found = check_file_content(path, name, specs=specs)
    if memo is not None:
        with contextlib.suppress(OSError, Steve1EnvError):  # an unwritable cache: check again
            memo.parent.mkdir(parents=True, exist_ok=True)
            text = json.dumps({**record, "found": found})
            atomic_write_text(memo, text, "the content memo")
    return found


def _is_tensor(value: Any) -> bool:
    import torch

    return isinstance(value, torch.Tensor)


# ------------------------------------------------------------ the Hugging Face Hub mirror
MIRROR_REPO = "CraftJarvis/MineStudio_STEVE-1.official"
"""MineStudio's copy of the whole STEVE-1 model on the Hugging Face Hub (see docs/weights.md)."""
MIRROR_DIR = "minestudio-steve1"
"""The folder of the weights directory that the mirror's file is downloaded into."""
MIRROR_FILES = ("model.safetensors", "pytorch_model.bin")
"""The mirror's weight file, in the order ``PyTorchModelHubMixin`` looks for it."""
MIRROR_PREFIXES: dict[str, tuple[str, ...]] = {
    "policy": ("net.", "pi_head.", "value_head."),
    "mineclip": ("mineclip.",),
    "prior": ("prior.",),
}
"""Role -> the key prefixes of its tensors in the mirror's single state dict. The policy's
keys are those of ``steve1.weights`` (kept whole); MineCLIP's are its checkpoint's
``model.<key>`` as ``mineclip.<key>``; the prior's are ``steve1_prior.pt``'s under ``prior.``."""
_MINECLIP_MIRROR_PREFIX = "mineclip."
_MINECLIP_CHECKPOINT_ROOT = "model."


def find_mirror(directory: str | os.PathLike[str] | None = None) -> Path | None:
    """Returns the mirror's file in the weights directory, or None if absent.

    It is looked for in `MIRROR_DIR` (where `steve1_env.download.download_hub` puts it), then
    in the directory itself (a directory given is the mirror's own download folder, or one a
    Hub client such as ``hf download --local-dir`` filled).
    """
    top = weights_dir(directory)
    for folder in (top / MIRROR_DIR, top):
        for name in MIRROR_FILES:
            if (folder / name).is_file():
                return folder / name
    return None


def is_mirror_file(path: str | os.PathLike[str]) -> bool:
    """Whether `path` is read as the mirror's single file rather than one model's own file.

    That is by its name: one of `MIRROR_FILES`, or any ``.safetensors`` file.
    """
    path = Path(path)
    return path.name in MIRROR_FILES or path.suffix == ".safetensors"


def _safetensors_part(
    path: Path, prefixes: tuple[str, ...], *, keys_only: bool = False
) -> dict[str, Any]:
    """The tensors of `path` under `prefixes` (with `keys_only`, their names -> None)."""
    from steve1_env.optional import import_optional

    safetensors = import_optional("safetensors", "hub", "Reading a .safetensors weight file")
    try:
        # safetensors holds a JSON header and raw tensors: reading it never runs code, and
        # only the tensors asked for are read (the policy without MineCLIP's 600 MB).
        with safetensors.safe_open(str(path), framework="pt", device="cpu") as handle:
            return {
                key: None if keys_only else handle.get_tensor(key)
                for key in handle.keys()  # noqa: SIM118 (a safetensors handle, not a dict)
                if key.startswith(prefixes)
            }
    except OSError as exc:
        raise WeightsError(f"Cannot read the weight file {path}: {exc}") from exc
    except Exception as exc:  # safetensors raises its own SafetensorError on a damaged file
        raise WeightsError(
            f"Cannot read the weight file {path}: it is not a readable safetensors file "
            f"({str(exc)[:200]}). {MIRROR_REDOWNLOAD_HINT}"
        ) from None


def load_mirror_part(path: str | os.PathLike[str], role: str) -> dict[str, Any]:
    """Reads one model's weights from the mirror's single file, safely.

    A ``.safetensors`` file is read with safetensors (no code can run); any other file with
    `load_state_dict` (``torch.load(weights_only=True)``).

    Args:
        path: The mirror's file.
        role: ``"policy"``, ``"mineclip"`` or ``"prior"`` (`MIRROR_PREFIXES`).

    Returns:
        The weights as that model's own official file holds them: the policy's keys as in
        ``steve1.weights``, MineCLIP's as ``model.<key>`` (``attn.pth``'s ``state_dict``),
        the prior's as in ``steve1_prior.pt``.

    Raises:
        WeightsError: If the file is unreadable or holds no key of that model.
        UnsafeFileError: If a non-safetensors file would run code when loaded.
    """
    path = Path(path)
    if role not in MIRROR_PREFIXES:
        raise WeightsError(f"{role!r} is not in the mirror; it holds {list(MIRROR_PREFIXES)}.")
    prefixes = MIRROR_PREFIXES[role]
    if path.suffix == ".safetensors":
        part = _safetensors_part(path, prefixes)
    else:
        part = {key: value for key, value in load_state_dict(path).items()
                if key.startswith(prefixes)}  # fmt: skip
    if not part:
        raise WeightsError(
            f"{path} holds no {role} weights (no key starts with {' or '.join(prefixes)}): it "
            f"is not the STEVE-1 mirror ({MIRROR_REPO}). {MIRROR_REDOWNLOAD_HINT}"
        )
    if role == "mineclip":
        return {
            _MINECLIP_CHECKPOINT_ROOT + key[len(_MINECLIP_MIRROR_PREFIX) :]: value
            for key, value in part.items()
        }
    if role == "prior":
        return {key[len("prior.") :]: value for key, value in part.items()}
    return part


@dataclass(frozen=True)
class WeightSource:
    """Where one model's weights come from: its own official file, or the mirror's file.

    Attributes:
        path: The file.
        role: ``"policy"``, ``"mineclip"`` or ``"prior"``.
        mirror: True if `path` is the mirror's single file (read by prefix).
    """

    path: Path
    role: str
    mirror: bool

    def load(self) -> dict[str, Any]:
        """Returns the weights, keyed as the model's own official file keys them."""
        if self.mirror:
            return load_mirror_part(self.path, self.role)
        return load_state_dict(self.path)


def weight_source(
    role: str,
    given: str | os.PathLike[str] | None = None,
    directory: str | os.PathLike[str] | None = None,
) -> WeightSource:
    """Finds `role`'s weights: the file given, else its official file, else the mirror's.

    Args:
        role: ``"policy"``, ``"mineclip"`` or ``"prior"``.
        given: A file given for it (a mirror file, by `is_mirror_file`, is read by prefix).
        directory: The weights directory (see `weights_dir`).

    Raises:
        WeightsError: If neither is there (as `locate`, or `weight_file` for a given file).
    """
    if given is not None:
        path = weight_file(role, given, directory)
        return WeightSource(path, role, is_mirror_file(path))
    folder = weights_dir(directory)
    if not (folder / OFFICIAL_FILES[role]).is_file():
        mirror = find_mirror(folder)
        if mirror is not None:
            return WeightSource(mirror, role, True)
    return WeightSource(locate(role, folder), role, False)


def check_mirror_content(path: str | os.PathLike[str]) -> str:
    """Checks that `path` is the mirror's file: it holds keys of each of its three models.

    A ``.safetensors`` file is checked from its header alone; another file is loaded safely.

    Returns:
        What it holds, e.g. ``"136 policy, 788 mineclip and 20 prior tensors"``.

    Raises:
        WeightsError: If it is unreadable, or one of the models has no key in it.
        UnsafeFileError: If a non-safetensors file would run code when loaded.
    """
    path = Path(path)
    every = tuple(prefix for prefixes in MIRROR_PREFIXES.values() for prefix in prefixes)
    if path.suffix == ".safetensors":
        keys = list(_safetensors_part(path, every, keys_only=True))
    else:
        keys = list(load_state_dict(path))
    counts = {role: sum(key.startswith(p) for key in keys) for role, p in MIRROR_PREFIXES.items()}
    missing = [role for role, count in counts.items() if not count]
    if missing:
        raise WeightsError(
            f"{path} holds no {' and no '.join(missing)} weights (keys under "
            f"{', '.join(p for role in missing for p in MIRROR_PREFIXES[role])}): it is not the "
            f"STEVE-1 mirror ({MIRROR_REPO}). {MIRROR_REDOWNLOAD_HINT}"
        )
    return ", ".join(f"{count} {role}" for role, count in counts.items()) + " tensors"
