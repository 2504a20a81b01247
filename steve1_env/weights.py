"""Locate and safely load STEVE-1 weight and model files.

Loading never runs code from a file: ``.model`` files (pickles of plain dicts) go through an
unpickler that refuses every class and function, and weight files through
``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from steve1_env.errors import UnsafeFileError, WeightsError

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


def weights_dir(directory: str | os.PathLike[str] | None = None) -> Path:
    """Returns the weights directory.

    That is `directory` if given, else ``$STEVE1_WEIGHTS_DIR``, else the user cache
    (``$XDG_CACHE_HOME/steve1_env/weights``, by default under ``~/.cache``).
    """
    if directory is not None:
        return Path(directory).expanduser()
    if os.environ.get(WEIGHTS_DIR_ENV):
        return Path(os.environ[WEIGHTS_DIR_ENV]).expanduser()
    return user_cache_dir() / "weights"


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
            "official files with `steve1-env weights download`, or point "
            f"${WEIGHTS_DIR_ENV} or the weights argument at a directory holding them. To run "
            "offline without them: untrained networks with gym.make('Steve1Skill-v0', "
            "policy_kwargs={'weights': 'random'}, prompt_encoder_kwargs={'weights': 'random'}) "
            "(or `steve1-env demo --policy steve1 --weights random`), or the synthetic world's "
            "oracle with gym.make('Steve1Skill-v0', policy='scripted', prompt_encoder='hash')."
        )
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
    if not path.is_file():
        raise WeightsError(
            f"{role}={os.fspath(given)!r}: no such file. Give the path of the {role} file, or "
            "leave it out to use the weights directory (get the official files with "
            "`steve1-env weights download`)."
        )
    return path


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
        saved = json.loads(memo.read_text())
        if {key: saved.get(key) for key in stamp} == stamp:
            return {"sha256": saved["sha256"], "md5": saved["md5"]}
    except (OSError, ValueError, KeyError):
        pass
    digests = hash_file(path)
    with contextlib.suppress(OSError):  # an unwritable cache: hash again next time
        memo.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(memo, json.dumps({**stamp, **digests}))
    return digests


def file_digest(path: str | os.PathLike[str]) -> str:
    """Returns a file's SHA-256 (see `file_digests`)."""
    return file_digests(path)["sha256"]


def verify_known_digest(path: str | os.PathLike[str]) -> None:
    """Checks an official file against its published checksum, if it has one.

    Raises:
        WeightsError: If the file is named like an official file but its checksum differs.
    """
    path = Path(path)
    expected = KNOWN_MD5.get(path.name)
    if expected is None:
        return
    actual = file_digests(path)["md5"]
    if actual != expected:
        raise WeightsError(
            f"{path} has md5 {actual}, but the official {path.name} has {expected}: the file "
            "is corrupt or not the official one. Download it again (`steve1-env weights "
            "download`)."
        )


def atomic_write_text(path: Path, text: str) -> None:
    """Writes `text` to `path` through a unique temporary file and an atomic rename."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


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
    except (OSError, pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise WeightsError(f"Cannot read the model file {path}: {exc}") from exc
    try:
        args = data["model"]["args"]
        policy_kwargs = dict(args["net"]["args"])
        pi_head_kwargs = dict(args.get("pi_head_opts") or {})
    except (KeyError, TypeError, AttributeError) as exc:
        raise WeightsError(
            f"{path} is not a VPT .model file: expected a dict with "
            "['model']['args']['net']['args'] holding the policy kwargs."
        ) from exc
    return ModelFile(policy_kwargs, pi_head_kwargs)


def _refused_global(message: str) -> str | None:
    # torch names what it refused on a line of its own ("... unsupported GLOBAL posix.system
    # ..." or "Unsupported global: GLOBAL ..."); other failures are plain corruption.
    for line in message.splitlines():
        if "GLOBAL" in line:
            return line.strip()
    return None


def load_state_dict(path: str | os.PathLike[str], map_location: Any = "cpu") -> dict[str, Any]:
    """Loads a ``torch.save``-d state dict safely and strips training-wrapper prefixes.

    A checkpoint that wraps the weights (``{"state_dict": {...}, "epoch": ...}``) is unwrapped.
    ``module.policy.`` (the official prefix), ``policy.`` and ``module.`` are removed when
    every key carries them.

    Raises:
        UnsafeFileError: If the file names classes or functions beyond tensors and plain
            containers (loading it would run code).
        WeightsError: If it is unreadable, corrupt, or not a mapping of names to tensors.
    """
    import torch

    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        refused = _refused_global(str(exc))
        if refused is None:
            raise WeightsError(f"{path} is not a readable torch file: {exc}") from exc
        raise UnsafeFileError(
            f"Refusing to load {path}: it would create objects or call functions when loaded "
            f"({refused}). Only load weight files from sources you trust."
        ) from exc
    except Exception as exc:  # torch raises many kinds on corrupt files (even IndexError)
        raise WeightsError(f"Cannot read the weight file {path}: {exc!r}") from exc
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
