"""What one evaluation trial is: `TrialSpec`, the unit a task set's plan is made of.

A trial is one episode: one instruction of one task, pursued from one seed until the success
detector fires, the world ends or the low-level step budget runs out. Task sets make trials
(`steve1_env.tasks.spec.TaskSpec.trial_specs`); evaluation runs them and records each one
(`steve1_env.evaluation.records.TrialRecord`), so the spec lives here, below evaluation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


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

    @property
    def key(self) -> str:
        """Identifies the trial in a results file: ``task/instruction_index/trial``."""
        return trial_key(self.task, self.instruction_index, self.trial)


def trial_key(task: str, instruction_index: int, trial: int) -> str:
    """Returns the key that identifies a trial in a results file."""
    return f"{task}/{instruction_index}/{trial}"
