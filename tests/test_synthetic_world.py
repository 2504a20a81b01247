import math

import numpy as np
import pytest

from steve1_env.errors import (
    ClosedError,
    ConfigurationError,
    InvalidActionError,
    ResetNeededError,
)
from steve1_env.worlds.actions import ACTION_KEYS, canonical_action, noop_action
from steve1_env.worlds.base import World
from steve1_env.worlds.blocks import BLOCK_ID, BLOCKS
from steve1_env.worlds.synthetic import SURFACE_Y, Y_OFFSET, SyntheticWorld


@pytest.fixture
def world():
    w = SyntheticWorld(pov_shape=(96, 160))
    w.reset(0)
    yield w
    w.close()


def act(**keys):
    action = noop_action()
    action.update(keys)
    return action


def clear_around(world, radius=6):
    """Flattens the area around the player to bare grass so a test controls what is there."""
    cx, cz = math.floor(world.x), math.floor(world.z)
    area = world.blocks[cx - radius : cx + radius + 1, :, cz - radius : cz + radius + 1]
    area[:, SURFACE_Y + 1 - Y_OFFSET :, :] = BLOCK_ID["air"]
    area[:, SURFACE_Y - Y_OFFSET, :] = BLOCK_ID["grass_block"]
    world._sprite_alive[:] = False


def test_is_a_world_with_minerl_shaped_observations():
    w = SyntheticWorld()
    assert isinstance(w, World)
    obs = w.reset(1)
    assert obs["pov"].shape == (360, 640, 3) and obs["pov"].dtype == np.uint8
    assert {"inventory", "equipped_items", "life_stats", "location_stats", "mine_block"} <= set(obs)
    assert {"xpos", "ypos", "zpos", "pitch", "yaw", "can_see_sky"} <= set(obs["location_stats"])
    assert {"life", "food", "air", "is_alive"} <= set(obs["life_stats"])
    assert obs["location_stats"]["ypos"] == SURFACE_Y + 1
    assert all(count == 0 for count in obs["inventory"].values())


def test_seeded_worlds_are_reproducible():
    a, b, c = SyntheticWorld(), SyntheticWorld(), SyntheticWorld()
    obs_a, obs_b = a.reset(5), b.reset(5)
    c.reset(6)
    assert np.array_equal(a.blocks, b.blocks) and np.array_equal(obs_a["pov"], obs_b["pov"])
    assert not np.array_equal(a.blocks, c.blocks)
    rng = np.random.default_rng(0)
    for _ in range(100):
        action = act(
            forward=int(rng.integers(2)), attack=int(rng.integers(2)), jump=int(rng.integers(2)),
            camera=rng.uniform(-10, 10, 2),
        )  # fmt: skip
        ra, rb = a.step(action), b.step(action)
        assert ra.obs["location_stats"] == rb.obs["location_stats"]
        assert ra.obs["inventory"] == rb.obs["inventory"]
        assert np.array_equal(ra.obs["pov"], rb.obs["pov"])


def test_world_has_trees_water_plants_and_a_clear_spawn():
    w = SyntheticWorld()
    w.reset(0)
    counts = {b.name: int((w.blocks == i).sum()) for i, b in enumerate(BLOCKS)}
    for name in ("oak_log", "oak_leaves", "water", "grass", "dandelion", "poppy", "dirt"):
        assert counts[name] > 0, name
    assert w.can_see_sky()


def test_action_has_24_keys_and_missing_keys_mean_noop():
    assert len(ACTION_KEYS) == 24
    assert {"ESC", "pickItem", "swapHands", "camera", "hotbar.9"} <= set(ACTION_KEYS)
    action = canonical_action({"forward": np.array([1]), "camera": [[1.5, -2.0]]})
    assert action["forward"] == 1 and action["attack"] == 0
    np.testing.assert_array_equal(action["camera"], [1.5, -2.0])
    assert set(action) == set(ACTION_KEYS)


@pytest.mark.parametrize(
    ("action", "match"),
    [
        ({"foward": 1}, "did you mean 'forward'"),
        ({"attack": 2}, "must be 0 or 1"),
        ({"attack": "yes"}, "must be 0 or 1"),
        ({"camera": [1.0]}, "exactly two numbers"),
        ({"camera": [0.0, 200.0]}, "within"),
        ({"camera": [np.nan, 0.0]}, "finite"),
        ({"camera": "left"}, "two numbers"),
        ([("attack", 1)], "must be a dict"),
    ],
)
def test_malformed_actions_are_rejected(world, action, match):
    with pytest.raises(InvalidActionError, match=match):
        world.step(action)


def test_camera_turns_and_is_clamped(world):
    world.step(act(camera=np.array([30.0, 45.0])))
    assert (world.pitch, world.yaw) == (30.0, 45.0)
    world.step(act(camera=np.array([100.0, 170.0])))
    assert world.pitch == 90.0 and world.yaw == pytest.approx(-145.0)


def test_forward_moves_along_the_view_and_trees_block(world):
    clear_around(world)
    x0, z0 = world.x, world.z
    for _ in range(10):
        world.step(act(forward=1))
    assert world.z - z0 == pytest.approx(2.0) and world.x == pytest.approx(x0)
    world.step(act(camera=np.array([0.0, 90.0])))  # yaw 90 faces -x
    world.step(act(forward=1, sprint=1))
    assert world.x == pytest.approx(x0 - 0.28)
    # A log in the way stops the player.
    cx, cz = math.floor(world.x), math.floor(world.z)
    world.blocks[cx - 1, SURFACE_Y + 1 - Y_OFFSET, cz] = BLOCK_ID["oak_log"]
    for _ in range(10):
        world.step(act(forward=1))
    assert world.x >= cx


def test_attacking_a_log_breaks_it_and_adds_the_item(world):
    clear_around(world)
    cx, cz = math.floor(world.x), math.floor(world.z)
    log_y = SURFACE_Y + 1
    world.blocks[cx, log_y - Y_OFFSET, cz + 2] = BLOCK_ID["oak_log"]
    world.step(act(camera=np.array([20.0, 0.0])))  # look slightly down at the log's middle
    assert world.target()[0] == (cx, log_y, cz + 2)
    ticks = BLOCKS[BLOCK_ID["oak_log"]].break_ticks
    for _ in range(ticks - 1):
        obs = world.step(act(attack=1)).obs
    assert obs["inventory"]["oak_log"] == 0
    obs = world.step(act(attack=1)).obs
    assert obs["inventory"]["oak_log"] == 1
    assert obs["mine_block"]["oak_log"] == 1 and obs["pickup"]["oak_log"] == 1
    assert world.block_at(cx, log_y, cz + 2) == BLOCK_ID["air"]


def test_releasing_attack_resets_break_progress(world):
    clear_around(world)
    cx, cz = math.floor(world.x), math.floor(world.z)
    world.blocks[cx, SURFACE_Y + 1 - Y_OFFSET, cz + 2] = BLOCK_ID["oak_log"]
    world.step(act(camera=np.array([20.0, 0.0])))
    for _ in range(20):
        world.step(act(attack=1))
        obs = world.step(act()).obs
    assert obs["inventory"]["oak_log"] == 0


def test_looking_up_shows_sky_and_down_shows_ground(world):
    clear_around(world, radius=8)
    for _ in range(9):
        obs = world.step(act(camera=np.array([-10.0, 0.0]))).obs
    frame = obs["pov"].astype(int)
    blue = (frame[..., 2] > frame[..., 0] + 40).mean()
    assert blue > 0.95
    for _ in range(18):
        obs = world.step(act(camera=np.array([10.0, 0.0]))).obs
    frame = obs["pov"].astype(int)
    assert (frame[..., 2] > frame[..., 0] + 40).mean() < 0.05


def test_attacking_downward_digs_and_the_player_falls(world):
    clear_around(world)
    world.step(act(camera=np.array([90.0, 0.0])))
    start_y = world.y
    obs = None
    for _ in range(60):
        obs = world.step(act(attack=1)).obs
    assert start_y - obs["location_stats"]["ypos"] >= 3
    assert obs["inventory"]["dirt"] >= 3
    assert obs["mine_block"]["grass_block"] == 1


def test_jump_climbs_out_of_a_one_block_step(world):
    clear_around(world)
    cx, cz = math.floor(world.x), math.floor(world.z)
    world.blocks[cx, SURFACE_Y + 1 - Y_OFFSET, cz + 1] = BLOCK_ID["dirt"]
    for _ in range(5):
        world.step(act(forward=1))
    assert world.y == SURFACE_Y + 1
    for _ in range(5):
        world.step(act(forward=1, jump=1))
    assert world.y == SURFACE_Y + 2


def test_water_swimming_and_drowning(world):
    clear_around(world)
    cx, cz = math.floor(world.x), math.floor(world.z)
    pool = world.blocks[
        cx - 2 : cx + 3, SURFACE_Y - 2 - Y_OFFSET : SURFACE_Y + 1 - Y_OFFSET, cz + 1 : cz + 6
    ]
    pool[:] = BLOCK_ID["water"]
    obs = None
    for _ in range(10):
        obs = world.step(act(forward=1)).obs
    assert obs["location_stats"]["is_in_water"]
    for _ in range(40):
        obs = world.step(act()).obs  # sink
    assert obs["life_stats"]["air"] < 300
    for _ in range(40):
        obs = world.step(act(jump=1)).obs  # swim up: the head leaves the water
    assert obs["life_stats"]["air"] == 300 and obs["location_stats"]["is_in_water"]
    done = False
    for _ in range(900):
        result = world.step(act())
        if result.done:
            done = True
            break
    assert done and not result.obs["life_stats"]["is_alive"]
    with pytest.raises(ResetNeededError, match="dead"):
        world.step(act())


def test_inventory_key_toggles_the_gui_on_press(world):
    obs = world.step(act(inventory=1)).obs
    assert obs["isGuiOpen"]
    obs = world.step(act(inventory=1)).obs  # still held: no new press
    assert obs["isGuiOpen"]
    world.step(act())
    obs = world.step(act(inventory=1)).obs
    assert not obs["isGuiOpen"]
    world.step(act())
    assert world.step(act(inventory=1)).obs["isGuiOpen"]
    world.step(act(camera=np.array([10.0, 10.0]), forward=1))
    assert (world.pitch, world.yaw) == (0.0, 0.0)  # the camera moves the cursor, not the view
    assert not world.step(act(ESC=1)).obs["isGuiOpen"]


def test_step_before_reset_and_bad_arguments():
    with pytest.raises(ResetNeededError):
        SyntheticWorld().step(noop_action())
    with pytest.raises(ConfigurationError, match="pov_shape"):
        SyntheticWorld(pov_shape=(8, 8))
    with pytest.raises(ConfigurationError, match="size"):
        SyntheticWorld(size=4)
    with pytest.raises(ConfigurationError, match="max_steps"):
        SyntheticWorld(max_steps=0)


def test_max_steps_ends_the_world():
    w = SyntheticWorld(pov_shape=(32, 32), max_steps=3)
    w.reset(0)
    assert [w.step(noop_action()).done for _ in range(3)] == [False, False, True]


def test_observations_are_fresh_objects(world):
    first = world.step(act()).obs
    first["inventory"]["dirt"] = 50
    first["pov"][:] = 0
    second = world.step(act()).obs
    assert second["inventory"]["dirt"] == 0 and second["pov"].any()


def test_a_closed_world_is_a_closed_error():
    w = SyntheticWorld(pov_shape=(96, 160))
    w.reset(0)
    w.close()
    with pytest.raises(ClosedError, match="SyntheticWorld was closed"):
        w.reset(0)
