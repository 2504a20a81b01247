import numpy as np
import pytest

from steve1_env.errors import ConfigurationError
from steve1_env.observations import (
    inventory_counts,
    inventory_vector,
    observation_space,
    resize_frame,
    validate_items,
)
from steve1_env.prompt.base import PromptEncoder
from steve1_env.prompt.hash_encoder import HashPromptEncoder


def test_resize_frame_shapes_and_values():
    frame = np.zeros((360, 640, 3), dtype=np.uint8)
    frame[:, 320:] = 200
    small = resize_frame(frame, (128, 128))
    assert small.shape == (128, 128, 3) and small.dtype == np.uint8
    assert (small[:, :63] == 0).all() and (small[:, 65:] == 200).all()
    same = resize_frame(small, (128, 128))
    assert np.array_equal(same, small) and same is not small


def test_resize_frame_matches_linear_interpolation_on_a_ramp():
    ramp = np.tile(np.arange(0, 256, 2, dtype=np.uint8)[None, :, None], (4, 1, 3))  # width 128
    half = resize_frame(ramp, (4, 64))
    # Half-pixel centres: output pixel j samples input position 2j + 0.5.
    np.testing.assert_array_equal(half[0, :, 0], np.rint(np.arange(64) * 4 + 1).astype(np.uint8))


def test_inventory_helpers():
    items = ("oak_log", "dirt", "stick")
    vector = inventory_vector({"dirt": 3, "oak_log": 1, "stone": 9}, items)
    assert vector.dtype == np.float32 and vector.tolist() == [1.0, 3.0, 0.0]
    assert inventory_counts({"dirt": np.int64(3), "air": 0}) == {"dirt": 3}
    space = observation_space((64, 48), items)
    assert space["pov"].shape == (64, 48, 3) and space["inventory"].shape == (3,)
    assert np.isfinite(space["goal"].low).all()


@pytest.mark.parametrize("bad", [[], "dirt", ["dirt", "dirt"], ["dirt", ""], [3]])
def test_validate_items_errors(bad):
    with pytest.raises(ConfigurationError, match="inventory_items"):
        validate_items(bad)


def test_hash_encoder_is_a_deterministic_unit_vector():
    encoder = HashPromptEncoder()
    assert isinstance(encoder, PromptEncoder)
    a, b = encoder.encode("Chop a tree"), encoder.encode("chop  a tree")
    assert a.dtype == np.float32 and a.shape == (512,)
    np.testing.assert_array_equal(a, b)
    assert np.linalg.norm(a) == pytest.approx(1.0, abs=1e-6)
    assert not np.allclose(a, encoder.encode("get dirt"))
