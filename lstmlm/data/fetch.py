"""A resumable, retrying HTTP download (urllib from the standard library, tqdm for the
progress bar): :func:`fetch` gets one URL into one file.

A transfer cut short is continued with an HTTP Range request; timeouts, dropped
connections, truncated bodies and HTTP 5xx/408/429 are retried with exponential backoff;
other 4xx answers are final for the URL. Every failure ends in a :class:`DownloadError`
naming the URL and the reason, for a human. Nothing here knows about corpora.
"""

from __future__ import annotations

import http.client
import logging
import socket
import ssl
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lstmlm.core.errors import LstmlmError

log = logging.getLogger(__name__)

# A descriptive User-Agent: wikitext.smerity.com answers 403 to Python's default
# "Python-urllib/3.x", so the default must never be sent. (No version number: reading it
# from lstmlm/__init__.py would make every edit there rerun the data stages.)
USER_AGENT = "lstmlm (WikiText downloader; +https://wikitext.smerity.com)"

CHUNK = 1 << 16  # bytes per read, of a response body or a file being copied


class DownloadError(LstmlmError):
    """The corpus could not be obtained or verified; the message says why, for a human."""


@dataclass(frozen=True)
class FetchOptions:
    """How patient :func:`fetch` is (see there), and whether it shows a progress bar."""

    timeout: float = 60.0  # seconds: bounds the connect and every single read
    retries: int = 3
    backoff: float = 1.0
    progress: bool = True

    def fetch(self, url: str, dest: str | Path, resume: bool = False) -> int:
        return fetch(url, dest, resume=resume, timeout=self.timeout, retries=self.retries,
                     backoff=self.backoff, progress=self.progress)


class _AttemptFailed(Exception):
    """One HTTP attempt failed; ``retryable`` says whether trying the same URL again helps."""

    def __init__(self, reason: str, retryable: bool):
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


def _classify(err: BaseException, timeout: float) -> _AttemptFailed:
    """Turn an exception from urllib/http.client into a reason and a retry decision."""
    if isinstance(err, urllib.error.HTTPError):
        # 4xx means this URL will not serve us (gone, forbidden): move to the next mirror.
        # 5xx, 408 (request timeout) and 429 (rate limit) are transient.
        retry = err.code >= 500 or err.code in (408, 429)
        return _AttemptFailed(f"HTTP {err.code} {err.reason}", retry)
    if isinstance(err, urllib.error.URLError):
        return _classify(err.reason, timeout) if isinstance(err.reason, BaseException) \
            else _AttemptFailed(f"connection failed: {err.reason}", True)
    if isinstance(err, TimeoutError):  # socket.timeout is TimeoutError since 3.10
        return _AttemptFailed(f"timed out (no data for {timeout:g} s)", True)
    if isinstance(err, socket.gaierror) and err.errno == socket.EAI_NONAME:
        # The host does not exist; "temporary failure in name resolution" is retried.
        return _AttemptFailed(f"host not found: {err}", False)
    if isinstance(err, ssl.SSLCertVerificationError):
        return _AttemptFailed(f"TLS certificate rejected: {err}", False)
    if isinstance(err, http.client.IncompleteRead):
        return _AttemptFailed(f"connection closed early after {len(err.partial)} bytes", True)
    if isinstance(err, (OSError, http.client.HTTPException)):
        return _AttemptFailed(f"connection failed: {type(err).__name__}: {err}", True)
    if isinstance(err, ValueError):  # e.g. an unknown URL scheme
        return _AttemptFailed(f"bad URL: {err}", False)
    raise err


def _parse_content_range(value: str | None) -> tuple[int | None, int | None]:
    """``(first byte, total size)`` of a Content-Range header ("bytes 10-99/100",
    "bytes */100"); None for what is absent or unreadable."""
    unit, _, spec = (value or "").strip().partition(" ")
    span, _, total = spec.partition("/")
    first = span.partition("-")[0]
    return (int(first) if unit == "bytes" and first.isdigit() else None,
            int(total) if unit == "bytes" and total.isdigit() else None)


def _body_start(response: Any, dest: Path, offset: int) -> int:
    """The byte of the file where the response body starts: ``offset`` when the server
    honoured our Range request (206 from that byte), 0 when it sent the whole file (200)."""
    if offset and response.status == 206:
        first, _ = _parse_content_range(response.headers.get("Content-Range"))
        if first != offset:
            dest.unlink(missing_ok=True)  # a range we cannot splice in: start again
            raise _AttemptFailed(f"server resumed at byte {first}, not at {offset}", True)
        return offset
    return 0


def _stream_body(response: Any, dest: Path, start: int, expected: int | None, *,
                 progress: bool, desc: str) -> int:
    """Write the body to ``dest`` from byte ``start`` on (append or overwrite); return the
    number of body bytes written."""
    bar = None
    if progress and expected is not None:
        from tqdm import tqdm  # imported here: only a real download needs it

        bar = tqdm(total=start + expected, initial=start, unit="B", unit_scale=True,
                   unit_divisor=1024, desc=desc, file=sys.stderr, leave=False)
    received = 0
    try:
        with open(dest, "ab" if start else "wb") as out:
            while block := response.read(CHUNK):
                out.write(block)
                received += len(block)
                if bar is not None:
                    bar.update(len(block))
    finally:
        if bar is not None:
            bar.close()
    return received


def _range_not_satisfiable(err: urllib.error.HTTPError, dest: Path, offset: int) -> int:
    """HTTP 416 to ``Range: bytes=offset-``: the partial file may already be complete."""
    _, total = _parse_content_range(err.headers.get("Content-Range"))
    if total == offset:
        return offset
    dest.unlink(missing_ok=True)  # longer than the file on the server: start again
    raise _AttemptFailed(f"HTTP 416: the partial download ({offset} bytes) does not fit "
                         f"the file on the server ({total} bytes); starting again", True)


def _fetch_once(url: str, dest: Path, *, timeout: float, progress: bool) -> int:
    """One GET of ``url`` into ``dest``, continuing what ``dest`` holds (HTTP Range).

    Returns the size of the complete file or raises _AttemptFailed; bytes received before
    a failure stay in ``dest``, for the next attempt to continue.
    """
    offset = dest.stat().st_size if dest.exists() else 0
    headers = {"User-Agent": USER_AGENT,
               # A compressed body would make Content-Length disagree with what we store.
               "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        # ``timeout`` is the socket timeout: it bounds the connect and every single read,
        # so a server that accepts and then stalls fails after ``timeout`` seconds.
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                    timeout=timeout) as response:
            start = _body_start(response, dest, offset)
            length = response.headers.get("Content-Length")
            expected = int(length) if length is not None and length.isdigit() else None
            received = _stream_body(response, dest, start, expected, progress=progress,
                                    desc=url.rsplit("/", 1)[-1])
    except urllib.error.HTTPError as err:
        err.close()
        if err.code == 416 and offset:
            return _range_not_satisfiable(err, dest, offset)
        raise _classify(err, timeout) from None
    except (OSError, http.client.HTTPException, ValueError) as err:
        raise _classify(err, timeout) from None
    # http.client returns b"" rather than raising when a server closes a
    # Content-Length response early, so the length must be checked here.
    if expected is not None and received != expected:
        raise _AttemptFailed(f"truncated download: got {start + received} of "
                             f"{start + expected} bytes", True)
    return start + received


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def fetch(url: str, dest: str | Path, *, timeout: float = 60.0, retries: int = 3,
          backoff: float = 1.0, progress: bool = True, resume: bool = False) -> int:
    """Download ``url`` to ``dest`` with retries; return the size of the complete file.

    A transfer cut short is continued where it stopped (an HTTP Range request; a server
    that ignores Range sends the whole file again, which then replaces the partial one).
    ``resume=True`` also continues what ``dest`` already holds from an earlier, interrupted
    run; otherwise ``dest`` starts empty.

    A request is retried ``retries`` more times after a timeout, connection error,
    truncated body or HTTP 5xx/408/429, sleeping ``backoff * 2**n`` seconds before the
    n-th retry; a resumed request that moved the transfer forward uses up no retry, so a
    server that drops the connection every few MB still delivers the whole file. Other
    HTTP 4xx answers are final for this URL. Raises :class:`DownloadError` naming the URL
    and the last reason.
    """
    dest = Path(dest)
    if not resume:
        dest.unlink(missing_ok=True)
    failures = 0
    while True:
        before = _size(dest)
        try:
            return _fetch_once(url, dest, timeout=timeout, progress=progress)
        except _AttemptFailed as failed:
            if not failed.retryable:
                raise DownloadError(f"{url}: {failed.reason}") from None
            if 0 < before < _size(dest):
                log.warning("%s: %s; resuming at byte %d", url, failed.reason, _size(dest))
                continue
            failures += 1
            if failures > retries:
                tries = "1 attempt" if failures == 1 else f"{failures} attempts"
                raise DownloadError(f"{url}: {failed.reason} ({tries})") from None
            delay = backoff * 2 ** (failures - 1)
            log.warning("%s: %s; retrying in %.3g s", url, failed.reason, delay)
            time.sleep(delay)
