"""The `SkillPolicy` protocol and the `Goal` it pursues.

Policies keep no per-env state inside themselves: the env asks for an initial recurrent state
at every episode start and threads it through `act`. One policy instance (one set of weights)
can therefore serve many envs, each with its own state.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from steve1_env import precision
from steve1_env.errors import ConfigurationError


@dataclass(frozen=True)
class Goal:
    """What the policy is asked to do.

    The embedding is checked once, here: policies use it as is, every tick.

    Attributes:
        instruction: The text instruction, for policies that read text (scripted ones).
        embedding: STEVE-1's goal embedding for it: a read-only, finite float32 ``(512,)``
            array. Anything `precision.as_goal_embedding` accepts may be given (a tensor,
            float16, shape ``(1, 512)``); it is converted to a read-only copy. An array that
            already is one is kept, not copied.
        cond_scale: The guidance scale this goal asks for (visual goals: the paper's 7.0), or
            None for the policy's own. A policy built without guidance stays without.
        unconditional: The zero goal of the paper's unconditional baseline: `embedding` is
            zeros and `instruction` only names the task it is judged by, so a policy that
            reads text (the scripted oracle) acts as if it had no instruction.

    Raises:
        GoalEmbeddingError: If the embedding cannot be converted (see
            `precision.as_goal_embedding`).
    """

    instruction: str
    embedding: np.ndarray
    cond_scale: float | None = None
    unconditional: bool = False

    def __post_init__(self) -> None:
        """Converts the embedding to a read-only float32 ``(512,)`` array unless it is one."""
        if self.cond_scale is not None:
            scale = self.cond_scale
            # Finite: an infinite scale turns the guided logits into NaN (inf - inf).
            if (
                isinstance(scale, bool)
                or not isinstance(scale, numbers.Real)
                or not math.isfinite(scale)
                or not scale >= 0
            ):
                raise ConfigurationError(
                    f"A goal's cond_scale must be a finite number >= 0 (the paper: 6.0 for text, "
                    f"7.0 for visual goals) or None, got {scale!r}."
                )
            object.__setattr__(self, "cond_scale", float(scale))
        embedding = self.embedding
        if not (precision.is_goal_embedding(embedding) and not embedding.flags.writeable):
            # A copy: the caller's array stays theirs (writable), the Goal's cannot change.
            embedding = precision.as_goal_embedding(embedding)
            embedding.flags.writeable = False
            object.__setattr__(self, "embedding", embedding)


@runtime_checkable
class SkillPolicy(Protocol):
    """A goal-conditioned low-level policy (STEVE-1, a scripted oracle, random, ...).

    Attributes:
        device: Where the policy computes (``"cpu"``, ``"cuda:0"``); the env disables
            autocast for this device type around every call.
    """

    device: Any

    def initial_state(self, seed: int) -> Any:
        """Returns the recurrent state for a new episode; `seed` drives any sampling."""
        ...

    def act(self, obs: Mapping[str, Any], goal: Goal, state: Any) -> tuple[dict[str, Any], Any]:
        """Returns the MineRL action for the world observation `obs` and the next state."""
        ...

    def close(self) -> None:
        """Releases resources; safe to call twice."""
        ...
