"""STEVE-1 as a Gymnasium skill environment.

Importing this package registers ``Steve1Skill-v0`` (text face: the action is an instruction)
and ``Steve1SkillLibrary-v0`` (discrete face over a skill list) with Gymnasium; it imports no
model code and no optional backend.

Example:
    >>> import gymnasium as gym
    >>> import steve1_env  # noqa: F401
    >>> env = gym.make("Steve1Skill-v0", instruction="chop a tree")  # needs the weights
    >>> offline = gym.make("Steve1Skill-v0", policy="scripted", prompt_encoder="hash")
"""

from __future__ import annotations

import logging

from gymnasium.envs.registration import register
from gymnasium.envs.registration import registry as _gym_registry

from steve1_env.errors import (
    ClosedError,
    ConfigurationError,
    DependencyNotInstalledError,
    DetectorError,
    GoalEmbeddingError,
    InvalidActionError,
    InvalidInstructionError,
    InvalidObservationError,
    ResetNeededError,
    Steve1EnvError,
    Steve1EnvWarning,
    UnknownNameError,
    WorldCrashError,
)
from steve1_env.registry import register_policy, register_prompt_encoder, register_world

__version__ = "0.1.0"

# A library logs but never decides where the records go: without a handler of the
# application's (the CLI's `-v`), nothing is printed, not even through logging's last resort.
logging.getLogger(__name__).addHandler(logging.NullHandler())

MAX_EPISODE_STEPS = 64
"""High-level steps per episode of the registered envs (each runs up to ``k`` ticks)."""

ENV_IDS = ("Steve1Skill-v0", "Steve1SkillLibrary-v0")

for _env_id, _face in zip(ENV_IDS, ("text", "discrete"), strict=True):
    if _env_id not in _gym_registry:
        register(
            id=_env_id,
            entry_point="steve1_env.env:Steve1SkillEnv",
            vector_entry_point="steve1_env.vector.env:Steve1SkillVectorEnv",
            max_episode_steps=MAX_EPISODE_STEPS,
            kwargs={"face": _face},
            # The env enforces reset-before-step/render itself, raising the package's
            # ResetNeededError (also a gymnasium ResetNeeded); gymnasium's OrderEnforcing
            # would answer first with its own error. The passive env checker stays on.
            order_enforce=False,
        )


def __getattr__(name: str) -> object:
    # The env class is imported on first use so `import steve1_env` stays light.
    if name == "Steve1SkillEnv":
        from steve1_env.env import Steve1SkillEnv

        return Steve1SkillEnv
    if name == "Steve1SkillVectorEnv":
        from steve1_env.vector.env import Steve1SkillVectorEnv

        return Steve1SkillVectorEnv
    if name == "validate_instruction":
        from steve1_env.instructions import validate_instruction

        return validate_instruction
    if name == "planner_text":
        from steve1_env.planning import planner_text

        return planner_text
    raise AttributeError(f"module 'steve1_env' has no attribute {name!r}")


__all__ = [
    "ENV_IDS",
    "ClosedError",
    "ConfigurationError",
    "DependencyNotInstalledError",
    "DetectorError",
    "GoalEmbeddingError",
    "InvalidActionError",
    "InvalidInstructionError",
    "InvalidObservationError",
    "ResetNeededError",
    "Steve1EnvError",
    "Steve1EnvWarning",
    "Steve1SkillEnv",
    "Steve1SkillVectorEnv",
    "UnknownNameError",
    "WorldCrashError",
    "planner_text",
    "register_policy",
    "register_prompt_encoder",
    "register_world",
    "validate_instruction",
]
