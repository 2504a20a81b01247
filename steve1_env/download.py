"""Resumable, verified downloads of the official weight files.

A file is fetched into ``<name>.part`` beside its final name, resumed with HTTP ``Range``
requests after a dropped connection, checked, and only then renamed to its final name: no half
or corrupt file ever has that name. Checks: the expected checksum when one is known, the size
the server announced, that the body is not a web page, a size cap (stopping an endless body), and
(for the official files) `steve1_env.weights.check_file_content`, the content check `verify`
and ``doctor`` run too. Only http(s) is followed, at every redirect. A server that stalls or
trickles, in its headers or its body, fails the attempt within the `download` timeout (twice
it for a trickling body). The SHA-256 of every file fetched is recorded in ``checksums.json``
so `verify` can detect later corruption.
"""

from __future__ import annotations

import contextlib
import errno
import html
import json
import logging
import numbers
import os
import re
import socket
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from http.client import HTTPConnection, HTTPException, HTTPResponse, HTTPSConnection
from pathlib import Path
from typing import Any

from tqdm import tqdm

from steve1_env.errors import Steve1EnvError, WeightsError
from steve1_env.files import (
    atomic_write_text,
    file_lock,
    os_error_message,
    parse_json,
    read_regular_file,
)
from steve1_env.validation import MAX_TIMEOUT_S, bounded_int, timeout_seconds
from steve1_env.weights import (
    KNOWN_MD5,
    MIRROR_DIR,
    MIRROR_FILES,
    MIRROR_PREFIXES,
    MIRROR_REPO,
    OFFICIAL_FILES,
    OFFICIAL_TOTAL_BYTES,
    REDOWNLOAD_HINT,
    FileSpec,
    check_file_content,
    check_mirror_content,
    find_mirror,
    hash_file,
    official_spec,
    official_url,
    remembered_content_check,
)

_log = logging.getLogger(__name__)

CHECKSUMS_FILE = "checksums.json"
MAX_DOWNLOAD_BYTES = 4 * 1024**3
"""Largest file `download` accepts unless told otherwise (official files have tighter bounds)."""
MAX_CHECKSUMS_BYTES = 64 * 1024
"""Largest ``checksums.json`` read (it holds one line per official file)."""
MAX_RETRIES = 100
"""Most retries `download` makes after a failed attempt."""
BLOCK_BYTES = 1 << 16
"""Each block of this many bytes (or the rest of the file) must arrive within `timeout`."""
_SHA256 = re.compile(r"[0-9a-f]{64}")
_RETRIED_STATUSES = {408, 429, 500, 502, 503, 504}
_SCHEMES = ("http", "https")
# Writing errors that retrying cannot fix.
_LOCAL_ERRORS = frozenset(
    {
        errno.EROFS,
        errno.EACCES,
        errno.EPERM,
        errno.ENOTDIR,
        errno.EISDIR,
        errno.EDQUOT,
        errno.ENAMETOOLONG,
    }
)
_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})  # freeing space is the fix
_WRITABLE_HINT = (
    "Choose a writable weights directory (the `directory` argument or $STEVE1_WEIGHTS_DIR)."
)


@dataclass(frozen=True)
class Expected:
    """What a downloaded file must hash to (either may be None: nothing to check)."""

    sha256: str | None = None
    md5: str | None = None


ProgressCallback = Callable[[int, int | None], None]


class _Fatal(Exception):
    """A failure that retrying cannot fix (wraps the message for the final error)."""


def _require_http(url: str) -> None:
    """Refuses any URL but http(s): checked for the first URL and every redirect and form."""
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in _SCHEMES:
        raise _Fatal(f"only http(s) URLs are followed, got {url!r}.")


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follows redirects only to http(s) URLs (urllib alone would follow one to ``ftp://``)."""

    def http_error_302(
        self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any
    ) -> Any:
        """Refuses a redirect to a URL that is not http(s); otherwise follows it as urllib does.

        The redirect's own body is never read: urllib would read all of it into memory, with
        no size or time limit, before following the redirect.
        """
        fp.close()
        target = headers.get("Location") or headers.get("URI")
        if target:
            _require_http(urllib.parse.urljoin(req.full_url, target))
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302


class _Watchdog:
    """Shuts a socket down when an armed period (`period`) runs past its limit.

    http.client waits on the socket's per-read timeout only, and some of its reads loop over
    lines (the status line and headers; a chunk-size line and a chunked body's trailers), so a
    server sending a line at a time keeps them coming forever. Shutting the socket down ends
    the blocked read (it then sees the end of the stream or fails). The caller checks
    ``expired`` afterwards: a read that ended because of the cut is not a real end of body.

    One thread watches every period of a socket (a download arms one per 64 KiB block); it
    leaves by itself after `IDLE_S` seconds without one, so nothing needs closing.
    """

    IDLE_S = 1.0

    def __init__(self, sock: socket.socket | None) -> None:
        self._sock = sock
        self._condition = threading.Condition()
        self._deadline: float | None = None
        self._thread: threading.Thread | None = None
        self.expired = False

    @contextlib.contextmanager
    def period(self, limit: float) -> Iterator[_Watchdog]:
        """Arms the watchdog for the block: past `limit` seconds the socket is shut down."""
        if self._sock is None:  # nothing to shut down (a connection that never opened)
            yield self
            return
        with self._condition:
            self._deadline = time.monotonic() + limit
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._watch, name="steve1-env download watchdog", daemon=True
                )
                self._thread.start()
            self._condition.notify()
        try:
            yield self
        finally:
            with self._condition:  # after this, a late expiry can no longer fire
                self._deadline = None
                self._condition.notify()

    def _watch(self) -> None:
        with self._condition:
            while True:
                if self._deadline is None:
                    if not self._condition.wait_for(
                        lambda: self._deadline is not None, timeout=self.IDLE_S
                    ):
                        self._thread = None  # the next period starts a new one
                        return
                    continue
                remaining = self._deadline - time.monotonic()
                if remaining > 0:
                    self._condition.wait(remaining)
                    continue
                self.expired, self._deadline = True, None
                with contextlib.suppress(OSError):  # already closed: nothing left to stop
                    # The plain socket's shutdown, also for TLS: it only ends the blocked read.
                    socket.socket.shutdown(self._sock, socket.SHUT_RDWR)  # type: ignore[arg-type]


class _ResponseDeadline:
    """Bounds the response phase of a connection: from the request sent to the last header.

    The status line and headers must all arrive within the connection's timeout
    (`_Watchdog`). The response keeps the watchdog as ``watchdog`` so that each block of its
    body is bounded the same way (`_read_block`).
    """

    timeout: Any  # the connection's own timeout (urllib passes `download`'s `timeout`)
    sock: socket.socket | None

    def getresponse(self) -> HTTPResponse:
        """Returns the response once its headers are in, or fails at the deadline.

        Raises:
            TimeoutError: If the status line and headers took longer than the timeout.
        """
        limit = self.timeout if isinstance(self.timeout, (int, float)) else None
        sock = self.sock
        if limit is None:  # no timeout given (download always gives one): nothing to bound
            return super().getresponse()  # type: ignore[misc]
        response: HTTPResponse | None = None
        watchdog = _Watchdog(sock)
        with watchdog.period(limit) as deadline:
            try:
                response = super().getresponse()  # type: ignore[misc]
            except Exception:
                if not deadline.expired:
                    raise
        if deadline.expired:  # cut short: whatever was parsed before the cut is not used
            if response is not None:
                response.close()
            raise TimeoutError(
                f"the server did not send its status line and headers within {limit:g} s "
                "(a stalled or trickling connection)"
            ) from None
        assert response is not None
        response.watchdog = watchdog  # type: ignore[attr-defined]
        return response


class _BoundedHTTPConnection(_ResponseDeadline, HTTPConnection):
    """An HTTP connection whose response phase is bounded (`_ResponseDeadline`)."""


class _BoundedHTTPSConnection(_ResponseDeadline, HTTPSConnection):
    """An HTTPS connection whose response phase is bounded (`_ResponseDeadline`)."""


class _BoundedHTTPHandler(urllib.request.HTTPHandler):
    """Opens http URLs through `_BoundedHTTPConnection`."""

    def http_open(self, req: urllib.request.Request) -> HTTPResponse:
        """Opens `req` as urllib does, with the response phase bounded."""
        return self.do_open(_BoundedHTTPConnection, req)


class _BoundedHTTPSHandler(urllib.request.HTTPSHandler):
    """Opens https URLs through `_BoundedHTTPSConnection` (certificates checked as usual)."""

    def https_open(self, req: urllib.request.Request) -> HTTPResponse:
        """Opens `req` as urllib does, with the response phase bounded."""
        # Its own context, if one was given (None: the default one, verifying certificates).
        return self.do_open(_BoundedHTTPSConnection, req, context=getattr(self, "_context", None))


def _opener() -> urllib.request.OpenerDirector:
    # Only the http(s) handlers (no ftp:, file: or data:), so nothing else can be opened even
    # if a check were missed; proxies from the environment still apply.
    opener = urllib.request.OpenerDirector()
    for handler in (
        urllib.request.ProxyHandler(),
        _BoundedHTTPHandler(),
        _BoundedHTTPSHandler(),
        urllib.request.HTTPDefaultErrorHandler(),
        _HttpOnlyRedirects(),
        urllib.request.HTTPErrorProcessor(),
    ):
        opener.add_handler(handler)
    return opener


def _cannot_write(path: Path, exc: OSError, what: str, needed: int | None = None) -> str:
    """What went wrong writing `path` (`what` names it); `needed`: the bytes still to write."""
    message = os_error_message(exc, path, what)
    if exc.errno not in _FULL:
        return f"{message} {_WRITABLE_HINT}"
    more = f"{needed / 1e6:,.1f} MB more are needed for this file; " if needed else ""
    return (
        f"{message} {more}the official files take about {OFFICIAL_TOTAL_BYTES / 1e9:.2f} GB in "
        "all. Once there is room, run the same command again: it resumes (or download into "
        "another directory: the `directory` argument or $STEVE1_WEIGHTS_DIR)."
    )


class _DownloadBar:
    """A `tqdm` bar on stderr for one file's download (a `ProgressCallback`).

    The bar starts at the first report, once the size is known (a resumed download starts
    where its partial file ends). Off a terminal it is redrawn every few seconds only, since
    each redraw adds to a log.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._bar: tqdm | None = None

    def __call__(self, done: int, total: int | None) -> None:
        """Shows `done` of `total` bytes (None: unknown)."""
        if self._bar is None or self._bar.total != total:  # first report, or another size
            self.close()
            self._bar = tqdm(
                desc=self.name, total=total, initial=done, unit="B", unit_scale=True,
                unit_divisor=1024, file=sys.stderr, leave=True,
                mininterval=0.5 if sys.stderr.isatty() else 5.0,
            )  # fmt: skip
        else:
            self._bar.update(done - self._bar.n)  # less when the server started over

    def close(self) -> None:
        """Ends the bar (its last state stays); safe to call twice."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> _DownloadBar:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _drive_confirmation(page: str, url: str) -> str | None:
    """Returns the URL behind Google Drive's "too large to scan" form, if the page is one."""
    form = re.search(r'<form[^>]*action="([^"]+)"', page)
    if form is None:
        return None
    fields = dict(re.findall(r'<input[^>]*name="([^"]+)"[^>]*value="([^"]*)"', page))
    if "confirm" not in fields:
        return None
    action = urllib.parse.urlsplit(urllib.parse.urljoin(url, html.unescape(form.group(1))))
    query = urllib.parse.urlencode([*urllib.parse.parse_qsl(action.query), *fields.items()])
    return urllib.parse.urlunsplit(action._replace(query=query))


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Holds an exclusive lock on ``<path>.lock`` (one downloader per file at a time).

    A second downloader of the same file, in another thread or process, waits here until the
    first is done (`filelock`, on any platform).
    """
    lock_path = path.with_name(path.name + ".lock")
    try:
        lock = file_lock(lock_path, "lock file", error=WeightsError)
        lock.acquire()  # blocking: the other downloader finishes first
    except WeightsError:  # a FIFO, a device or a link planted there: refused, not waited on
        raise WeightsError(
            f"The lock file {lock_path} is not a regular file (a symbolic link, a FIFO, a "
            "device or a socket); delete it, or choose another weights directory (the "
            "`directory` argument or $STEVE1_WEIGHTS_DIR)."
        ) from None
    except OSError as exc:
        raise WeightsError(_cannot_write(lock_path, exc, "the lock file")) from exc
    try:
        yield
    finally:
        lock.release()


def download(
    url: str,
    destination: str | os.PathLike[str],
    *,
    expected: Expected | None = None,
    validate: Callable[[Path], None] | None = None,
    max_bytes: int = MAX_DOWNLOAD_BYTES,
    retries: int = 5,
    timeout: float = 60.0,
    backoff: float = 1.0,
    progress: bool | ProgressCallback = True,
) -> Path:
    """Downloads `url` to `destination` atomically, resuming and retrying on failures.

    Args:
        url: An http(s) URL; Google Drive's confirmation page for large files is followed.
            Every redirect and confirmation form must lead to an http(s) URL too.
        destination: The final path; the download goes to ``<destination>.part`` first.
        expected: Checksums the file must have; a mismatch deletes the partial file.
        validate: Called with the finished partial file; raises if its content is wrong.
        max_bytes: The largest file accepted: a larger announced length is refused before
            anything is written, and a body that grows past it is stopped and deleted.
        retries: Further attempts after a failed one (each resumes where the last stopped),
            0 to `MAX_RETRIES`; client errors (404, 403, ...), refused content and a full or
            read-only disk are not retried.
        timeout: Seconds (> 0, at most a day: `MAX_TIMEOUT_S`) within which the status line
            and headers must all arrive once the request is sent, and within which each block
            of `BLOCK_BYTES` (64 KiB, or the rest of the file) of the body must arrive: a
            trickled response fails after `timeout` seconds, a silent body after `timeout`
            seconds, a trickling one (slower than 64 KiB per `timeout`, chunk-size lines and
            trailers included) within twice that. Connecting (TLS handshake, a proxy's
            CONNECT) and sending the request are bounded per socket operation only.
        backoff: Seconds before the first retry (0 up to a day), doubling each time (each
            wait at most a day).
        progress: Show a `tqdm` bar on stderr (True), stay quiet (False), or a callback
            ``(bytes_done, total_or_None)``.

    Returns:
        The destination path.

    Raises:
        WeightsError: If the download failed, the file did not pass its checks, or
            `timeout`, `retries` or `backoff` is out of its range.
    """
    try:
        _require_http(url)
    except _Fatal as exc:
        raise WeightsError(f"Only http(s) URLs can be downloaded, got {url!r}.") from exc
    timeout = timeout_seconds(timeout, "timeout", error=WeightsError)
    retries = bounded_int(retries, "retries", 0, MAX_RETRIES, limit_name="MAX_RETRIES",
                          error=WeightsError)  # fmt: skip
    backoff = _backoff_seconds(backoff)
    destination = Path(destination)
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        message = _cannot_write(destination.parent, exc, "the download directory")
        raise WeightsError(message) from exc
    partial = destination.with_name(destination.name + ".part")
    bar = _DownloadBar(destination.name) if progress is True else None
    report: ProgressCallback | None = bar if progress is True else (progress or None)
    with _locked(destination), bar or contextlib.nullcontext():
        _log.info("downloading %s from %s", destination.name, url)
        errors: list[str] = []
        for attempt in range(retries + 1):
            if attempt:
                wait = min(backoff * 2 ** (attempt - 1), MAX_TIMEOUT_S)
                _log.warning(
                    "downloading %s: %s; retrying in %g s", destination.name, errors[-1], wait
                )
                time.sleep(wait)
            try:
                _fetch(url, partial, _Limits(max_bytes, timeout), report)
                break
            except _Fatal as exc:
                raise WeightsError(f"Downloading {destination.name} from {url}: {exc}") from exc
            except (urllib.error.URLError, HTTPException, OSError, TimeoutError) as exc:
                errors.append(f"attempt {attempt + 1}: {type(exc).__name__}: {exc}")
        else:
            kept = (
                f" The partial file {partial} is kept: run the same command again to resume."
                if partial.exists()
                else ""
            )
            raise WeightsError(
                f"Downloading {destination.name} from {url} failed {retries + 1} times "
                f"({'; '.join(errors[-3:])}).{kept}"
            )
        _check(partial, expected, validate, destination.name)
        try:
            os.replace(partial, destination)
        except OSError as exc:
            raise WeightsError(_cannot_write(destination, exc, "the weights file")) from exc
    _log.info("downloaded and checked %s", destination)
    return destination


def _backoff_seconds(value: Any) -> float:
    """Returns `download`'s `backoff`: a finite number of seconds, 0 (no wait) up to a day."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and value == 0:
        return 0.0  # retry at once
    return timeout_seconds(value, "backoff", error=WeightsError)


@dataclass(frozen=True)
class _Limits:
    max_bytes: int
    timeout: float


def _fetch(url: str, partial: Path, limits: _Limits, report: ProgressCallback | None) -> None:
    """One attempt: appends to `partial` from where it ends until the file is complete."""
    offset = partial.stat().st_size if partial.exists() else 0
    opener = _opener()
    for _ in range(3):  # the file, or at most two confirmation pages before it
        _require_http(url)  # the first URL, and each confirmation form's target
        request = urllib.request.Request(url, headers={"User-Agent": "steve1-env"})
        if offset:
            request.add_header("Range", f"bytes={offset}-")
        try:
            response = opener.open(request, timeout=limits.timeout)
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and offset:
                _complete_or_restart(exc, partial, offset)
                return
            if exc.code not in _RETRIED_STATUSES:
                raise _Fatal(f"the server answered HTTP {exc.code} ({exc.reason}).") from exc
            raise
        with response:
            if response.headers.get("Content-Type", "").startswith("text/html"):
                page = _read_page(response, limits.timeout).decode("utf-8", "replace")
                confirmed = _drive_confirmation(page, url)
                if confirmed is None:
                    raise _Fatal(
                        "the server sent a web page instead of the file (access denied, quota "
                        "exceeded or a moved file?). Download it by hand into the weights "
                        "directory, then run `steve1-env weights verify`."
                    )
                url = confirmed
                continue
            _write_body(response, partial, offset, limits, report)
            return
    raise _Fatal("the server kept sending confirmation pages instead of the file.")


def _read_block(response: Any, timeout: float, wanted: int = BLOCK_BYTES) -> tuple[bytes, bool]:
    """Reads the next `wanted` bytes (fewer at the end of the body).

    The socket's own timeout only bounds each read, so a server trickling a byte at a time
    would keep an attempt alive forever; the block as a whole gets `timeout` seconds, checked
    before each further read (each may wait `timeout` itself). One read of a chunked body can
    itself wait on many lines (a chunk-size line, trailers without end), so the socket is also
    shut down at twice `timeout` (`_Watchdog`): a block ends within twice the timeout.

    Returns:
        What arrived, and whether the block was cut short by the time limit: the caller keeps
        those bytes, then fails the attempt (a retry resumes after them).

    Raises:
        TimeoutError: If nothing at all arrived in time.
    """
    deadline = time.monotonic() + timeout
    pieces: list[bytes] = []
    size = 0
    late = False
    watchdog = getattr(response, "watchdog", None) or _Watchdog(None)
    with watchdog.period(2 * timeout) as cut:
        while size < wanted:
            if pieces and time.monotonic() > deadline:
                late = True
                break
            try:
                piece = response.read1(wanted - size)
            except TimeoutError:
                if not pieces:
                    raise
                late = True
                break
            except Exception:
                if cut.expired:  # the read failed because the socket was shut down
                    break
                raise
            if not piece:
                break
            pieces.append(piece)
            size += len(piece)
    if cut.expired:  # an end of body seen after the cut is the cut, not the real end
        if not pieces:
            raise TimeoutError(
                f"nothing of the body arrived in {2 * timeout:g} s (a stalled or trickling "
                "connection)"
            )
        late = True
    return b"".join(pieces), late


def _too_slow(size: int, timeout: float) -> TimeoutError:
    return TimeoutError(
        f"only {size} bytes arrived in {timeout:g} s (a stalled or trickling connection)"
    )


def _read_page(response: Any, timeout: float) -> bytes:
    """Reads at most 1 MiB of a web page (a confirmation form is far smaller)."""
    page = b""
    while len(page) < 1 << 20:
        block, late = _read_block(response, timeout)
        if late:
            raise _too_slow(len(block), timeout)
        if not block:
            break
        page += block
    return page


def _complete_or_restart(error: urllib.error.HTTPError, partial: Path, offset: int) -> None:
    # 416: nothing at or after `offset`. Either the part is already whole, or it is too long.
    match = re.search(r"/(\d+)", error.headers.get("Content-Range", "") or "")
    if match is not None and int(match.group(1)) == offset:
        return
    partial.unlink(missing_ok=True)
    raise OSError("the partial file did not match the server's file; starting over")


def _write_body(
    response: Any, partial: Path, offset: int, limits: _Limits, report: ProgressCallback | None
) -> None:
    status = getattr(response, "status", 200)
    if offset and status == 206:
        match = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
        if match is None or int(match.group(1)) != offset:
            partial.unlink(missing_ok=True)
            raise OSError("the server resumed at the wrong offset; starting over")
    elif offset:
        offset = 0  # the server ignored the range and sent the whole file: start over
    try:
        length: int | None = int(response.headers.get("Content-Length"))
    except (TypeError, ValueError):
        length = None
    total = None if length is None else offset + length
    if total is not None and total > limits.max_bytes:
        raise _Fatal(
            f"the server announces {total:,} bytes, more than the {limits.max_bytes:,} this "
            "file can have; nothing was written."
        )
    done = offset

    def wanted() -> int:  # the rest of the body, when known, completes the last block
        return BLOCK_BYTES if total is None or total <= done else min(BLOCK_BYTES, total - done)

    block, late = _read_block(response, limits.timeout, wanted())
    if not offset and block.lstrip()[:1] == b"<":
        raise _Fatal("the server sent markup (a web page?) instead of the file.")
    try:
        # Opened only once the first block passed its check: a refused body leaves no file.
        with open(partial, "ab" if offset else "wb") as handle:
            while block:
                if done + len(block) > limits.max_bytes:
                    handle.close()
                    partial.unlink(missing_ok=True)
                    raise _Fatal(
                        f"the body grew past {limits.max_bytes:,} bytes, more than this file "
                        "can have; the download was stopped and its partial file deleted."
                    )
                handle.write(block)
                done += len(block)
                if report is not None:
                    report(done, total)
                if late:  # kept above: the retry resumes after what arrived
                    raise _too_slow(len(block), limits.timeout)
                block, late = _read_block(response, limits.timeout, wanted())
    except OSError as exc:
        if exc.errno in _LOCAL_ERRORS or exc.errno in _FULL:
            needed = None if total is None else total - done
            raise _Fatal(_cannot_write(partial, exc, "the partial download", needed)) from exc
        raise
    if total is not None and done < total:
        raise OSError(f"connection closed after {done} of {total} bytes")


def _check(
    path: Path, expected: Expected | None, validate: Callable[[Path], None] | None, name: str
) -> None:
    problems = []
    if expected is not None and (expected.sha256 or expected.md5):
        digests = hash_file(path)
        for algorithm in ("sha256", "md5"):
            wanted = getattr(expected, algorithm)
            if wanted is not None and digests[algorithm] != wanted:
                problems.append(f"{algorithm} {digests[algorithm]}, expected {wanted}")
    if not problems and validate is not None:
        try:
            validate(path)
        except WeightsError as exc:
            # The check's advice (delete the file, download it again) is for a file that
            # stays; this one is deleted below, so the advice given is ours.
            found = " ".join(str(exc).replace(REDOWNLOAD_HINT, "").split()).rstrip(".")
            problems.append(f"it is not a valid {name}: {found}")
    if problems:
        path.unlink(missing_ok=True)
        raise WeightsError(
            f"{name} was downloaded but {'; '.join(problems)}. It was not kept (the partial "
            "file was deleted). Run the download again; if it fails the same way, check the "
            "URL and your network or proxy (the file was corrupted on the way, or something "
            "else is served in its place), or fetch the file by hand into the weights "
            "directory and run `steve1-env weights verify`."
        )


def validator(name: str, specs: Mapping[str, FileSpec] | None = None) -> Callable[[Path], None]:
    """Returns the content check of an official file (`check_file_content` as `name`)."""

    def check(path: Path) -> None:
        check_file_content(path, name, specs=specs)

    return check


def read_checksums(directory: Path) -> dict[str, str]:
    """Returns the recorded SHA-256 per file name (empty if nothing was recorded yet).

    Raises:
        WeightsError: If ``checksums.json`` exists but cannot be read, is larger than
            `MAX_CHECKSUMS_BYTES`, is not JSON, or is not a mapping of file names to SHA-256
            hex digests: a damaged record must not pass for "no checksums".
    """
    path = directory / CHECKSUMS_FILE
    fix = (
        f"Correct or delete {path} (deleted, the files are checked by content only until "
        "`steve1-env weights download` fetches and records them again)."
    )
    try:
        raw = read_regular_file(path, MAX_CHECKSUMS_BYTES, "checksums record", error=WeightsError)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise WeightsError(f"Cannot read {path}: {exc.strerror}. {fix}") from exc
    except WeightsError as exc:
        raise WeightsError(f"{exc} {fix}") from None
    data = parse_json(raw, str(path), fix, error=WeightsError)
    if not isinstance(data, dict):
        raise WeightsError(
            f"{path} must hold a JSON object of file name -> SHA-256, got a "
            f"{type(data).__name__}. {fix}"
        )
    bad = [
        f"{key!r}: {value!r}"[:80]
        for key, value in data.items()
        if not (isinstance(value, str) and _SHA256.fullmatch(value))
    ]
    if bad:
        raise WeightsError(
            f"{path} must map each file name to its SHA-256 (64 hex digits); wrong: "
            f"{', '.join(bad[:3])}. {fix}"
        )
    return data


def record_checksum(directory: Path, name: str) -> str:
    """Records a file's SHA-256 in ``checksums.json`` (atomically, under a lock)."""
    digest = hash_file(directory / name)["sha256"]
    with _locked(directory / CHECKSUMS_FILE):
        checksums = read_checksums(directory)
        checksums[name] = digest
        text = json.dumps(checksums, indent=2, sort_keys=True)
        atomic_write_text(
            directory / CHECKSUMS_FILE, text, "the checksums record", _WRITABLE_HINT,
            error=WeightsError,
        )  # fmt: skip
    return digest


def download_official(
    directory: Path,
    names: list[str] | None = None,
    *,
    url_for: Callable[[str], str] = official_url,
    progress: bool = True,
    retries: int = 5,
    backoff: float = 1.0,
    specs: Mapping[str, FileSpec] | None = None,
) -> list[Path]:
    """Downloads the official files that are missing from `directory`.

    A file already present is kept (`verify` checks it; delete it to fetch it again). Each
    one fetched is checked against its published checksum or the one recorded earlier, must
    pass `check_file_content` (its download stops past the size bound), and has its SHA-256
    recorded. `specs` overrides `OFFICIAL_SPECS` (the bounds and kinds).
    """
    names = names or list(OFFICIAL_FILES.values())
    unknown = sorted(set(names) - set(OFFICIAL_FILES.values()))
    if unknown:
        official = list(OFFICIAL_FILES.values())
        raise WeightsError(f"Unknown file(s) {unknown}; official: {official}.")
    _require_directory(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WeightsError(_cannot_write(directory, exc, "the weights directory")) from exc
    recorded = read_checksums(directory)
    fetched = []
    for name in names:
        target = directory / name
        if target.is_file():
            _log.info("%s is already in %s; kept", name, directory)
            continue
        expected = Expected(sha256=recorded.get(name), md5=KNOWN_MD5.get(name))
        download(url_for(name), target, expected=expected, validate=validator(name, specs),
                 max_bytes=official_spec(name, specs).max_bytes, progress=progress,
                 retries=retries, backoff=backoff)  # fmt: skip
        record_checksum(directory, name)
        fetched.append(target)
    return fetched


def _require_directory(directory: Path) -> None:
    if directory.exists() and not directory.is_dir():
        raise WeightsError(
            f"The weights directory {directory} is a file, not a directory. Choose another "
            "one (the `directory` argument or $STEVE1_WEIGHTS_DIR)."
        )


@dataclass(frozen=True)
class FileStatus:
    """The state of one official file in the weights directory."""

    name: str
    present: bool
    ok: bool
    detail: str


def check_file(
    path: Path,
    recorded: Mapping[str, str],
    *,
    hasher: Callable[[Path], dict[str, str]] = hash_file,
    specs: Mapping[str, FileSpec] | None = None,
    reuse_content_check: bool = False,
) -> FileStatus:
    """Checks one official file: its published and recorded checksums and its content.

    The verdict behind both ``weights verify`` and ``doctor``. A file that passes has its
    content verdict remembered by SHA-256 (`remembered_content_check`).

    Args:
        path: The file; its name says which official file it must be.
        recorded: The checksums from `read_checksums`.
        hasher: Returns the file's ``{"sha256", "md5"}`` (doctor passes the memoised one).
        specs: Overrides `OFFICIAL_SPECS`.
        reuse_content_check: Skip loading a file whose SHA-256 passed before (doctor);
            False loads every file again (verify).
    """
    name = path.name
    if not path.is_file():
        detail = "missing" if not path.exists() else "not a regular file"
        return FileStatus(name, path.exists(), False, detail)
    try:
        digests = hasher(path)
    except OSError as exc:
        return FileStatus(name, True, False, f"unreadable: {exc.strerror}")
    problems = []
    if name in KNOWN_MD5 and digests["md5"] != KNOWN_MD5[name]:
        problems.append(f"md5 {digests['md5']} != published {KNOWN_MD5[name]}")
    if name in recorded and digests["sha256"] != recorded[name]:
        problems.append(f"sha256 {digests['sha256'][:16]}... != recorded {recorded[name][:16]}...")
    if problems:
        detail = "; ".join(problems) + (
            " (a checksum mismatch: delete it and run `steve1-env weights download`)"
        )
        return FileStatus(name, True, False, detail)
    try:
        found = remembered_content_check(
            path, digests["sha256"], name, specs=specs, reuse=reuse_content_check
        )
    except WeightsError as exc:
        return FileStatus(name, True, False, str(exc))
    if name in KNOWN_MD5:
        checksum = "published md5"
    elif name in recorded:
        checksum = "recorded sha256"
    else:
        checksum = "no checksum recorded"
    _log.debug("verified %s: %s; %s", path, checksum, found)
    return FileStatus(name, True, True, f"ok ({checksum}; {found})")


def verify(directory: Path, *, specs: Mapping[str, FileSpec] | None = None) -> list[FileStatus]:
    """Re-reads every official file: checksums (published, recorded) and content (loaded).

    Raises:
        WeightsError: If ``checksums.json`` is damaged or `directory` is a file.
    """
    _require_directory(directory)
    recorded = read_checksums(directory)
    statuses = [
        check_file(directory / name, recorded, specs=specs) for name in OFFICIAL_FILES.values()
    ]
    return with_mirror(directory, statuses)


def with_mirror(directory: Path, statuses: list[FileStatus]) -> list[FileStatus]:
    """Counts the Hub mirror in: official files it holds are not missing, and it is checked.

    The loaders read a role's weights from the mirror when its official file is missing
    (`steve1_env.weights.weight_source`), so ``weights verify`` and ``doctor`` report such a
    file as ``missing; the Hub mirror ... holds it`` with ``ok`` True (``present`` False).

    Args:
        directory: The weights directory.
        statuses: The official files' statuses (`check_file`).

    Returns:
        `statuses` (covered files changed as above), plus the mirror's own status if it is
        there (``ok`` False if it is not the mirror).
    """
    mirror = find_mirror(directory)
    if mirror is None:
        return statuses
    shown = str(mirror.relative_to(directory)) if mirror.is_relative_to(directory) else str(mirror)
    try:
        held = check_mirror_content(mirror)
    except Steve1EnvError as exc:
        return [*statuses, FileStatus(shown, True, False, str(exc))]
    covered = {OFFICIAL_FILES[role] for role in MIRROR_PREFIXES}
    result = [
        FileStatus(s.name, False, True, f"missing; the Hub mirror {shown} holds it")
        if s.name in covered and not s.present
        else s
        for s in statuses
    ]
    return [*result, FileStatus(shown, True, True, f"the Hub mirror: {held}")]


HUB_ENDPOINT_ENV = "HF_ENDPOINT"
"""The variable naming the Hub's address, read at each call (huggingface_hub reads it once,
at import)."""
_HUB_EXTRA_PURPOSE = "Downloading the weights from the Hugging Face Hub"


def download_hub(
    directory: Path,
    *,
    revision: str | None = None,
    repo_id: str = MIRROR_REPO,
    endpoint: str | None = None,
    local_files_only: bool = False,
    progress: bool = True,
) -> Path:
    """Downloads the mirror's single weight file from the Hugging Face Hub with huggingface_hub.

    The file goes to ``<directory>/minestudio-steve1/`` (`MIRROR_DIR`), where the loaders
    find it when an official file is missing (`steve1_env.weights.weight_source`).
    huggingface_hub writes it under a temporary name and renames it once whole, resumes a
    dropped connection with a ``Range`` request, and keeps the revision it came from beside it
    (``.cache/huggingface/``), so a later call with the same revision downloads nothing. The
    file is ``model.safetensors``, or ``pytorch_model.bin`` where a revision has only that
    (`MIRROR_FILES`, in ``PyTorchModelHubMixin``'s order); it must hold all three models.

    Args:
        directory: The weights directory.
        revision: A branch, tag or commit hash to pin (default: ``main``); a file from another
            revision already there is replaced.
        repo_id: The Hub repository.
        endpoint: The Hub's address; default ``$HF_ENDPOINT``, else huggingface.co.
        local_files_only: Use only the copy already downloaded (no network at all).
        progress: Show huggingface_hub's progress bar.

    Returns:
        The file's path.

    Raises:
        DependencyNotInstalledError: Without huggingface_hub (the ``hub`` extra).
        WeightsError: If the Hub cannot be reached and no copy is there, the repository,
            revision or file does not exist, or the file is not the mirror's.
    """
    from steve1_env.optional import import_optional

    hub = import_optional("huggingface_hub", "hub", _HUB_EXTRA_PURPOSE)
    errors = import_optional("huggingface_hub.errors", "hub", _HUB_EXTRA_PURPOSE)
    bars = import_optional("huggingface_hub.utils", "hub", _HUB_EXTRA_PURPOSE)
    _require_directory(directory)
    endpoint = endpoint or os.environ.get(HUB_ENDPOINT_ENV) or None
    if endpoint is not None:
        _check_hub_endpoint(endpoint)
    where = f"{repo_id} at revision {revision or 'main'} on {endpoint or 'huggingface.co'}"
    folder = directory / MIRROR_DIR
    quiet = not progress and not bars.are_progress_bars_disabled()
    if quiet:
        bars.disable_progress_bars()
    try:
        path = _hub_file(hub, errors, repo_id, revision, endpoint, folder, local_files_only, where)
    finally:
        if quiet:
            bars.enable_progress_bars()
    try:
        check_mirror_content(path)
    except WeightsError as exc:
        # Not left where the loaders look for the mirror (weights.find_mirror) once refused.
        with contextlib.suppress(OSError):
            path.unlink()
        raise WeightsError(f"{where} served a file that is not the STEVE-1 mirror: {exc}") from None
    for other in MIRROR_FILES:  # a copy under the other name is another revision's: the
        if other != path.name:  # loaders would take it (model.safetensors comes first)
            with contextlib.suppress(FileNotFoundError):
                (folder / other).unlink()
    return path


def _check_hub_endpoint(endpoint: str) -> None:
    # huggingface_hub's HTTP client would raise its own, unwrapped, error deep inside the call.
    parts = urllib.parse.urlsplit(endpoint)
    if parts.scheme.lower() not in _SCHEMES or not parts.netloc:
        raise WeightsError(
            f"The Hub's address {endpoint[:200]!r} (the `endpoint` argument or $HF_ENDPOINT) "
            "is not an http(s) URL; give one such as "
            "https://huggingface.co or a Hub mirror's http(s) address, or unset "
            f"${HUB_ENDPOINT_ENV}."
        )


def _hub_file(
    hub: Any,
    errors: Any,
    repo_id: str,
    revision: str | None,
    endpoint: str | None,
    folder: Path,
    local_files_only: bool,
    where: str,
) -> Path:
    """The first of `MIRROR_FILES` the revision has, downloaded (errors in our words)."""
    offline_fix = (
        "Check the network, a proxy, or $HF_ENDPOINT (a Hub mirror's address); to use only a "
        "copy already downloaded, pass local_files_only=True (or set HF_HUB_OFFLINE=1)."
    )
    for name in MIRROR_FILES:
        try:
            found = hub.hf_hub_download(
                repo_id, name, revision=revision, local_dir=folder, endpoint=endpoint,
                local_files_only=local_files_only,
            )  # fmt: skip
            return Path(found)
        except errors.RevisionNotFoundError:
            raise WeightsError(
                f"The revision {revision!r} does not exist in {repo_id} ({where}). Give a "
                "branch, tag or commit hash of the repository, or leave the revision out for "
                "its main branch."
            ) from None
        except errors.RepositoryNotFoundError:
            raise WeightsError(
                f"The repository {repo_id} was not found ({where}): check its name, or that "
                "$HF_ENDPOINT points at a Hub that has it."
            ) from None
        except errors.LocalEntryNotFoundError as exc:
            if local_files_only:
                # Not there: perhaps the other file name, else nothing was ever downloaded.
                continue
            raise WeightsError(
                f"Cannot download {name} from {where}, and no copy was downloaded before into "
                f"{folder} ({type(exc.__cause__ or exc).__name__}). {offline_fix}"
            ) from None
        except errors.EntryNotFoundError:
            continue  # this revision has the other file name
        except (errors.HfHubHTTPError, OSError) as exc:
            raise WeightsError(
                f"Downloading {name} from {where} failed: {' '.join(str(exc).split())[:300]}. "
                f"Run it again (a dropped download starts over). {offline_fix}"
            ) from None
    if local_files_only:
        raise WeightsError(
            f"No copy of the mirror ({' or '.join(MIRROR_FILES)}) was downloaded into {folder} "
            "yet, and the network is not to be used (local_files_only). Download it once with "
            "the network on."
        )
    raise WeightsError(
        f"{where} has none of {', '.join(MIRROR_FILES)}: it is not the STEVE-1 mirror, or "
        "this revision predates its weights."
    )
