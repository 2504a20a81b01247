"""The paper's prompts and the skill-kind classifier, under their earlier import path.

They live in `steve1_env.skill_kinds` (and `normalize_instruction` in
`steve1_env.instructions`), below both `steve1_env.success` and `steve1_env.tasks`, so that the
two packages do not import each other. This module keeps ``steve1_env.tasks.prompts`` working.
"""

from __future__ import annotations

from steve1_env.instructions import normalize_instruction
from steve1_env.skill_kinds import PAPER_COND_SCALE, PAPER_PROMPTS, matching_kinds, skill_kind

__all__ = [
    "PAPER_COND_SCALE",
    "PAPER_PROMPTS",
    "matching_kinds",
    "normalize_instruction",
    "skill_kind",
]
