"""Resumable, verified downloads of the official weight files.

A file is fetched into ``<name>.part`` beside its final name, resumed with HTTP ``Range``
requests after a dropped connection, checked, and only then renamed to its final name: no half
or corrupt file ever has that name. Checks: the expected checksum when one is known, the size
the server announced, that the body is not a web page, and (for the official files) that the
file loads as what it should be (safely: see `steve1_env.weights`). The SHA-256 of every file
fetched is recorded in ``checksums.json`` so `verify` can detect later corruption.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import html
import json
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path
from typing import Any

from steve1_env.errors import WeightsError
from steve1_env.weights import (
    KNOWN_MD5,
    OFFICIAL_FILES,
    atomic_write_text,
    hash_file,
    load_model_file,
    load_state_dict,
    official_url,
)

CHECKSUMS_FILE = "checksums.json"
_RETRIED_STATUSES = {408, 429, 500, 502, 503, 504}


@dataclass(frozen=True)
class Expected:
    """What a downloaded file must hash to (either may be None: nothing to check)."""

    sha256: str | None = None
    md5: str | None = None


ProgressCallback = Callable[[int, int | None], None]


class _Fatal(Exception):
    """A failure that retrying cannot fix (wraps the message for the final error)."""


def _stderr_progress(name: str) -> ProgressCallback:
    last = [-1.0]

    def report(done: int, total: int | None) -> None:
        now = time.monotonic()
        if now - last[0] < 0.5 and (total is None or done < total):
            return
        last[0] = now
        size = f"{done / 1e6:8.1f} MB"
        share = f" / {total / 1e6:.1f} MB ({100 * done / total:5.1f}%)" if total else ""
        print(f"\r{name}: {size}{share}", end="", file=sys.stderr, flush=True)
        if total is not None and done >= total:
            print(file=sys.stderr)

    return report


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
    """Holds an exclusive lock on ``<path>.lock`` (one downloader per file at a time)."""
    lock = path.with_name(path.name + ".lock")
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def download(
    url: str,
    destination: str | os.PathLike[str],
    *,
    expected: Expected | None = None,
    validate: Callable[[Path], None] | None = None,
    retries: int = 5,
    timeout: float = 60.0,
    backoff: float = 1.0,
    progress: bool | ProgressCallback = True,
) -> Path:
    """Downloads `url` to `destination` atomically, resuming and retrying on failures.

    Args:
        url: An http(s) URL; Google Drive's confirmation page for large files is followed.
        destination: The final path; the download goes to ``<destination>.part`` first.
        expected: Checksums the file must have; a mismatch deletes the partial file.
        validate: Called with the finished partial file; raises if its content is wrong.
        retries: Further attempts after a failed one (each resumes where the last stopped);
            client errors (404, 403, ...) and a full disk are not retried.
        timeout: Seconds without data before an attempt fails.
        backoff: Seconds before the first retry, doubling each time.
        progress: Print progress to stderr (True), stay quiet (False), or a callback
            ``(bytes_done, total_or_None)``.

    Returns:
        The destination path.

    Raises:
        WeightsError: If the download failed or the file did not pass its checks.
    """
    if urllib.parse.urlparse(url).scheme not in ("http", "https"):
        raise WeightsError(f"Only http(s) URLs can be downloaded, got {url!r}.")
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".part")
    report = _stderr_progress(destination.name) if progress is True else progress or None
    with _locked(destination):
        errors: list[str] = []
        for attempt in range(retries + 1):
            if attempt:
                time.sleep(backoff * 2 ** (attempt - 1))
            try:
                _fetch(url, partial, timeout, report)
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
        os.replace(partial, destination)
    return destination


def _fetch(url: str, partial: Path, timeout: float, report: ProgressCallback | None) -> None:
    """One attempt: appends to `partial` from where it ends until the file is complete."""
    offset = partial.stat().st_size if partial.exists() else 0
    for _ in range(3):  # the file, or at most two confirmation pages before it
        request = urllib.request.Request(url, headers={"User-Agent": "steve1-env"})
        if offset:
            request.add_header("Range", f"bytes={offset}-")
        try:
            # Only http(s): checked by download().
            response = urllib.request.urlopen(request, timeout=timeout)
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and offset:
                _complete_or_restart(exc, partial, offset)
                return
            if exc.code not in _RETRIED_STATUSES:
                raise _Fatal(f"the server answered HTTP {exc.code} ({exc.reason}).") from exc
            raise
        with response:
            if response.headers.get("Content-Type", "").startswith("text/html"):
                page = response.read(1 << 20).decode("utf-8", "replace")
                confirmed = _drive_confirmation(page, url)
                if confirmed is None:
                    raise _Fatal(
                        "the server sent a web page instead of the file (access denied, quota "
                        "exceeded or a moved file?). Download it by hand into the weights "
                        "directory, then run `steve1-env weights verify`."
                    )
                url = confirmed
                continue
            _write_body(response, partial, offset, report)
            return
    raise _Fatal("the server kept sending confirmation pages instead of the file.")


def _complete_or_restart(error: urllib.error.HTTPError, partial: Path, offset: int) -> None:
    # 416: nothing at or after `offset`. Either the part is already whole, or it is too long.
    match = re.search(r"/(\d+)", error.headers.get("Content-Range", "") or "")
    if match is not None and int(match.group(1)) == offset:
        return
    partial.unlink(missing_ok=True)
    raise OSError("the partial file did not match the server's file; starting over")


def _write_body(response: Any, partial: Path, offset: int, report: ProgressCallback | None) -> None:
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
    done = offset
    try:
        with open(partial, "ab" if offset else "wb") as handle:
            while chunk := response.read(1 << 16):
                if done == 0 and chunk.lstrip()[:1] == b"<":
                    raise _Fatal("the server sent markup (a web page?) instead of the file.")
                handle.write(chunk)
                done += len(chunk)
                if report is not None:
                    report(done, total)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise _Fatal(
                f"the disk is full at {partial.parent}; free some space (the files need about "
                "1 GB) and run the same command again to resume."
            ) from exc
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
            problems.append(f"it does not load: {exc}")
    if problems:
        path.unlink(missing_ok=True)
        raise WeightsError(
            f"{name} was downloaded but {'; '.join(problems)}. The file is corrupt or was "
            "replaced at the source; the partial file was deleted. Try again, or fetch it by "
            "hand and run `steve1-env weights verify`."
        )


def validator(name: str) -> Callable[[Path], None]:
    """Returns a content check for an official file: it must load (safely) as what it is."""

    def check(path: Path) -> None:
        if name.endswith(".model"):
            load_model_file(path)
        else:
            load_state_dict(path, map_location="cpu")

    return check


def read_checksums(directory: Path) -> dict[str, str]:
    """Returns the recorded SHA-256 per file name (empty if nothing was recorded)."""
    try:
        return dict(json.loads((directory / CHECKSUMS_FILE).read_text()))
    except (OSError, ValueError):
        return {}


def record_checksum(directory: Path, name: str) -> str:
    """Records a file's SHA-256 in ``checksums.json`` (atomically, under a lock)."""
    digest = hash_file(directory / name)["sha256"]
    with _locked(directory / CHECKSUMS_FILE):
        checksums = read_checksums(directory)
        checksums[name] = digest
        text = json.dumps(checksums, indent=2, sort_keys=True)
        atomic_write_text(directory / CHECKSUMS_FILE, text)
    return digest


def download_official(
    directory: Path,
    names: list[str] | None = None,
    *,
    url_for: Callable[[str], str] = official_url,
    progress: bool = True,
    retries: int = 5,
    backoff: float = 1.0,
) -> list[Path]:
    """Downloads the official files that are missing from `directory`.

    A file already present is kept (`verify` checks it; delete it to fetch it again). Each
    one fetched is checked against its published checksum or the one recorded earlier, must
    load as what it is, and has its SHA-256 recorded.
    """
    names = names or list(OFFICIAL_FILES.values())
    unknown = sorted(set(names) - set(OFFICIAL_FILES.values()))
    if unknown:
        official = list(OFFICIAL_FILES.values())
        raise WeightsError(f"Unknown file(s) {unknown}; official: {official}.")
    recorded = read_checksums(directory)
    fetched = []
    for name in names:
        target = directory / name
        if target.is_file():
            continue
        expected = Expected(sha256=recorded.get(name), md5=KNOWN_MD5.get(name))
        download(url_for(name), target, expected=expected, validate=validator(name),
                 progress=progress, retries=retries, backoff=backoff)  # fmt: skip
        record_checksum(directory, name)
        fetched.append(target)
    return fetched


@dataclass(frozen=True)
class FileStatus:
    """The state of one official file in the weights directory."""

    name: str
    present: bool
    ok: bool
    detail: str


def verify(directory: Path) -> list[FileStatus]:
    """Re-reads every official file and checks it against its published and recorded hashes."""
    recorded = read_checksums(directory)
    statuses = []
    for name in OFFICIAL_FILES.values():
        path = directory / name
        if not path.is_file():
            statuses.append(FileStatus(name, False, False, "missing"))
            continue
        digests = hash_file(path)
        problems = []
        if name in KNOWN_MD5 and digests["md5"] != KNOWN_MD5[name]:
            problems.append(f"md5 {digests['md5']} != published {KNOWN_MD5[name]}")
        if name in recorded and digests["sha256"] != recorded[name]:
            problems.append(
                f"sha256 {digests['sha256'][:16]}... != recorded {recorded[name][:16]}..."
            )
        if problems:
            detail = "; ".join(problems) + " (delete it and run `steve1-env weights download`)"
            statuses.append(FileStatus(name, True, False, detail))
        elif name in KNOWN_MD5:
            statuses.append(FileStatus(name, True, True, "ok (published md5)"))
        elif name in recorded:
            statuses.append(FileStatus(name, True, True, "ok (recorded sha256)"))
        else:
            statuses.append(FileStatus(name, True, True, "present (no checksum to compare)"))
    return statuses
