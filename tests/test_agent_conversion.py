import json

import numpy as np
import pytest

from steve1_env.agent.conversion import (
    BUTTON_TABLE,
    CAMERA_OFF,
    CAMERA_TABLE,
    INVENTORY_INDEX,
    N_BUTTON_ACTIONS,
    N_CAMERA_ACTIONS,
    NULL_CAMERA_INDEX,
    agent_frame,
    agent_to_minerl,
    camera_bin_to_degrees,
    camera_degrees_to_bin,
    minerl_to_agent,
)
from steve1_env.errors import InvalidActionError, InvalidObservationError
from steve1_env.worlds.actions import ACTION_KEYS, AGENT_BUTTON_KEYS


def test_action_tables_match_the_official_ones_exactly(golden):
    table = np.load(golden / "action_table.npz")
    meta = json.loads((golden / "action_table.json").read_text())
    assert list(AGENT_BUTTON_KEYS) == meta["button_keys"]
    assert (meta["n_button_combos"], meta["n_camera_bins"]) == (N_BUTTON_ACTIONS, N_CAMERA_ACTIONS)
    np.testing.assert_array_equal(BUTTON_TABLE, table["buttons"])
    np.testing.assert_array_equal(CAMERA_OFF, table["camera_off"])
    assert np.array_equal(CAMERA_TABLE, table["camera"])  # bit-exact, not just close


def test_inverse_mapping_matches_the_official_one(golden):
    for case in json.loads((golden / "action_inverse.json").read_text()):
        assert minerl_to_agent(case["env_action"]) == (case["buttons"], case["camera"]), case


def test_resize_matches_the_official_agent_input(golden):
    example = np.load(golden / "resize_example.npz")
    np.testing.assert_array_equal(agent_frame(example["pov"]), example["agent_input"])
    small = example["agent_input"]
    assert agent_frame(small) is small  # already the right size: untouched


def test_agent_to_minerl_gives_full_canonical_actions():
    action = agent_to_minerl(0, NULL_CAMERA_INDEX)
    assert set(action) == set(ACTION_KEYS)
    assert all(action[key] == 0 for key in ACTION_KEYS if key != "camera")
    np.testing.assert_array_equal(action["camera"], [0.0, 0.0])
    for index in range(0, N_BUTTON_ACTIONS, 97):
        for camera in (0, 37, 120):
            action = agent_to_minerl(index, camera)
            expected = [0.0, 0.0] if CAMERA_OFF[index] else CAMERA_TABLE[camera]
            np.testing.assert_array_equal(action["camera"], expected)
            assert [action[k] for k in AGENT_BUTTON_KEYS] == BUTTON_TABLE[index].tolist()
            assert action["ESC"] == action["pickItem"] == action["swapHands"] == 0


def test_round_trip_agent_minerl_agent():
    rng = np.random.default_rng(0)
    moving = [c for c in range(N_CAMERA_ACTIONS) if c != NULL_CAMERA_INDEX]
    for index in [*rng.integers(0, N_BUTTON_ACTIONS, 300), INVENTORY_INDEX]:
        camera = int(rng.choice(moving))
        buttons, camera_back = minerl_to_agent(agent_to_minerl(int(index), camera))
        assert buttons == index
        off = CAMERA_OFF[index] or index == INVENTORY_INDEX
        assert camera_back == (NULL_CAMERA_INDEX if off else camera)
    # "Camera on" with a zero turn is the same MineRL action as "camera off".
    on_but_still = 1  # combination 1: nothing pressed but the camera meta-action
    assert not CAMERA_OFF[on_but_still]
    assert minerl_to_agent(agent_to_minerl(on_but_still, NULL_CAMERA_INDEX)) == (0, 60)


def test_camera_quantisation():
    bins = np.arange(11)
    np.testing.assert_array_equal(camera_degrees_to_bin(camera_bin_to_degrees(bins)), bins)
    assert camera_degrees_to_bin(np.array([50.0, -50.0])).tolist() == [10, 0]  # clipped
    assert camera_degrees_to_bin(np.array([0.2, -0.2])).tolist() == [5, 5]  # inside the null bin


def test_conflicting_buttons_and_group_priorities():
    both = minerl_to_agent({"forward": 1, "back": 1, "left": 1, "right": 1})
    assert both == (0, NULL_CAMERA_INDEX)
    sprint_sneak = agent_to_minerl(*minerl_to_agent({"sprint": 1, "sneak": 1}))
    assert sprint_sneak["sneak"] == 1 and sprint_sneak["sprint"] == 0
    hotbars = agent_to_minerl(*minerl_to_agent({"hotbar.1": 1, "hotbar.9": 1}))
    assert hotbars["hotbar.9"] == 1 and hotbars["hotbar.1"] == 0


def test_bad_inputs():
    with pytest.raises(InvalidActionError, match="buttons in"):
        agent_to_minerl(N_BUTTON_ACTIONS, 0)
    with pytest.raises(InvalidActionError, match="camera in"):
        agent_to_minerl(0, -1)
    with pytest.raises(InvalidActionError, match="did you mean 'forward'"):
        minerl_to_agent({"foward": 1})
    with pytest.raises(InvalidObservationError, match="uint8"):
        agent_frame(np.zeros((360, 640, 3), dtype=np.float32))
    with pytest.raises(InvalidObservationError, match="RGB"):
        agent_frame(np.zeros((360, 640), dtype=np.uint8))
