"""Hostile weight files and hostile servers (issue 12): the downloader, verify and doctor.

Servers are real HTTP servers on 127.0.0.1 (`tests.test_download.Server`, extended with
scripted routes); no network is used.
"""

import contextlib
import errno
import json
import os
import pickle
import shutil
import time
from dataclasses import replace

import pytest
import torch

from steve1_env import download, files
from steve1_env.cli import main
from steve1_env.doctor import run_checks
from steve1_env.errors import UnsafeFileError, WeightsError
from steve1_env.weights import OFFICIAL_SPECS, check_file_content, load_model_file, load_state_dict
from tests.test_download import Server, torch_bytes
from tests.test_weights import RunsCode

# torch warns about the pickle protocol of plain pickles before refusing them.
pytestmark = pytest.mark.filterwarnings("ignore:Detected pickle protocol")

SMALL = {name: replace(spec, min_bytes=1) for name, spec in OFFICIAL_SPECS.items()}
"""The official specs with the lower size bounds relaxed, for small stand-in files."""

HTML = b"<!DOCTYPE html><html><body>Google Drive: quota exceeded</body></html>"


class HostileServer(Server):
    """The loopback server plus routes that misbehave on purpose: path -> handler function."""

    def __init__(self):
        self.routes = {}
        super().__init__()

    def _handler(self):
        base, server = super()._handler(), self

        class Handler(base):
            def do_GET(self):
                route = server.routes.get(self.path.partition("?")[0])
                if route is None:
                    super().do_GET()
                    return
                server.requests.append((self.path, self.headers.get("Range")))
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    route(self)  # a broken pipe: the client gave up, as it should

        return Handler


@pytest.fixture
def server():
    srv = HostileServer()
    yield srv
    srv.close()


def send_headers(handler, length=None, status=200):
    handler.send_response(status)
    handler.send_header("Content-Type", "application/octet-stream")
    if length is not None:
        handler.send_header("Content-Length", str(length))
    handler.end_headers()


def endless(handler):
    send_headers(handler)  # no Content-Length
    for _ in range(2000):  # 128 MB at most, so the thread ends even if the client does not
        handler.wfile.write(b"\x00" * (1 << 16))


def announces_ten_gigabytes(handler):
    send_headers(handler, length=10 * 1024**3)
    handler.wfile.write(b"\x00" * 1000)


def trickle(handler):
    send_headers(handler, length=200)
    for _ in range(200):  # 200 bytes over 10 s: each read gets data, the block never fills
        handler.wfile.write(b"\x00")
        handler.wfile.flush()
        time.sleep(0.05)


def official(server, directory, names, **kwargs):
    return download.download_official(
        directory, names, url_for=lambda name: server.url(f"/{name}"), progress=False,
        backoff=0.01, **kwargs,
    )  # fmt: skip


def no_unsafe_advice(message):
    assert "weights_only" not in message and "add_safe_globals" not in message


# --------------------------------------------------------------- hostile files in the directory
def hostile_files(tmp_path):
    """Name -> writer of files that must never pass as official files."""
    marker = tmp_path / "pwned"
    evil_model = {"model": {"args": {"net": {"args": RunsCode(marker)}}}, "pad": "x" * 1000}
    return {
        "html": lambda path: path.write_bytes(HTML),
        "posix.system pickle": lambda path: path.write_bytes(pickle.dumps(RunsCode(marker))),
        "posix.system model": lambda path: path.write_bytes(pickle.dumps(evil_model)),
        "posix.system torch": lambda path: torch.save({"x": RunsCode(marker)}, path),
        "truncated zip": lambda path: path.write_bytes(
            torch_bytes({"w": torch.zeros(1000)})[:2000]
        ),
        "empty": lambda path: path.write_bytes(b""),
    }


EXPECTED_WORDS = {
    "html": "HTML page",
    "posix.system pickle": "posix.system",
    "posix.system model": "posix.system",
    "posix.system torch": "posix.system",
    "truncated zip": "damaged zip archive",
    "empty": "empty file",
}


@pytest.mark.parametrize("kind", list(EXPECTED_WORDS))
@pytest.mark.parametrize("name", ["2x.model", "steve1.weights", "steve1_prior.pt", "attn.pth"])
def test_verify_and_doctor_run_the_content_check_on_every_file(tmp_path, name, kind):
    hostile_files(tmp_path)[kind](tmp_path / name)
    for specs in (SMALL, None):  # the load checks, and the default size bounds
        status = {s.name: s for s in download.verify(tmp_path, specs=specs)}[name]
        assert status.present and not status.ok
        # attn.pth has a published md5, which fails first; the others are read for what they are.
        if name != "attn.pth":
            assert EXPECTED_WORDS[kind] in status.detail, status.detail
        no_unsafe_advice(status.detail)
        check = {c.name: c for c in run_checks(tmp_path, specs=specs)}[f"weights: {name}"]
        assert not check.ok and check.broken and check.detail == status.detail
    assert not (tmp_path / "pwned").exists()


def test_cli_verify_and_doctor_exit_non_zero_on_hostile_files(tmp_path, capsys):
    (tmp_path / "steve1_prior.pt").write_bytes(HTML)  # no recorded checksum
    assert main(["weights", "verify", "--dir", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "present (no checksum to compare)" not in out and "HTML page" in out
    (tmp_path / "steve1_prior.pt").unlink()
    hostile_files(tmp_path)["posix.system model"](tmp_path / "2x.model")
    hostile_files(tmp_path)["posix.system torch"](tmp_path / "steve1.weights")
    assert main(["doctor", "--dir", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "ok weights: 2x.model" not in out and "ok weights: steve1.weights" not in out
    assert "-- weights: 2x.model" in out and "posix.system" in out


def test_legitimate_small_files_pass_with_relaxed_bounds_and_not_with_official_ones(
    tmp_path, tiny_policy_files, golden
):
    shutil.copy(tiny_policy_files["model"], tmp_path / "2x.model")
    shutil.copy(tiny_policy_files["weights"], tmp_path / "steve1.weights")
    shutil.copy(golden / "prior.pt", tmp_path / "steve1_prior.pt")
    assert "policy arguments" in check_file_content(tmp_path / "2x.model")
    assert "tensors" in check_file_content(tmp_path / "steve1.weights", specs=SMALL)
    assert "tensors" in check_file_content(tmp_path / "steve1_prior.pt")  # the real size
    with pytest.raises(WeightsError, match=r"12,250,343 bytes, but the official steve1.weights"):
        check_file_content(tmp_path / "steve1.weights")
    # MineCLIP must hold the text tower: the prior's tensors are not MineCLIP.
    with pytest.raises(WeightsError, match="no MineCLIP text tower"):
        check_file_content(tmp_path / "steve1_prior.pt", "attn.pth", specs=SMALL)
    shutil.copy(golden / "mineclip_text_tiny.pth", tmp_path / "attn.pth")
    assert "tensors" in check_file_content(tmp_path / "attn.pth", specs=SMALL)


# ------------------------------------------------------------------------ checksums.json
@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b'{"steve1.weights": 5}', "64 hex digits"),
        (b"not json", "not valid JSON"),
        (b"[1, 2]", "got a list"),
        (b'{"steve1.weights": {"sha256": "ab"}}', "64 hex digits"),
        (b"[" * 100_000 + b"]" * 100_000, "larger than"),
        (b"[" * 20_000 + b"]" * 20_000, "deeper than 64 levels"),
        (b"\xff\xfe not utf-8", "not UTF-8 text"),
    ],
)
def test_a_damaged_checksums_file_is_an_error_naming_it(tmp_path, capsys, content, words):
    (tmp_path / "checksums.json").write_bytes(content)
    with pytest.raises(WeightsError, match=words) as caught:
        download.verify(tmp_path)
    assert "checksums.json" in str(caught.value) and "Correct or delete" in str(caught.value)
    assert main(["weights", "verify", "--dir", str(tmp_path)]) == 2
    assert "Correct or delete" in capsys.readouterr().err
    with pytest.raises(WeightsError, match=words):  # before anything is fetched
        download.download_official(tmp_path, ["2x.model"], url_for=lambda n: "http://0.0.0.0/")
    checks = {c.name: c for c in run_checks(tmp_path)}
    assert checks["weights: checksums.json"].broken
    assert main(["doctor", "--dir", str(tmp_path)]) == 1


def test_an_unreadable_checksums_file_is_an_error(tmp_path):
    (tmp_path / "checksums.json").mkdir()  # exists, cannot be read as a file
    with pytest.raises(WeightsError, match=r"checksums\.json is a directory.*Correct or delete"):
        download.read_checksums(tmp_path)


# ------------------------------------------------------------------- loader error messages
@pytest.mark.parametrize(
    ("kind", "error", "words"),
    [
        ("html", WeightsError, "not a readable torch file but an HTML page"),
        ("posix.system pickle", UnsafeFileError, "would import posix.system"),
        ("posix.system torch", UnsafeFileError, "would import posix.system"),
        ("truncated zip", WeightsError, r"a damaged zip archive \(truncated or corrupted\)"),
        ("empty", WeightsError, "but an empty file"),
    ],
)
def test_loader_errors_say_what_the_file_is_and_never_suggest_unsafe_loading(
    tmp_path, kind, error, words
):
    path = tmp_path / "file.pt"
    hostile_files(tmp_path)[kind](path)
    with pytest.raises(error, match=words) as caught:
        load_state_dict(path)
    no_unsafe_advice(str(caught.value))
    assert "download it again" in str(caught.value)
    assert caught.value.__cause__ is None  # torch's advice is not chained either
    assert not (tmp_path / "pwned").exists()


def test_plain_pickle_without_code_is_named_a_plain_pickle(tmp_path):
    path = tmp_path / "file.pt"
    path.write_bytes(pickle.dumps({"a": [1, 2]}))
    with pytest.raises(WeightsError, match="a plain Python pickle") as caught:
        load_state_dict(path)
    assert not isinstance(caught.value, UnsafeFileError)
    no_unsafe_advice(str(caught.value))


def test_model_file_errors_say_what_the_file_is(tmp_path):
    path = tmp_path / "2x.model"
    path.write_bytes(HTML)
    with pytest.raises(WeightsError, match="it is an HTML page, not a pickle of plain values"):
        load_model_file(path)


# ----------------------------------------------------------------------------- size caps
def test_an_announced_length_over_the_cap_is_refused_before_writing(server, tmp_path):
    server.routes["/2x.model"] = announces_ten_gigabytes
    started = time.monotonic()
    with pytest.raises(WeightsError, match=r"announces 10,737,418,240 bytes, more than the 65,536"):
        official(server, tmp_path, ["2x.model"])
    assert time.monotonic() - started < 5
    assert len(server.requests) == 1  # refused, not retried
    assert not (tmp_path / "2x.model.part").exists() and not (tmp_path / "2x.model").exists()


def test_an_endless_body_is_stopped_at_the_cap(server, tmp_path):
    server.routes["/endless"] = endless
    with pytest.raises(WeightsError, match=r"grew past 1,048,576 bytes"):
        download.download(server.url("/endless"), tmp_path / "steve1.weights",
                          max_bytes=1 << 20, progress=False)  # fmt: skip
    assert not (tmp_path / "steve1.weights.part").exists()
    server.routes["/2x.model"] = endless  # an official file: its own bound
    with pytest.raises(WeightsError, match=r"grew past 65,536 bytes"):
        official(server, tmp_path, ["2x.model"])
    assert not (tmp_path / "2x.model.part").exists()


# --------------------------------------------------------------------------- every hop
@pytest.mark.parametrize("target", ["ftp://127.0.0.1:1/steve1.weights", "file:///etc/passwd"])
def test_redirects_to_other_schemes_are_refused(server, tmp_path, target):
    def redirect(handler):
        handler.send_response(302)
        handler.send_header("Location", target)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    server.routes["/moved"] = redirect
    with pytest.raises(WeightsError, match="only http"):
        download.download(server.url("/moved"), tmp_path / "w.pt", backoff=0.01, progress=False)
    assert len(server.requests) == 1 and not (tmp_path / "w.pt.part").exists()


def test_a_confirmation_form_to_another_scheme_is_refused(server, tmp_path):
    def form(handler):
        page = (
            b'<html><form id="download-form" action="ftp://127.0.0.1:1/x" method="get">'
            b'<input type="hidden" name="confirm" value="t"></form></html>'
        )
        handler.send_response(200)
        handler.send_header("Content-Type", "text/html")
        handler.send_header("Content-Length", str(len(page)))
        handler.end_headers()
        handler.wfile.write(page)

    server.routes["/uc"] = form
    with pytest.raises(WeightsError, match="only http"):
        download.download(server.url("/uc"), tmp_path / "w.pt", backoff=0.01, progress=False)
    assert len(server.requests) == 1


def test_a_redirect_to_http_is_still_followed(server, tmp_path):
    def redirect(handler):
        handler.send_response(302)
        handler.send_header("Location", "/file.bin")
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    server.routes["/moved"] = redirect
    download.download(server.url("/moved"), tmp_path / "file.bin", progress=False)
    assert (tmp_path / "file.bin").read_bytes() == server.files["/file.bin"]


# ---------------------------------------------------------------------------- timeouts
def test_a_trickling_server_fails_the_attempt_within_twice_the_timeout(server, tmp_path):
    server.routes["/trickle"] = trickle
    started = time.monotonic()
    with pytest.raises(WeightsError, match="trickling"):
        download.download(server.url("/trickle"), tmp_path / "w.pt", retries=0, timeout=0.5,
                          progress=False)  # fmt: skip
    assert time.monotonic() - started < 4  # 2 x timeout, with room for a loaded machine


def test_a_slow_steady_server_is_not_cut_off(server, tmp_path):
    blocks = 6

    def steady(handler):
        send_headers(handler, length=blocks * download.BLOCK_BYTES)
        for _ in range(blocks):  # one block per 0.25 s: the whole body takes over 1.2 s
            handler.wfile.write(b"\x01" * download.BLOCK_BYTES)
            handler.wfile.flush()
            time.sleep(0.25)

    server.routes["/steady"] = steady
    started = time.monotonic()
    download.download(server.url("/steady"), tmp_path / "w.bin", retries=0, timeout=0.6,
                      progress=False)  # fmt: skip
    assert time.monotonic() - started > 1.2  # over twice the timeout overall, and still fine
    assert (tmp_path / "w.bin").stat().st_size == blocks * download.BLOCK_BYTES


# ---------------------------------------------------------------- refused downloads leave nothing
@pytest.mark.parametrize("refusal", ["markup", "announced", "endless", "not found"])
def test_a_refused_download_leaves_no_partial_file(server, tmp_path, refusal):
    if refusal == "markup":
        server.files["/w.pt"] = HTML  # served as application/octet-stream
    elif refusal == "announced":
        server.routes["/w.pt"] = announces_ten_gigabytes
    elif refusal == "endless":
        server.routes["/w.pt"] = endless
    with pytest.raises(WeightsError):
        download.download(server.url("/w.pt"), tmp_path / "w.pt", max_bytes=1 << 20,
                          backoff=0.01, progress=False)  # fmt: skip
    assert not (tmp_path / "w.pt.part").exists() and not (tmp_path / "w.pt").exists()


# ------------------------------------------------------------- unwritable weights directories
def test_download_into_a_path_under_a_file_is_a_package_error(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    for directory in (blocker, blocker / "weights"):
        with pytest.raises(WeightsError, match="--dir DIR"):
            download.download_official(directory, ["2x.model"], url_for=lambda n: "http://x/")
        assert main(["weights", "download", "--dir", str(directory), "--quiet"]) == 2
        assert "--dir DIR" in capsys.readouterr().err
    with pytest.raises(WeightsError, match="a part of the path is a file"):
        download.download("http://127.0.0.1:1/x", blocker / "weights" / "x", progress=False)


@pytest.mark.parametrize(
    ("code", "reason", "suffix"),
    [(errno.EROFS, "read-only", ".lock"), (errno.EACCES, "Permission denied", ".part")],
)
def test_an_unwritable_directory_is_a_package_error_and_not_retried(
    server, tmp_path, monkeypatch, code, reason, suffix
):
    real_open = open

    def refusing_open(file, *args, **kwargs):
        if str(file).endswith(suffix):
            raise OSError(code, os.strerror(code), str(file))
        return real_open(file, *args, **kwargs)

    # As root, chmod would not stop the writes: the file system's refusal is simulated.
    monkeypatch.setattr(download, "open", refusing_open, raising=False)
    with pytest.raises(WeightsError, match=f"Cannot write .*{reason}.*--dir DIR"):
        download.download(server.url("/file.bin"), tmp_path / "file.bin", retries=3,
                          backoff=0.01, progress=False)  # fmt: skip
    assert len(server.requests) <= 1


def test_an_unwritable_checksums_file_is_a_package_error(server, tmp_path, monkeypatch):
    real_open = open

    def read_only(file, *args, **kwargs):
        if ".checksums.json." in str(file):  # the temporary file of the atomic write
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(file))
        return real_open(file, *args, **kwargs)

    server.files["/2x.model"] = pickle.dumps({"model": {"args": {"net": {"args": {"h": 1}}}}})
    monkeypatch.setattr(files, "open", read_only, raising=False)
    with pytest.raises(WeightsError, match=r"Cannot write .*checksums\.json .*read-only.*--dir"):
        official(server, tmp_path, ["2x.model"], specs=SMALL)


def test_checksums_written_by_download_are_read_back(server, tmp_path):
    server.files["/2x.model"] = pickle.dumps({"model": {"args": {"net": {"args": {"h": 1}}}}})
    official(server, tmp_path, ["2x.model"], specs=SMALL)
    recorded = json.loads((tmp_path / "checksums.json").read_text())
    assert download.read_checksums(tmp_path) == recorded and list(recorded) == ["2x.model"]
