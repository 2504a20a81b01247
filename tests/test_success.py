import pytest

from steve1_env.errors import DetectorError, Steve1EnvWarning
from steve1_env.success import (
    DEFAULT_DETECTORS,
    CounterDelta,
    DepthDug,
    InventoryDelta,
    LookingUp,
    ObservationValue,
    SuccessDetector,
    TravelDistance,
    all_of,
    any_of,
    custom,
    detector_for,
    fired,
    resolve_detectors,
)
from steve1_env.tasks.prompts import PAPER_PROMPTS, skill_kind


def obs(inventory=None, mined=None, x=0.0, y=64.0, z=0.0, pitch=0.0, sky=True, air=300):
    return {
        "inventory": inventory or {},
        "mine_block": mined or {},
        "location_stats": {"xpos": x, "ypos": y, "zpos": z, "pitch": pitch, "can_see_sky": sky},
        "life_stats": {"air": air},
    }


def test_inventory_delta_counts_gains_over_patterns():
    detector = InventoryDelta("*_log", 2)
    start = obs({"oak_log": 5})
    assert not detector(start, obs({"oak_log": 6}), 1)
    assert detector(start, obs({"oak_log": 6, "birch_log": 1}), 1)
    assert not detector(start, obs({"oak_planks": 9}), 1)
    assert detector.name == "inventory:*_log>=2"
    assert InventoryDelta(["dirt", "*seed*"]).items == ("dirt", "*seed*")


def test_counter_delta():
    detector = CounterDelta("mine_block", "*leaves")
    assert detector(
        obs(mined={"oak_leaves": 1}), obs(mined={"oak_leaves": 1, "birch_leaves": 1}), 3
    )
    assert not detector(obs(mined={"oak_leaves": 1}), obs(mined={"oak_leaves": 1}), 3)


def test_location_detectors():
    assert TravelDistance(5)(obs(x=0, z=0), obs(x=3, z=4), 1)
    assert not TravelDistance(5.1)(obs(x=0, z=0), obs(x=3, z=4, y=10), 1)
    assert DepthDug(3)(obs(y=64), obs(y=61), 1) and not DepthDug(3)(obs(y=64), obs(y=62), 1)
    assert LookingUp()(obs(), obs(pitch=-70), 1)
    assert not LookingUp()(obs(), obs(pitch=-70, sky=False), 1)
    assert LookingUp(require_sky=False)(obs(), obs(pitch=-70, sky=False), 1)
    assert not LookingUp()(obs(), obs(pitch=-30), 1)


def test_observation_value_and_missing_keys():
    detector = ObservationValue("life_stats.air", "<", 300)
    assert detector(obs(), obs(air=299), 1) and not detector(obs(), obs(), 1)
    strict = ObservationValue("location_stats.is_in_water", "==", True)
    with pytest.raises(DetectorError, match=r"no 'location_stats\.is_in_water'"):
        strict(obs(), obs(), 1)
    lenient = ObservationValue("location_stats.is_in_water", "==", True, required=False)
    with pytest.warns(Steve1EnvWarning, match="always False"):
        assert not lenient(obs(), obs(), 1)
    assert not lenient(obs(), obs(), 2)  # warns once


def test_missing_sections_are_clear_errors():
    with pytest.raises(DetectorError, match="obs\\['inventory'\\]"):
        InventoryDelta("dirt")({}, {}, 0)
    with pytest.raises(DetectorError, match="location_stats\\['ypos'\\]"):
        DepthDug(1)({"location_stats": {}}, {"location_stats": {}}, 0)


def test_composition_reports_which_part_fired():
    wood, dirt = InventoryDelta("*_log", name="wood"), InventoryDelta("dirt", name="dirt")
    either, both = any_of(wood, dirt), all_of(wood, dirt)
    start = obs()
    assert fired(either, start, obs({"dirt": 1}), 1) == "dirt"
    assert fired(either, start, obs(), 1) is None
    assert not both(start, obs({"dirt": 1}), 1)
    assert both(start, obs({"dirt": 1, "oak_log": 1}), 1)
    assert fired(both, start, obs({"dirt": 1, "oak_log": 1}), 1) == "all_of(wood, dirt)"
    nested = any_of(both, lambda s, o, n: n > 10)
    assert fired(nested, start, obs(), 11) == "<lambda>"


def test_custom_detectors():
    def long_enough(start, current, steps):
        return steps >= 3

    detector = custom(long_enough)
    assert isinstance(detector, SuccessDetector) and detector.name == "long_enough"
    assert detector(obs(), obs(), 3) and not detector(obs(), obs(), 2)
    assert custom(long_enough, name="three").name == "three"


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: InventoryDelta(""), "must be non-empty"),
        (lambda: InventoryDelta([]), "must not be empty"),
        (lambda: InventoryDelta([3]), "only strings"),
        (lambda: InventoryDelta("dirt", True), "positive"),
        (lambda: LookingUp("x"), "finite number"),
        (lambda: InventoryDelta("dirt", 0), "positive"),
        (lambda: CounterDelta("", "dirt"), "counter"),
        (lambda: TravelDistance(-1), "positive"),
        (lambda: DepthDug(float("nan")), "positive"),
        (lambda: LookingUp(30), "negative looks up"),
        (lambda: ObservationValue("a.b", "~", 1), "op must be one of"),
        (lambda: custom(3), "callable"),
        (lambda: any_of(), "at least one"),
        (lambda: all_of(), "at least one"),
        (lambda: any_of("dirt"), "callable"),
    ],
)
def test_bad_detector_configuration(build, match):
    with pytest.raises(DetectorError, match=match):
        build()


def test_every_paper_prompt_has_a_default_detector():
    assert set(DEFAULT_DETECTORS) == set(PAPER_PROMPTS)
    for kind, prompt in PAPER_PROMPTS.items():
        assert skill_kind(prompt) == kind
        assert detector_for(prompt) is DEFAULT_DETECTORS[kind]


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("chop a tree", "wood"),
        ("Chop   a TREE!", "wood"),
        ("gather logs", "wood"),
        ("dig a hole", "dig"),
        ("collect dirt", "dirt"),
        ("break tall grass", "seeds"),
        ("swim in the water", "swim"),
        ("dive underwater", "underwater"),
        ("pick a poppy", "flower"),
        ("mine 3 cobblestone", None),
    ],
)
def test_skill_kind_keywords(text, kind):
    assert skill_kind(text) == kind


def test_resolve_detectors():
    default = resolve_detectors(None)
    assert default("chop a tree").name == "wood" and default("build a house") is None
    special = custom(lambda s, o, n: True, name="always")
    table = resolve_detectors({"Build A House": special})
    assert table("build  a house") is special and table("get dirt").name == "dirt"
    assert resolve_detectors(special)("anything") is special
