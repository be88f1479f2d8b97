"""Resumable, size-limited HTTP(S) downloads of one model file.

Workers on residential links lose connections in the middle of multi-gigabyte checkpoints, so a
download continues where it stopped: bytes land in ``<name>.part`` next to the target, with the
URL and the server's validator (ETag or Last-Modified) in ``<name>.part.json``; the next attempt
asks for the rest with ``Range`` and ``If-Range``, so a file that changed on the server is
fetched again from the start rather than spliced. The target appears only once complete.

Hosts are treated as untrusted: every redirect hop is checked against private addresses (unless
allowed), and an Authorization header is sent only to a host configured for it, never to the
host a redirect points at (a model page must not be able to harvest a hub token). URLs in
messages lose their query string, where some hubs put tokens.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlparse

import httpx
from pydantic import SecretStr

from imagefleet.worker.source_errors import SourceError, check_public_host

Progress = Callable[[int, int | None], None]
MAX_REDIRECTS = 5
REDIRECTS = frozenset({301, 302, 303, 307, 308})


@dataclass(frozen=True)
class HttpOptions:
    """How to reach hosts: which are allowed, which get which Authorization header."""

    allow_private: bool = False
    auth: Mapping[str, SecretStr] | None = None
    timeout_seconds: float = 60.0


def download(
    url: str,
    target: Path,
    *,
    max_bytes: int,
    options: HttpOptions,
    progress: Progress | None = None,
) -> Path:
    """Downloads url to target (resuming a partial download there) and returns target."""
    part = target.with_name(target.name + ".part")
    meta_path = target.with_name(target.name + ".part.json")
    have, validator = _resume_point(part, meta_path, url)
    # Byte offsets must be the file's own: no transfer compression.
    headers: dict[str, str] = {"Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
        if validator:
            headers["If-Range"] = validator
    try:
        with httpx.Client(timeout=options.timeout_seconds, follow_redirects=False) as client:
            response = _open(client, url, headers, options)
            try:
                if response.status_code == 416 and have:
                    # The partial file already holds everything (or the server forgot it).
                    total = _total_from_content_range(response.headers.get("content-range"))
                    if total == have:
                        return _finish(part, meta_path, target)
                    raise SourceError(f"GET {redact(url)} refused the range bytes={have}-")
                if response.status_code == 206 and have:
                    start = _start_from_content_range(response.headers.get("content-range"))
                    if start != have:
                        raise SourceError(
                            f"GET {redact(url)} resumed at byte {start}, not {have}; retry"
                        )
                    mode = "ab"
                elif response.status_code == 200:
                    have, mode = 0, "wb"
                else:
                    raise SourceError(f"GET {redact(url)} answered {response.status_code}")
                total = _expected_total(response, have)
                if total is not None and total > max_bytes:
                    raise SourceError(
                        f"{redact(url)} is {total} bytes, larger than the registered {max_bytes}"
                    )
                _write_meta(meta_path, url, _validator(response), total)
                _stream(response, part, mode, have, total, max_bytes, url, progress)
            finally:
                response.close()
    except httpx.HTTPError as exc:
        raise SourceError(f"download of {redact(url)} failed: {exc}; it resumes on retry") from exc
    return _finish(part, meta_path, target)


def redact(url: str) -> str:
    """The URL without query string or credentials, for messages and logs."""
    parsed = urlparse(url)
    host = parsed.hostname or ""
    port = f":{parsed.port}" if parsed.port else ""
    return f"{parsed.scheme}://{host}{port}{parsed.path}"


def _open(
    client: httpx.Client, url: str, headers: dict[str, str], options: HttpOptions
) -> httpx.Response:
    """GETs url, following redirects one checked hop at a time."""
    for _ in range(MAX_REDIRECTS + 1):
        host = urlparse(url).hostname or ""
        if urlparse(url).scheme not in ("http", "https"):
            raise SourceError(f"refusing to follow a redirect to {redact(url)}")
        if not options.allow_private:
            check_public_host(host)
        hop_headers = dict(headers)
        secret = (options.auth or {}).get(host)
        if secret is not None:
            hop_headers["Authorization"] = secret.get_secret_value()
        request = client.build_request("GET", url, headers=hop_headers)
        response = client.send(request, stream=True)
        if response.status_code not in REDIRECTS:
            return response
        location = response.headers.get("location")
        response.close()
        if not location:
            raise SourceError(f"GET {redact(url)} redirected without a Location")
        url = urljoin(url, location)
    raise SourceError(f"GET {redact(url)}: more than {MAX_REDIRECTS} redirects")


def _stream(
    response: httpx.Response,
    part: Path,
    mode: str,
    have: int,
    total: int | None,
    max_bytes: int,
    url: str,
    progress: Progress | None,
) -> None:
    received = have
    with part.open(mode) as handle:
        # As the bytes arrive: a buffered chunk would be lost with the connection.
        for chunk in response.iter_bytes():
            received += len(chunk)
            if received > max_bytes:
                handle.close()
                part.unlink(missing_ok=True)
                raise SourceError(f"{redact(url)} is larger than the registered {max_bytes} bytes")
            handle.write(chunk)
            if progress is not None:
                progress(received, total)
    if total is not None and received != total:
        raise SourceError(
            f"download of {redact(url)} stopped at {received} of {total} bytes; it resumes on retry"
        )


def _resume_point(part: Path, meta_path: Path, url: str) -> tuple[int, str | None]:
    """Bytes already on disk for this same URL, and the validator they were fetched under."""
    if not part.is_file():
        return 0, None
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        meta = {}
    if meta.get("url") != redact(url):
        part.unlink(missing_ok=True)
        return 0, None
    return part.stat().st_size, meta.get("validator")


def _write_meta(meta_path: Path, url: str, validator: str | None, total: int | None) -> None:
    meta_path.write_text(json.dumps({"url": redact(url), "validator": validator, "total": total}))


def _validator(response: httpx.Response) -> str | None:
    """A strong ETag, else Last-Modified: what If-Range accepts."""
    etag = response.headers.get("etag")
    if etag and not etag.startswith("W/"):
        return etag
    return response.headers.get("last-modified")


def _expected_total(response: httpx.Response, have: int) -> int | None:
    if response.status_code == 206:
        return _total_from_content_range(response.headers.get("content-range"))
    length = response.headers.get("content-length")
    return have + int(length) if length and length.isdigit() else None


def _start_from_content_range(value: str | None) -> int | None:
    # "bytes 100-199/200"
    if not value or not value.startswith("bytes "):
        return None
    start = value[len("bytes ") :].partition("-")[0]
    return int(start) if start.isdigit() else None


def _total_from_content_range(value: str | None) -> int | None:
    total = (value or "").rpartition("/")[2]
    return int(total) if total.isdigit() else None


def _finish(part: Path, meta_path: Path, target: Path) -> Path:
    part.replace(target)
    meta_path.unlink(missing_ok=True)
    return target


class ProgressLog:
    """A progress callback that logs at most every ``interval`` seconds (and at the end)."""

    def __init__(self, name: str, log: Callable[[str], None], interval: float = 5.0) -> None:
        self._name = name
        self._log = log
        self._interval = interval
        self._last = 0.0
        self._started = time.monotonic()

    def __call__(self, done: int, total: int | None) -> None:
        now = time.monotonic()
        finished = total is not None and done >= total
        if now - self._last < self._interval and not finished:
            return
        self._last = now
        rate = done / max(now - self._started, 1e-6)
        share = f" of {total / 1e6:.1f} MB ({100 * done / total:.0f}%)" if total else ""
        self._log(f"{self._name}: {done / 1e6:.1f} MB{share}, {rate / 1e6:.1f} MB/s")
