"""A fake MineStudio ``MinecraftSim`` with the real one's quirks (upstream-facts section 6)."""

from __future__ import annotations

from typing import ClassVar

from steve1_env.worlds.synthetic import SyntheticWorld


class FakeMinecraftSim:
    """``reset()`` takes no seed (it comes from the constructor); ``step`` mutates the action
    it is given; ``terminated == truncated == done``; the frame is ``obs["image"]``."""

    instances: ClassVar[list] = []

    def __init__(self, seed=0, action_type="env", max_steps=None, **kwargs):
        self.seed, self.action_type, self.kwargs = seed, action_type, kwargs
        self.world = SyntheticWorld(pov_shape=(360, 640), max_steps=max_steps)
        self.resets = 0
        self.closed = False
        FakeMinecraftSim.instances.append(self)

    def reset(self):
        obs = self.world.reset(self.seed)
        self.resets += 1
        return {"image": obs.pop("pov")}, obs

    def step(self, action):
        result = self.world.step(action)
        action["camera"][:] = 0  # MineStudio mutates the caller's action
        action.pop("ESC", None)
        obs = dict(result.obs)
        return {"image": obs.pop("pov")}, 0.0, result.done, result.done, obs

    def close(self):
        self.closed = True


def fake_sim(seed, **kwargs):
    return FakeMinecraftSim(seed=seed, **kwargs)
