"""The Hugging Face Hub mirror of the weights: its file read by prefix, and its download.

The download runs against a loopback server (127.0.0.1 only) that answers the Hub's download
API the way huggingface_hub calls it: ``HEAD`` and ``GET /{repo_id}/resolve/{revision}/{file}``
with ``ETag``, ``X-Repo-Commit`` and ``Content-Length``, ``Range`` for a resumed body, and
``X-Error-Code`` for what does not exist.
"""

from __future__ import annotations

import hashlib
import http.server
import re
import shutil
import socket
import threading
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("huggingface_hub")
safetensors_torch = pytest.importorskip("safetensors.torch")

from steve1_env import download  # noqa: E402
from steve1_env.agent.base import Goal  # noqa: E402
from steve1_env.agent.native import NativeSteve1Policy  # noqa: E402
from steve1_env.errors import WeightsError  # noqa: E402
from steve1_env.weights import (  # noqa: E402
    MIRROR_DIR,
    MIRROR_REPO,
    check_mirror_content,
    find_mirror,
    load_mirror_part,
    load_state_dict,
    weight_source,
)

MAIN_COMMIT = "a" * 40
PINNED_COMMIT = "b" * 40


def _unshared(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keeps one name per shared tensor (the first in sorted order), as safetensors does."""
    kept: dict[str, torch.Tensor] = {}
    seen: set[tuple[int, int]] = set()
    for key in sorted(state):
        tensor = state[key]
        identity = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        if identity in seen:
            continue
        seen.add(identity)
        kept[key] = tensor.contiguous()
    return kept


def mirror_state(golden: Path, mineclip: str = "mineclip_text_tiny.pth") -> dict[str, torch.Tensor]:
    """The mirror's layout built from the separate (tiny) files: policy keys whole, then
    ``mineclip.<key>`` for the checkpoint's ``model.<key>`` and ``prior.<key>``."""
    state = dict(load_state_dict(golden / "policy_tiny.weights"))
    clip = load_state_dict(golden / mineclip)
    state.update({"mineclip." + key[len("model.") :]: value for key, value in clip.items()})
    prior = load_state_dict(golden / "prior.pt")
    state.update({"prior." + key: value for key, value in prior.items()})
    return state


def write_mirror(
    golden: Path,
    path: Path,
    fmt: str = "safetensors",
    drop: str = "",
    mineclip: str = "mineclip_text_tiny.pth",
) -> Path:
    state = mirror_state(golden, mineclip)
    state = {k: v for k, v in state.items() if not (drop and k.startswith(drop))}
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "safetensors":
        safetensors_torch.save_file(_unshared(state), str(path))
    else:
        torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def mirror_bytes(golden, tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("mirror") / "model.safetensors"
    return write_mirror(golden, path).read_bytes()


def _tiny_text(golden):
    import json

    from steve1_env.prompt.mineclip import TextTowerConfig

    spec = json.loads((golden / "mineclip_text_tiny.json").read_text())
    return TextTowerConfig(spec["width"], spec["layers"], spec["heads"], spec["embed_dim"])


def _same_state(first, second) -> None:
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key


# ----------------------------------------------------------------- reading the mirror file
@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_the_policy_from_the_mirror_equals_the_policy_from_its_own_file(
    golden, tiny_policy_files, tmp_path, fmt
):
    name = "model.safetensors" if fmt == "safetensors" else "pytorch_model.bin"
    write_mirror(golden, tmp_path / MIRROR_DIR / name, fmt)
    shutil.copy(tiny_policy_files["model"], tmp_path / "2x.model")
    assert weight_source("policy", None, tmp_path).mirror
    from_mirror = NativeSteve1Policy(weights=tmp_path, cond_scale=None, deterministic=True)
    separate = NativeSteve1Policy(
        weights=tiny_policy_files["weights"],
        model=tiny_policy_files["model"],
        cond_scale=None,
        deterministic=True,
    )
    _same_state(from_mirror.network.state_dict(), separate.network.state_dict())
    frame = np.random.default_rng(0).integers(0, 255, (360, 640, 3), dtype=np.uint8)
    goal = Goal("chop a tree", np.random.default_rng(1).standard_normal(512).astype(np.float32))
    outputs = [
        policy.act({"pov": frame}, goal, policy.initial_state(0))[0]
        for policy in (from_mirror, separate)
    ]
    assert outputs[0].keys() == outputs[1].keys()
    for key in outputs[0]:
        np.testing.assert_array_equal(outputs[0][key], outputs[1][key])


def test_the_prompt_encoder_and_mineclip_video_read_the_mirror(golden, tmp_path, tiny_configs):
    from steve1_env.prompt.mineclip_video import load_mineclip_video
    from steve1_env.prompt.steve1_encoder import Steve1PromptEncoder

    write_mirror(golden, tmp_path / MIRROR_DIR / "model.safetensors")
    text = _tiny_text(golden)
    from_mirror = Steve1PromptEncoder(weights=tmp_path, text_config=text)
    separate = Steve1PromptEncoder(
        mineclip=golden / "mineclip_text_tiny.pth", prior=golden / "prior.pt", text_config=text
    )
    np.testing.assert_array_equal(from_mirror.encode("chop a tree"), separate.encode("chop a tree"))
    # The mirror stores each shared MineCLIP tensor once; the video model gets every copy back.
    video_mirror = tmp_path / "video" / "model.safetensors"
    write_mirror(golden, video_mirror, mineclip="mineclip_video_tiny.pth")
    video, text = tiny_configs
    mirrored = load_mineclip_video(video_mirror, config=video, text_config=text)
    own = load_mineclip_video(golden / "mineclip_video_tiny.pth", config=video, text_config=text)
    _same_state(mirrored.state_dict(), own.state_dict())


def test_the_mirror_is_found_in_the_directory_itself_too(golden, tmp_path):
    path = write_mirror(golden, tmp_path / "model.safetensors")
    assert weight_source("prior", None, tmp_path) == weight_source("prior", path)
    assert weight_source("prior", None, tmp_path).mirror


def test_the_official_file_wins_over_the_mirror(golden, tiny_policy_files, tmp_path):
    write_mirror(golden, tmp_path / MIRROR_DIR / "model.safetensors")
    shutil.copy(tiny_policy_files["weights"], tmp_path / "steve1.weights")
    source = weight_source("policy", None, tmp_path)
    assert not source.mirror and source.path.name == "steve1.weights"


def test_a_file_without_one_of_the_models_is_not_the_mirror(golden, tmp_path):
    path = write_mirror(golden, tmp_path / "model.safetensors", drop="prior.")
    with pytest.raises(WeightsError, match=r"no prior weights .*prior\..*not the STEVE-1 mirror"):
        check_mirror_content(path)
    with pytest.raises(WeightsError, match=r"download the mirror again \(steve1_env.download"):
        check_mirror_content(path)
    from steve1_env.cli import in_cli_words

    with pytest.raises(WeightsError) as caught:
        check_mirror_content(path)
    assert "steve1-env weights download --source hub fetches it" in in_cli_words(str(caught.value))
    with pytest.raises(WeightsError, match="holds no prior weights"):
        load_mirror_part(path, "prior")
    assert "policy" in check_mirror_content(write_mirror(golden, tmp_path / "whole.safetensors"))
    (tmp_path / "junk.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage")
    with pytest.raises(WeightsError, match="not a readable safetensors file"):
        load_mirror_part(tmp_path / "junk.safetensors", "policy")


def test_a_pickled_mirror_that_would_run_code_is_refused(tmp_path):
    from steve1_env.errors import UnsafeFileError

    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    path = tmp_path / "pytorch_model.bin"
    torch.save({"net.x": torch.zeros(1), "evil": Evil()}, path)
    with pytest.raises(UnsafeFileError):
        load_mirror_part(path, "policy")


# ----------------------------------------------------------------- the loopback Hub
class FakeHub:
    """A Hub that serves one repository's files per revision on 127.0.0.1."""

    def __init__(self, files: dict[str, tuple[str, dict[str, bytes]]]) -> None:
        self.files = files  # revision -> (commit, {filename: content})
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range)
        self.cut_next_get = False
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_HEAD(self):
                hub.answer(self, body=False)

            def do_GET(self):
                hub.answer(self, body=True)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def answer(self, handler, body: bool) -> None:
        path = urllib.parse.unquote(handler.path)
        self.requests.append((handler.command, path, handler.headers.get("Range")))
        match = re.fullmatch(rf"/{re.escape(MIRROR_REPO)}/resolve/([^/]+)/(.+)", path)
        if match is None:
            return self._error(handler, 404, "RepoNotFound")
        revision, name = match.groups()
        if revision not in self.files:
            return self._error(handler, 404, "RevisionNotFound")
        commit, contents = self.files[revision]
        if name not in contents:
            return self._error(handler, 404, "EntryNotFound", commit)
        data = contents[name]
        start = 0
        wanted = handler.headers.get("Range")
        if wanted and body:
            start = int(re.fullmatch(r"bytes=(\d+)-", wanted).group(1))
        handler.send_response(206 if start else 200)
        handler.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        handler.send_header("X-Repo-Commit", commit)
        handler.send_header("Content-Length", str(len(data) - start))
        handler.send_header("Accept-Ranges", "bytes")
        if start:
            handler.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        handler.end_headers()
        if not body:
            return None
        if self.cut_next_get:  # a dropped connection: half the body, then the socket closes
            self.cut_next_get = False
            handler.wfile.write(data[start : start + (len(data) - start) // 2])
            handler.wfile.flush()
            handler.close_connection = True
            handler.connection.shutdown(socket.SHUT_RDWR)
            return None
        handler.wfile.write(data[start:])
        return None

    @staticmethod
    def _error(handler, status: int, code: str, commit: str | None = None) -> None:
        handler.send_response(status)
        handler.send_header("X-Error-Code", code)
        if commit:
            handler.send_header("X-Repo-Commit", commit)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    def gets(self) -> list[tuple[str, str, str | None]]:
        """The file downloads (huggingface_hub may also ask the Hub's API for other things)."""
        return [r for r in self.requests if r[0] == "GET" and "/resolve/" in r[1]]

    def resolves(self) -> list[tuple[str, str, str | None]]:
        return [r for r in self.requests if "/resolve/" in r[1]]


@pytest.fixture
def hub(golden, mirror_bytes, tmp_path):
    pinned = write_mirror(golden, tmp_path / "pinned" / "model.bin", fmt="bin").read_bytes()
    server = FakeHub(
        {
            "main": (MAIN_COMMIT, {"model.safetensors": mirror_bytes}),
            MAIN_COMMIT: (MAIN_COMMIT, {"model.safetensors": mirror_bytes}),
            # An older revision saved before safetensors: only pytorch_model.bin.
            PINNED_COMMIT: (PINNED_COMMIT, {"pytorch_model.bin": pinned}),
        }
    )
    yield server
    server.close()


def test_fetch_through_hf_endpoint_then_the_cached_copy_is_reused(
    hub, mirror_bytes, golden, tiny_policy_files, tmp_path, monkeypatch
):
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)  # read at the call, not at import
    weights = tmp_path / "weights"
    path = download.download_hub(weights, progress=False)
    assert path == weights / MIRROR_DIR / "model.safetensors"
    assert path.read_bytes() == mirror_bytes
    assert [get[1] for get in hub.gets()] == [f"/{MIRROR_REPO}/resolve/main/model.safetensors"]
    # Again: the revision's ETag matches the copy, so nothing is downloaded.
    assert download.download_hub(weights, progress=False) == path
    assert len(hub.gets()) == 1
    # Offline, the copy is used without any request.
    hub.close()
    before = len(hub.resolves())
    assert download.download_hub(weights, local_files_only=True, progress=False) == path
    assert len(hub.resolves()) == before
    shutil.copy(tiny_policy_files["model"], weights / "2x.model")
    from_hub = NativeSteve1Policy(weights=weights, cond_scale=None)
    separate = NativeSteve1Policy(
        weights=tiny_policy_files["weights"], model=tiny_policy_files["model"], cond_scale=None
    )
    _same_state(from_hub.network.state_dict(), separate.network.state_dict())


def test_a_dropped_connection_is_resumed_with_a_range_request(hub, mirror_bytes, tmp_path):
    hub.cut_next_get = True
    path = download.download_hub(tmp_path, endpoint=hub.endpoint, progress=False)
    assert path.read_bytes() == mirror_bytes
    gets = hub.gets()
    assert len(gets) == 2
    assert gets[0][2] is None
    # Resumed after what was written (huggingface_hub writes 10 MB chunks), not from 0.
    offset = int(re.fullmatch(r"bytes=(\d+)-", gets[1][2]).group(1))
    assert 0 < offset <= len(mirror_bytes) // 2
    assert not list(path.parent.glob("*.incomplete"))


def test_a_pinned_revision_gives_its_own_file_and_an_unknown_one_is_refused(
    hub, mirror_bytes, tiny_policy_files, tmp_path
):
    pinned = download.download_hub(tmp_path, revision=PINNED_COMMIT, endpoint=hub.endpoint,
                                   progress=False)  # fmt: skip
    assert pinned.name == "pytorch_model.bin"  # that revision has no model.safetensors
    assert pinned.read_bytes() != mirror_bytes
    shutil.copy(tiny_policy_files["model"], tmp_path / "2x.model")
    from_bin = NativeSteve1Policy(weights=tmp_path, cond_scale=None)
    separate = NativeSteve1Policy(
        weights=tiny_policy_files["weights"], model=tiny_policy_files["model"], cond_scale=None
    )
    _same_state(from_bin.network.state_dict(), separate.network.state_dict())
    # A pinned commit already downloaded is served from the copy: nothing is downloaded.
    before = len(hub.gets())
    again = download.download_hub(tmp_path, revision=PINNED_COMMIT, endpoint=hub.endpoint,
                                  progress=False)  # fmt: skip
    assert again == pinned and len(hub.gets()) == before
    # The other revision's file goes, so the loaders cannot take it instead.
    download.download_hub(tmp_path, endpoint=hub.endpoint, progress=False)
    assert weight_source("policy", None, tmp_path).path.name == "model.safetensors"
    download.download_hub(tmp_path, revision=PINNED_COMMIT, endpoint=hub.endpoint, progress=False)
    assert not (tmp_path / MIRROR_DIR / "model.safetensors").exists()
    assert weight_source("policy", None, tmp_path).path == pinned
    with pytest.raises(WeightsError, match=r"revision 'v9' does not exist"):
        download.download_hub(tmp_path, revision="v9", endpoint=hub.endpoint, progress=False)


def test_unreachable_hub_and_wrong_repository_are_clear_errors(hub, tmp_path, monkeypatch):
    # huggingface_hub retries an unreachable Hub with backoff (about 20 s): not waited here.
    import huggingface_hub.utils._http as hub_http

    monkeypatch.setattr(hub_http.time, "sleep", lambda seconds: None)
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    unreachable = r"Cannot download .*no copy was downloaded.*HF_ENDPOINT"
    with pytest.raises(WeightsError, match=unreachable):
        download.download_hub(tmp_path, endpoint=closed, progress=False)
    with pytest.raises(WeightsError, match="No copy of the mirror"):
        download.download_hub(tmp_path, local_files_only=True, progress=False)
    with pytest.raises(WeightsError, match="repository someone/else was not found"):
        download.download_hub(tmp_path, repo_id="someone/else", endpoint=hub.endpoint,
                              progress=False)  # fmt: skip


def test_a_served_file_that_is_not_the_mirror_is_refused(hub, golden, tmp_path):
    no_prior = write_mirror(golden, tmp_path / "np.safetensors", drop="prior.").read_bytes()
    hub.files["main"] = (MAIN_COMMIT, {"model.safetensors": no_prior})
    with pytest.raises(WeightsError, match="served a file that is not the STEVE-1 mirror"):
        download.download_hub(tmp_path / "w", endpoint=hub.endpoint, progress=False)
    # Refused, it is not left where the loaders would take it for the mirror.
    assert find_mirror(tmp_path / "w") is None


@pytest.mark.parametrize("endpoint", ["ftp://hub.example", "file:///srv/hub", "hub.example"])
def test_a_hub_address_that_is_not_http_is_a_clear_error(endpoint, tmp_path, monkeypatch):
    with pytest.raises(WeightsError, match=r"is not an http\(s\) URL"):
        download.download_hub(tmp_path, endpoint=endpoint, progress=False)
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    with pytest.raises(WeightsError, match=r"\$HF_ENDPOINT\) is not an http\(s\) URL"):
        download.download_hub(tmp_path, progress=False)
    assert not list(tmp_path.iterdir())


def test_the_cli_downloads_from_the_hub(
    hub, mirror_bytes, tiny_policy_files, tmp_path, capsys, monkeypatch
):
    from steve1_env.cli import main

    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    shutil.copy(tiny_policy_files["model"], tmp_path / "2x.model")  # kept: no blob request
    code = main(["weights", "download", "--source", "hub", "--dir", str(tmp_path), "--quiet",
                 "--revision", MAIN_COMMIT])  # fmt: skip
    assert code == 0
    assert (tmp_path / MIRROR_DIR / "model.safetensors").read_bytes() == mirror_bytes
    assert "Hugging Face mirror" in capsys.readouterr().out
    assert hub.gets()[0][1] == f"/{MIRROR_REPO}/resolve/{MAIN_COMMIT}/model.safetensors"


@pytest.mark.parametrize(
    "argv",
    [
        ["weights", "download", "--revision", MAIN_COMMIT],
        ["weights", "verify", "--revision", MAIN_COMMIT],
        ["weights", "download", "--source", "hub", "--only", "attn.pth"],
    ],
)
def test_cli_hub_options_that_would_be_ignored_are_refused(argv, tmp_path, capsys, monkeypatch):
    # Ignored, --revision would fetch the official files (1.6 GB from Google Drive) instead
    # of the pinned mirror, and --only would fetch the whole mirror.
    from steve1_env.cli import main

    monkeypatch.setattr(download, "download_official", _no_network)
    monkeypatch.setattr(download, "download_hub", _no_network)
    assert main([*argv, "--dir", str(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--source hub" in err and "steve1-env: error:" in err
    assert not list(tmp_path.iterdir())


def _no_network(*args, **kwargs):
    raise AssertionError("nothing is to be downloaded")


def test_the_cli_names_hf_endpoint_for_a_bad_hub_address(tmp_path, capsys, monkeypatch):
    from steve1_env.cli import main

    monkeypatch.setenv("HF_ENDPOINT", "ftp://hub.example")
    assert main(["weights", "download", "--source", "hub", "--dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "'ftp://hub.example' ($HF_ENDPOINT) is not an http(s) URL" in err
    assert "argument" not in err


def test_without_the_hub_extra_the_error_names_it(tmp_path, monkeypatch):
    import sys

    from steve1_env.errors import DependencyNotInstalledError

    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # as if not installed
    with pytest.raises(DependencyNotInstalledError, match=r"steve1-env\[hub\]"):
        download.download_hub(tmp_path, progress=False)
    monkeypatch.setitem(sys.modules, "safetensors", None)
    with pytest.raises(DependencyNotInstalledError, match=r"steve1-env\[hub\]"):
        load_mirror_part(tmp_path / "model.safetensors", "policy")


def test_a_missing_official_file_names_the_hub_download(tmp_path):
    with pytest.raises(WeightsError, match="download_hub"):
        weight_source("prior", None, tmp_path)


def test_verify_and_where_count_the_files_the_mirror_holds(golden, tmp_path, capsys):
    from steve1_env import download
    from steve1_env.cli import main

    write_mirror(golden, tmp_path / MIRROR_DIR / "model.safetensors")
    statuses = {s.name: s for s in download.verify(tmp_path)}
    assert not statuses["2x.model"].ok  # the architecture is not in the mirror
    for name in ("steve1.weights", "steve1_prior.pt", "attn.pth"):
        assert statuses[name].ok and not statuses[name].present
        detail = statuses[name].detail
        assert "the Hub mirror minestudio-steve1/model.safetensors holds it" in detail
    mirror = statuses[f"{MIRROR_DIR}/model.safetensors"]
    assert mirror.ok and "policy" in mirror.detail and "prior" in mirror.detail
    assert main(["weights", "where", "--dir", str(tmp_path)]) == 0
    assert "the Hub mirror" in capsys.readouterr().out
    # A mirror lacking a model covers nothing and is reported as what it is.
    write_mirror(golden, tmp_path / MIRROR_DIR / "model.safetensors", drop="prior.")
    statuses = {s.name: s for s in download.verify(tmp_path)}
    assert not statuses["steve1_prior.pt"].ok and not statuses["steve1.weights"].ok
    assert "holds no prior weights" in statuses[f"{MIRROR_DIR}/model.safetensors"].detail


def test_doctor_counts_the_files_the_mirror_holds(golden, tiny_policy_files, tmp_path):
    # What `weights download --source hub` leaves (the mirror and 2x.model) is what the
    # loaders need: doctor --require weights must not call it missing while verify passes.
    from steve1_env.doctor import missing_pieces, run_checks

    write_mirror(golden, tmp_path / MIRROR_DIR / "model.safetensors")
    shutil.copy(tiny_policy_files["model"], tmp_path / "2x.model")
    checks = {c.name: c for c in run_checks(tmp_path)}
    for name in ("steve1.weights", "steve1_prior.pt", "attn.pth"):
        check = checks[f"weights: {name}"]
        assert check.ok and "the Hub mirror minestudio-steve1/model.safetensors holds it" in (
            check.detail
        )
    assert checks[f"weights: {MIRROR_DIR}/model.safetensors"].ok
    assert missing_pieces(list(checks.values()), ["weights"]) == []
    # A mirror lacking a model covers nothing, and is reported broken.
    write_mirror(golden, tmp_path / MIRROR_DIR / "model.safetensors", drop="prior.")
    checks = {c.name: c for c in run_checks(tmp_path)}
    assert not checks["weights: steve1_prior.pt"].ok
    assert checks[f"weights: {MIRROR_DIR}/model.safetensors"].broken
