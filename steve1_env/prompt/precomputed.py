"""Goal embeddings from a file instead of an encoder (``prompt_encoder="precomputed"``).

For embeddings computed elsewhere, such as the paper's visual prompts (a MineCLIP embedding of a
video clip), which no text encoder can produce.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from steve1_env import precision
from steve1_env.errors import ConfigurationError, InvalidInstructionError
from steve1_env.tasks.prompts import normalize_instruction


class PrecomputedPromptEncoder:
    """Looks instructions up in a table of embeddings.

    Args:
        path: An ``.npz`` (one array per instruction, the key being the instruction) or a
            ``.json`` object mapping instructions to lists of 512 numbers. Lookups try the exact
            instruction, then its lower-cased, whitespace-collapsed form.
        embeddings: The table itself, instead of a file.
        device: Ignored; accepted so every encoder factory has the same signature.
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
        table = self._read(Path(path)) if path is not None else dict(embeddings or {})
        if not table:
            raise ConfigurationError("The precomputed embedding table is empty.")
        self.device = device
        self.embeddings: dict[str, np.ndarray] = {}
        for instruction, value in table.items():
            try:
                self.embeddings[str(instruction)] = precision.as_goal_embedding(value)
            except ValueError as exc:
                raise ConfigurationError(f"Embedding of {instruction!r}: {exc}") from exc
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
        try:
            if path.suffix == ".npz":
                with np.load(path, allow_pickle=False) as data:
                    return {key: data[key] for key in data.files}
            loaded = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigurationError(
                f"Cannot read precomputed embeddings from {path}: {exc}"
            ) from exc
        if not isinstance(loaded, dict):  # only JSON reaches here
            raise ConfigurationError(
                f"{path} must hold a JSON object mapping instructions to lists of numbers."
            )
        return loaded

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
