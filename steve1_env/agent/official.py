"""`OfficialSteve1Policy`: the user's installed official `steve1` package as a `SkillPolicy`.

It applies the call-side fixes the official code needs: the agent is built without launching
Minecraft (its constructor only inspects ``env.task`` and ``env.action_space``) and on the
device asked for (``make_agent`` hard-codes CUDA); the weights are read with our safe loader
(the agent's ``load_weights`` uses plain ``torch.load`` and ``strict=False``, then switches
guidance off) and ``reset(cond_scale)`` follows; the policy is kept float32 and called with
autocast disabled and a float32 goal. The `.model` file is read with our safe loader too.

The official agent keeps its recurrent state inside itself, so one instance serves one env.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from steve1_env import precision
from steve1_env.errors import ConfigurationError, WeightsError
from steve1_env.optional import import_optional
from steve1_env.weights import load_model_file, load_state_dict, locate, weights_dir
from steve1_env.worlds.actions import AGENT_BUTTON_KEYS, canonical_action
from steve1_env.worlds.minerl import INSTALL_HINT as MINERL_HINT
from steve1_env.worlds.minerl import STEVE1_ENV_KWARGS

INSTALL_HINT = (
    "The official STEVE-1 package installs from its repository: `git clone "
    "https://github.com/Shalev-Lifshitz/STEVE-1 && pip install -e STEVE-1` (it needs MineRL "
    "and MineCLIP too)."
)


def official_module(name: str, purpose: str) -> Any:
    """Imports a module of the official package, or raises with the install command."""
    return import_optional(name, "steve1", purpose, INSTALL_HINT)


def minerl_env_stub() -> Any:
    """An object with what the official agent's constructor inspects, without Minecraft."""
    specs = import_optional(
        "minerl.herobraine.env_specs.human_survival_specs", "minerl", "policy='steve1-official'",
        MINERL_HINT,
    )  # fmt: skip
    spec = specs.HumanSurvival(**STEVE1_ENV_KWARGS)
    return SimpleNamespace(task=spec, action_space=spec.action_space)


class OfficialSteve1Policy:
    """The official `MineRLConditionalAgent`, called safely.

    Args:
        world: Ignored; accepted so every policy factory has the same signature.
        device: Torch device the agent runs on.
        weights: A directory with ``2x.model`` and ``steve1.weights`` (default: the weights
            directory) or a weight file.
        model: A ``.model`` file (default: ``2x.model`` beside the weights).
        cond_scale: Guidance scale (6.0 for text prompts).
        env_stub: What the agent's constructor inspects; built from MineRL's spec by default.
    """

    def __init__(
        self,
        world: Any = None,
        device: Any = "cpu",
        weights: str | os.PathLike[str] | None = None,
        model: str | os.PathLike[str] | None = None,
        cond_scale: float = 6.0,
        env_stub: Any = None,
    ) -> None:
        agent_module = official_module("steve1.MineRLConditionalAgent", "policy='steve1-official'")
        if weights is not None and Path(weights).is_file():
            weights_path, directory = Path(weights), Path(weights).parent
        else:
            directory = weights_dir(weights)
            weights_path = locate("policy", directory)
        model_path = Path(model) if model else locate("model", directory)
        spec = load_model_file(model_path)  # never plain pickle: the safe loader
        state = load_state_dict(weights_path)  # weights_only, prefixes stripped
        self.device = device
        self.cond_scale = float(cond_scale)
        self.agent = agent_module.MineRLConditionalAgent(
            env_stub if env_stub is not None else minerl_env_stub(),
            device=device,
            policy_kwargs=spec.policy_kwargs,
            pi_head_kwargs={"temperature": float(spec.pi_head_kwargs.get("temperature", 2.0))},
        )
        # Loaded here rather than by the agent's load_weights, whose plain torch.load is unsafe
        # and whose strict=False would silently skip misnamed keys.
        expected = self.agent.policy.state_dict()
        missing = sorted(set(expected) - set(state))
        if missing:
            raise WeightsError(
                f"{weights_path} lacks {len(missing)} of the official policy's weights (e.g. "
                f"{', '.join(missing[:5])}); is it a STEVE-1 weight file?"
            )
        self.agent.policy.load_state_dict({k: state[k] for k in expected}, strict=True)
        self.agent.policy.float()
        self.agent.reset(cond_scale=self.cond_scale)  # the agent's own loader would reset it
        self._episode: object | None = None

    def initial_state(self, seed: int) -> object:
        """Resets the agent's internal memory; the returned token identifies the episode."""
        self.agent.reset(cond_scale=self.cond_scale)
        self._episode = object()
        return self._episode

    def act(
        self, obs: Mapping[str, Any], goal: Any, state: object
    ) -> tuple[dict[str, Any], object]:
        """Returns the official agent's action, as a canonical MineRL action."""
        if state is not self._episode:
            raise ConfigurationError(
                "The official agent keeps one recurrent state inside itself, so one "
                "OfficialSteve1Policy serves one env (and only its current episode). Create a "
                "policy per env, or use policy='steve1' (per-env state, batched)."
            )
        embedding = precision.as_goal_embedding(goal.embedding)[None]  # (1, 512) float32
        with precision.autocast_disabled(self.device):
            raw = self.agent.get_action(obs, embedding)
        action: dict[str, Any] = {
            key: int(np.asarray(raw[key]).reshape(-1)[0]) for key in AGENT_BUTTON_KEYS
        }
        action["camera"] = np.asarray(raw["camera"], dtype=np.float64).reshape(-1)[:2]
        return canonical_action(action), state

    def close(self) -> None:
        """Releases the agent's weights; safe to call twice."""
        self.__dict__.pop("agent", None)
