"""How far a reduced-precision policy's decisions are from float32 over a rollout.

A sampled policy acts on whole distributions, so the measure is the KL divergence of the
guided distributions (the softmax of the guided logits, what `NativeSteve1Policy.sample`
draws from), with the deterministic choice (argmax) and the largest log-probability
difference over the actions float32 gives real mass. `benchmarks/bench_precision.py` prints
these figures per precision and the tests hold the fast mode to its bounds.

Both policies see the same frames (a fixed sequence, not their own actions' consequences),
and each keeps its own memory, so errors accumulate over the rollout as in an episode.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

LIKELY = 1e-4
"""Actions float32 gives at least this probability count for the largest |dlogp|."""


@dataclass(frozen=True)
class HeadDivergence:
    """One action head's divergence from float32 over a rollout.

    Attributes:
        mean_kl: Mean over steps of KL(float32 || candidate), in nats.
        max_kl: The largest step's KL.
        argmax_agreement: Fraction of steps whose most likely action is the same.
        max_abs_logp: The largest |log p - log q| over actions float32 gives >= `LIKELY`.
        near_ties: Steps whose float32 top-two log-probabilities are within 0.05 nats: where a
            rounding can flip the argmax without changing the distribution.
        widest_flip_margin: Of the steps whose argmax differs, the largest float32 top-two
            margin in nats (0 when none differs): how clear a decision the candidate changed.
    """

    mean_kl: float
    max_kl: float
    argmax_agreement: float
    max_abs_logp: float
    near_ties: int
    widest_flip_margin: float


def guided_rollout(
    policy: Any, frames: Sequence[np.ndarray], goal: np.ndarray
) -> dict[str, torch.Tensor]:
    """Runs `policy` (a `NativeSteve1Policy`) over `frames` with one goal from a new episode.

    Returns:
        Per head (``buttons``, ``camera``), the ``(steps, actions)`` guided logits in float64.
    """
    state = [policy.initial_state(0)]
    heads: dict[str, list[torch.Tensor]] = {"buttons": [], "camera": []}
    for frame in frames:
        output, state = policy.forward([frame], [goal], state)
        heads["buttons"].append(output.buttons[0].double().cpu())
        heads["camera"].append(output.camera[0].double().cpu())
    return {head: torch.stack(rows) for head, rows in heads.items()}


def divergence(reference: torch.Tensor, candidate: torch.Tensor) -> HeadDivergence:
    """Compares ``(steps, actions)`` guided logits of one head (float32 first).

    The logits are renormalised (upstream's guided logits are not), so the KL is that of the
    distributions actions are sampled from.
    """
    log_p = torch.log_softmax(reference.double(), dim=-1)
    log_q = torch.log_softmax(candidate.double(), dim=-1)
    kl = (log_p.exp() * (log_p - log_q)).sum(dim=-1)
    likely = log_p >= np.log(LIKELY)
    top = log_p.topk(2, dim=-1).values
    margin = top[:, 0] - top[:, 1]
    flipped = log_p.argmax(-1) != log_q.argmax(-1)
    return HeadDivergence(
        mean_kl=float(kl.mean()),
        max_kl=float(kl.max()),
        argmax_agreement=1.0 - float(flipped.double().mean()),
        max_abs_logp=float((log_p - log_q).abs()[likely].max()),
        near_ties=int((margin < 0.05).sum()),
        widest_flip_margin=float(margin[flipped].max()) if bool(flipped.any()) else 0.0,
    )


def full_size_rollouts(
    modes: Sequence[str], steps: int = 140, seed: int = 0, device: Any = "cpu"
) -> dict[str, dict[str, torch.Tensor]]:
    """Guided rollouts of the full-size network (seeded random weights) in each mode.

    Every mode gets the same weights, the same `steps` synthetic-world frames from a new
    episode and the same random goal, with guidance 6: what `benchmarks/bench_precision.py`
    reports and the tests hold to bounds.

    Returns:
        Per mode, `guided_rollout`'s logits.
    """
    import warnings

    from steve1_env.agent.native import NativeSteve1Policy

    frames = synthetic_frames(steps, seed)
    goal = np.random.default_rng(seed + 1).standard_normal(512).astype(np.float32)
    rollouts = {}
    for mode in modes:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the untrained-weights warning: random on purpose
            policy = NativeSteve1Policy(weights="random", device=device, dtype=mode, seed=seed)
        try:
            rollouts[mode] = guided_rollout(policy, frames, goal)
        finally:
            policy.close()
    return rollouts


def synthetic_frames(steps: int, seed: int = 0) -> list[np.ndarray]:
    """``steps`` consecutive 360x640 frames of the synthetic world under random actions."""
    from steve1_env.agent.conversion import N_BUTTON_ACTIONS, N_CAMERA_ACTIONS, agent_to_minerl
    from steve1_env.worlds.synthetic import SyntheticWorld

    world = SyntheticWorld()
    rng = np.random.default_rng(seed)
    obs = world.reset(seed=seed)
    frames = []
    for _ in range(steps):
        frames.append(np.array(obs["pov"]))
        action = agent_to_minerl(
            int(rng.integers(N_BUTTON_ACTIONS)), int(rng.integers(N_CAMERA_ACTIONS))
        )
        obs = world.step(action).obs
    world.close()
    return frames
