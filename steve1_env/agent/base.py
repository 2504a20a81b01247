"""The `SkillPolicy` protocol and the `Goal` it pursues.

Policies keep no per-env state inside themselves: the env asks for an initial recurrent state
at every episode start and threads it through `act`. One policy instance (one set of weights)
can therefore serve many envs, each with its own state.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class Goal:
    """What the policy is asked to do.

    Attributes:
        instruction: The text instruction, for policies that read text (scripted ones).
        embedding: STEVE-1's float32 ``(512,)`` goal embedding for it (see `precision`).
    """

    instruction: str
    embedding: np.ndarray


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
