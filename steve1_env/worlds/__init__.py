"""Low-level Minecraft worlds behind one protocol (`World`): synthetic, MineRL, MineStudio."""

from steve1_env.worlds.base import World, WorldStep

__all__ = ["World", "WorldStep"]
