"""Resumable, verified downloads of the official weight files.

A file is fetched into ``<name>.part`` beside its final name, resumed with HTTP ``Range``
requests after a dropped connection, checked against its expected checksum, and only then
renamed to its final name: no half or corrupt file ever has that name. The SHA-256 of every
file fetched is recorded in ``checksums.json`` so `verify` can detect later corruption.
"""

from __future__ import annotations

import html
import json
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path
from typing import Any

from steve1_env.errors import WeightsError
from steve1_env.weights import KNOWN_MD5, OFFICIAL_FILES, _atomic_write_text, file_digests

CHECKSUMS_FILE = "checksums.json"

GOOGLE_DRIVE_IDS: dict[str, str] = {
    "steve1.weights": "1E3fd_-H1rRZqMkUKHfiMhx-ppLLehQPI",
    "steve1_prior.pt": "1OdX5wiybK8jALVfP5_dEo0CWm9BQbDES",
    "attn.pth": "1uaZM1ZLBz2dZWcn85rZmjP7LV6Sg5PZW",
}
DIRECT_URLS: dict[str, str] = {
    "2x.model": "https://openaipublic.blob.core.windows.net/minecraft-rl/models/2x.model",
}


def official_url(name: str) -> str:
    """Returns the download URL of an official file."""
    if name in DIRECT_URLS:
        return DIRECT_URLS[name]
    if name in GOOGLE_DRIVE_IDS:
        return f"https://drive.google.com/uc?export=download&id={GOOGLE_DRIVE_IDS[name]}"
    known = sorted(DIRECT_URLS) + sorted(GOOGLE_DRIVE_IDS)
    raise WeightsError(f"No known source for {name!r}; official files: {known}.")


@dataclass(frozen=True)
class Expected:
    """What a downloaded file must hash to (either may be None: nothing to check)."""

    sha256: str | None = None
    md5: str | None = None


ProgressCallback = Callable[[int, int | None], None]


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
    action = urllib.parse.urljoin(url, html.unescape(form.group(1)))
    return f"{action}?{urllib.parse.urlencode(fields)}"


def _open(url: str, offset: int, timeout: float) -> Any:
    request = urllib.request.Request(url, headers={"User-Agent": "steve1-env"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    return urllib.request.urlopen(request, timeout=timeout)  # only http(s): checked by download()


def download(
    url: str,
    destination: str | os.PathLike[str],
    *,
    expected: Expected | None = None,
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
        retries: Further attempts after a failed one (each resumes where the last stopped).
        timeout: Seconds without data before an attempt fails.
        backoff: Seconds before the first retry, doubling each time.
        progress: Print progress to stderr (True), stay quiet (False), or a callback
            ``(bytes_done, total_or_None)``.

    Returns:
        The destination path.

    Raises:
        WeightsError: If every attempt failed or the checksum does not match.
    """
    if urllib.parse.urlparse(url).scheme not in ("http", "https"):
        raise WeightsError(f"Only http(s) URLs can be downloaded, got {url!r}.")
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".part")
    report = _stderr_progress(destination.name) if progress is True else progress or None
    errors: list[str] = []
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(backoff * 2 ** (attempt - 1))
        offset = partial.stat().st_size if partial.exists() else 0
        try:
            url = _fetch(url, partial, offset, timeout, report)
            break
        except (urllib.error.URLError, HTTPException, OSError, TimeoutError) as exc:
            errors.append(f"attempt {attempt + 1}: {type(exc).__name__}: {exc}")
    else:
        raise WeightsError(
            f"Downloading {destination.name} from {url} failed {retries + 1} times "
            f"({'; '.join(errors[-3:])}). The partial file {partial} is kept: run the same "
            "command again to resume."
        )
    _check(partial, expected, destination.name)
    os.replace(partial, destination)
    return destination


def _fetch(
    url: str, partial: Path, offset: int, timeout: float, report: ProgressCallback | None
) -> str:
    """One attempt; returns the URL that served the file (after a Drive confirmation)."""
    response = _open(url, offset, timeout)
    with response:
        status = getattr(response, "status", 200)
        content_type = response.headers.get("Content-Type", "")
        if content_type.startswith("text/html"):
            page = response.read(1 << 20).decode("utf-8", "replace")
            confirmed = _drive_confirmation(page, url)
            if confirmed is None:
                raise WeightsError(
                    f"{url} returned a web page instead of the file (access denied, quota "
                    "exceeded or a moved file?). Download it by hand into the weights directory."
                )
            return _fetch(confirmed, partial, offset, timeout, report)
        if offset and status != 206:
            offset = 0  # the server ignored the range: start over
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        with open(partial, "ab" if offset else "wb") as handle:
            done = offset
            while chunk := response.read(1 << 16):
                handle.write(chunk)
                done += len(chunk)
                if report is not None:
                    report(done, total)
        if total is not None and done < total:
            raise OSError(f"connection closed after {done} of {total} bytes")
    return url


def _check(path: Path, expected: Expected | None, name: str) -> None:
    if expected is None:
        return
    digests = file_digests(path)
    for algorithm in ("sha256", "md5"):
        wanted = getattr(expected, algorithm)
        if wanted is not None and digests[algorithm] != wanted:
            path.unlink(missing_ok=True)
            raise WeightsError(
                f"{name} downloaded with {algorithm} {digests[algorithm]}, expected {wanted}: "
                "the file is corrupt or was replaced at the source. The partial file was "
                "deleted; try again, or fetch it by hand and run `steve1-env weights verify`."
            )


def read_checksums(directory: Path) -> dict[str, str]:
    """Returns the recorded SHA-256 per file name (empty if nothing was recorded)."""
    try:
        return dict(json.loads((directory / CHECKSUMS_FILE).read_text()))
    except (OSError, ValueError):
        return {}


def record_checksum(directory: Path, name: str) -> str:
    """Records a file's SHA-256 in ``checksums.json`` (atomically) and returns it."""
    digest = file_digests(directory / name)["sha256"]
    checksums = read_checksums(directory)
    checksums[name] = digest
    _atomic_write_text(directory / CHECKSUMS_FILE, json.dumps(checksums, indent=2, sort_keys=True))
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

    A file already present is kept. Each one fetched is checked against its published
    checksum (where one exists) or the one recorded earlier, then recorded.
    """
    names = names or list(OFFICIAL_FILES.values())
    unknown = sorted(set(names) - set(OFFICIAL_FILES.values()))
    if unknown:
        raise WeightsError(f"Unknown file(s) {unknown}; official: {list(OFFICIAL_FILES.values())}.")
    recorded = read_checksums(directory)
    fetched = []
    for name in names:
        target = directory / name
        if target.is_file():
            continue
        expected = Expected(sha256=recorded.get(name), md5=KNOWN_MD5.get(name))
        download(url_for(name), target, expected=expected, progress=progress, retries=retries,
                 backoff=backoff)  # fmt: skip
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
    """Checks every official file against its published and recorded checksums."""
    recorded = read_checksums(directory)
    statuses = []
    for name in OFFICIAL_FILES.values():
        path = directory / name
        if not path.is_file():
            statuses.append(FileStatus(name, False, False, "missing"))
            continue
        digests = file_digests(path)
        problems = []
        if name in KNOWN_MD5 and digests["md5"] != KNOWN_MD5[name]:
            problems.append(f"md5 {digests['md5']} != published {KNOWN_MD5[name]}")
        if name in recorded and digests["sha256"] != recorded[name]:
            problems.append(
                f"sha256 {digests['sha256'][:16]}... != recorded {recorded[name][:16]}..."
            )
        if problems:
            statuses.append(FileStatus(name, True, False, "; ".join(problems)))
        else:
            known = (
                "published md5"
                if name in KNOWN_MD5
                else "recorded sha256"
                if name in recorded
                else "no checksum to compare"
            )
            statuses.append(FileStatus(name, True, True, f"ok ({known})"))
    return statuses
