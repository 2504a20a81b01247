"""A fake MineStudio ``MinecraftSim`` with the real one's quirks (upstream-facts section 6)."""

from __future__ import annotations

from typing import ClassVar

from steve1_env.worlds.synthetic import SyntheticWorld


def _upstream_info(obs):
    """The synthetic world's observation as MineStudio's ``info``.

    MineStudio's ``HumanSurvival`` observes no ``life_stats`` and no ``drop`` counter; its env
    adds ``player_pos`` (x y z pitch yaw), ``is_gui_open``, ``health`` and ``food_level``, and
    ``info`` also holds MineRL's ``location_stats`` monitor and the full-size ``pov``.
    """
    location = obs["location_stats"]
    info = {
        key: obs[key]
        for key in (
            "pov",
            "inventory",
            "equipped_items",
            "mine_block",
            "pickup",
            "craft_item",
            "use_item",
            "break_item",
            "kill_entity",
        )
    }
    info.update(damage_dealt={}, custom={})
    info["location_stats"] = {k: v for k, v in location.items() if k != "is_in_water"}
    info["player_pos"] = {
        "x": location["xpos"],
        "y": location["ypos"],
        "z": location["zpos"],
        "pitch": location["pitch"],
        "yaw": location["yaw"],
    }
    info["is_gui_open"] = obs["isGuiOpen"]
    info["health"] = obs["life_stats"]["life"]
    info["food_level"] = obs["life_stats"]["food"]
    return info


class FakeMinecraftSim:
    """``reset()`` takes no seed (it comes from the constructor); ``step`` mutates the action
    it is given; ``terminated == truncated == done``; the frame is ``obs["image"]``; the
    statistics are in ``info``, in MineStudio's format (`_upstream_info`)."""

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
        return {"image": obs["pov"]}, _upstream_info(obs)

    def step(self, action):
        result = self.world.step(action)
        action["camera"][:] = 0  # MineStudio mutates the caller's action
        action.pop("ESC", None)
        info = _upstream_info(result.obs)
        return {"image": result.obs["pov"]}, 0.0, result.done, result.done, info

    def close(self):
        self.closed = True


def fake_sim(seed, **kwargs):
    return FakeMinecraftSim(seed=seed, **kwargs)
