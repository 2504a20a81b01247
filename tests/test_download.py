"""The downloader against a real HTTP server on 127.0.0.1: resume, retry, checksums."""

import hashlib
import http.server
import io
import json
import logging
import pickle
import subprocess
import sys
import threading
from dataclasses import replace

import pytest
import torch

from steve1_env import download
from steve1_env.cli import main
from steve1_env.errors import WeightsError
from steve1_env.weights import OFFICIAL_SPECS, check_file_content

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


class Server:
    """A loopback file server whose misbehaviour each test scripts."""

    def __init__(self):
        self.files = {"/file.bin": PAYLOAD}
        self.drop_after = {}  # path -> bytes to send before closing, once
        self.requests = []
        self.interstitial = set()
        self.fail_status = []  # statuses to answer before serving, one per request
        self.ignore_range = False
        self.range_offset_error = False
        self.no_length = False
        self.endless_confirmation = False
        handler = self._handler()
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path):
        return f"http://127.0.0.1:{self.httpd.server_port}{path}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def _handler(self):
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                path, _, query = self.path.partition("?")
                server.requests.append((self.path, self.headers.get("Range")))
                if server.fail_status:
                    self.send_error(server.fail_status.pop(0))
                    return
                if path in server.interstitial and (
                    "confirm=" not in query or server.endless_confirmation
                ):
                    action = "/uc" if server.endless_confirmation else "/file.bin"
                    page = (
                        f'<html><form id="download-form" action="{action}" method="get">'
                        '<input type="hidden" name="id" value="X">'
                        '<input type="hidden" name="confirm" value="t">'
                        '<input type="hidden" name="uuid" value="abc"></form></html>'
                    ).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html; charset=utf-8")
                    self.send_header("Content-Length", str(len(page)))
                    self.end_headers()
                    self.wfile.write(page)
                    return
                data = server.files.get(path)
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                if self.headers.get("Range") and not server.ignore_range:
                    start = int(self.headers["Range"].split("=")[1].split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    shown = 0 if server.range_offset_error else start
                    self.send_header("Content-Range", f"bytes {shown}-{len(data) - 1}/{len(data)}")
                    if server.range_offset_error:
                        server.range_offset_error = False
                        start = 0
                else:
                    self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                if not server.no_length:
                    self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                limit = server.drop_after.pop(path, None)
                body = data[start:] if limit is None else data[start : start + limit]
                self.wfile.write(body)
                if limit is not None:
                    self.wfile.flush()
                    self.connection.shutdown(2)  # drop the connection mid-file

        return Handler


@pytest.fixture
def server():
    srv = Server()
    yield srv
    srv.close()


def sha(data):
    return hashlib.sha256(data).hexdigest()


def test_plain_download_with_checksum(server, tmp_path):
    target = tmp_path / "file.bin"
    download.download(server.url("/file.bin"), target, expected=download.Expected(sha(PAYLOAD)),
                      progress=False)  # fmt: skip
    assert target.read_bytes() == PAYLOAD
    assert not (tmp_path / "file.bin.part").exists()


def test_dropped_connection_is_resumed_with_a_range_request(server, tmp_path):
    server.drop_after["/file.bin"] = 300_000
    seen = []
    target = tmp_path / "file.bin"
    download.download(
        server.url("/file.bin"),
        target,
        expected=download.Expected(sha(PAYLOAD)),
        progress=lambda done, total: seen.append((done, total)),
        backoff=0.01,
    )
    assert target.read_bytes() == PAYLOAD
    assert [r for _, r in server.requests] == [None, "bytes=300000-"]
    assert seen[-1] == (len(PAYLOAD), len(PAYLOAD))


def test_progress_is_a_bar_on_stderr_that_goes_on_after_a_resume(server, tmp_path, capsys):
    server.drop_after["/file.bin"] = 300_000
    download.download(server.url("/file.bin"), tmp_path / "file.bin", backoff=0.01)
    err = capsys.readouterr().err
    assert err.endswith("\n") and err.count("\n") == 1  # one bar, closed once
    last = err.rstrip("\n").split("\r")[-1]
    assert last.startswith("file.bin: 100%") and "1.00M/1.00M" in last
    download.download(server.url("/file.bin"), tmp_path / "quiet.bin", progress=False)
    assert capsys.readouterr().err == ""


def test_a_download_logs_its_start_each_retry_and_its_end(server, tmp_path, caplog):
    server.fail_status = [503]
    with caplog.at_level(logging.INFO, logger="steve1_env.download"):
        download.download(server.url("/file.bin"), tmp_path / "file.bin", backoff=0.01,
                          progress=False)  # fmt: skip
    logged = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert logged[0] == ("INFO", f"downloading file.bin from {server.url('/file.bin')}")
    assert logged[1][0] == "WARNING" and "HTTP Error 503" in logged[1][1]
    assert logged[1][1].endswith("retrying in 0.01 s")
    assert logged[-1] == ("INFO", f"downloaded and checked {tmp_path / 'file.bin'}")


def test_a_partial_file_from_an_earlier_run_is_resumed(server, tmp_path):
    (tmp_path / "file.bin.part").write_bytes(PAYLOAD[:1000])
    download.download(server.url("/file.bin"), tmp_path / "file.bin", progress=False)
    assert (tmp_path / "file.bin").read_bytes() == PAYLOAD
    assert server.requests[0][1] == "bytes=1000-"


def test_corrupt_file_is_rejected_and_never_gets_the_final_name(server, tmp_path):
    server.files["/file.bin"] = PAYLOAD[:-1] + b"\x00"
    target = tmp_path / "file.bin"
    with pytest.raises(WeightsError, match=r"sha256 .* expected"):
        download.download(server.url("/file.bin"), target,
                          expected=download.Expected(sha(PAYLOAD)), progress=False)  # fmt: skip
    assert not target.exists() and not (tmp_path / "file.bin.part").exists()


def test_server_errors_are_retried_and_client_errors_are_not(server, tmp_path):
    server.fail_status = [503, 503]
    target = tmp_path / "file.bin"
    download.download(server.url("/file.bin"), target, retries=2, backoff=0.01, progress=False)
    assert target.read_bytes() == PAYLOAD
    server.fail_status = [503] * 3
    with pytest.raises(WeightsError, match="failed 3 times"):
        download.download(server.url("/file.bin"), tmp_path / "again.bin", retries=2,
                          backoff=0.01, progress=False)  # fmt: skip
    requests_before = len(server.requests)
    with pytest.raises(WeightsError, match="HTTP 404"):
        download.download(server.url("/missing.bin"), tmp_path / "x.bin", retries=5,
                          backoff=0.01, progress=False)  # fmt: skip
    assert len(server.requests) == requests_before + 1  # not retried


def test_a_dropped_download_keeps_its_partial_file_for_the_next_run(server, tmp_path):
    server.drop_after["/file.bin"] = 5000
    target = tmp_path / "file.bin"
    server.files["/file.bin"] = PAYLOAD
    with pytest.raises(WeightsError, match="run the same command again to resume"):
        download.download(server.url("/file.bin"), target, retries=0, progress=False)
    assert (tmp_path / "file.bin.part").stat().st_size == 5000
    download.download(server.url("/file.bin"), target, progress=False)
    assert target.read_bytes() == PAYLOAD


def test_a_complete_partial_file_is_finished_after_a_416(server, tmp_path):
    (tmp_path / "file.bin.part").write_bytes(PAYLOAD)  # the process died before renaming
    download.download(server.url("/file.bin"), tmp_path / "file.bin",
                      expected=download.Expected(sha(PAYLOAD)), progress=False)  # fmt: skip
    assert (tmp_path / "file.bin").read_bytes() == PAYLOAD


@pytest.mark.parametrize("mode", ["ignore_range", "range_offset_error"])
def test_servers_that_mishandle_ranges_restart_the_download(server, tmp_path, mode):
    setattr(server, mode, True)
    (tmp_path / "file.bin.part").write_bytes(PAYLOAD[:1000])
    download.download(server.url("/file.bin"), tmp_path / "file.bin", backoff=0.01,
                      expected=download.Expected(sha(PAYLOAD)), progress=False)  # fmt: skip
    assert (tmp_path / "file.bin").read_bytes() == PAYLOAD


def test_web_pages_are_never_saved_as_weights(server, tmp_path):
    server.files["/file.bin"] = b"<html><body>Quota exceeded</body></html>"
    with pytest.raises(WeightsError, match="markup"):
        download.download(server.url("/file.bin"), tmp_path / "w.pt", progress=False)
    assert not (tmp_path / "w.pt").exists()
    server.interstitial.add("/uc")
    server.endless_confirmation = True
    with pytest.raises(WeightsError, match="confirmation pages"):
        download.download(server.url("/uc?id=1"), tmp_path / "w.pt", progress=False)


def test_truncated_official_file_without_length_fails_its_content_check(server, tmp_path):
    buffer = io.BytesIO()
    torch.save({"w": torch.zeros(1000)}, buffer)
    server.files["/steve1.weights"] = buffer.getvalue()[:2000]  # cut short, and no length
    server.no_length = True
    with pytest.raises(WeightsError, match=r"not a valid steve1\.weights"):
        download.download_official(
            tmp_path, ["steve1.weights"], url_for=lambda n: server.url(f"/{n}"), progress=False
        )
    assert not (tmp_path / "steve1.weights").exists()


def test_concurrent_downloads_of_one_file_do_not_collide(server, tmp_path):
    target = tmp_path / "file.bin"
    errors = []

    def fetch():
        try:
            download.download(server.url("/file.bin"), target, progress=False)
        except Exception as exc:  # collected: the assertion below reports it
            errors.append(exc)

    threads = [threading.Thread(target=fetch) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and target.read_bytes() == PAYLOAD


def test_a_download_waits_for_another_process_downloading_the_same_file(server, tmp_path):
    # Another process holds the file's lock (as its own download would): this one waits for
    # it, sending nothing meanwhile, then downloads.
    target = tmp_path / "file.bin"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(tmp_path / "file.bin.lock")],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        fetcher = threading.Thread(
            target=download.download, args=(server.url("/file.bin"), target),
            kwargs={"progress": False},
        )  # fmt: skip
        fetcher.start()
        fetcher.join(0.5)
        assert fetcher.is_alive() and server.requests == []
        holder.kill()  # the lock goes with its process
        fetcher.join(10)
    finally:
        holder.kill()
        holder.wait()
    assert not fetcher.is_alive() and target.read_bytes() == PAYLOAD


HOLD_LOCK = """
import sys, time, filelock
lock = filelock.FileLock(sys.argv[1])
lock.acquire()
print("held", flush=True)
time.sleep(60)
"""


def test_google_drive_confirmation_page_is_followed(server, tmp_path):
    server.interstitial.add("/uc")
    target = tmp_path / "big.weights"
    download.download(server.url("/uc?export=download&id=X"), target, progress=False)
    assert target.read_bytes() == PAYLOAD
    assert "confirm=t" in server.requests[-1][0] and "uuid=abc" in server.requests[-1][0]


def torch_bytes(state):
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def test_official_files_are_recorded_and_verified(server, tmp_path, capsys):
    served = {
        "2x.model": pickle.dumps({"model": {"args": {"net": {"args": {"hidsize": 8}}}}}),
        "steve1.weights": torch_bytes({"net.x": torch.ones(3)}),
        "steve1_prior.pt": torch_bytes({"decoder.0.weight": torch.ones(2, 2)}),
    }
    for name, data in served.items():
        server.files[f"/{name}"] = data
    # These stand-ins are far smaller than the official files: only the lower bounds relax.
    small = {name: replace(spec, min_bytes=1) for name, spec in OFFICIAL_SPECS.items()}
    fetched = download.download_official(
        tmp_path, list(served), url_for=lambda name: server.url(f"/{name}"), progress=False,
        specs=small,
    )  # fmt: skip
    assert sorted(p.name for p in fetched) == sorted(served)
    recorded = json.loads((tmp_path / "checksums.json").read_text())
    assert recorded == {name: sha(data) for name, data in served.items()}
    statuses = {s.name: s for s in download.verify(tmp_path, specs=small)}
    assert statuses["steve1.weights"].ok and not statuses["attn.pth"].present
    # Later corruption is caught by the checksum alone: the replacement is a valid state dict
    # that passes the content check, yet differs from what was recorded.
    (tmp_path / "steve1.weights").write_bytes(torch_bytes({"net.x": torch.zeros(3)}))
    assert "tensors" in check_file_content(tmp_path / "steve1.weights", specs=small)
    status = {s.name: s for s in download.verify(tmp_path, specs=small)}["steve1.weights"]
    assert not status.ok and "!= recorded" in status.detail and "checksum mismatch" in status.detail
    assert main(["weights", "verify", "--dir", str(tmp_path)]) == 1
    assert "steve1.weights     sha256" in capsys.readouterr().out


def test_non_http_urls_are_refused(tmp_path):
    with pytest.raises(WeightsError, match="Only http"):
        download.download("file:///etc/passwd", tmp_path / "x", progress=False)


def test_where_lists_the_directory(tmp_path, capsys):
    (tmp_path / "2x.model").write_bytes(b"x" * 2_000_000)
    assert main(["weights", "where", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert str(tmp_path) in out and "2x.model           2.0 MB" in out and "missing" in out
