"""Instructions: what counts as a valid one, how they compare, and the text face's action space."""

from __future__ import annotations

import string
from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium import spaces

from steve1_env.errors import InvalidInstructionError

MAX_INSTRUCTION_LENGTH = 300
"""Default upper bound on instruction length in characters (CLIP keeps 75 tokens anyway)."""

_CHARSET = string.ascii_letters + string.digits + string.punctuation + " "


def _printable(text: str) -> bool:
    # Tabs and newlines are whitespace a user may paste; other control characters are not.
    return text.replace("\n", " ").replace("\t", " ").isprintable()


def normalize_instruction(text: str) -> str:
    """Lower-cases and collapses whitespace, as prompt lookups and caches compare text."""
    return " ".join(text.lower().split())


def as_text(value: Any) -> Any:
    """Unwraps a 0-d numpy string array (as vector envs pass actions) into a str."""
    if isinstance(value, np.ndarray) and value.shape == () and value.dtype.kind == "U":
        return str(value)
    return value


def validate_instruction(instruction: Any, max_length: int = MAX_INSTRUCTION_LENGTH) -> str:
    """Returns `instruction` stripped of surrounding whitespace, or raises a clear error.

    Raises:
        InvalidInstructionError: If it is not a string, is empty or whitespace-only, holds
            control characters, or is longer than `max_length` characters.
    """
    instruction = as_text(instruction)
    if not isinstance(instruction, str):
        raise InvalidInstructionError(
            f"An instruction must be a str such as 'chop a tree', got "
            f"{type(instruction).__name__} {instruction!r}."
        )
    text = instruction.strip()
    if not text:
        raise InvalidInstructionError(
            f"An instruction must contain text, got {instruction!r}. Pass e.g. "
            "options={'instruction': 'chop a tree'} to reset()."
        )
    if len(text) > max_length:
        raise InvalidInstructionError(
            f"An instruction may have at most {max_length} characters, got {len(text)}: "
            f"{text[:40]!r}... Shorten it or raise max_instruction_length."
        )
    if not _printable(text):
        raise InvalidInstructionError(
            f"An instruction must not contain control characters, got {text!r}."
        )
    return str(text)


class InstructionSpace(spaces.Text):
    """The text face's action space: an instruction of up to `max_length` characters, or ``""``.

    ``""`` means "keep pursuing the current instruction"; other strings must be valid
    instructions (see `validate_instruction`). `sample` draws from `examples` and ``""`` so that
    random agents and `check_env` issue meaningful instructions.
    """

    def __init__(self, max_length: int, examples: Sequence[str], seed: int | None = None) -> None:
        super().__init__(max_length, min_length=0, charset=_CHARSET, seed=seed)
        self.examples: tuple[str, ...] = (*(e for e in examples if len(e) <= max_length), "")

    def sample(self, mask: Any = None, probability: Any = None) -> str:
        """Returns one of `examples` or ``""``, drawn with this space's RNG."""
        if mask is not None or probability is not None:
            return super().sample(mask=mask, probability=probability)
        return self.examples[int(self.np_random.integers(len(self.examples)))]

    def contains(self, x: Any) -> bool:
        """Returns True for ``""`` and for valid instructions no longer than `max_length`."""
        x = as_text(x)
        if not isinstance(x, str) or len(x) > self.max_length:
            return False
        return x == "" or (bool(x.strip()) and _printable(x))

    def __repr__(self) -> str:
        return f"InstructionSpace(max_length={self.max_length}, examples={len(self.examples) - 1})"
