"""`NativeSteve1Policy`: the STEVE-1 skill policy on our own network (``policy="steve1"``).

It loads the official files (``2x.model`` for the architecture, ``steve1.weights``), runs any
number of envs in one batch with classifier-free guidance, and encodes each frame once for both
guidance branches (the official agent encodes it twice and supports one env only). The network
(`steve1_env.agent.network.Steve1Network.forward`) does the guidance; the policy converts
observations and goals to tensors, keeps autocast off, samples and converts actions.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from steve1_env import precision
from steve1_env.agent.base import Goal
from steve1_env.agent.conversion import agent_frame, agent_to_minerl
from steve1_env.agent.network import (
    PRECISIONS,
    RELEASED_CONFIG,
    AttentionMemory,
    NetworkConfig,
    PolicyOutput,
    Precision,
    Steve1Network,
    env_memory,
    guidance_rows,
    stack_memories,
)
from steve1_env.errors import (
    ClosedError,
    ConfigurationError,
    WeightsError,
    warn_caller,
)
from steve1_env.validation import boolean, optional_path, real_number, weights_seed
from steve1_env.weights import (
    OFFICIAL_FILES,
    ModelFile,
    WeightSource,
    check_state_dict,
    is_mirror_file,
    load_model_file,
    weight_source,
    weights_dir,
)

DTYPES: dict[str, torch.dtype] = {
    name: precision.activations for name, precision in PRECISIONS.items() if not precision.is_mixed
}
"""The single-dtype precisions by name (``dtype=`` also takes the torch dtype)."""


@dataclass
class Steve1State:
    """One env's recurrent state.

    Attributes:
        memory: Per transformer block, the attention memory with one row per branch
            (conditional, then unconditional when guided).
        generator: The env's sampling RNG.
    """

    memory: list[AttentionMemory]
    generator: torch.Generator


def resolve_precision(dtype: Any) -> Precision:
    """Returns the `Precision` a policy's ``dtype=`` names (None: float32).

    Raises:
        ConfigurationError: If `dtype` names no precision.
    """
    if dtype is None:
        return PRECISIONS["float32"]
    if isinstance(dtype, torch.dtype):
        for name, known in DTYPES.items():
            if known == dtype:
                return PRECISIONS[name]
    if isinstance(dtype, str) and dtype in PRECISIONS:
        return PRECISIONS[dtype]
    raise ConfigurationError(
        f"dtype must be one of {', '.join(repr(name) for name in PRECISIONS)} (or the torch "
        f"dtype of a single-dtype one), got {dtype!r}."
    )


def _network_config(model: Any, directory: Path | None) -> NetworkConfig:
    if isinstance(model, NetworkConfig):
        return model
    if isinstance(model, ModelFile):
        return NetworkConfig.from_policy_kwargs(model.policy_kwargs, model.pi_head_kwargs)
    if isinstance(model, Mapping):
        return NetworkConfig.from_policy_kwargs(model)
    if isinstance(model, str | os.PathLike):
        found = load_model_file(model)
        return NetworkConfig.from_policy_kwargs(found.policy_kwargs, found.pi_head_kwargs)
    if model is None:
        sibling = None if directory is None else directory / OFFICIAL_FILES["model"]
        if sibling is not None and sibling.is_file():
            return _network_config(sibling, None)
        return RELEASED_CONFIG
    raise ConfigurationError(
        "model must be a .model file path, a dict of policy kwargs, a NetworkConfig or None "
        f"(the released architecture), got {type(model).__name__}."
    )


class NativeSteve1Policy:
    """The STEVE-1 policy, our implementation, as a `SkillPolicy`.

    Args:
        world: Ignored; accepted so every policy factory has the same signature.
        device: Torch device (``"cpu"``, ``"cuda"``, ``"cuda:1"``).
        weights: ``"random"`` for an untrained network with seeded random weights; a directory
            holding ``steve1.weights`` (and optionally ``2x.model``); a weight file; or None for
            the weights directory (``$STEVE1_WEIGHTS_DIR``, see `steve1_env.weights`).
        model: The architecture: a ``.model`` path, a dict of policy kwargs, a `NetworkConfig`,
            or None for ``2x.model`` beside the weights, else the released architecture.
        cond_scale: Classifier-free guidance scale (the paper: 6.0 for text); None disables
            guidance (one branch, half the trunk compute).
        dtype: The precision (`steve1_env.agent.network.PRECISIONS`): ``"float32"``
            (default, the official outputs within 1e-4), ``"bfloat16"`` or ``"float16"`` (the
            whole network and its inputs cast), or ``"bfloat16-mixed"``, the fast CPU mode:
            the image encoder and the linear layers' products in bfloat16, everything else
            in float32 (docs/performance.md gives its speed and how far it is from float32).
            No operation ever sees two dtypes, inside or outside a caller's autocast.
        deterministic: Take the most likely action instead of sampling.
        share_frame_encoding: Encode each frame once for both guidance branches. False runs
            the image encoder on both, as upstream does (for comparisons only).
        seed: Seed of the random weights (``weights="random"``).
        cpu_kernels: Turn on the network's CPU kernel paths (``small_batch_matmul`` and
            ``batch_invariant_norm``, see `steve1_env.agent.network`), channels-last
            convolutions and, with bfloat16 products, the fused attention projections: faster
            small batches, and a frame's numbers independent of how many envs share the batch.
            False runs stock PyTorch kernels and layouts. Nothing changes on other devices.
    """

    def __init__(
        self,
        world: Any = None,
        device: Any = "cpu",
        weights: str | os.PathLike[str] | None = None,
        model: Any = None,
        cond_scale: float | None = 6.0,
        dtype: Any = None,
        deterministic: bool = False,
        share_frame_encoding: bool = True,
        seed: int = 0,
        cpu_kernels: bool = True,
    ) -> None:
        self.device = precision.resolve_device(device)
        self.precision = resolve_precision(dtype)
        # What inputs and memories are cast to: float32 in the mixed mode.
        self.dtype = self.precision.activations
        if cond_scale is not None:
            cond_scale = real_number(cond_scale, "cond_scale")
            if cond_scale < 0:
                raise ConfigurationError(f"cond_scale must be >= 0 or None, got {cond_scale}.")
        self.cond_scale = cond_scale
        self.deterministic = boolean(deterministic, "deterministic")
        self.share_frame_encoding = boolean(share_frame_encoding, "share_frame_encoding")
        cpu_kernels = boolean(cpu_kernels, "cpu_kernels")
        self.network = self._build_network(weights, model, weights_seed(seed))
        self.network.use_cpu_kernels(
            small_batch_matmul=cpu_kernels, batch_invariant_norm=cpu_kernels
        )
        on_cpu = cpu_kernels and self.device.type == "cpu"
        self.network.cast(
            self.device,
            self.precision,
            channels_last=on_cpu,
            # One product for q, k, v and r pays where products are bfloat16 (float32 keeps
            # the official layers' order of operations).
            fuse_projections=on_cpu and self.precision.matmuls != torch.float32,
        ).eval()
        self.network.requires_grad_(False)
        self._closed = False

    # ------------------------------------------------------------- loading
    @staticmethod
    def _build_network(weights: Any, model: Any, seed: int) -> Steve1Network:
        if isinstance(weights, str) and weights == "random":
            config = _network_config(model, None)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                network = Steve1Network(config)
            warn_caller(
                "STEVE-1 policy with RANDOM, UNTRAINED weights (weights='random'): it will not "
                "follow instructions. Pass weights=<directory with steve1.weights> for the "
                "real agent.",
            )
            return network
        given = optional_path(weights, "weights", "'random' or 'weights/'")
        if given is None or given.is_dir():
            directory = weights_dir(given)
            # steve1.weights, else the Hub mirror's file (read by its key prefixes)
            source = weight_source("policy", None, directory)
        else:
            directory = given.parent
            if not given.is_file():
                raise WeightsError(f"The weight file {given} does not exist.")
            source = WeightSource(given, "policy", is_mirror_file(given))
        path = source.path
        config = _network_config(model, directory)
        with torch.device("meta"):  # shapes only: the loaded tensors become the parameters
            network = Steve1Network(config)
        state = source.load()
        check_state_dict(network.state_dict(), state, f"STEVE-1 policy ({path})")
        network.load_state_dict(state, strict=True, assign=True)
        return network

    # ----------------------------------------------------------- SkillPolicy
    @property
    def rows(self) -> int:
        """Batch rows per env: two guidance branches, or one without guidance."""
        return guidance_rows(self.cond_scale)

    def _ensure_open(self) -> None:
        if self._closed:
            raise ClosedError(
                "This STEVE-1 policy was closed (its weights were released); create a new one."
            )

    def initial_state(self, seed: int) -> Steve1State:
        """Returns the state of a new episode: empty memory, a generator seeded with `seed`."""
        self._ensure_open()
        rows = self.rows
        generator = torch.Generator(device=self.device)
        generator.manual_seed(int(seed))
        return Steve1State(self.network.initial_state(rows), generator)

    def act(
        self, obs: Mapping[str, Any], goal: Goal, state: Steve1State
    ) -> tuple[dict[str, Any], Steve1State]:
        """Returns the MineRL action for one env and its next state."""
        actions, states = self.act_batch([obs], [goal], [state])
        return actions[0], states[0]

    def act_batch(
        self,
        observations: Sequence[Mapping[str, Any]],
        goals: Sequence[Goal],
        states: Sequence[Steve1State],
    ) -> tuple[list[dict[str, Any]], list[Steve1State]]:
        """Returns one MineRL action per env from a single batched forward pass.

        Autocast stays off inside whatever region the caller opened (see `forward`).
        """
        # Envs whose goals ask for another guidance scale (visual goals) run as their own batch.
        groups: dict[float | None, list[int]] = {}
        for i, goal in enumerate(goals):
            own = getattr(goal, "cond_scale", None)
            scale = self.cond_scale if self.cond_scale is None or own is None else own
            groups.setdefault(scale, []).append(i)
        actions: list[Any] = [None] * len(goals)
        new_states: list[Any] = [None] * len(goals)
        for scale, members in groups.items():
            output, group_states = self.forward(
                [observations[i]["pov"] for i in members],
                [goals[i].embedding for i in members],
                [states[i] for i in members],
                cond_scale=scale,
            )
            picks = self.sample(output, group_states)
            for i, (buttons, camera), state in zip(members, picks, group_states, strict=True):
                actions[i] = agent_to_minerl(buttons, camera)
                new_states[i] = state
        return actions, new_states

    # ------------------------------------------------------------- inference
    def forward(
        self,
        frames: Sequence[np.ndarray],
        goals: Sequence[np.ndarray],
        states: Sequence[Steve1State],
        cond_scale: float | Literal["policy"] | None = "policy",
    ) -> tuple[PolicyOutput, list[Steve1State]]:
        """Runs the network for N envs, one time step each.

        Autocast is disabled for the call, whatever region the caller opened, and on CUDA
        float32 matmuls stay out of TF32 (`steve1_env.precision`).

        Args:
            frames: N ``pov`` frames (any size; resized as the official agent does).
            goals: N goal embeddings of shape ``(512,)``: a `Goal`'s embedding is used as is;
                anything else (another dtype, a tensor) is converted here.
            states: N env states from `initial_state` or a previous call.
            cond_scale: The guidance scale of this call (default: the policy's). Only a guided
                policy takes one; its states have two branch rows.

        Returns:
            The per-env outputs and the new states.
        """
        self._ensure_open()
        if cond_scale == "policy":
            cond_scale = self.cond_scale
        elif self.cond_scale is None and cond_scale is not None:
            raise ConfigurationError(
                "This policy was built without guidance (cond_scale=None): its states have one "
                "branch row, so a call cannot ask for a guidance scale."
            )
        n, rows = len(states), self.rows
        if not n == len(frames) == len(goals):
            raise ConfigurationError(
                f"forward() needs as many frames and goals as states, got {len(frames)} frames, "
                f"{len(goals)} goals and {n} states."
            )
        for state in states:
            if state.memory[0].keys.shape[0] != rows:
                raise ConfigurationError(
                    f"A state with {state.memory[0].keys.shape[0]} branch row(s) was given to "
                    f"a policy with {rows} (cond_scale={self.cond_scale}); use states from "
                    "this policy's initial_state()."
                )
        pixels = torch.from_numpy(np.stack([agent_frame(frame) for frame in frames]))
        # np.stack copies, so read-only Goal embeddings become one writable batch array.
        goal = torch.from_numpy(np.stack([_goal_array(g) for g in goals]))
        with (
            torch.inference_mode(),
            precision.autocast_disabled(self.device),
            precision.no_tf32(self.device, enabled=self.dtype == torch.float32),
        ):
            output, memory = self.network(
                pixels.to(self.device),
                goal.to(self.device, self.dtype),
                torch.zeros(n, dtype=torch.bool, device=self.device),  # new episodes: new states
                stack_memories([state.memory for state in states]),
                cond_scale=cond_scale,
                share_frame_encoding=self.share_frame_encoding,
            )
        # Each new state owns a copy of its generator, so an old state can be reused (branched)
        # and sample the same again. Its memory is a view into this batch's tensors.
        new_states = [
            Steve1State(env_memory(memory, i, rows), _clone_generator(state.generator))
            for i, state in enumerate(states)
        ]
        return output, new_states

    def sample(self, output: PolicyOutput, states: Sequence[Steve1State]) -> list[tuple[int, int]]:
        """Picks ``(buttons, camera)`` per env.

        Deterministic policies take the argmax; others draw a Gumbel-max sample with the env's
        own generator, so batching envs together does not change what each samples.
        """
        choices = []
        for logits in (output.buttons, output.camera):
            if not self.deterministic:
                noise = torch.stack(
                    [
                        torch.empty_like(row).exponential_(generator=state.generator)
                        for row, state in zip(logits, states, strict=True)
                    ]
                )
                logits = logits - noise.log()  # -log(Exp(1)) is Gumbel(0, 1)
            choices.append(logits.argmax(dim=-1).tolist())
        return list(zip(choices[0], choices[1], strict=True))

    def compact_state(self, state: Steve1State) -> Steve1State:
        """Returns `state` with its memory in its own tensors.

        A state from a batched call is a view into the whole batch's memory; an env that
        leaves the batch (a vector env's waiting env) would otherwise keep all of it alive.
        """
        memory = [
            AttentionMemory(block.valid.clone(), block.keys.clone(), block.values.clone())
            for block in state.memory
        ]
        return Steve1State(memory, state.generator)

    def close(self) -> None:
        """Releases the weights; the policy cannot act afterwards. Safe to call twice."""
        if not self._closed:
            self._closed = True
            self.network.to("meta")


def _clone_generator(generator: torch.Generator) -> torch.Generator:
    clone = torch.Generator(device=generator.device)
    clone.set_state(generator.get_state())
    return clone


def _goal_array(goal: Any) -> np.ndarray:
    # A Goal's embedding is already finite float32 (512,) (checked once, when it was made);
    # only raw values given to forward() need converting.
    if precision.is_goal_embedding(goal):
        return goal
    return precision.as_goal_embedding(goal)
