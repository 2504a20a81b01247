import os
import pickle
import shutil

import pytest
import torch

from steve1_env.agent.native import NativeSteve1Policy
from steve1_env.agent.network import NetworkConfig, Steve1Network
from steve1_env.errors import UnsafeFileError, WeightsError
from steve1_env.weights import (
    WEIGHTS_DIR_ENV,
    check_state_dict,
    load_model_file,
    load_state_dict,
    locate,
    weights_dir,
)


class RunsCode:
    """Unpickling this would call os.system: the classic malicious pickle."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_model_file_is_rejected_without_running_code(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.model"
    payload = {"model": {"args": {"net": {"args": RunsCode(marker)}}}}
    path.write_bytes(pickle.dumps(payload))
    with pytest.raises(UnsafeFileError, match=r"Refusing to load (posix|os)\.system"):
        load_model_file(path)
    assert not marker.exists()


def test_malicious_weight_file_is_rejected_without_running_code(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.weights"
    torch.save({"net.x": torch.zeros(1), "evil": RunsCode(marker)}, path)
    with pytest.raises(UnsafeFileError, match=r"would import (posix|os)\.system") as caught:
        load_state_dict(path)
    assert not marker.exists()
    assert "weights_only set to False" not in str(caught.value)  # no advice to load unsafely


@pytest.mark.parametrize(
    ("write", "match"),
    [
        (lambda path: path.write_bytes(b"random bytes, not a torch file"), "Cannot read"),
        (lambda path: path.write_bytes(pickle.dumps([1, 2, 3], protocol=4)), "not a readable"),
        (lambda path: torch.save([1, 2, 3], path), "not a state dict"),
    ],
)
@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_corrupt_weight_files_are_not_called_unsafe(tmp_path, write, match):
    path = tmp_path / "bad.weights"
    write(path)
    with pytest.raises(WeightsError, match=match) as caught:
        load_state_dict(path)
    assert not isinstance(caught.value, UnsafeFileError)


def test_wrapped_checkpoints_are_unwrapped(tmp_path, tiny_policy_files):
    state = torch.load(tiny_policy_files["weights"], weights_only=True)
    path = tmp_path / "checkpoint.pt"
    torch.save({"state_dict": state, "epoch": 3}, path)
    assert set(load_state_dict(path)) == set(state)


def test_non_tensor_and_integer_values_are_reported(tiny_policy_files):
    model = load_model_file(tiny_policy_files["model"])
    expected = Steve1Network(NetworkConfig.from_policy_kwargs(model.policy_kwargs)).state_dict()
    given = dict(expected)
    given["net.final_ln.weight"] = 3
    with pytest.raises(WeightsError, match=r"not tensors: net\.final_ln\.weight"):
        check_state_dict(expected, given, "test")
    given["net.final_ln.weight"] = torch.zeros(64, dtype=torch.int64)
    with pytest.raises(WeightsError, match=r"not floating point: net\.final_ln\.weight"):
        check_state_dict(expected, given, "test")


def test_model_file_structure_errors(tmp_path):
    path = tmp_path / "odd.model"
    path.write_bytes(pickle.dumps({"model": {"args": {}}}))
    with pytest.raises(WeightsError, match=r"\['model'\]\['args'\]\['net'\]\['args'\]"):
        load_model_file(path)
    (tmp_path / "junk.model").write_bytes(b"not a pickle")
    with pytest.raises(WeightsError, match="Cannot read"):
        load_model_file(tmp_path / "junk.model")


def test_training_wrapper_prefixes_are_stripped(tmp_path, tiny_policy_files):
    state = torch.load(tiny_policy_files["weights"], weights_only=True)
    for prefix in ("module.policy.", "policy."):
        path = tmp_path / f"{prefix}weights"
        torch.save({prefix + key: value for key, value in state.items()}, path)
        assert set(load_state_dict(path)) == set(state)


def test_mismatched_weights_list_what_is_wrong(tiny_policy_files):
    model = load_model_file(tiny_policy_files["model"])
    network = Steve1Network(NetworkConfig.from_policy_kwargs(model.policy_kwargs))
    state = load_state_dict(tiny_policy_files["weights"])
    del state["net.final_ln.weight"]
    state["net.extra.weight"] = torch.zeros(1)
    state["pi_head.camera.linear_layer.bias"] = torch.zeros(7)
    with pytest.raises(WeightsError) as caught:
        check_state_dict(network.state_dict(), state, "test")
    message = str(caught.value)
    assert "1 missing: net.final_ln.weight" in message
    assert "1 unexpected: net.extra.weight" in message
    assert "pi_head.camera.linear_layer.bias (7,) != (121,)" in message


def test_weights_of_another_architecture_are_refused(tiny_policy_files):
    with pytest.raises(WeightsError, match="wrong shape"):
        NativeSteve1Policy(weights=tiny_policy_files["weights"])  # released architecture


def test_weights_directory_resolution(tmp_path, monkeypatch, tiny_policy_files):
    monkeypatch.setenv(WEIGHTS_DIR_ENV, str(tmp_path))
    assert weights_dir() == tmp_path
    with pytest.raises(
        WeightsError, match=r"steve1\.weights not found .*steve1-env weights download"
    ):
        locate("policy")
    shutil.copy(tiny_policy_files["weights"], tmp_path / "steve1.weights")
    shutil.copy(tiny_policy_files["model"], tmp_path / "2x.model")
    policy = NativeSteve1Policy()  # both files found through the environment variable
    assert policy.network.config.hidsize == 64
    monkeypatch.delenv(WEIGHTS_DIR_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert weights_dir() == tmp_path / "cache" / "steve1_env" / "weights"


def test_missing_weight_file(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        NativeSteve1Policy(weights=tmp_path / "nope.weights")
