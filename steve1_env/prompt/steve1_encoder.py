"""`Steve1PromptEncoder`: instruction -> MineCLIP text embedding -> prior -> goal embedding.

This is STEVE-1's text-prompt path in our own code (``prompt_encoder="steve1"``). The text
tower is the expensive part, so its output is kept in an in-memory LRU; with a cache directory,
deterministic goal embeddings are also stored on disk, keyed by the instruction, both weight
files' SHA-256, the tower's configuration and a format version. The tower is loaded only when
an instruction misses the disk cache, so a process whose instructions are all cached never
loads it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from steve1_env import precision
from steve1_env.errors import (
    ClosedError,
    ConfigurationError,
    GoalEmbeddingError,
    Steve1EnvError,
    warn_caller,
)
from steve1_env.files import atomic_write_bytes, make_folder, read_regular_file
from steve1_env.prompt.mineclip import CHECKPOINT_PREFIX, TextTower, TextTowerConfig
from steve1_env.prompt.npy import read_npy_bytes
from steve1_env.prompt.prior import PriorVAE
from steve1_env.prompt.tokenizer import ClipTokenizer
from steve1_env.validation import (
    MAX_SEED,
    boolean,
    bounded_int,
    non_negative_int,
    optional_path,
    weights_seed,
)
from steve1_env.weights import (
    WeightSource,
    check_state_dict,
    file_digest,
    verify_known_digest,
    weight_source,
    weights_dir,
)

DISK_CACHE_FORMAT = 1
"""Bumped whenever what a disk-cache entry holds changes, so old entries are not reused."""
CACHE_ENTRY_MAX_BYTES = 16 * 2**10
"""Largest disk-cache entry read; a valid one (a ``(512,)`` float32 ``.npy``) takes 2,176 bytes."""


def text_tower_state(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """Returns the text tower's weights from a MineCLIP checkpoint's ``state_dict``.

    Keys under ``model.clip_model.text_model.`` are kept (prefix removed); the vision tower,
    temporal pooling and reward head are ignored.
    """
    return {
        key[len(CHECKPOINT_PREFIX) :]: value
        for key, value in checkpoint.items()
        if key.startswith(CHECKPOINT_PREFIX)
    }


class Steve1PromptEncoder:
    """STEVE-1's text prompt encoder (MineCLIP text tower + prior), a `PromptEncoder`.

    Args:
        device: Torch device.
        weights: ``"random"`` for untrained, seeded networks; a directory holding ``attn.pth``
            and ``steve1_prior.pt``; or None for the weights directory (``$STEVE1_WEIGHTS_DIR``).
        mineclip: A MineCLIP checkpoint path, overriding the one in `weights`.
        prior: A prior weight path, overriding the one in `weights`.
        text_config: Text tower sizes (default: the released MineCLIP's).
        sample: Draw the prior's latent from N(0, I) once per episode (see `start_episode`)
            instead of using zeros.
        cache_dir: Directory for the on-disk embedding cache; None for none.
        cache_size: Entries of the in-memory text-embedding LRU.
        seed: Seed of the random weights (``weights="random"``).
    """

    def __init__(
        self,
        device: Any = "cpu",
        weights: str | os.PathLike[str] | None = None,
        mineclip: str | os.PathLike[str] | None = None,
        prior: str | os.PathLike[str] | None = None,
        text_config: TextTowerConfig | None = None,
        sample: bool = False,
        cache_dir: str | os.PathLike[str] | None = None,
        cache_size: int = 1024,
        seed: int = 0,
    ) -> None:
        self.device = precision.resolve_device(device)
        self.sample = boolean(sample, "sample")
        self.cache_size = non_negative_int(cache_size, "cache_size", example="1024")
        seed = weights_seed(seed)
        mineclip = optional_path(mineclip, "mineclip", "'weights/attn.pth'")
        prior = optional_path(prior, "prior", "'weights/steve1_prior.pt'")
        checked_cache_dir = optional_path(cache_dir, "cache_dir", "'embedding_cache/'")
        self.tokenizer = ClipTokenizer()
        config = text_config or TextTowerConfig()
        if isinstance(weights, str) and weights == "random":
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                tower, self.prior = TextTower(config), PriorVAE()
                # These start at zero; noise keeps a random tower from being degenerate.
                for parameter in (tower.pos_embed, tower.projection):
                    torch.nn.init.normal_(parameter, std=0.02)
            self._tower: TextTower | None = tower.to(self.device).eval().requires_grad_(False)
            warn_caller(
                "STEVE-1 prompt encoder with RANDOM, UNTRAINED weights (weights='random'): its "
                "goal embeddings mean nothing to a trained policy.",
            )
            self._weight_files: tuple[Path, Path] | None = None
        else:
            self._tower = None  # loaded on the first instruction the disk cache lacks
            directory = weights_dir(optional_path(weights, "weights", "'random' or 'weights/'"))
            # The official files, else the Hub mirror's single file (read by key prefix).
            self._mineclip_source = weight_source("mineclip", mineclip, directory)
            prior_source = weight_source("prior", prior, directory)
            self.prior = self._load_prior(prior_source)
            # Hashed only if the disk cache needs them (a first hash reads 600 MB).
            self._weight_files = (self._mineclip_source.path, prior_source.path)
        self.text_config = config
        self.prior.to(self.device).eval().requires_grad_(False)
        self.cache_dir = checked_cache_dir
        self._lock = threading.RLock()
        self._weight_digests: tuple[str, ...] | None = None
        self._text_cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._latent: torch.Tensor | None = None
        self.text_tower_calls = 0
        """How many times the text tower ran (for checks that caching works)."""
        self._closed = False

    # ------------------------------------------------------------- loading
    @property
    def text_tower(self) -> TextTower:
        """The MineCLIP text tower, loaded (and its md5 checked) on first use."""
        with self._lock:
            if self._tower is None:
                tower = self._load_text_tower(self._mineclip_source, self.text_config)
                self._tower = tower.to(self.device).eval().requires_grad_(False)
            return self._tower

    @staticmethod
    def _load_text_tower(source: WeightSource, config: TextTowerConfig) -> TextTower:
        path = source.path
        if not source.mirror:  # the published md5 is attn.pth's, not the mirror's
            verify_known_digest(path)
        with torch.device("meta"):
            tower = TextTower(config)
        state = text_tower_state(source.load())
        check_state_dict(tower.state_dict(), state, f"MineCLIP text tower ({path})")
        tower.load_state_dict(state, strict=True, assign=True)
        return tower

    @staticmethod
    def _load_prior(source: WeightSource) -> PriorVAE:
        with torch.device("meta"):
            prior = PriorVAE()
        state = source.load()
        check_state_dict(prior.state_dict(), state, f"prior ({source.path})")
        prior.load_state_dict(state, strict=True, assign=True)
        return prior

    # ------------------------------------------------------------- encoding
    def _ensure_open(self) -> None:
        if self._closed:
            raise ClosedError("This prompt encoder was closed; create a new one.")

    def text_embedding(self, instruction: str) -> torch.Tensor:
        """Returns MineCLIP's float32 ``(512,)`` text embedding, from the LRU when cached.

        Raises:
            GoalEmbeddingError: If the tower produced NaN or infinity (broken weights).
        """
        self._ensure_open()
        with self._lock:
            cached = self._text_cache.get(instruction)
            if cached is not None:
                self._text_cache.move_to_end(instruction)
                return cached
            tokens = torch.from_numpy(self.tokenizer.tokenize(instruction))[None]
            with self._exact():
                embedding = self.text_tower(tokens.to(self.device))[0].float()
            self.text_tower_calls += 1
            if not bool(torch.isfinite(embedding).all()):
                raise GoalEmbeddingError(
                    f"MineCLIP's text embedding of {instruction!r} holds NaN or infinity: the "
                    "text tower's weights are broken (check them with `steve1-env weights "
                    "verify`)."
                )
            self._text_cache[instruction] = embedding
            if len(self._text_cache) > self.cache_size:
                self._text_cache.popitem(last=False)
            return embedding

    @property
    def varies_per_episode(self) -> bool:
        """True when sampling: each episode draws its own latent."""
        return self.sample

    def start_episode(self, seed: int) -> None:
        """Draws this episode's prior latent from `seed` (sampling mode; else nothing).

        The latent belongs to the encoder: in sampling mode give each env its own encoder.
        """
        self._ensure_open()
        if self.sample:
            self._latent = self._draw_latent(seed)

    def _draw_latent(self, seed: int) -> torch.Tensor:
        # On the CPU generator: the same seed draws the same latent on every device.
        generator = torch.Generator().manual_seed(int(seed))
        return torch.randn(1, self.prior.latent_dim, generator=generator)

    def encode_sampled(self, instruction: str, seed: int) -> np.ndarray:
        """Returns the goal embedding of `instruction` with a prior latent drawn from `seed`.

        The STEVE-1 paper embeds each text prompt once with a latent the prior samples (not
        the zero latent); this draws that latent reproducibly, whatever `sample` is, and
        leaves the episode's latent alone. Not cached on disk (the disk cache holds
        zero-latent embeddings only).

        Raises:
            ConfigurationError: If `seed` is not an integer from 0 to
                `steve1_env.validation.MAX_SEED` (torch's generators take 64-bit seeds).
        """
        self._ensure_open()
        seed = bounded_int(seed, "seed", 0, MAX_SEED, limit_name="MAX_SEED")
        with self._lock:
            text = self.text_embedding(instruction)[None]
            with self._exact():
                decoded = self.prior.decode(text, self._draw_latent(seed).to(self.device))
            return self._checked_goal(decoded, instruction)

    def encode(self, instruction: str) -> np.ndarray:
        """Returns the finite float32 ``(512,)`` goal embedding of `instruction`."""
        self._ensure_open()
        with self._lock:
            return self._encode(instruction)

    def _encode(self, instruction: str) -> np.ndarray:
        key = self._disk_key(instruction)
        if key is not None:
            cached = self._read_disk(key)
            if cached is not None:
                return cached
        text = self.text_embedding(instruction)[None]
        latent = None
        if self.sample:
            if self._latent is None:
                raise ConfigurationError(
                    "sample=True draws one latent per episode: call start_episode(seed) first "
                    "(the env does this on reset)."
                )
            latent = self._latent.to(self.device)
        with self._exact():
            decoded = self.prior.decode(text, latent)
        goal = self._checked_goal(decoded, instruction)
        if key is not None:
            self._write_disk(key, goal)
        return goal

    @staticmethod
    def _checked_goal(decoded: torch.Tensor, instruction: str) -> np.ndarray:
        try:
            return precision.as_goal_embedding(decoded)
        except GoalEmbeddingError as exc:
            raise GoalEmbeddingError(
                f"The prior's goal embedding of {instruction!r} is invalid: {exc} Check the prior "
                "weights (`steve1-env weights verify`)."
            ) from exc

    def close(self) -> None:
        """Releases the networks; safe to call twice."""
        if not self._closed:
            self._closed = True
            if self._tower is not None:
                self._tower.to("meta")
            self.prior.to("meta")
            self._text_cache.clear()

    def _exact(self) -> contextlib.AbstractContextManager[None]:
        return precision.exact_inference(self.device)

    # ------------------------------------------------------------- disk cache
    def _disk_key(self, instruction: str) -> str | None:
        if self.cache_dir is None or self._weight_files is None or self.sample:
            return None
        if self._weight_digests is None:
            self._weight_digests = tuple(file_digest(path) for path in self._weight_files)
        fields = {
            "format": DISK_CACHE_FORMAT,
            "instruction": instruction,
            "mineclip_sha256": self._weight_digests[0],
            "prior_sha256": self._weight_digests[1],
            "text_config": dataclasses.asdict(self.text_config),
            "latent": "zeros",
        }
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()

    def _read_disk(self, key: str) -> np.ndarray | None:
        assert self.cache_dir is not None
        path = self.cache_dir / f"{key}.npy"
        try:
            data = read_regular_file(
                path, CACHE_ENTRY_MAX_BYTES, "embedding-cache entry", error=GoalEmbeddingError
            )
            return _cache_entry(data)
        except (FileNotFoundError, NotADirectoryError):
            return None  # not cached (yet)
        except (OSError, EOFError, ValueError) as exc:  # GoalEmbeddingError is a ValueError
            # A cache entry is only ever a copy: drop a damaged one and recompute it.
            with contextlib.suppress(OSError):
                path.unlink()
            warn_caller(
                f"Dropped the unreadable embedding-cache entry {path} ({exc}); recomputing it.",
            )
            return None

    def _write_disk(self, key: str, goal: np.ndarray) -> None:
        assert self.cache_dir is not None
        entry = io.BytesIO()
        np.lib.format.write_array(entry, goal, allow_pickle=False)
        try:
            # Atomic: a crash, a full disk or Ctrl-C never leaves a partial entry.
            make_folder(self.cache_dir, "the embedding cache")
            atomic_write_bytes(
                self.cache_dir / f"{key}.npy", entry.getvalue(), "the embedding-cache entry"
            )
        except Steve1EnvError as exc:
            # The embedding is computed: the reset goes on, only caching stops.
            warn_caller(
                f"{exc} Continuing without the disk cache.",
            )
            self.cache_dir = None


def _cache_entry(data: bytes) -> np.ndarray:
    """Parses a disk-cache entry: exactly what `_write_disk` writes, or ValueError/EOFError."""
    array = read_npy_bytes(data)
    if array.dtype != np.float32 or array.shape != (precision.GOAL_DIM,):
        raise GoalEmbeddingError(
            f"expected float32 ({precision.GOAL_DIM},), found {array.dtype} {array.shape}"
        )
    return precision.as_goal_embedding(array)
