"""Instruction -> STEVE-1 goal embedding (float32, shape (512,))."""

from steve1_env.prompt.base import PromptEncoder

__all__ = ["PromptEncoder"]
