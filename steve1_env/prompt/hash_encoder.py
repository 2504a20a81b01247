"""A deterministic stand-in for the MineCLIP + prior stack, for policies that read text."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from steve1_env.instructions import normalize_instruction
from steve1_env.precision import GOAL_DIM
from steve1_env.validation import MAX_SEED, bounded_int


class HashPromptEncoder:
    """Maps each instruction to a fixed random unit vector seeded by its text.

    This is *not* a STEVE-1 embedding: a STEVE-1 policy given it would not know what to do.
    It gives the observation's ``goal`` entry a stable, distinct value per instruction for
    policies that read the instruction text instead (scripted, random) and for tests.
    Instructions equal up to case and whitespace share an embedding. `encode_sampled` stands in
    for a prior's sampled latent: another unit vector per (instruction, seed), so a task's
    ``prompt_latent: sampled`` runs offline and its seed still decides the goal.

    Args:
        device: Ignored; accepted so every encoder factory has the same signature.
    """

    def __init__(self, device: Any = "cpu") -> None:
        self.device = device

    def encode(self, instruction: str) -> np.ndarray:
        """Returns the float32 ``(512,)`` unit vector of `instruction`."""
        return _unit_vector(np.random.default_rng(_text_seed(instruction)))

    def encode_sampled(self, instruction: str, seed: int) -> np.ndarray:
        """Returns the float32 ``(512,)`` unit vector of `instruction` drawn with `seed`.

        Raises:
            ConfigurationError: If `seed` is not an integer from 0 to
                `steve1_env.validation.MAX_SEED` (torch's generators take 64-bit seeds).
        """
        seed = bounded_int(seed, "seed", 0, MAX_SEED, limit_name="MAX_SEED")
        return _unit_vector(np.random.default_rng([_text_seed(instruction), seed]))

    def close(self) -> None:
        """Nothing to release."""


def _text_seed(instruction: str) -> int:
    digest = hashlib.sha256(normalize_instruction(instruction).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little")


def _unit_vector(rng: np.random.Generator) -> np.ndarray:
    vector = rng.standard_normal(GOAL_DIM)
    return (vector / np.linalg.norm(vector)).astype(np.float32)
