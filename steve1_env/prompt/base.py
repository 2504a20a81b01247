"""The `PromptEncoder` protocol."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class PromptEncoder(Protocol):
    """Turns an instruction into STEVE-1's goal embedding.

    `encode` may return any float array or tensor of shape ``(512,)`` or ``(1, 512)``; the env
    passes it through `steve1_env.precision.as_goal_embedding`, which guarantees a finite
    float32 ``(512,)`` array whatever the encoder did (autocast, float16, CUDA).

    Optional members: ``start_episode(seed)``, called by the env at every reset with a seed
    drawn from its RNG, and ``varies_per_episode``, True when embeddings then change (a prior
    latent drawn per episode), which makes the env drop its per-instruction cache.
    """

    def encode(self, instruction: str) -> Any:
        """Returns the goal embedding of `instruction`."""
        ...

    def close(self) -> None:
        """Releases resources (weights, GPU memory); safe to call twice."""
        ...
