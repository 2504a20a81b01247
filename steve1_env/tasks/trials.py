"""What one evaluation trial is: `TrialSpec`, the unit a task set's plan is made of.

A trial is one episode: one instruction of one task, pursued from one seed until the success
detector fires, the world ends or the low-level step budget runs out; a fixed-horizon trial
(the paper's protocol) runs its whole horizon instead, success or not. Task sets make trials
(`steve1_env.tasks.spec.TaskSpec.trial_specs`); evaluation runs them and records each one
(`steve1_env.evaluation.records.TrialRecord`), so the spec lives here, below evaluation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

CONDITIONS = ("prompt", "unconditional")
"""What a trial's policy is conditioned on: its prompt's goal, or the zero goal (the paper's
unconditional baseline, run on the same seeds)."""
PROMPT_LATENTS = ("zeros", "sampled")
"""How a text prompt's goal is computed by STEVE-1's prior: with the zero latent (the
default), or with a latent drawn once from the task's ``prompt_seed`` (the paper's prompts)."""


@dataclass(frozen=True)
class TrialSpec:
    """One trial to run: everything a worker needs besides the run's shared settings.

    Args:
        task: The task's name.
        instruction: The text the skill pursues.
        instruction_index: Position of `instruction` among the task's instructions.
        trial: Index of this trial among the task's trials (0-based).
        seed: Episode seed given to ``env.reset``.
        max_steps: Low-level step budget of the episode.
        detector: The task's success-detector config (as in the task file).
        world_options: Keyword arguments for the world, merged over the run's.
        visual_goal: A visual goal pursued instead of the text (``paper:<name>`` or a video
            file's absolute path), the instruction naming it; None for the text.
        cond_scale: The visual goal's guidance scale (None: the paper's 7.0).
        horizon: Run exactly this many low-level steps, not stopping at success (the paper's
            protocol; `max_steps` equals it); None stops at the first success.
        condition: ``"prompt"`` or ``"unconditional"`` (the zero goal), see `CONDITIONS`.
        prompt_latent: ``"zeros"`` or ``"sampled"``, see `PROMPT_LATENTS`.
        prompt_seed: The seed of the sampled latent (one embedding for every trial of the
            instruction, as the paper embeds each prompt once); None with ``"zeros"``.
        metrics: Metric configs ``{name: config}`` tracked over the episode (see
            `steve1_env.tasks.metrics`); empty for none.
    """

    task: str
    instruction: str
    instruction_index: int
    trial: int
    seed: int
    max_steps: int
    detector: Any = None
    world_options: Mapping[str, Any] = field(default_factory=dict)
    visual_goal: str | None = None
    cond_scale: float | None = None
    horizon: int | None = None
    condition: str = "prompt"
    prompt_latent: str = "zeros"
    prompt_seed: int | None = None
    metrics: Mapping[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """Identifies the trial in a results file (see `trial_key`)."""
        return trial_key(self.task, self.instruction_index, self.trial, self.condition)


def trial_key(task: str, instruction_index: int, trial: int, condition: str = "prompt") -> str:
    """Returns the key that identifies a trial in a results file.

    A prompt trial's key is ``task/instruction_index/trial`` (as before baselines existed);
    its unconditional baseline's adds ``/unconditional``.
    """
    key = f"{task}/{instruction_index}/{trial}"
    return key if condition == "prompt" else f"{key}/{condition}"
