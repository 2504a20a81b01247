"""Moved to `steve1_env.worlds.world_process`; this name stays importable."""

from steve1_env.worlds.world_process import ABANDON_GRACE_S, WorldProcess, abandon_all

__all__ = ["ABANDON_GRACE_S", "WorldProcess", "abandon_all"]
