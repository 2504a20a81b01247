"""Skill policies: what turns (observation, goal) into a low-level MineRL action each tick."""

from steve1_env.agent.base import Goal, SkillPolicy

__all__ = ["Goal", "SkillPolicy"]
