"""The paper's visual prompts: downloaded from a loopback server, unpickled safely, resolved."""

import io
import json
import os
import pickle
import zipfile

import numpy as np
import pytest

from steve1_env.cli import in_cli_words, main
from steve1_env.doctor import _weight_checks
from steve1_env.errors import ConfigurationError, UnsafeFileError, WeightsError
from steve1_env.prompt.precomputed import PrecomputedPromptEncoder
from steve1_env.prompt.visual_prompts import (
    PAPER_VISUAL_PROMPT_NAMES,
    VISUAL_PROMPTS_FILE,
    VISUAL_PROMPTS_ZIP,
    check_visual_prompts,
    download_visual_prompts,
    load_numpy_pickle,
    load_visual_prompts,
    read_visual_prompt_zip,
    visual_goal_from_spec,
)
from tests.test_download import Server, sha

NAMES = PAPER_VISUAL_PROMPT_NAMES


def embeddings():
    """Distinct embeddings per name, (1, 512) float32 as upstream computed them."""
    rng = np.random.default_rng(0)
    return {name: rng.standard_normal((1, 512)).astype(np.float32) for name in NAMES}


def zip_bytes(members, folder="visual_prompt_embeds/"):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        if folder:
            archive.writestr(folder, b"")
        for name, data in members.items():
            archive.writestr(name if "/" in name or not folder else folder + name, data)
    return buffer.getvalue()


def pickles(values, protocol=4):
    return {f"{name}.pkl": pickle.dumps(value, protocol=protocol) for name, value in values.items()}


class Planted:
    """Unpickling it would create a file: proof that code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class Evaluated:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"open({str(self.marker)!r}, 'w')",))


@pytest.fixture
def server():
    srv = Server()
    yield srv
    srv.close()


def fetch(server, directory, data, **kwargs):
    server.files["/prompts.zip"] = data
    return download_visual_prompts(
        directory, url=server.url("/prompts.zip"), progress=False, retries=0, backoff=0, **kwargs
    )


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_download_stores_the_eleven_prompts_and_records_checksums(server, tmp_path, protocol):
    values = embeddings()
    data = zip_bytes(pickles(values, protocol))
    path = fetch(server, tmp_path, data)
    assert path == tmp_path / VISUAL_PROMPTS_FILE
    assert not (tmp_path / VISUAL_PROMPTS_ZIP).exists()  # converted, then deleted
    loaded = load_visual_prompts(tmp_path)
    assert list(loaded) == list(NAMES)
    for name in NAMES:
        assert loaded[name].dtype == np.float32 and loaded[name].shape == (512,)
        np.testing.assert_array_equal(loaded[name], values[name][0])
    recorded = json.loads((tmp_path / "checksums.json").read_text())
    assert recorded[VISUAL_PROMPTS_ZIP] == sha(data)
    assert recorded[VISUAL_PROMPTS_FILE] == sha(path.read_bytes())
    # The stored file holds no pickle: numpy reads it with pickles refused.
    with np.load(path, allow_pickle=False) as stored:
        assert sorted(stored.files) == sorted(NAMES)
    # Callers get their own arrays: changing one does not change what the next call returns.
    loaded["dirt"][:] = 0
    np.testing.assert_array_equal(load_visual_prompts(tmp_path)["dirt"], values["dirt"][0])
    # The precomputed encoder reads the same file, keyed by name.
    encoder = PrecomputedPromptEncoder(path=path)
    np.testing.assert_array_equal(encoder.encode("dirt"), values["dirt"][0])


def test_paper_specs_resolve_and_unknown_names_list_the_eleven(server, tmp_path):
    values = embeddings()
    fetch(server, tmp_path, zip_bytes(pickles(values)))
    goal = visual_goal_from_spec("paper:dirt", tmp_path)
    np.testing.assert_array_equal(goal, values["dirt"][0])
    assert goal.shape == (512,) and goal.dtype == np.float32
    with pytest.raises(ConfigurationError, match="names no visual prompt") as error:
        visual_goal_from_spec("paper:castle", tmp_path)
    assert all(name in str(error.value) for name in NAMES)
    with pytest.raises(ConfigurationError, match="paper:<name>"):
        visual_goal_from_spec("dirt", tmp_path)


def test_a_missing_file_names_the_download_function(tmp_path):
    with pytest.raises(WeightsError, match=r"download_visual_prompts\(\)") as error:
        visual_goal_from_spec("paper:dirt", tmp_path)
    assert "--visual-prompts" not in str(error.value)  # flags belong to the CLI's wording


@pytest.mark.parametrize("hostile", [Planted, Evaluated])
def test_a_pickle_naming_another_global_is_refused_and_runs_nothing(server, tmp_path, hostile):
    marker = tmp_path / "code-ran"
    members = pickles(embeddings())
    members["dirt.pkl"] = pickle.dumps(hostile(marker))
    weights = tmp_path / "weights"
    with pytest.raises(UnsafeFileError, match=r"posix\.system|builtins\.eval") as error:
        fetch(server, weights, zip_bytes(members))
    assert "dirt.pkl" in str(error.value)
    assert not marker.exists()
    assert not (weights / VISUAL_PROMPTS_FILE).exists()
    assert not (weights / VISUAL_PROMPTS_ZIP).exists()  # the refused archive is not kept


def test_arguments_no_array_pickle_passes_are_refused():
    # The admitted names get stand-ins that refuse what a plain array's pickle never asks.
    huge = (  # _reconstruct(ndarray, (100_000_000,), b"b")
        b"\x80\x04cnumpy._core.multiarray\n_reconstruct\ncnumpy\nndarray\n"
        b"(J\x00\xe1\xf5\x05tC\x01b\x87R."
    )
    with pytest.raises(UnsafeFileError, match="more than"):
        load_numpy_pickle(huge)
    # Calling numpy.ndarray itself (any shape) is not possible: it is only a marker.
    direct = b"\x80\x04cnumpy\nndarray\n(J\x00\xe1\xf5\x05\x85tR."
    with pytest.raises(WeightsError):
        load_numpy_pickle(direct)
    # BUILD cannot change the stand-ins (they serve every later load in the process).
    rebind = b"\x80\x04cnumpy\ndtype\nN}X\x05\x00\x00\x00_callK\x01s\x86b."
    with pytest.raises(WeightsError):
        load_numpy_pickle(rebind)
    real = np.arange(512, dtype=np.float32)
    np.testing.assert_array_equal(load_numpy_pickle(pickle.dumps(real)), real)
    objects = pickle.dumps(np.array([None] * 512, dtype=object))
    with pytest.raises(UnsafeFileError, match="dtype"):
        load_numpy_pickle(objects)


@pytest.mark.parametrize(
    "member", ["../dirt.pkl", "/etc/dirt.pkl", "a/../../dirt.pkl", "c:/dirt.pkl", "..\\dirt.pkl"]
)
def test_member_names_leading_outside_the_archive_are_refused(tmp_path, member):
    members = pickles(embeddings())
    members[member] = members.pop("dirt.pkl")
    path = tmp_path / "prompts.zip"
    path.write_bytes(zip_bytes(members))
    with pytest.raises(WeightsError, match="outside the archive"):
        read_visual_prompt_zip(path)


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (np.zeros((2, 512), np.float32), "shape"),
        (np.zeros(511, np.float32), "shape"),
        (np.zeros(512, np.int64), "floating point"),
        (np.full(512, np.nan, np.float32), "NaN"),
        ([0.0] * 511, "shape"),
        ([[0.0] * 512, [0.0] * 512], "holds a list"),
        (["0.0"] * 512, "holds a list"),
        ({"embed": np.zeros(512)}, "holds a dict"),
    ],
)
def test_embeddings_that_are_not_512_finite_floats_are_refused(tmp_path, value, words):
    values = embeddings()
    values["sky"] = value
    path = tmp_path / "prompts.zip"
    path.write_bytes(zip_bytes(pickles(values)))
    with pytest.raises(WeightsError, match=words):
        read_visual_prompt_zip(path)


def test_plain_lists_of_512_numbers_are_read_as_embeddings(tmp_path):
    # Upstream saved some embeddings as lists; a list pickle names no global at all.
    values = embeddings()
    values["sky"] = values["sky"][0].tolist()
    values["dig"] = values["dig"].tolist()  # [[...512 numbers]]
    path = tmp_path / "prompts.zip"
    path.write_bytes(zip_bytes(pickles(values)))
    read = read_visual_prompt_zip(path)
    np.testing.assert_array_equal(read["sky"], values["sky"])
    np.testing.assert_array_equal(read["dig"], values["dig"][0])


def test_bombs_missing_and_extra_members_are_refused(tmp_path):
    path = tmp_path / "prompts.zip"
    members = pickles(embeddings())
    members["wood.pkl"] = b"\x80\x04" + b"N" * 200_000 + b"."  # compresses to almost nothing
    path.write_bytes(zip_bytes(members))
    with pytest.raises(WeightsError, match="expands to 200,003 bytes"):
        read_visual_prompt_zip(path)
    members = pickles(embeddings())
    del members["swim.pkl"]
    path.write_bytes(zip_bytes(members))
    with pytest.raises(WeightsError, match="lacks the visual prompts swim"):
        read_visual_prompt_zip(path)
    members = pickles(embeddings())
    members["castle.pkl"] = members["dirt.pkl"]
    path.write_bytes(zip_bytes(members))
    with pytest.raises(WeightsError, match="unexpected member"):
        read_visual_prompt_zip(path)
    # Folders and macOS resource forks are skipped; a flat archive reads too.
    members = pickles(embeddings())
    members["__MACOSX/visual_prompt_embeds/._dirt.pkl"] = b"\x00\x05\x16\x07"
    path.write_bytes(zip_bytes(members, folder=""))
    assert list(read_visual_prompt_zip(path)) == list(NAMES)


def test_an_oversized_or_non_zip_download_is_refused(server, tmp_path):
    with pytest.raises(WeightsError, match="more than"):
        fetch(server, tmp_path, b"PK" + b"\x00" * (5 * 2**20))
    with pytest.raises(WeightsError, match="not a zip archive"):
        fetch(server, tmp_path, b"\x80\x04N.")
    assert not (tmp_path / VISUAL_PROMPTS_FILE).exists()


def test_verify_and_doctor_treat_the_file_as_optional_and_report_damage(server, tmp_path, capsys):
    status = check_visual_prompts(tmp_path)
    assert not status.present and "optional" in status.detail
    doctor = {check.name: check for check in _weight_checks(tmp_path, None)}
    missing = doctor["weights: visual_prompts.npz"]
    assert not missing.ok and not missing.broken  # optional: doctor still exits 0
    assert in_cli_words(missing.fix) == "`steve1-env weights download --visual-prompts`"
    main(["weights", "verify", "--dir", str(tmp_path)])
    assert "visual_prompts.npz missing (optional)" in capsys.readouterr().out

    path = fetch(server, tmp_path, zip_bytes(pickles(embeddings())))
    status = check_visual_prompts(tmp_path)
    assert status.ok and "recorded sha256" in status.detail
    assert _weight_checks(tmp_path, None)[-1].ok

    # A stored file changed after it was written: the recorded checksum catches it.
    other = embeddings()
    other["dirt"] = other["dirt"] + 1
    buffer = io.BytesIO()
    np.savez(buffer, **{name: value[0] for name, value in other.items()})
    path.write_bytes(buffer.getvalue())
    status = check_visual_prompts(tmp_path)
    assert status.present and not status.ok and "checksum mismatch" in status.detail
    # A rewritten file is read again, not served from memory.
    np.testing.assert_array_equal(load_visual_prompts(tmp_path)["dirt"], other["dirt"][0])
    assert _weight_checks(tmp_path, None)[-1].broken
    assert main(["weights", "verify", "--dir", str(tmp_path)]) == 1
    assert "visual_prompts.npz sha256" in capsys.readouterr().out


def test_the_cli_downloads_and_words_the_hint_as_a_command(server, tmp_path, monkeypatch, capsys):
    from steve1_env.prompt import visual_prompts

    server.files["/prompts.zip"] = zip_bytes(pickles(embeddings()))
    real = visual_prompts.download_visual_prompts
    monkeypatch.setattr(
        visual_prompts, "download_visual_prompts",
        lambda directory, **kwargs: real(directory, url=server.url("/prompts.zip"), **kwargs),
    )  # fmt: skip
    assert main(["weights", "download", "--visual-prompts", "--quiet", "--dir", str(tmp_path)]) == 0
    assert "visual prompts are in" in capsys.readouterr().out
    assert (tmp_path / VISUAL_PROMPTS_FILE).is_file()
    assert main(["weights", "where", "--dir", str(tmp_path)]) == 0
    assert "visual_prompts.npz" in capsys.readouterr().out
    with pytest.raises(WeightsError) as error:
        load_visual_prompts(tmp_path / "elsewhere")
    assert "`steve1-env weights download --visual-prompts`" in in_cli_words(str(error.value))
