"""`OfficialSteve1Policy`: the user's installed official `steve1` package as a `SkillPolicy`.

It applies the call-side fixes the official code needs: the agent is built without launching
Minecraft (its constructor only inspects ``env.task`` and ``env.action_space``) and on the
device asked for (``make_agent`` hard-codes CUDA); the weights are read with our safe loader
(the agent's ``load_weights`` uses plain ``torch.load`` and ``strict=False``, then switches
guidance off) and ``reset(cond_scale)`` follows; the policy is kept float32 and called with
autocast disabled and a float32 goal. The `.model` file is read with our safe loader too.

The official agent keeps its recurrent state inside itself, so one instance serves one env.
It samples its actions from torch's global generator; `GlobalRngStream` lends it a generator
stream seeded from the episode seed for each call, so the same ``reset(seed=...)`` gives the
same episode and the caller's global generator state is left as it was.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from steve1_env import precision
from steve1_env.errors import ConfigurationError, WeightsError
from steve1_env.optional import import_optional
from steve1_env.weights import load_model_file, load_state_dict, weight_file, weights_dir
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
    return import_optional(name, None, purpose, INSTALL_HINT)  # no extra can: it is not on PyPI


class GlobalRngStream:
    """A private random stream for code that draws from torch's global generators.

    The official package samples with torch's global generators (``torch.rand``/``randn``
    without a ``generator=``), which ignores any seed and, run as is, would also advance the
    caller's stream. `borrowed` runs such code on this object's own stream instead: it saves
    the global state of the CPU generator and, on CUDA, of the device's generator
    (`torch.random.fork_rng`), installs this stream's state, and afterwards keeps the advanced
    stream here and puts the caller's state back. No other generator (other CUDA devices,
    numpy, Python's `random`) is touched.

    The global generators are process-wide: another thread drawing random numbers while a
    `borrowed` block runs would take numbers from this stream (and change what it yields).

    Args:
        seed: Seeds the stream (as ``torch.manual_seed(seed)`` would the global ones).
        device: The torch device the sampling code runs on.
    """

    def __init__(self, seed: int, device: Any) -> None:
        import torch

        device = torch.device(device)
        self._cpu_state = torch.Generator().manual_seed(int(seed)).get_state()
        self._cuda: tuple[int, Any] | None = None  # (device index, generator state)
        if device.type == "cuda":
            index = torch.cuda.current_device() if device.index is None else device.index
            generator = torch.Generator(device=f"cuda:{index}").manual_seed(int(seed))
            self._cuda = (index, generator.get_state())

    @contextlib.contextmanager
    def borrowed(self) -> Iterator[None]:
        """Runs the block with torch's global generators drawing from this stream."""
        import torch

        with torch.random.fork_rng(devices=[] if self._cuda is None else [self._cuda[0]]):
            torch.set_rng_state(self._cpu_state)
            if self._cuda is not None:
                torch.cuda.set_rng_state(self._cuda[1], self._cuda[0])
            yield
            self._cpu_state = torch.get_rng_state()
            if self._cuda is not None:
                self._cuda = (self._cuda[0], torch.cuda.get_rng_state(self._cuda[0]))


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
        cond_scale: Guidance scale (6.0 for text prompts) of goals that ask for none; a goal's
            own ``cond_scale`` (a visual goal's, a task's) replaces it for its calls.
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
        self.device = precision.resolve_device(device)
        # `weights` is a directory (or None: the weights directory) or the weight file itself.
        path = None if weights is None else Path(weights).expanduser()
        given = None if path is None or path.is_dir() else path
        directory = weights_dir(path) if given is None else given.parent
        weights_path = weight_file("policy", given, directory)
        model_path = weight_file("model", model or None, directory)
        spec = load_model_file(model_path)  # never plain pickle: the safe loader
        state = load_state_dict(weights_path)  # weights_only, prefixes stripped
        self.cond_scale = float(cond_scale)
        stub = env_stub if env_stub is not None else minerl_env_stub()
        # Upstream initialises its modules from torch's global generator: a private stream
        # keeps the caller's untouched (the weights loaded next replace those values).
        with GlobalRngStream(0, self.device).borrowed():
            self.agent = agent_module.MineRLConditionalAgent(
                stub, device=str(self.device), policy_kwargs=spec.policy_kwargs,
                pi_head_kwargs={"temperature": float(spec.pi_head_kwargs.get("temperature", 2.0))},
            )  # fmt: skip
            self._load_weights(state, weights_path)
        self._episode: object | None = None
        self._rng: GlobalRngStream | None = None

    def _load_weights(self, state: Mapping[str, Any], weights_path: Path) -> None:
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

    def initial_state(self, seed: int) -> object:
        """Resets the agent's memory and seeds its sampling with `seed`.

        Returns:
            A token identifying the episode (the state itself lives inside the agent).
        """
        self.agent.reset(cond_scale=self.cond_scale)
        self._rng = GlobalRngStream(seed, self.device)
        self._episode = object()
        return self._episode

    def act(
        self, obs: Mapping[str, Any], goal: Any, state: object
    ) -> tuple[dict[str, Any], object]:
        """Returns the official agent's action, as a canonical MineRL action."""
        if state is not self._episode or self._rng is None:
            raise ConfigurationError(
                "The official agent keeps one recurrent state inside itself, so one "
                "OfficialSteve1Policy serves one env (and only its current episode). Create a "
                "policy per env, or use policy='steve1' (per-env state, batched)."
            )
        # (1, 512) float32, as `Goal` guarantees; copied because it is read-only and the agent
        # hands it to torch.
        embedding = np.array(goal.embedding[None], dtype=np.float32)
        # The goal's own guidance scale (a visual goal's 7.0, a task's cond_scale such as the
        # paper set's 6.0), as the native policy applies it: the agent reads its cond_scale at
        # every get_action, and its memory has both branches whatever the scale.
        own = getattr(goal, "cond_scale", None)
        self.agent.cond_scale = self.cond_scale if own is None else float(own)
        with precision.autocast_disabled(self.device), self._rng.borrowed():
            raw = self.agent.get_action(obs, embedding)
        action: dict[str, Any] = {
            key: int(np.asarray(raw[key]).reshape(-1)[0]) for key in AGENT_BUTTON_KEYS
        }
        action["camera"] = np.asarray(raw["camera"], dtype=np.float64).reshape(-1)[:2]
        return canonical_action(action), state

    def close(self) -> None:
        """Releases the agent's weights; safe to call twice."""
        self.__dict__.pop("agent", None)
