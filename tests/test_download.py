"""The downloader against a real HTTP server on 127.0.0.1: resume, retry, checksums."""

import hashlib
import http.server
import json
import threading

import pytest

from steve1_env import download
from steve1_env.cli import main
from steve1_env.errors import WeightsError

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


class Server:
    """A loopback file server whose misbehaviour each test scripts."""

    def __init__(self):
        self.files = {"/file.bin": PAYLOAD}
        self.drop_after = {}  # path -> bytes to send before closing, once
        self.requests = []
        self.interstitial = set()
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
                if path in server.interstitial and "confirm=" not in query:
                    page = (
                        b'<html><form id="download-form" action="/file.bin" method="get">'
                        b'<input type="hidden" name="id" value="X">'
                        b'<input type="hidden" name="confirm" value="t">'
                        b'<input type="hidden" name="uuid" value="abc"></form></html>'
                    )
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
                if self.headers.get("Range"):
                    start = int(self.headers["Range"].split("=")[1].split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
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


def test_gives_up_after_the_retries_and_keeps_the_partial_file(server, tmp_path):
    target = tmp_path / "missing.bin"
    with pytest.raises(WeightsError, match=r"failed 3 times.*run the same command again"):
        download.download(server.url("/missing.bin"), target, retries=2, backoff=0.01,
                          progress=False)  # fmt: skip
    assert not target.exists()


def test_google_drive_confirmation_page_is_followed(server, tmp_path):
    server.interstitial.add("/uc")
    target = tmp_path / "big.weights"
    download.download(server.url("/uc?export=download&id=X"), target, progress=False)
    assert target.read_bytes() == PAYLOAD
    assert "confirm=t" in server.requests[-1][0] and "uuid=abc" in server.requests[-1][0]


def test_official_files_are_recorded_and_verified(server, tmp_path, capsys):
    served = {name: PAYLOAD[: 1000 + i] for i, name in enumerate(["2x.model", "steve1.weights",
                                                                   "steve1_prior.pt"])}  # fmt: skip
    for name, data in served.items():
        server.files[f"/{name}"] = data
    fetched = download.download_official(
        tmp_path, list(served), url_for=lambda name: server.url(f"/{name}"), progress=False
    )
    assert sorted(p.name for p in fetched) == sorted(served)
    recorded = json.loads((tmp_path / "checksums.json").read_text())
    assert recorded == {name: sha(data) for name, data in served.items()}
    statuses = {s.name: s for s in download.verify(tmp_path)}
    assert statuses["steve1.weights"].ok and not statuses["attn.pth"].present
    # Later corruption is caught.
    (tmp_path / "steve1.weights").write_bytes(b"tampered")
    assert not {s.name: s for s in download.verify(tmp_path)}["steve1.weights"].ok
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
