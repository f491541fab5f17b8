"""Fetch the raw corpus: WikiText-2 or WikiText-103 (verified by SHA-256), or a user's
own text files.

The output contract is one directory holding exactly ``train.txt``, ``valid.txt`` and
``test.txt`` (UTF-8). For WikiText-2 these are byte-identical to ``wiki.{split}.tokens``
of the official ``wikitext-2-v1.zip`` and are checked against ``wikitext-2.sha256``,
shipped beside this module. For WikiText-103 they are the same members of
``wikitext-103-v1.zip``, whose own SHA-256 is checked (no per-file sums are published);
that 190 MB download is streamed to disk and, when interrupted, continued with HTTP Range
requests rather than started again.

Nothing unverified ever lands in the output directory: downloads go to a temporary
directory elsewhere (WikiText-103's zip to a resume directory, when one is given), every
split or zip is verified there, and only then are the files copied in with
:func:`lstmlm.files.atomic_path` (a WikiText-2 copy is hashed again before the rename).
The one exception is WikiText-103 given as extracted files in ``$WIKITEXT103_DIR``: no
sums exist for them, so the tokenise stage's check of the published counts stands in.

This module uses only the standard library (urllib) plus tqdm for the progress bar, and
imports neither torch nor DVC.
"""

from __future__ import annotations

import codecs
import http.client
import logging
import os
import shutil
import socket
import ssl
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

from lstmlm import __version__
from lstmlm.corpus import SPLITS
from lstmlm.errors import LstmlmError
from lstmlm.files import atomic_path, sha256_file
from lstmlm.params import spec

log = logging.getLogger(__name__)

WIKITEXT = "wikitext-2"
WIKITEXT_DIR_ENV = "WIKITEXT_DIR"
SUMS_FILE = "wikitext-2.sha256"

WIKITEXT103 = "wikitext-103"
WIKITEXT103_DIR_ENV = "WIKITEXT103_DIR"
WIKITEXT103_ZIP = "wikitext-103-v1.zip"
# The sum and size recorded for wikitext-103-v1.zip in huggingface/datasets' wikitext
# dataset_infos.json (the same sum other dataset registries pin).
WIKITEXT103_SHA256 = "242ba0f20b329cfdf1ccc61e9e9e5b59becf189db7f7a81cd2a0e2fc31539590"
WIKITEXT103_BYTES = 190_229_076

# A descriptive User-Agent: wikitext.smerity.com answers 403 to Python's default
# "Python-urllib/3.x", so the default must never be sent.
USER_AGENT = f"lstmlm/{__version__} (WikiText downloader; +https://wikitext.smerity.com)"

# Names accepted for one split in a user's directory, in order of preference.
SPLIT_NAMES = ("{split}.txt", "{split}.tokens", "wiki.{split}.tokens")
# In WIKITEXT_DIR the official names come first; the others are accepted too because the
# checksum, not the name, decides whether the file is WikiText-2.
WIKITEXT_NAMES = ("wiki.{split}.tokens", "{split}.txt", "{split}.tokens")

_CHUNK = 1 << 16


@dataclass(frozen=True)
class DownloadConfig:
    """The ``download`` section of params.yaml."""

    corpus: str = spec("wikitext-2", doc="'wikitext-2', 'wikitext-103', or a directory holding "
                       "train/valid/test text files (your own corpus)")


class DownloadError(LstmlmError):
    """The corpus could not be obtained or verified; the message says why, for a human."""


@dataclass(frozen=True)
class Mirror:
    """One place to fetch WikiText-2 v1 (tokenised) from.

    ``kind="zip"``: ``url`` is a copy of ``wikitext-2-v1.zip``; the members
    ``*/wiki.{split}.tokens`` are used. ``kind="files"``: ``url`` is a template with a
    ``{split}`` field naming one raw file per split.
    """

    url: str
    kind: str = "zip"

    def __post_init__(self) -> None:
        if self.kind not in ("zip", "files"):
            raise ValueError(f"Mirror.kind must be 'zip' or 'files', not {self.kind!r}")
        if self.kind == "files" and "{split}" not in self.url:
            raise ValueError(f"a 'files' mirror needs a {{split}} field in its URL: {self.url}")


# Live copies of WikiText-2 v1, tried in order. The original address
# (s3.amazonaws.com/research.metamind.io/wikitext/wikitext-2-v1.zip) answers 403 since
# 2024 and is deliberately absent. Hugging Face's Salesforce/wikitext now holds parquet
# only, which cannot be read without pyarrow, so it is not listed either.
MIRRORS: tuple[Mirror, ...] = (
    # Stephen Merity (the dataset's author) re-hosts the original zips here; it is the
    # address the WikiText page, pytorch/examples and most fixes for the dead S3 link
    # point to. Rejects Python's default User-Agent (see USER_AGENT).
    Mirror("https://wikitext.smerity.com/wikitext-2-v1.zip", "zip"),
    # pytorch/examples ships the three tokenised files, renamed {split}.txt, in its
    # word_language_model example. Served raw by GitHub; the checksums decide whether
    # they are the official bytes, so a divergent copy is rejected, never used.
    Mirror("https://raw.githubusercontent.com/pytorch/examples/main/"
           "word_language_model/data/wikitext-2/{split}.txt", "files"),
)

# WikiText-103 v1: the author's re-hosted zip (the S3 original answers 403, as for
# WikiText-2). Only whole-zip mirrors fit: the zip's SHA-256 is the one published sum.
MIRRORS_103: tuple[Mirror, ...] = (
    Mirror(f"https://wikitext.smerity.com/{WIKITEXT103_ZIP}", "zip"),
)


# --------------------------------------------------------------------------- checksums


def parse_sums(text: str) -> dict[str, str]:
    """Parse ``sha256sum`` output naming ``wiki.{split}.tokens`` into ``{split: hex}``."""
    sums: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        digest, _, name = line.strip().partition(" ")
        name = name.strip().lstrip("*")  # "*" marks binary mode in sha256sum output
        for split in SPLITS:
            if name == f"wiki.{split}.tokens":
                sums[split] = digest.lower()
    missing = [s for s in SPLITS if s not in sums]
    if missing:
        raise ValueError(f"checksum list lacks wiki.{{{','.join(missing)}}}.tokens")
    return sums


def load_sums() -> dict[str, str]:
    """The official WikiText-2 v1 SHA-256 sums, ``{split: hex}``, from the package data."""
    return parse_sums(resources.files("lstmlm").joinpath(SUMS_FILE).read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- HTTP


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
            while block := response.read(_CHUNK):
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


# --------------------------------------------------------------------------- verification


def _hash_mismatch(what: str, got: str, expected: str,
                   name: str = "WikiText-2") -> DownloadError:
    return DownloadError(f"{what}: sha256 {got} does not match the expected {expected}; "
                         f"the file is damaged or is not {name} v1 (tokenised)")


def _verify_archive(path: Path, sha256: str, size: int | None, what: str) -> None:
    """Refuse a WikiText-103 zip whose size (checked first: cheap) or SHA-256 differs."""
    got_size = path.stat().st_size
    if size is not None and got_size != size:
        raise DownloadError(f"{what}: {got_size:,} bytes, not the {size:,} of "
                            f"{WIKITEXT103_ZIP}; the file is damaged or is not WikiText-103 v1")
    got = sha256_file(path)
    if got != sha256:
        raise _hash_mismatch(what, got, sha256, "WikiText-103")


def _extract_verified(archive: Path, staging: Path, sums: Mapping[str, str] | None,
                      label: str) -> dict[str, Path]:
    """Extract ``wiki.{split}.tokens`` from a zip into ``staging``; check each against
    ``sums`` when given (else the archive was verified whole, and the CRC-32 suffices)."""
    try:
        with zipfile.ZipFile(archive) as zf:
            by_name = {Path(info.filename).name: info for info in zf.infolist()
                       if not info.is_dir()}
            staged: dict[str, Path] = {}
            for split in SPLITS:
                member = by_name.get(f"wiki.{split}.tokens")
                if member is None:
                    raise DownloadError(f"{label}: the archive has no wiki.{split}.tokens "
                                        f"(members: {', '.join(sorted(by_name)) or 'none'})")
                target = staging / f"{split}.txt"
                # ZipFile.open checks the member's CRC-32 as it reads, raising BadZipFile.
                with zf.open(member) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, _CHUNK)
                got = sha256_file(target) if sums is not None else None
                if sums is not None and got != sums[split]:
                    raise _hash_mismatch(f"{label}: wiki.{split}.tokens", got, sums[split])
                staged[split] = target
            return staged
    except (zipfile.BadZipFile, EOFError, zipfile.LargeZipFile) as err:
        raise DownloadError(f"{label}: not a valid zip archive (truncated or corrupt "
                            f"download): {err}") from None


def _check_utf8(path: Path, what: str) -> None:
    """Raise DownloadError unless ``path`` is non-empty UTF-8 text (read in chunks)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    size = 0
    try:
        with open(path, "rb") as handle:
            while block := handle.read(1 << 20):
                size += len(block)
                decoder.decode(block)
            decoder.decode(b"", final=True)
    except UnicodeDecodeError as err:
        raise DownloadError(f"{what}: not UTF-8 text (near byte "
                            f"{size - len(block) + err.start}: {err.reason})") from None
    if size == 0:
        raise DownloadError(f"{what}: the file is empty")


def _find_split(directory: Path, split: str, patterns: tuple[str, ...]) -> Path | None:
    for pattern in patterns:
        candidate = directory / pattern.format(split=split)
        if candidate.is_file():
            return candidate
    return None


def _install(sources: Mapping[str, Path], out_dir: Path, sums: Mapping[str, str] | None,
             origins: Mapping[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """Copy verified (or own-corpus) files into ``out_dir`` atomically, as ``{split}.txt``.

    The copy is hashed inside ``atomic_path`` before its rename, so even a source that
    changes between verification and copy cannot leave a wrong file in ``out_dir``.
    """
    files: dict[str, dict[str, Any]] = {}
    for split in SPLITS:
        dest = out_dir / f"{split}.txt"
        with atomic_path(dest) as tmp:
            shutil.copyfile(sources[split], tmp)
            digest = sha256_file(tmp)
            if sums is not None and digest != sums[split]:
                raise _hash_mismatch(str(sources[split]), digest, sums[split])
            size = tmp.stat().st_size
        origin = origins[split] if origins else str(sources[split])
        files[split] = {"path": str(dest), "bytes": size, "sha256": digest, "from": origin}
    return files


# --------------------------------------------------------------------------- sources


def _from_wikitext_dir(directory: Path, sums: Mapping[str, str]) -> dict[str, Path]:
    """Verify the three files in a local WikiText-2 copy; return them by split."""
    if not directory.is_dir():
        raise DownloadError(f"{WIKITEXT_DIR_ENV}={directory}: not a directory")
    found: dict[str, Path] = {}
    for split in SPLITS:
        path = _find_split(directory, split, WIKITEXT_NAMES)
        if path is None:
            raise DownloadError(
                f"{WIKITEXT_DIR_ENV}={directory}: missing {directory / f'wiki.{split}.tokens'} "
                f"(expected sha256 {sums[split]})")
        got = sha256_file(path)
        if got != sums[split]:
            raise _hash_mismatch(f"{WIKITEXT_DIR_ENV}: {path}", got, sums[split])
        found[split] = path
    return found


def _from_mirror(mirror: Mirror, staging: Path, sums: Mapping[str, str], *,
                 timeout: float, retries: int, backoff: float,
                 progress: bool) -> dict[str, Path]:
    """Download one mirror into ``staging`` and verify every split; raise DownloadError."""
    opts = dict(timeout=timeout, retries=retries, backoff=backoff, progress=progress)
    if mirror.kind == "zip":
        archive = staging / "download.zip"
        fetch(mirror.url, archive, **opts)
        try:
            return _extract_verified(archive, staging, sums, mirror.url)
        finally:
            archive.unlink(missing_ok=True)
    staged: dict[str, Path] = {}
    for split in SPLITS:
        url = mirror.url.format(split=split)
        target = staging / f"{split}.txt"
        fetch(url, target, **opts)
        got = sha256_file(target)
        if got != sums[split]:
            raise _hash_mismatch(url, got, sums[split])
        staged[split] = target
    return staged


def _origins(mirror: Mirror) -> dict[str, str]:
    """Where each split came from, for the summary (the staging paths are gone by then)."""
    if mirror.kind == "zip":
        return {s: f"{mirror.url} [wiki.{s}.tokens]" for s in SPLITS}
    return {s: mirror.url.format(split=s) for s in SPLITS}


def _all_failed_message(corpus: str, failures: list[str]) -> str:
    tried = "\n".join(f"  - {reason}" for reason in failures) or "  (no mirrors configured)"
    if corpus == WIKITEXT103:
        name, env, holding = "WikiText-103", WIKITEXT103_DIR_ENV, (
            f"{WIKITEXT103_ZIP} (checked against its SHA-256) or the extracted "
            "wiki.train.tokens, wiki.valid.tokens and wiki.test.tokens")
    else:
        name, env, holding = "WikiText-2", WIKITEXT_DIR_ENV, (
            "wiki.train.tokens, wiki.valid.tokens and wiki.test.tokens "
            "(checked against lstmlm/wikitext-2.sha256)")
    return (
        f"could not obtain {name} from any mirror:\n"
        f"{tried}\n"
        f"To use a local copy, point the stage at a directory holding {holding}:\n"
        f"  {env}=/path/to/{corpus} dvc repro\n"
        "or train on your own text files (copied without a checksum check) by setting in "
        "params.yaml:\n"
        "  download:\n"
        "    corpus: /path/to/dir   # holding train/valid/test as .txt or .tokens"
    )


def _from_wikitext103_dir(directory: Path, staging: Path, sha256: str,
                          size: int | None) -> tuple[dict[str, Path], bool]:
    """The splits of a local WikiText-103 copy, and whether they could be verified.

    The official zip is verified against its SHA-256 and extracted into ``staging``.
    Extracted files are accepted too, but no per-file sums are published for them: the
    tokenise stage's check of the official counts is what vouches for them then.
    """
    label = f"{WIKITEXT103_DIR_ENV}={directory}"
    if not directory.is_dir():
        raise DownloadError(f"{label}: not a directory")
    archive = directory / WIKITEXT103_ZIP
    if archive.is_file():
        _verify_archive(archive, sha256, size, f"{WIKITEXT103_DIR_ENV}: {archive}")
        return _extract_verified(archive, staging, None, str(archive)), True
    found = {split: _find_split(directory, split, WIKITEXT_NAMES) for split in SPLITS}
    missing = [f"wiki.{split}.tokens" for split, path in found.items() if path is None]
    if missing:
        raise DownloadError(f"{label}: holds neither {WIKITEXT103_ZIP} nor the extracted "
                            f"files (missing {', '.join(missing)})")
    for path in found.values():
        _check_utf8(path, f"{WIKITEXT103_DIR_ENV}: {path}")
    return found, False


def _wikitext103_from_mirror(mirror: Mirror, staging: Path, partial_dir: Path, sha256: str,
                             size: int | None, **opts: Any) -> dict[str, Path]:
    """Download the zip into ``partial_dir`` (continuing a partial one left there by an
    interrupted run), verify it, and extract the splits into ``staging``."""
    if mirror.kind != "zip":
        raise ValueError(f"a WikiText-103 mirror must serve {WIKITEXT103_ZIP}: {mirror}")
    archive = partial_dir / f"{WIKITEXT103_ZIP}.part"
    fetch(mirror.url, archive, resume=True, **opts)
    try:
        _verify_archive(archive, sha256, size, mirror.url)
    except DownloadError:
        archive.unlink()  # never resume a file that failed its check: start afresh next time
        raise
    return _extract_verified(archive, staging, None, mirror.url)


def _own_corpus(directory: Path) -> dict[str, Path]:
    """Locate and check the train/valid/test files of a user's own corpus directory."""
    if not directory.is_dir():
        raise DownloadError(
            f"download.corpus: {str(directory)!r} is not {WIKITEXT!r}, {WIKITEXT103!r} or an "
            "existing directory of train/valid/test text files")
    found: dict[str, Path] = {}
    missing: list[str] = []
    for split in SPLITS:
        path = _find_split(directory, split, SPLIT_NAMES)
        if path is None:
            names = " or ".join(p.format(split=split) for p in SPLIT_NAMES)
            missing.append(f"  {split}: looked for {names}")
        else:
            found[split] = path
    if missing:
        present = sorted(p.name for p in directory.iterdir())
        listing = ", ".join(present[:20]) + (" ..." if len(present) > 20 else "")
        raise DownloadError(
            f"download.corpus: {directory} lacks "
            f"{len(missing)} of the {len(SPLITS)} splits:\n" + "\n".join(missing) + "\n"
            + (f"  the directory holds: {listing}" if present else "  the directory is empty"))
    for split, path in found.items():
        _check_utf8(path, f"download.corpus: {path}")
    return found


# --------------------------------------------------------------------------- entry point


def prepare_corpus(corpus: str, out_dir: str | Path, *,
                   environ: Mapping[str, str] = os.environ,
                   mirrors: tuple[Mirror, ...] | None = None,
                   sums: Mapping[str, str] | None = None,
                   archive_sha256: str = WIKITEXT103_SHA256,
                   archive_bytes: int | None = WIKITEXT103_BYTES,
                   resume_dir: str | Path | None = None,
                   timeout: float = 60.0, retries: int = 3, backoff: float = 1.0,
                   progress: bool = True) -> dict[str, Any]:
    """Write ``train.txt``, ``valid.txt`` and ``test.txt`` into ``out_dir``.

    ``corpus == "wikitext-2"``: read the directory named by ``$WIKITEXT_DIR`` when set
    (any bad or missing file is an error, not a fallback), else try ``mirrors`` (default
    :data:`MIRRORS`) in order; every split is checked against ``sums`` (default: the
    official sums from ``lstmlm/wikitext-2.sha256``) before anything is written.

    ``corpus == "wikitext-103"``: likewise with ``$WIKITEXT103_DIR`` (holding the zip, or
    the extracted files, which cannot be checksummed) and ``mirrors`` (default
    :data:`MIRRORS_103`); the zip must have ``archive_bytes`` bytes (None: any) and the
    SHA-256 ``archive_sha256``. It is downloaded into ``resume_dir`` when given, where
    an interrupted download stays and is continued by the next call; without it, into a
    temporary directory.

    Any other value is a directory of the user's own ``{split}.txt`` / ``{split}.tokens``
    / ``wiki.{split}.tokens`` files, copied as they are (UTF-8 checked, no checksum).

    ``timeout`` (seconds) bounds every connect and read, ``retries`` and ``backoff``
    control retries of transient failures (see :func:`fetch`); ``progress`` shows a
    tqdm bar on stderr.

    Returns ``{"corpus", "source", "verified", "files": {split: {"path", "bytes",
    "sha256", "from"}}}``. Raises :class:`DownloadError` with a readable message.
    """
    out_dir = Path(out_dir)
    http = dict(timeout=timeout, retries=retries, backoff=backoff, progress=progress)
    if corpus == WIKITEXT:
        return _prepare_wikitext2(out_dir, environ, MIRRORS if mirrors is None else mirrors,
                                  sums, http)
    if corpus == WIKITEXT103:
        return _prepare_wikitext103(out_dir, environ,
                                    MIRRORS_103 if mirrors is None else mirrors,
                                    (archive_sha256, archive_bytes), resume_dir, http)
    sources = _own_corpus(Path(corpus).expanduser())
    files = _install(sources, out_dir, None)
    return {"corpus": corpus, "source": str(Path(corpus).expanduser()),
            "verified": False, "files": files}


def _prepare_wikitext2(out_dir: Path, environ: Mapping[str, str], mirrors: tuple[Mirror, ...],
                       sums: Mapping[str, str] | None, http: dict[str, Any]) -> dict[str, Any]:
    sums = dict(load_sums() if sums is None else sums)
    if any(s not in sums for s in SPLITS):
        raise ValueError(f"sums must give a sha256 for each of {SPLITS}, got {sorted(sums)}")

    local = environ.get(WIKITEXT_DIR_ENV, "")
    if local:
        directory = Path(local).expanduser()
        files = _install(_from_wikitext_dir(directory, sums), out_dir, sums)
        return {"corpus": WIKITEXT, "source": f"{WIKITEXT_DIR_ENV}={directory}",
                "verified": True, "files": files}

    failures: list[str] = []
    for mirror in mirrors:
        # Staged outside out_dir, so a failed or half-finished download never appears
        # there; the directory and everything in it is removed on the way out.
        with tempfile.TemporaryDirectory(prefix="lstmlm-download-") as tmp:
            try:
                staged = _from_mirror(mirror, Path(tmp), sums, **http)
            except DownloadError as err:
                log.warning("mirror failed: %s", err)
                failures.append(str(err))
                continue
            files = _install(staged, out_dir, sums, _origins(mirror))
        return {"corpus": WIKITEXT, "source": mirror.url, "verified": True, "files": files}
    raise DownloadError(_all_failed_message(WIKITEXT, failures))


def _prepare_wikitext103(out_dir: Path, environ: Mapping[str, str],
                         mirrors: tuple[Mirror, ...], archive: tuple[str, int | None],
                         resume_dir: str | Path | None, http: dict[str, Any]) -> dict[str, Any]:
    # The zip is kept in resume_dir (when given) until it is verified, so an interrupted
    # run resumes; the 540 MB it extracts to are staged there too rather than in /tmp,
    # which may be small or in memory. Either way outside out_dir, as for WikiText-2.
    base = Path(resume_dir) if resume_dir is not None else None
    if base is not None:
        base.mkdir(parents=True, exist_ok=True)
    local = environ.get(WIKITEXT103_DIR_ENV, "")
    if local:
        directory = Path(local).expanduser()
        with tempfile.TemporaryDirectory(prefix="lstmlm-download-", dir=base) as tmp:
            staged, verified = _from_wikitext103_dir(directory, Path(tmp), *archive)
            files = _install(staged, out_dir, None)
        return {"corpus": WIKITEXT103, "source": f"{WIKITEXT103_DIR_ENV}={directory}",
                "verified": verified, "files": files}

    failures: list[str] = []
    for mirror in mirrors:
        with tempfile.TemporaryDirectory(prefix="lstmlm-download-", dir=base) as tmp:
            partial_dir = base if base is not None else Path(tmp)
            try:
                staged = _wikitext103_from_mirror(mirror, Path(tmp), partial_dir, *archive,
                                                  **http)
            except DownloadError as err:
                log.warning("mirror failed: %s", err)
                failures.append(str(err))
                continue
            files = _install(staged, out_dir, None, _origins(mirror))
            (partial_dir / f"{WIKITEXT103_ZIP}.part").unlink(missing_ok=True)
        return {"corpus": WIKITEXT103, "source": mirror.url, "verified": True, "files": files}
    raise DownloadError(_all_failed_message(WIKITEXT103, failures))
