"""Blocks of the synthetic world: how they behave when walked into, looked at and broken."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Block:
    """Properties of one block type.

    Attributes:
        name: Minecraft 1.16 block id (what MineRL's ``mine_block`` counter uses).
        solid: Blocks movement and supports the player.
        targetable: Stops the player's line of sight (can be looked at and attacked).
        break_ticks: Ticks of continuous attack with an empty hand to break it; 0 = unbreakable.
        drop: Item added to the inventory when broken, or None.
        drop_chance: Probability that the drop happens.
        color: RGB used by the renderer.
    """

    name: str
    solid: bool
    targetable: bool
    break_ticks: int
    drop: str | None
    drop_chance: float
    color: tuple[int, int, int]


# Break times are shorter than Minecraft's (a log takes 3 s = 60 ticks by hand there) so that
# short test budgets stay meaningful; seeds drop more often than Minecraft's 1/8 for the same
# reason. Ids are positions in this tuple.
BLOCKS: tuple[Block, ...] = (
    Block("air", False, False, 0, None, 0.0, (0, 0, 0)),
    Block("grass_block", True, True, 9, "dirt", 1.0, (95, 159, 53)),
    Block("dirt", True, True, 8, "dirt", 1.0, (134, 96, 67)),
    Block("stone", True, True, 40, None, 0.0, (125, 125, 125)),
    Block("oak_log", True, True, 15, "oak_log", 1.0, (102, 81, 49)),
    Block("birch_log", True, True, 15, "birch_log", 1.0, (216, 215, 210)),
    Block("oak_leaves", True, True, 4, "oak_sapling", 0.05, (59, 122, 28)),
    Block("birch_leaves", True, True, 4, "birch_sapling", 0.05, (101, 143, 60)),
    Block("grass", False, True, 1, "wheat_seeds", 0.5, (120, 190, 70)),
    Block("dandelion", False, True, 1, "dandelion", 1.0, (245, 230, 40)),
    Block("poppy", False, True, 1, "poppy", 1.0, (220, 30, 30)),
    Block("water", False, False, 0, None, 0.0, (50, 90, 220)),
)

BLOCK_ID: dict[str, int] = {block.name: index for index, block in enumerate(BLOCKS)}

ITEMS: tuple[str, ...] = tuple(sorted({block.drop for block in BLOCKS if block.drop is not None}))
"""Every item the synthetic world can put in the inventory."""
