"""The STEVE-1 paper's evaluation prompts and a classifier from instructions to skill kinds.

A *skill kind* ("wood", "dirt", ...) names what an instruction asks for; success detectors and
the scripted policy both key on it.
"""

from __future__ import annotations

import re

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

# First match wins, so specific words come before general ones ("underwater" before "water",
# "dirt" before "dig", "leaves" before "tree").
_KEYWORDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("underwater", ("underwater", "under water", "dive")),
    ("swim", ("swim", "swimming", "water")),
    ("inventory", ("inventory",)),
    ("sky", ("sky", "look up")),
    ("dirt", ("dirt",)),
    ("leaves", ("leaves", "leaf")),
    ("flower", ("flower", "dandelion", "poppy")),
    ("seeds", ("seed", "seeds", "grass")),
    ("wood", ("wood", "log", "logs", "tree", "trees", "chop", "timber")),
    ("dig", ("dig", "digging", "hole", "down")),
    ("explore", ("explore", "exploring", "wander", "travel", "walk")),
)


def normalize_instruction(text: str) -> str:
    """Lower-cases and collapses whitespace, as prompt lookups and caches compare text."""
    return " ".join(text.lower().split())


_BY_PROMPT = {normalize_instruction(prompt): kind for kind, prompt in PAPER_PROMPTS.items()}


def skill_kind(instruction: str) -> str | None:
    """Returns the skill kind an instruction asks for, or None if no rule matches.

    Paper prompts map exactly; other text by keywords ("chop a tree" -> "wood").
    """
    text = normalize_instruction(instruction)
    if text in _BY_PROMPT:
        return _BY_PROMPT[text]
    words = set(re.findall(r"[a-z]+", text))
    for kind, keywords in _KEYWORDS:
        for keyword in keywords:
            if (" " in keyword and keyword in text) or keyword in words:
                return kind
    return None
