"""The STEVE-1 paper's evaluation prompts and a classifier from instructions to skill kinds.

A *skill kind* ("wood", "dirt", ...) names what an instruction asks for; success detectors, the
env's default skills and the scripted policy all key on it. It sits low in the package (it
imports only `steve1_env.instructions`) so that `steve1_env.success` and `steve1_env.tasks`,
which builds detectors from task files, can both use it without importing each other.
"""

from __future__ import annotations

import re

from steve1_env.instructions import normalize_instruction

PAPER_PROMPTS: dict[str, str] = {
    "dig": "dig as far as possible",
    "dirt": "get dirt, dig hole, dig dirt, gather a ton of dirt, collect dirt",
    "sky": "look at the sky",
    "leaves": "break leaves",
    "wood": "chop down the tree, gather wood, pick up wood, chop it down, break tree",
    "seeds": (
        "break tall grass, break grass, collect seeds, punch the ground, "
        "run around in circles getting seeds from bushes"
    ),
    "flower": "break a flower",
    "explore": "go explore",
    "swim": "go swimming",
    "underwater": "go underwater",
    "inventory": "open inventory",
}
"""Skill kind -> the text prompt the paper evaluated (``cond_scale`` 6.0)."""

PAPER_COND_SCALE = 6.0

# Keywords per kind; an instruction maps to a kind only when exactly one kind matches.
_KEYWORDS: dict[str, tuple[str, ...]] = {
    "underwater": ("underwater", "under water", "dive", "diving"),
    "swim": ("swim", "swimming"),
    "inventory": ("inventory",),
    "sky": ("sky", "look up"),
    "dirt": ("dirt",),
    "leaves": ("leaves", "leaf"),
    "flower": ("flower", "flowers", "dandelion", "poppy"),
    "seeds": ("seed", "seeds", "grass"),
    "wood": ("wood", "log", "logs", "tree", "trees", "chop", "timber"),
    "dig": ("dig", "digging", "hole"),
    "explore": ("explore", "exploring", "wander", "travel"),
}


_BY_PROMPT = {normalize_instruction(prompt): kind for kind, prompt in PAPER_PROMPTS.items()}


def matching_kinds(instruction: str) -> list[str]:
    """Returns every skill kind whose keywords occur in `instruction` (paper prompts: one)."""
    text = normalize_instruction(instruction)
    if text in _BY_PROMPT:
        return [_BY_PROMPT[text]]
    words = set(re.findall(r"[a-z]+", text))
    return [
        kind
        for kind, keywords in _KEYWORDS.items()
        if any((keyword in text) if " " in keyword else (keyword in words) for keyword in keywords)
    ]


def skill_kind(instruction: str) -> str | None:
    """Returns the skill kind an instruction asks for, or None if none or several match.

    Paper prompts map exactly; other text by keywords ("chop a tree" -> "wood"); text that
    mentions several kinds ("gather logs and dirt") is ambiguous and maps to None.
    """
    kinds = matching_kinds(instruction)
    return kinds[0] if len(kinds) == 1 else None
