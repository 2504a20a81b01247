"""info["state"], the opt-in observation vectors (obs_keys) and the text for planners."""

import json

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import steve1_env
from steve1_env.env import Steve1SkillEnv
from steve1_env.errors import ConfigurationError, InvalidObservationError
from steve1_env.observations import STATE_VECTORS, inventory_counts
from steve1_env.planning import MAX_ITEMS, planner_text
from steve1_env.vector.env import Steve1SkillVectorEnv
from steve1_env.world_state import BIOMES, STATE_KEYS, attempt_delta, world_state
from steve1_env.worlds.minerl import MineRLWorld
from steve1_env.worlds.minestudio import MineStudioWorld
from steve1_env.worlds.synthetic import SyntheticWorld
from tests.fakes.minerl_env import fake_minerl_env
from tests.fakes.minestudio_sim import fake_sim

SMALL = {"pov_shape": (32, 32), "world_kwargs": {"pov_shape": (32, 32), "size": 32}}
SCRIPTED = {"policy": "scripted", "prompt_encoder": "hash", **SMALL}
TYPES = {
    "position": list, "pitch": float, "yaw": float, "health": float, "food": int,
    "saturation": float, "air": int, "equipped": str, "biome_id": int, "biome": str,
    "is_in_water": bool, "can_see_sky": bool, "attempt_delta": dict,
}  # fmt: skip
MINERL_KEYS = set(STATE_KEYS) - {"is_in_water"}
MINESTUDIO_KEYS = set(STATE_KEYS) - {"is_in_water", "saturation", "air"}


def check_types(state, expected_keys):
    assert set(state) == expected_keys
    for key, value in state.items():
        assert type(value) is TYPES[key], (key, value)
    assert len(state["position"]) == 3 and all(type(v) is float for v in state["position"])
    json.dumps(state)  # plain Python: JSON-ready


def checked_states(env, keys, seed):
    """Resets and steps `env`, checking both infos' states hold `keys`; returns the last."""
    _, info = env.reset(seed=seed)
    check_types(info["state"], keys)
    _, _, _, _, info = env.step("")
    check_types(info["state"], keys)
    return info["state"]


def fake_env(world, **kwargs):
    return Steve1SkillEnv(
        world=world, policy="random", prompt_encoder="hash", instruction="chop a tree", k=3,
        pov_shape=(32, 32), **kwargs,
    )  # fmt: skip


# ------------------------------------------------------------------ the state in info
def test_every_key_with_its_type_on_the_synthetic_world_in_reset_and_step_infos():
    env = gym.make("Steve1Skill-v0", instruction="chop a tree", k=5, **SCRIPTED)
    assert env.reset(seed=0)[1]["state"]["attempt_delta"] == {}
    state = checked_states(env, set(STATE_KEYS), seed=0)
    world = env.unwrapped.world
    assert state["position"] == [world.x, world.y, world.z]
    assert (state["pitch"], state["health"], state["air"]) == (world.pitch, world.life, world.air)
    assert state["biome"] == BIOMES[state["biome_id"]] == "plains"
    assert state["equipped"] == "air" and state["can_see_sky"] == world.can_see_sky()
    env.close()


def test_the_minerl_fake_reports_no_in_water_flag_and_the_state_leaves_it_out():
    env = fake_env(MineRLWorld(env_factory=fake_minerl_env))
    checked_states(env, MINERL_KEYS, seed=1)
    assert "is_in_water" not in env.unwrapped._slot.obs["location_stats"]
    assert "isGuiOpen" in env.unwrapped._slot.obs  # a monitor (step info) taken in
    env.close()


def test_the_minestudio_fake_gives_position_health_food_but_no_air_or_saturation():
    env = fake_env(MineStudioWorld(sim_factory=fake_sim))
    state = checked_states(env, MINESTUDIO_KEYS, seed=2)
    sim = env.unwrapped.world._sim.world
    assert state["position"] == [sim.x, sim.y, sim.z] and state["health"] == sim.life
    assert state["food"] == 20 and state["equipped"] == "air"
    env.close()


def test_the_vector_env_infos_carry_the_state_of_each_env():
    env = Steve1SkillVectorEnv(2, instruction="chop a tree", k=5, **SCRIPTED)
    _, infos = env.reset(seed=3)
    assert infos["state"]["position"].shape == (2,) and infos["state"]["_position"].all()
    _, _, _, _, infos = env.step(["", ""])
    for i, sub in enumerate(env.envs):
        assert infos["state"]["position"][i] == [sub.world.x, sub.world.y, sub.world.z]
        assert infos["state"]["health"][i] == sub.world.life
    env.close()


# ------------------------------------------------------------------ attempt_delta
def _gained(before, after):
    return {k: v - before.get(k, 0) for k, v in after.items() if v > before.get(k, 0)}


def test_attempt_delta_after_chopping_a_tree_equals_the_inventory_gained():
    env = Steve1SkillEnv(instruction="chop a tree", k=200, **SCRIPTED)
    _, first = env.reset(seed=0)
    world = env.world
    _, _, _, _, info = env.step("chop a tree")
    assert info["is_success"]
    delta = info["state"]["attempt_delta"]
    assert delta["inventory"] == _gained(first["inventory"], info["inventory"])
    assert any(name.endswith("_log") for name in delta["inventory"])
    assert delta["mine_block"] == {k: v for k, v in world.counters["mine_block"].items() if v}
    assert delta == attempt_delta(env._slot.attempt_start, env._slot.obs)
    env.close()


def test_attempt_delta_spans_the_attempt_and_restarts_with_a_new_one():
    env = Steve1SkillEnv(instruction="chop a tree", k=10, **SCRIPTED)
    _, start = env.reset(seed=0)
    infos = [env.step("chop a tree")[4] for _ in range(6)]
    assert not infos[0]["is_success"] and infos[0]["state"]["attempt_delta"] == {}
    done = next(info for info in infos if info["is_success"])
    # The attempt went on over several high-level steps: its gains count from its start.
    assert done["state"]["attempt_delta"]["inventory"] == _gained(
        start["inventory"], done["inventory"]
    )
    _, _, _, _, info = env.step("look at the sky")  # a new attempt: nothing gained yet
    assert "inventory" not in info["state"]["attempt_delta"]
    env.close()


def test_the_discrete_face_before_any_skill_has_an_empty_delta():
    env = Steve1SkillEnv(face="discrete", **SCRIPTED)
    _, info = env.reset(seed=0)
    assert info["instruction"] is None and info["state"]["attempt_delta"] == {}
    env.close()


# ------------------------------------------------------------------ hostile values
def test_bad_values_are_left_out_by_a_clear_rule():
    obs = {
        "location_stats": {
            "xpos": float("nan"), "ypos": 64.0, "zpos": 1.0, "pitch": float("inf"),
            "yaw": 450.0, "biome_id": 999, "can_see_sky": "yes", "is_in_water": np.bool_(True),
        },
        "life_stats": {"life": "20", "food": 19.6, "saturation": True, "air": np.int64(120)},
        "equipped_items": {"mainhand": {"type": "x" * 10_000}},
    }  # fmt: skip
    state = world_state(obs)
    # NaN x: no position at all; inf pitch, string health, bool saturation, long name: skipped.
    assert state == {
        "yaw": 90.0, "food": 20, "air": 120, "biome_id": 999, "is_in_water": True,
    }  # fmt: skip
    assert type(state["air"]) is int and type(state["is_in_water"]) is bool
    assert world_state({"location_stats": {"biome_id": 1.5}, "life_stats": [1, 2]}) == {}
    assert world_state({"location_stats": "nowhere", "equipped_items": None}) == {}
    assert world_state(None) == {}  # type: ignore[arg-type]


def test_attempt_delta_skips_bad_counts_and_reports_only_increases():
    start = {"inventory": {"dirt": 5, "oak_log": 1}, "mine_block": {"dirt": 1}}
    now = {
        "inventory": {"dirt": 3, "oak_log": 4.0, "stick": "many", "seed": float("nan")},
        "mine_block": {"dirt": 2, "stone": np.int64(1)},
        "craft_item": "broken",
    }
    assert attempt_delta(start, now) == {
        "inventory": {"oak_log": 3}, "mine_block": {"dirt": 1, "stone": 1},
    }  # fmt: skip
    assert attempt_delta(None, now) == {} and attempt_delta(start, {}) == {}


class GarbledWorld(SyntheticWorld):
    """A synthetic world whose statistics are garbage: NaN position, text health."""

    def _observe(self):
        obs = super()._observe()
        obs["location_stats"]["xpos"] = float("nan")
        obs["life_stats"]["life"] = "full"
        obs["inventory"]["dirt"] = float("inf")
        return obs


def test_a_world_reporting_garbage_does_not_break_the_info():
    env = fake_env(GarbledWorld(pov_shape=(32, 32), size=32))
    _, info = env.reset(seed=0)
    assert "position" not in info["state"] and "health" not in info["state"]
    assert info["state"]["air"] == 300
    _, _, _, _, info = env.step("")
    json.dumps(info["state"])
    env.close()


# ------------------------------------------------------------------ obs_keys
@pytest.mark.parametrize("face", ["text", "discrete"])
def test_obs_keys_pass_check_env_on_both_faces(face):
    env = gym.make(
        "Steve1Skill-v0" if face == "text" else "Steve1SkillLibrary-v0",
        instruction="chop a tree", k=3, obs_keys=("position", "life"), **SCRIPTED,
    )  # fmt: skip
    space = env.observation_space
    assert space["position"].shape == (5,) and space["life"].shape == (4,)
    assert space["position"].dtype == np.float32 and space["life"].high.tolist() == [
        20,
        20,
        20,
        300,
    ]
    check_env(env.unwrapped, skip_render_check=True)
    obs, _ = env.reset(seed=0)
    world = env.unwrapped.world
    np.testing.assert_allclose(obs["position"], [world.x, world.y, world.z, 0.0, 0.0])
    np.testing.assert_allclose(obs["life"], [20.0, 20.0, 5.0, 300.0])
    env.close()


def test_obs_keys_on_the_vector_env_are_batched():
    env = Steve1SkillVectorEnv(2, instruction="chop a tree", k=3, obs_keys=("life",), **SCRIPTED)
    assert env.observation_space["life"].shape == (2, 4) and "position" not in env.observation_space
    obs, _ = env.reset(seed=0)
    assert obs["life"].shape == (2, 4) and obs["life"].dtype == np.float32
    assert obs in env.observation_space
    obs, *_ = env.step(["", ""])
    assert obs in env.observation_space
    env.close()


def test_obs_keys_without_them_leave_the_space_as_it_was():
    env = Steve1SkillEnv(instruction="chop a tree", **SCRIPTED)
    assert set(env.observation_space) == {"pov", "inventory", "goal"}
    env.close()


@pytest.mark.parametrize(
    ("obs_keys", "match"),
    [
        (("velocity",), "Unknown obs_keys \\['velocity'\\]; the keys are 'position', 'life'"),
        ("position", "sequence of names such as \\('position',\\)"),
        (("life", "life"), "duplicates"),
        (3, "sequence of names"),
    ],
)
def test_bad_obs_keys_are_configuration_errors_naming_the_valid_ones(obs_keys, match):
    with pytest.raises(ConfigurationError, match=match):
        Steve1SkillEnv(obs_keys=obs_keys, **SCRIPTED)


def test_a_world_that_cannot_provide_a_vector_fails_at_reset_saying_what_is_missing():
    env = fake_env(MineStudioWorld(sim_factory=fake_sim), obs_keys=("position", "life"))
    with pytest.raises(InvalidObservationError, match="lacks saturation, air") as caught:
        env.reset(seed=0)
    assert "Drop 'life' from obs_keys" in str(caught.value)
    env.close()
    env = fake_env(MineStudioWorld(sim_factory=fake_sim), obs_keys=("position",))
    obs, _ = env.reset(seed=0)
    assert obs in env.observation_space
    env.close()


def test_vector_values_outside_the_bounds_are_clipped_into_the_space():
    class Drowning(SyntheticWorld):
        def _observe(self):
            obs = super()._observe()
            obs["life_stats"]["air"] = -20  # Minecraft's air goes below 0 while drowning
            obs["location_stats"]["yaw"] = 540.0
            return obs

    env = fake_env(Drowning(pov_shape=(32, 32), size=32), obs_keys=("position", "life"))
    obs, _ = env.reset(seed=0)
    assert obs in env.observation_space
    assert obs["life"][3] == 0.0 and obs["position"][4] == -180.0
    env.close()


def test_state_vectors_are_documented_in_order():
    assert [c[0] for c in STATE_VECTORS["position"]] == ["x", "y", "z", "pitch", "yaw"]
    assert [c[0] for c in STATE_VECTORS["life"]] == ["health", "food", "saturation", "air"]


# ------------------------------------------------------------------ text for planners
def test_planner_text_after_chopping_a_tree():
    env = Steve1SkillEnv(instruction="chop a tree", k=200, **SCRIPTED)
    _, info = env.reset(seed=0)
    text = planner_text(info)
    assert "Pursuing: 'chop a tree' (no step taken yet)." in text
    assert "facing south (yaw 0.0)" in text and "Inventory: empty." in text
    _, _, _, _, info = env.step("chop a tree")
    text = planner_text(info)
    lines = text.splitlines()
    x, y, z = info["state"]["position"]
    assert lines[0].startswith(f"Position: x={x:.1f} y={y:.1f} z={z:.1f}, facing ")
    assert "biome plains; under the sky." in lines[0]
    assert lines[1] == "Health 20.0/20, food 20/20, saturation 5.0, air 300/300."
    assert lines[2] == "Holding: nothing."
    log = next(name for name in info["inventory"] if name.endswith("_log"))
    assert f"{log}=1" in lines[3]
    assert lines[4].startswith(f"Last instruction: 'chop a tree' succeeded after {info['steps']} ")
    assert f"(detector: {info['detector']})" in lines[4] and f"gained {log} +1" in lines[4]
    assert planner_text(info) == text  # deterministic
    assert steve1_env.planner_text is planner_text  # exported with the package's helpers
    env.close()


def test_planner_text_is_bounded_and_survives_garbage():
    info = {
        "inventory": {f"item_{i:06d}": i + 1 for i in range(100_000)},
        "state": {"position": [float("nan"), 0, 0], "yaw": "north", "equipped": "x" * 1000,
                  "attempt_delta": {"inventory": {f"item_{i}": 1 for i in range(500)}}},
        "instruction": "y" * 100_000, "reason": "crash", "error": "z" * 100_000, "steps": 3,
    }  # fmt: skip
    text = planner_text(info)
    assert len(text) < 3000
    assert "... and 99988 more" in text and "... and 488 more" in text
    assert "Position: unknown." in text and "did not succeed (crash: zzz" in text
    assert text.count("item_") == 2 * MAX_ITEMS
    assert planner_text({}) == "Position: unknown.\nInventory: empty.\nNo instruction yet."
    assert planner_text({"state": "nope", "inventory": None, "instruction": 5}).count("\n") == 2


def test_numbers_too_large_for_a_float_are_bad_values_not_errors():
    # float(10**400) raises OverflowError: the state, the gains, the info's inventory and the
    # planner's text skip such a number as they skip NaN, and huge floats stay short in text.
    huge = 10**400
    obs = {
        "location_stats": {"xpos": huge, "ypos": 1.0, "zpos": 2.0, "pitch": 0.0, "yaw": huge},
        "life_stats": {"life": huge, "food": huge, "air": 300},
        "inventory": {"dirt": huge, "oak_log": 2.0},
    }  # fmt: skip
    assert world_state(obs) == {"pitch": 0.0, "air": 300}
    assert attempt_delta({"inventory": {"oak_log": 1.0}}, obs)["inventory"]["oak_log"] == 1
    assert inventory_counts(obs["inventory"]) == {"oak_log": 2}
    text = planner_text({
        "inventory": {"dirt": huge, "stone": 1e300},
        "state": {"position": [1e300, -1e300, 0.0], "health": 1e300, "yaw": huge},
        "instruction": "get dirt", "reason": "budget", "steps": 1e200,
    })  # fmt: skip
    assert len(text) < 300, text
    assert "x=1e+300 y=-1e+300 z=0.0" in text and "Inventory: stone=1e+300." in text


def test_planner_text_names_the_facing_by_minecraft_compass():
    facing = {0.0: "south", 90.0: "west", -180.0: "north", 179.0: "north", -90.0: "east"}
    for yaw, name in facing.items():
        assert f"facing {name} " in planner_text({"state": {"yaw": yaw}})
    assert "(up)" in planner_text({"state": {"pitch": -90.0}})
