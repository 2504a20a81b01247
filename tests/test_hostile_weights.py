"""Hostile weight files and hostile servers (issue 12): the downloader, verify and doctor.

Servers are real HTTP servers on 127.0.0.1 (`tests.test_download.Server`, extended with
scripted routes); no network is used.
"""

import contextlib
import dataclasses
import errno
import hashlib
import json
import math
import os
import pickle
import re
import shutil
import ssl
import subprocess
import sys
import threading
import time
import warnings
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from steve1_env import download, files, validation, weights
from steve1_env.cli import main
from steve1_env.doctor import run_checks
from steve1_env.errors import ConfigurationError, ResultsError, UnsafeFileError, WeightsError
from steve1_env.weights import OFFICIAL_SPECS, check_file_content, load_model_file, load_state_dict
from tests.test_download import Server, torch_bytes
from tests.test_official_adapter import official as official_package  # noqa: F401 (fixture)
from tests.test_weights import RunsCode

# torch warns about the pickle protocol of plain pickles before refusing them.
pytestmark = pytest.mark.filterwarnings("ignore:Detected pickle protocol")

SMALL = {name: replace(spec, min_bytes=1) for name, spec in OFFICIAL_SPECS.items()}
"""The official specs with the lower size bounds relaxed, for small stand-in files."""

ROOT = Path(__file__).resolve().parents[1]
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


def fetch_official(server, directory, names, **kwargs):
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
    expected = OFFICIAL_SPECS["steve1.weights"]
    with pytest.raises(WeightsError, match=rf"12,250,343 bytes; the official steve1.weights is "
                       rf"expected to have between {expected.min_bytes:,} and "
                       rf"{expected.max_bytes:,} bytes"):  # fmt: skip
        check_file_content(tmp_path / "steve1.weights")
    # MineCLIP must hold the text tower: the prior's tensors are not MineCLIP.
    with pytest.raises(WeightsError, match=r"no key starts with 'model\.clip_model\.text_model\.'"):
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
        fetch_official(server, tmp_path, ["2x.model"])
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
        fetch_official(server, tmp_path, ["2x.model"])
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


def trickled_status_line(handler):
    # The status line a byte per 0.1 s, for 10 s at most (old code waited for all of it).
    handler.wfile.write(b"HTTP/1.0 200 ")
    for _ in range(100):
        handler.wfile.write(b"O")
        time.sleep(0.1)
    handler.wfile.write(b"K\r\n\r\n")


def trickled_headers(handler):
    # The status line, then a header every 0.2 s for 10 s at most: each read gets data.
    handler.wfile.write(b"HTTP/1.0 200 OK\r\n")
    for _ in range(50):  # fewer than http.client's 100 headers: old code waited for them all
        handler.wfile.write(b"X-A: b\r\n")
        time.sleep(0.2)
    handler.wfile.write(b"\r\n")


def timers():
    return [thread for thread in threading.enumerate() if isinstance(thread, threading.Timer)]


@pytest.mark.parametrize("route", [trickled_status_line, trickled_headers])
def test_a_trickled_status_line_or_headers_fail_the_attempt_within_the_timeout(
    server, tmp_path, route
):
    server.routes["/slow"] = route
    started = time.monotonic()
    with pytest.raises(WeightsError, match=r"did not send its status line and headers within "
                       r"0\.5 s.*attempt 2: TimeoutError") as caught:  # fmt: skip
        download.download(server.url("/slow"), tmp_path / "w.pt", retries=1, timeout=0.5,
                          backoff=0.01, progress=False)  # fmt: skip
    assert time.monotonic() - started < 4  # two attempts of 0.5 s; the server trickles 10 s
    assert len(server.requests) == 2  # a timeout is retried like any other
    assert "kept" not in str(caught.value) and not (tmp_path / "w.pt.part").exists()
    assert timers() == []  # each attempt's deadline timer was stopped and joined


def test_a_prompt_response_is_not_cut_off_by_its_deadline(server, tmp_path):
    # The deadline covers the headers only: a body that takes longer than the timeout overall,
    # but keeps each block within it, still downloads.
    download.download(server.url("/file.bin"), tmp_path / "file.bin", retries=0, timeout=0.5,
                      progress=False)  # fmt: skip
    assert (tmp_path / "file.bin").read_bytes() == server.files["/file.bin"]
    assert timers() == []


@pytest.fixture
def tls_server(server, tmp_path, monkeypatch):
    """`server` behind TLS, with a self-signed certificate for 127.0.0.1 trusted by the client."""
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    serving = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    serving.load_cert_chain(cert, key)
    server.httpd.socket = serving.wrap_socket(server.httpd.socket, server_side=True)
    # The client's default context, verifying certificates, with this one trusted.
    monkeypatch.setattr(ssl, "_create_default_https_context",
                        lambda: ssl.create_default_context(cafile=str(cert)))  # fmt: skip
    server.https = lambda path: server.url(path).replace("http://", "https://")
    return server


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_https_responses_are_bounded_too_and_certificates_still_checked(
    tls_server, tmp_path, monkeypatch
):
    download.download(tls_server.https("/file.bin"), tmp_path / "file.bin", retries=0,
                      timeout=5, progress=False)  # fmt: skip
    assert (tmp_path / "file.bin").read_bytes() == tls_server.files["/file.bin"]
    tls_server.routes["/slow"] = trickled_headers
    started = time.monotonic()
    with pytest.raises(WeightsError, match=r"status line and headers within 0\.5 s"):
        download.download(tls_server.https("/slow"), tmp_path / "w.pt", retries=0, timeout=0.5,
                          progress=False)  # fmt: skip
    assert time.monotonic() - started < 3 and timers() == []
    monkeypatch.setattr(ssl, "_create_default_https_context", ssl.create_default_context)
    with pytest.raises(WeightsError, match="CERTIFICATE_VERIFY_FAILED"):  # not trusted now
        download.download(tls_server.https("/file.bin"), tmp_path / "other.bin", retries=0,
                          timeout=5, progress=False)  # fmt: skip


@pytest.mark.slow
def test_a_slow_steady_server_is_not_cut_off(server, tmp_path):
    timeout, blocks = 2.0, 4
    body = b"".join(bytes([index]) * download.BLOCK_BYTES for index in range(blocks))

    def steady(handler):
        send_headers(handler, length=len(body))
        for index in range(blocks):  # a block every 0.8 s: well within the 2 s per block
            if index:
                time.sleep(0.8)
            handler.wfile.write(body[index * download.BLOCK_BYTES :][: download.BLOCK_BYTES])
            handler.wfile.flush()

    server.routes["/steady"] = steady
    started = time.monotonic()
    download.download(server.url("/steady"), tmp_path / "w.bin", retries=0, timeout=timeout,
                      progress=False)  # fmt: skip
    assert time.monotonic() - started > timeout  # longer than the timeout overall, and fine
    assert (tmp_path / "w.bin").read_bytes() == body
    assert len(server.requests) == 1  # one attempt: nothing was retried


def test_the_last_block_is_kept_when_it_completes_after_the_deadline(server, tmp_path):
    # 300 bytes in three pieces 0.6 s apart: each read waits less than the 1 s timeout, and
    # the block (the whole body) is complete at 1.2 s, after its deadline.
    def late_finish(handler):
        send_headers(handler, length=300)
        for index in range(3):
            if index:
                time.sleep(0.6)
            handler.wfile.write(bytes([index + 1]) * 100)
            handler.wfile.flush()

    server.routes["/late"] = late_finish
    download.download(server.url("/late"), tmp_path / "w.bin", retries=0, timeout=1.0,
                      progress=False)  # fmt: skip
    assert (tmp_path / "w.bin").read_bytes() == b"\x01" * 100 + b"\x02" * 100 + b"\x03" * 100


def test_bytes_that_arrived_before_a_stall_are_kept_and_resumed(server, tmp_path):
    data = bytes(range(256)) * 20

    def stalls_once(handler):
        del server.routes["/w.bin"]  # the retry gets the plain server, which honours Range
        send_headers(handler, length=len(data))
        handler.wfile.write(data[:1000])
        handler.wfile.flush()
        time.sleep(1.5)  # silent past the client's 0.5 s timeout

    server.files["/w.bin"] = data
    server.routes["/w.bin"] = stalls_once
    download.download(server.url("/w.bin"), tmp_path / "w.bin", retries=1, timeout=0.5,
                      backoff=0.01, progress=False)  # fmt: skip
    assert (tmp_path / "w.bin").read_bytes() == data
    assert server.requests[-1] == ("/w.bin", "bytes=1000-")  # resumed after what arrived


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
        with pytest.raises(WeightsError, match="the `directory` argument"):
            download.download_official(directory, ["2x.model"], url_for=lambda n: "http://x/")
        assert main(["weights", "download", "--dir", str(directory), "--quiet"]) == 2
        assert "--dir DIR" in capsys.readouterr().err
    with pytest.raises(WeightsError, match="a part of the path is a file"):
        download.download("http://127.0.0.1:1/x", blocker / "weights" / "x", progress=False)


@pytest.mark.parametrize(
    ("code", "reason", "suffix", "what"),
    [
        (errno.EROFS, "read-only", ".lock", "the lock file"),
        (errno.EACCES, "Permission denied", ".part", "the partial download"),
    ],
)
def test_an_unwritable_directory_is_a_package_error_and_not_retried(
    server, tmp_path, monkeypatch, code, reason, suffix, what
):
    real_open, real_os_open = open, os.open

    def refusing(real):
        def refusing_open(file, *args, **kwargs):
            if str(file).endswith(suffix):
                raise OSError(code, os.strerror(code), str(file))
            return real(file, *args, **kwargs)

        return refusing_open

    # As root, chmod would not stop the writes: the file system's refusal is simulated.
    monkeypatch.setattr(download, "open", refusing(real_open), raising=False)
    monkeypatch.setattr(os, "open", refusing(real_os_open))  # the lock file is opened so
    with pytest.raises(WeightsError, match=f"Cannot write {what} .*{reason}.*`directory`"):
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
    with pytest.raises(
        WeightsError, match=r"Cannot write .*checksums\.json .*read-only.*`directory`"
    ):
        fetch_official(server, tmp_path, ["2x.model"], specs=SMALL)


def test_checksums_written_by_download_are_read_back(server, tmp_path):
    server.files["/2x.model"] = pickle.dumps({"model": {"args": {"net": {"args": {"h": 1}}}}})
    fetch_official(server, tmp_path, ["2x.model"], specs=SMALL)
    recorded = json.loads((tmp_path / "checksums.json").read_text())
    assert download.read_checksums(tmp_path) == recorded and list(recorded) == ["2x.model"]


# ------------------------------------------------------------- doctor's remembered content check
@pytest.fixture
def small_weights(tmp_path, monkeypatch, tiny_policy_files, golden):
    """A weights directory of small stand-ins (all but attn.pth), in a private user cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder = tmp_path / "weights"
    folder.mkdir()
    shutil.copy(tiny_policy_files["model"], folder / "2x.model")
    shutil.copy(tiny_policy_files["weights"], folder / "steve1.weights")
    shutil.copy(golden / "prior.pt", folder / "steve1_prior.pt")
    return folder


@pytest.fixture
def loads(monkeypatch):
    """Counts the files torch.load and the .model loader open: path names, in order."""
    opened = []
    real_load, real_model = torch.load, weights.load_model_file

    def counting_load(path, *args, **kwargs):
        opened.append(os.path.basename(path))
        return real_load(path, *args, **kwargs)

    def counting_model(path):
        opened.append(os.path.basename(path))
        return real_model(path)

    monkeypatch.setattr(torch, "load", counting_load)
    monkeypatch.setattr(weights, "load_model_file", counting_model)
    return opened


def weight_checks(folder):
    return {c.name: c for c in run_checks(folder, specs=SMALL) if c.name.startswith("weights: ")}


STAND_INS = ["2x.model", "steve1.weights", "steve1_prior.pt"]


def test_a_second_doctor_run_loads_no_unchanged_weight_file(small_weights, loads):
    first = weight_checks(small_weights)
    assert all(first[f"weights: {name}"].ok for name in STAND_INS)
    assert sorted(loads) == sorted(STAND_INS)  # the first run loads each file
    loads.clear()
    second = weight_checks(small_weights)
    assert loads == []  # nothing loaded again
    for name in STAND_INS:
        check = second[f"weights: {name}"]
        assert check.ok and "content checked on an earlier run" in check.detail, check.detail
    # A changed file is loaded and checked again; so is a file turned hostile.
    torch.save({"w": torch.ones(3)}, small_weights / "steve1.weights")
    assert weight_checks(small_weights)["weights: steve1.weights"].ok
    assert loads == ["steve1.weights"]
    loads.clear()
    hostile_files(small_weights)["posix.system torch"](small_weights / "steve1.weights")
    check = weight_checks(small_weights)["weights: steve1.weights"]
    assert not check.ok and check.broken and "posix.system" in check.detail
    assert loads == ["steve1.weights"]


def test_verify_still_loads_every_file_and_records_the_verdict(small_weights, loads):
    for _ in range(2):
        loads.clear()
        assert all(s.ok for s in download.verify(small_weights, specs=SMALL) if s.present)
        assert sorted(loads) == sorted(STAND_INS)  # verify re-reads every file, every time
    loads.clear()
    weight_checks(small_weights)  # verify's verdicts spare doctor the loading
    assert loads == []


@pytest.mark.parametrize(
    "damage",
    [b"", b"\xff\xfe not json", b"[1, 2]", b'{"found": 5}', b"{" * 10_000, b"x" * 100_000,
     "other spec", "other name", "directory"],
)  # fmt: skip
def test_a_damaged_or_foreign_content_memo_counts_as_none(small_weights, loads, damage):
    weight_checks(small_weights)
    memos = sorted((small_weights.parent / "cache" / "steve1_env" / "content-checks").iterdir())
    assert len(memos) == len(STAND_INS)
    for memo in memos:
        if damage == "directory":
            memo.unlink()
            memo.mkdir()
        elif isinstance(damage, str):
            saved = json.loads(memo.read_text())
            if damage == "other spec":
                saved["spec"]["max_bytes"] += 1
            else:
                saved["name"] = "attn.pth"
            memo.write_text(json.dumps(saved))
        else:
            memo.write_bytes(damage)
    loads.clear()
    checks = weight_checks(small_weights)
    assert sorted(loads) == sorted(STAND_INS)  # each memo ignored: every file checked again
    for name in STAND_INS:
        assert checks[f"weights: {name}"].ok
        assert "earlier run" not in checks[f"weights: {name}"].detail


def test_a_forged_memo_spares_doctor_the_check_but_never_makes_loading_unsafe(small_weights):
    # What the memo does not guarantee: whoever can write the user cache can make doctor report
    # a file as checked. Loading it still refuses anything that would run code.
    hostile_files(small_weights)["posix.system torch"](small_weights / "steve1.weights")
    digest = weights.hash_file(small_weights / "steve1.weights")["sha256"]
    memo = small_weights.parent / "cache" / "steve1_env" / "content-checks" / f"{digest}.json"
    memo.parent.mkdir(parents=True)
    spec = dataclasses.asdict(SMALL["steve1.weights"])
    memo.write_text(json.dumps({"sha256": digest, "name": "steve1.weights", "spec": spec,
                                "found": "forged"}))  # fmt: skip
    assert "forged" in weight_checks(small_weights)["weights: steve1.weights"].detail
    with pytest.raises(UnsafeFileError):
        load_state_dict(small_weights / "steve1.weights")
    assert not (small_weights / "pwned").exists()
    # verify never trusts the memo.
    status = {s.name: s for s in download.verify(small_weights, specs=SMALL)}["steve1.weights"]
    assert not status.ok and "posix.system" in status.detail


def test_a_digest_that_is_not_hex_never_names_a_memo_file(small_weights, tmp_path):
    # The digest may come from the (forgeable) checksum memo: it must not become a path.
    found = weights.remembered_content_check(
        small_weights / "steve1_prior.pt", "../../escaped", specs=SMALL
    )
    assert "tensors" in found
    assert not (tmp_path / "cache" / "escaped.json").exists()
    assert not (tmp_path / "cache" / "steve1_env" / "content-checks").exists()


# ------------------------------------------------------------------ bounds from the manifests
def manifest_parameters(golden):
    manifests = json.loads((golden / "manifests.json").read_text())

    def count(keys):
        return sum(math.prod(shape) for shape in keys.values())

    mineclip = manifests["mineclip_attn"]["keys"]
    # image_encoder is clip_model.vision_model and reward_head.clip_model is clip_model: the
    # same modules under two names, so torch.save stores their tensors once.
    shared = ("model.image_encoder.", "model.reward_head.clip_model.")
    distinct = {key: shape for key, shape in mineclip.items() if not key.startswith(shared)}
    for alias, original in (("model.image_encoder.", "model.clip_model.vision_model."),
                            ("model.reward_head.clip_model.", "model.clip_model.")):  # fmt: skip
        aliased = {k[len(alias) :]: v for k, v in mineclip.items() if k.startswith(alias)}
        assert aliased == {k[len(original) :]: v for k, v in mineclip.items()
                           if k.startswith(original)}  # fmt: skip
    return {
        "steve1.weights": count(manifests["policy_2x"]["keys"]),
        "steve1_prior.pt": count(manifests["prior"]["keys"]),
        "attn.pth": count(distinct),
        "mineclip keys": len(mineclip),
        "mineclip values": count(mineclip),
    }


def test_the_size_bounds_follow_the_parameter_counts_of_the_manifests(golden):
    counted = manifest_parameters(golden)
    assert counted["mineclip keys"] == 788 and counted["mineclip values"] == 394_295_811
    assert counted["steve1.weights"] == weights.POLICY_PARAMETERS
    assert counted["steve1_prior.pt"] == weights.PRIOR_PARAMETERS
    assert counted["attn.pth"] == weights.MINECLIP_PARAMETERS  # 158.5 M, as published
    for name in ("steve1.weights", "steve1_prior.pt", "attn.pth"):
        spec, fp32 = OFFICIAL_SPECS[name], 4 * counted[name]
        assert spec.min_bytes <= 0.9 * fp32 and spec.max_bytes >= fp32  # an fp32 file fits
    for name in ("steve1.weights", "steve1_prior.pt"):
        assert OFFICIAL_SPECS[name].max_bytes <= 1.1 * 4 * counted[name] + 1_000_000  # tight
    # attn.pth fits whether torch.save stored its shared tensors once or under every key.
    unshared = 4 * counted["mineclip values"]
    assert unshared <= OFFICIAL_SPECS["attn.pth"].max_bytes <= 1.1 * unshared + 1_000_000
    assert counted["mineclip values"] == weights.MINECLIP_STORED_VALUES
    for name in ("steve1.weights", "steve1_prior.pt"):  # an fp16 release would fit too
        assert OFFICIAL_SPECS[name].min_bytes <= 2 * counted[name]
    # attn.pth is pinned by its md5 and is float32: half that size is refused.
    assert OFFICIAL_SPECS["attn.pth"].min_bytes > 2 * counted["attn.pth"]
    state_dicts = [name for name in OFFICIAL_SPECS if name != "2x.model"]
    assert sum(4 * counted[name] for name in state_dicts) == weights.OFFICIAL_TOTAL_BYTES


def test_the_weights_module_needs_nothing_from_the_prompt_layer(tmp_path, golden):
    from steve1_env.prompt.mineclip import CHECKPOINT_PREFIX

    assert OFFICIAL_SPECS["attn.pth"].required_key_prefix == CHECKPOINT_PREFIX
    shutil.copy(golden / "mineclip_text_tiny.pth", tmp_path / "attn.pth")
    script = (
        "import sys\n"
        "from dataclasses import replace\n"
        "from steve1_env import weights\n"
        "spec = replace(weights.OFFICIAL_SPECS['attn.pth'], min_bytes=1)\n"
        f"print(weights.check_file_content({str(tmp_path / 'attn.pth')!r},"
        " specs={'attn.pth': spec}))\n"
        "print(sorted(m for m in sys.modules if m.startswith('steve1_env.prompt')))\n"
    )
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=ROOT, timeout=120, env=environment)  # fmt: skip
    assert result.returncode == 0, result.stderr
    tensors = len(load_state_dict(tmp_path / "attn.pth"))
    assert result.stdout.splitlines()[-2:] == [f"a torch state dict of {tensors} tensors", "[]"]


# ------------------------------------------------------------------ one file-type sniffer
NPY = b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, 'shape': (512,), }"
KINDS = {
    b"": "an empty file",
    b"\xef\xbb\xbf\n" + HTML: "an HTML page",
    b"<?xml version='1.0'?><a/>": "markup (HTML or XML)",
    b"PK\x03\x04" + bytes(40): "a zip archive",
    pickle.dumps({"x": 1}): "a Python pickle",
    NPY: "a single .npy array (np.save)",
    b' {"x": [1]}': "JSON text",
    b"GIF89a....": "not a known format (it starts with b'GIF89a..')",
}


@pytest.mark.parametrize(("head", "kind"), list(KINDS.items()))
def test_one_sniffer_names_a_file_for_weights_and_embedding_tables(tmp_path, head, kind):
    from steve1_env.prompt.precomputed import PrecomputedPromptEncoder

    assert files.describe_content(head) == kind
    path = tmp_path / "file"
    path.write_bytes(head)
    if kind not in ("a zip archive", "a Python pickle"):  # weights refine these two
        assert weights.describe_file(path) == kind
    wrong = "JSON text" if kind == "JSON text" else kind
    for suffix in (".npz", ".json"):
        table = path.rename(path.with_suffix(suffix))
        path = table
        if (suffix, kind) in ((".json", "JSON text"),):
            continue
        if (suffix, kind) == (".npz", "a zip archive"):
            continue  # a zip: read as one, and refused for what is inside
        with pytest.raises(ConfigurationError, match=re.escape(wrong)):
            PrecomputedPromptEncoder(path=table)


def test_weights_refine_what_the_sniffer_says_about_zips_and_pickles(tmp_path):
    (tmp_path / "npy.pt").write_bytes(NPY)
    with pytest.raises(WeightsError, match=r"a single \.npy array"):
        load_state_dict(tmp_path / "npy.pt")
    (tmp_path / "cut.pt").write_bytes(torch_bytes({"w": torch.zeros(1000)})[:2000])
    assert (
        weights.describe_file(tmp_path / "cut.pt")
        == "a damaged zip archive (truncated or corrupted)"
    )
    (tmp_path / "plain.pkl").write_bytes(pickle.dumps({"x": 1}))
    assert "plain Python pickle" in weights.describe_file(tmp_path / "plain.pkl")


# ------------------------------------------------------------------------- one md5 check
def test_one_md5_check_for_published_and_configured_checksums(tmp_path):
    path = tmp_path / "mine.pth"
    path.write_bytes(b"weights")
    md5 = hashlib.md5(b"weights").hexdigest()
    weights.verify_known_digest(path)  # no published md5 for this name: nothing to check
    weights.verify_known_digest(path, md5, "attn.pth")
    with pytest.raises(WeightsError, match=rf"md5 {md5}, but the official attn\.pth has 0+:"):
        weights.verify_known_digest(path, "0" * 32, "attn.pth")
    with pytest.raises(
        WeightsError, match=rf"but the official attn\.pth has {weights.KNOWN_MD5['attn.pth']}"
    ):
        weights.verify_known_digest(path, official_name="attn.pth")


# --------------------------------------------------------- the official policy's weight lookup
def test_the_official_policy_names_a_weight_or_model_file_that_does_not_exist(request, tmp_path):
    from steve1_env.agent.official import OfficialSteve1Policy

    official = request.getfixturevalue("official_package")  # the fake package, its weights
    with pytest.raises(WeightsError, match=r"policy=.*typo\.weights'?: no such file"):
        OfficialSteve1Policy(**{**official, "weights": tmp_path / "typo.weights"})
    with pytest.raises(WeightsError, match=r"model=.*nope\.model'?: no such file"):
        OfficialSteve1Policy(**{**official, "model": tmp_path / "nope.model"})
    # A directory still works: steve1.weights is found in it (the model is given).
    OfficialSteve1Policy(**{**official, "weights": tmp_path})


# ------------------------------------------------------------------ a full disk or quota
class FullDisk:
    """A file whose writes fail with `code` after `room` bytes."""

    def __init__(self, handle, code, room):
        self.handle, self.code, self.room = handle, code, room

    def write(self, data):
        if self.handle.tell() + len(data) > self.room:
            raise OSError(self.code, os.strerror(self.code))
        return self.handle.write(data)

    def __getattr__(self, name):
        return getattr(self.handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.close()


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_a_full_disk_or_quota_says_to_free_space_and_how_much(server, tmp_path, monkeypatch, code):
    real_open = open

    def full_open(file, mode="r", *args, **kwargs):
        handle = real_open(file, mode, *args, **kwargs)
        return FullDisk(handle, code, 1 << 16) if str(file).endswith(".part") else handle

    monkeypatch.setattr(download, "open", full_open, raising=False)
    size = len(server.files["/file.bin"])
    with pytest.raises(WeightsError) as caught:
        download.download(server.url("/file.bin"), tmp_path / "file.bin", retries=3,
                          backoff=0.01, progress=False)  # fmt: skip
    message = str(caught.value)
    assert "free some space" in message and "Choose a writable" not in message
    assert f"{(size - (1 << 16)) / 1e6:,.1f} MB more are needed for this file" in message
    total = weights.OFFICIAL_TOTAL_BYTES / 1e9
    assert f"about {total:.2f} GB in all" in message and 1.6 < total < 1.7
    assert "resumes" in message and len(server.requests) == 1  # not retried
    assert (tmp_path / "file.bin.part").stat().st_size == 1 << 16  # kept, to resume


# ----------------------------------------------------------- torch's warnings on safe loads
@pytest.mark.parametrize(
    ("zipped", "protocol", "loads"),
    [(False, 2, True), (True, 4, False), (False, 4, False)],  # torch reads only protocol 2
)
def test_loading_a_state_dict_prints_no_torch_protocol_warning(tmp_path, zipped, protocol, loads):
    path = tmp_path / "w.pt"
    torch.save({"w": torch.ones(3)}, path, _use_new_zipfile_serialization=zipped,
               pickle_protocol=protocol)  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # over the file's filter: every warning is recorded
        if loads:
            assert torch.equal(load_state_dict(path)["w"], torch.ones(3))
        else:  # torch's safe unpickler cannot read it: our error, without torch's warning
            with pytest.raises(WeightsError, match="download it again") as refused:
                load_state_dict(path)
            assert "not a readable torch file but a torch file" not in str(refused.value)
        if loads:  # the content check (verify, doctor, download) loads the same way
            check_file_content(path, "steve1_prior.pt", specs=SMALL)
    assert [str(w.message) for w in caught] == []


def test_only_torchs_protocol_warning_is_silenced(tmp_path, monkeypatch):
    path = tmp_path / "w.pt"
    torch.save({"w": torch.ones(3)}, path)
    real_load = torch.load

    def warning_load(*args, **kwargs):
        message = "Detected pickle protocol 4 in the checkpoint (not torch)"
        warnings.warn(message, UserWarning, stacklevel=1)
        warnings.warn("something else", UserWarning, stacklevel=1)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", warning_load)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_state_dict(path)
    assert [str(w.message) for w in caught] == [
        "Detected pickle protocol 4 in the checkpoint (not torch)",
        "something else",
    ]


# ------------------------------------------------------- advice on a refused official download
@pytest.mark.parametrize(
    ("name", "kind", "words"),
    [
        ("steve1_prior.pt", "empty", "It is an empty file"),
        ("steve1.weights", "posix.system torch", "would import posix.system"),
        ("2x.model", "truncated zip", "damaged zip archive"),
    ],
)
def test_a_refused_official_download_says_it_was_not_kept_not_to_delete_it(
    server, tmp_path, name, kind, words
):
    stand_in = tmp_path / "stand-in"
    hostile_files(tmp_path)[kind](stand_in)
    server.files[f"/{name}"] = stand_in.read_bytes()
    folder = tmp_path / "weights"
    with pytest.raises(WeightsError, match=words) as caught:
        fetch_official(server, folder, [name], specs=SMALL)
    message = str(caught.value)
    assert "Delete it" not in message and "delete it" not in message, message
    assert "It was not kept" in message and "Run the download again" in message
    assert "network or proxy" in message and "  " not in message
    assert not (folder / f"{name}.part").exists() and not (folder / name).exists()
    assert not (tmp_path / "pwned").exists()


# ------------------------------------------------------- the official policy's construction
def test_building_the_official_policy_leaves_the_callers_generator_alone(request):
    from steve1_env.agent.official import OfficialSteve1Policy

    official = request.getfixturevalue("official_package")  # the fake package, its weights
    torch.manual_seed(123)
    caller_state = torch.get_rng_state()
    OfficialSteve1Policy(**official)
    assert torch.equal(torch.get_rng_state(), caller_state)  # upstream's init drew elsewhere
    # A refused weight file leaves it alone too.
    torch.save({"other": torch.zeros(1)}, official["weights"])
    caller_state = torch.get_rng_state()
    with pytest.raises(WeightsError, match="lacks"):
        OfficialSteve1Policy(**official)
    assert torch.equal(torch.get_rng_state(), caller_state)


# ------------------------------------------------------------------------ chunked bodies
def chunked_headers(handler):
    # Raw, since the test server speaks HTTP/1.0 and a chunked body needs HTTP/1.1.
    handler.wfile.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
        b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )


def endless_trailers(handler):
    chunked_headers(handler)
    handler.wfile.write(b"4\r\nabcd\r\n0\r\n")  # the last chunk, then trailers
    for _ in range(600):  # a trailer line every 0.01 s for 6 s (old code waited for all)
        handler.wfile.write(b"X-T: y\r\n")
        time.sleep(0.01)
    handler.wfile.write(b"\r\n")


def trickled_chunk_size(handler):
    chunked_headers(handler)
    for _ in range(120):  # a chunk-size line a digit per 0.05 s for 6 s
        handler.wfile.write(b"0")
        time.sleep(0.05)
    handler.wfile.write(b"\r\n\r\n")


@pytest.mark.parametrize(
    ("route", "kept"), [(endless_trailers, b"abcd"), (trickled_chunk_size, None)]
)
def test_a_chunked_body_cannot_hang_a_download(server, tmp_path, route, kept):
    server.routes["/chunked"] = route
    started = time.monotonic()
    with pytest.raises(WeightsError, match="stalled or trickling"):
        download.download(server.url("/chunked"), tmp_path / "w.bin", retries=0, timeout=0.5,
                          progress=False)  # fmt: skip
    assert time.monotonic() - started < 4  # twice the timeout, with room; the server takes 6 s
    assert timers() == []
    assert not (tmp_path / "w.bin").exists()
    part = tmp_path / "w.bin.part"
    assert (part.read_bytes() if part.exists() else None) == kept  # what arrived is resumed


def test_a_normal_chunked_body_still_downloads_intact(server, tmp_path):
    body = os.urandom(300_000)
    sizes = [1, 1000, 70_000, 100_000]  # chunks smaller and larger than a block

    def chunked(handler):
        chunked_headers(handler)
        start = 0
        for size in [*sizes, len(body) - sum(sizes)]:
            piece = body[start : start + size]
            handler.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            start += size
        handler.wfile.write(b"0\r\nX-Checksum: none\r\n\r\n")  # a trailer, then the end

    server.routes["/chunked"] = chunked
    download.download(server.url("/chunked"), tmp_path / "w.bin", retries=0, timeout=2,
                      progress=False)  # fmt: skip
    assert (tmp_path / "w.bin").read_bytes() == body and timers() == []


def test_one_watchdog_thread_serves_every_block_of_a_download(server, tmp_path, monkeypatch):
    started = []
    real_watch = download._Watchdog._watch

    def counted(self):
        started.append(self)
        real_watch(self)

    monkeypatch.setattr(download._Watchdog, "_watch", counted)
    body = os.urandom(40 * download.BLOCK_BYTES)  # 40 blocks, each one armed period
    server.files["/big.bin"] = body
    download.download(server.url("/big.bin"), tmp_path / "big.bin", retries=0, timeout=5,
                      progress=False)  # fmt: skip
    assert (tmp_path / "big.bin").read_bytes() == body
    assert len(started) == 1  # not a thread per block


# ---------------------------------------------------------------------- redirect bodies
def test_a_redirects_endless_body_is_not_read(server, tmp_path):
    sent, finished = [0], threading.Event()

    def redirect(handler):
        try:
            handler.send_response(302)
            handler.send_header("Location", "/file.bin")
            handler.end_headers()
            block = b"A" * (1 << 16)
            for _ in range(4000):  # 256 MiB at most, so the thread ends if the client reads
                handler.wfile.write(block)
                sent[0] += len(block)
        finally:
            finished.set()

    server.routes["/moved"] = redirect
    download.download(server.url("/moved"), tmp_path / "file.bin", retries=0, timeout=5,
                      max_bytes=1 << 20, progress=False)  # fmt: skip
    assert (tmp_path / "file.bin").read_bytes() == server.files["/file.bin"]
    assert finished.wait(10)  # the client closed the redirect: the server's writes failed
    assert sent[0] < 32 << 20  # what the socket buffers took, not the body (old code: all)


# -------------------------------------------------------------------- download arguments
@pytest.mark.parametrize(
    ("argument", "value"),
    [
        ("timeout", math.inf), ("timeout", 1e10), ("timeout", math.nan), ("timeout", 0),
        ("timeout", -1), ("timeout", "5"), ("timeout", True),
        ("retries", -1), ("retries", 1.5), ("retries", 10**6),
        ("backoff", -1), ("backoff", math.nan), ("backoff", math.inf),
    ],
)  # fmt: skip
def test_download_arguments_out_of_range_are_refused_before_any_request(
    server, tmp_path, argument, value
):
    with pytest.raises(WeightsError, match=f"^{argument} must be|^{argument} may be"):
        download.download(server.url("/file.bin"), tmp_path / "file.bin", progress=False,
                          **{argument: value})  # fmt: skip
    assert server.requests == [] and list(tmp_path.iterdir()) == []


def test_no_backoff_and_no_retries_are_still_allowed(server, tmp_path):
    server.fail_status = [503]
    download.download(server.url("/file.bin"), tmp_path / "file.bin", retries=1, backoff=0,
                      timeout=validation.MAX_TIMEOUT_S, progress=False)  # fmt: skip
    assert (tmp_path / "file.bin").read_bytes() == server.files["/file.bin"]


# ------------------------------------------------------------- what cannot be written
def test_the_message_names_the_weights_directory_it_cannot_create(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(WeightsError, match=r"^Cannot write the weights directory .*a-file/w"):
        download.download_official(blocker / "w", ["2x.model"], url_for=lambda n: "http://x/")
    with pytest.raises(WeightsError, match=r"^Cannot write the download directory .*a-file/w"):
        download.download("http://127.0.0.1:1/x", blocker / "w" / "x", progress=False)


def test_a_fifo_as_lock_file_is_refused_not_waited_on(server, tmp_path):
    fifo = tmp_path / "file.bin.lock"
    os.mkfifo(fifo)
    outcome = []

    def fetch():
        try:
            download.download(server.url("/file.bin"), tmp_path / "file.bin", retries=0,
                              progress=False)  # fmt: skip
        except WeightsError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=fetch, daemon=True)
    thread.start()
    thread.join(5)
    if thread.is_alive():  # old code waits in open() for a reader: be one, to free it
        os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))
        thread.join(5)
        pytest.fail("opening a FIFO as the lock file blocked")
    assert len(outcome) == 1 and "is not a regular file" in str(outcome[0])
    assert "the `directory` argument" in str(outcome[0]) and server.requests == []
    assert not (tmp_path / "file.bin").exists()


# ------------------------------------------------------------ final red-team round
def deflated_copy(data: bytes, grow: dict[str, bytes]) -> bytes:
    """A torch zip re-written with deflate, some members replaced by highly compressible ones."""
    import io
    import zipfile

    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(out, "w") as target:
        for member in source.infolist():
            name = member.filename
            body = next((v for k, v in grow.items() if name.endswith(k)), source.read(member))
            target.writestr(name, body, compress_type=zipfile.ZIP_DEFLATED)
    return out.getvalue()


def test_a_zip_that_expands_past_its_size_is_refused_before_torch_reads_it(tmp_path, monkeypatch):
    genuine = torch_bytes({"w": torch.zeros(1000)})
    bomb = tmp_path / "steve1_prior.pt"
    bomb.write_bytes(deflated_copy(genuine, {"/data/0": bytes(50 << 20)}))  # 50 MB of zeros
    assert bomb.stat().st_size < 1 << 20
    loads = []
    monkeypatch.setattr(torch, "load", lambda *a, **k: loads.append(a) or {})
    with pytest.raises(WeightsError, match=r"expand to 52,4\d\d,\d{3} bytes from"):
        load_state_dict(bomb)
    assert loads == []  # refused before torch allocated anything
    monkeypatch.undo()
    stored = tmp_path / "ok.pt"
    stored.write_bytes(genuine)  # as torch.save writes it: stored, not compressed
    assert torch.equal(load_state_dict(stored)["w"], torch.zeros(1000))


def test_a_weights_directory_that_cannot_be_looked_up_is_a_package_error(tmp_path, capsys):
    too_long = tmp_path / ("a" * 300)
    for argv in (["weights", "verify"], ["weights", "where"], ["doctor"]):
        assert main([*argv, "--dir", str(too_long)]) == 2
        assert "cannot be used (File name too long)" in capsys.readouterr().err
    with pytest.raises(WeightsError, match="File name too long"):
        weights.weights_dir(too_long)
    assert weights.weights_dir(tmp_path / "not-yet") == tmp_path / "not-yet"  # may not exist


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ({"net": {"args": "xy"}}, r"\['net'\]\['args'\] is a str"),
        ({"net": {"args": {"hidsize": 8}}, "pi_head_opts": "xy"}, r"\['pi_head_opts'\] is a str"),
        ({"net": {"args": {}}}, "they are empty"),
        ({"net": {"args": {1: 2}}}, r"\['net'\]\['args'\] is a dict"),
    ],
)
def test_a_model_file_without_named_policy_arguments_is_refused(tmp_path, capsys, args, words):
    model = tmp_path / "2x.model"
    model.write_bytes(pickle.dumps({"model": {"args": args}, "pad": "p" * 400}))
    with pytest.raises(WeightsError, match=words):
        load_model_file(model)
    assert main(["weights", "verify", "--dir", str(tmp_path)]) == 1
    assert "2x.model" in capsys.readouterr().out


def test_a_symlink_as_lock_file_is_refused_and_its_target_kept(server, tmp_path):
    # filelock before 4.x opens the lock with O_TRUNC, through a link: a link planted in a
    # shared weights directory would empty the file it points at.
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / "file.bin.lock").symlink_to(victim)
    with pytest.raises(WeightsError, match=r"is not a regular file \(a symbolic link"):
        download.download(server.url("/file.bin"), tmp_path / "file.bin", retries=0,
                          progress=False)  # fmt: skip
    assert victim.read_text() == "precious" and server.requests == []
    with pytest.raises(ResultsError, match="is a symbolic link"):
        files.file_lock(tmp_path / "file.bin.lock", "lock file", error=ResultsError)
