"""Fetch the raw corpus: WikiText-2 (verified by SHA-256) or a user's own text files.

The output contract is one directory holding exactly ``train.txt``, ``valid.txt`` and
``test.txt`` (UTF-8). For WikiText-2 these are byte-identical to ``wiki.{split}.tokens``
of the official ``wikitext-2-v1.zip`` and are checked against ``wikitext-2.sha256``,
shipped beside this module.

Nothing unverified ever lands in the output directory: downloads go to a temporary
directory elsewhere, every split is verified there, and only then are the files copied
in with :func:`lstmlm.files.atomic_path` (the copy itself is hashed again before the
rename).

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

# A descriptive User-Agent: wikitext.smerity.com answers 403 to Python's default
# "Python-urllib/3.x", so the default must never be sent.
USER_AGENT = f"lstmlm/{__version__} (WikiText-2 downloader; +https://wikitext.smerity.com)"

# Names accepted for one split in a user's directory, in order of preference.
SPLIT_NAMES = ("{split}.txt", "{split}.tokens", "wiki.{split}.tokens")
# In WIKITEXT_DIR the official names come first; the others are accepted too because the
# checksum, not the name, decides whether the file is WikiText-2.
WIKITEXT_NAMES = ("wiki.{split}.tokens", "{split}.txt", "{split}.tokens")

_CHUNK = 1 << 16


@dataclass(frozen=True)
class DownloadConfig:
    """The ``download`` section of params.yaml."""

    corpus: str = spec("wikitext-2", doc="'wikitext-2', or a directory holding "
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


def _fetch_once(url: str, dest: Path, *, timeout: float, progress: bool) -> int:
    """One GET of ``url`` into ``dest``; returns the byte count or raises _AttemptFailed."""
    request = urllib.request.Request(url, headers={
        "User-Agent": USER_AGENT,
        # A compressed body would make Content-Length disagree with what we store.
        "Accept-Encoding": "identity",
    })
    try:
        # ``timeout`` is the socket timeout: it bounds the connect and every single read,
        # so a server that accepts and then stalls fails after ``timeout`` seconds.
        with urllib.request.urlopen(request, timeout=timeout) as response:
            length_header = response.headers.get("Content-Length")
            try:
                expected = int(length_header) if length_header is not None else None
            except ValueError:
                expected = None
            bar = None
            if progress and expected is not None:
                from tqdm import tqdm  # imported here: only a real download needs it

                bar = tqdm(total=expected, unit="B", unit_scale=True, unit_divisor=1024,
                           desc=url.rsplit("/", 1)[-1], file=sys.stderr, leave=False)
            received = 0
            try:
                with open(dest, "wb") as out:
                    while block := response.read(_CHUNK):
                        out.write(block)
                        received += len(block)
                        if bar is not None:
                            bar.update(len(block))
            finally:
                if bar is not None:
                    bar.close()
    except urllib.error.HTTPError as err:
        err.close()
        raise _classify(err, timeout) from None
    except (OSError, http.client.HTTPException, ValueError) as err:
        raise _classify(err, timeout) from None
    # http.client returns b"" rather than raising when a server closes a
    # Content-Length response early, so the length must be checked here.
    if expected is not None and received != expected:
        raise _AttemptFailed(f"truncated download: got {received} of {expected} bytes", True)
    return received


def fetch(url: str, dest: str | Path, *, timeout: float = 60.0, retries: int = 3,
          backoff: float = 1.0, progress: bool = True) -> int:
    """Download ``url`` to ``dest`` with retries; return the number of bytes written.

    A request is retried ``retries`` more times after a timeout, connection error,
    truncated body or HTTP 5xx/408/429, sleeping ``backoff * 2**attempt`` seconds
    between attempts. Other HTTP 4xx answers are final for this URL. Raises
    :class:`DownloadError` naming the URL and the last reason.
    """
    dest = Path(dest)
    attempts = retries + 1
    for attempt in range(attempts):
        try:
            return _fetch_once(url, dest, timeout=timeout, progress=progress)
        except _AttemptFailed as failed:
            if not failed.retryable:
                raise DownloadError(f"{url}: {failed.reason}") from None
            if attempt + 1 == attempts:
                tries = "1 attempt" if attempts == 1 else f"{attempts} attempts"
                raise DownloadError(f"{url}: {failed.reason} ({tries})") from None
            delay = backoff * 2 ** attempt
            log.warning("%s: %s; retrying in %.3g s", url, failed.reason, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------- verification


def _hash_mismatch(what: str, got: str, expected: str) -> DownloadError:
    return DownloadError(f"{what}: sha256 {got} does not match the expected {expected}; "
                         "the file is damaged or is not WikiText-2 v1 (tokenised)")


def _extract_verified(archive: Path, staging: Path, sums: Mapping[str, str],
                      label: str) -> dict[str, Path]:
    """Extract and verify ``wiki.{split}.tokens`` from a downloaded zip into ``staging``."""
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
                got = sha256_file(target)
                if got != sums[split]:
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


def _all_failed_message(failures: list[str]) -> str:
    tried = "\n".join(f"  - {reason}" for reason in failures) or "  (no mirrors configured)"
    return (
        "could not obtain WikiText-2 from any mirror:\n"
        f"{tried}\n"
        "To use a local copy, point the stage at a directory holding wiki.train.tokens, "
        "wiki.valid.tokens and wiki.test.tokens (checked against lstmlm/wikitext-2.sha256):\n"
        f"  {WIKITEXT_DIR_ENV}=/path/to/wikitext-2 dvc repro\n"
        "or train on your own text files (copied without a checksum check) by setting in "
        "params.yaml:\n"
        "  download:\n"
        "    corpus: /path/to/dir   # holding train/valid/test as .txt or .tokens"
    )


def _own_corpus(directory: Path) -> dict[str, Path]:
    """Locate and check the train/valid/test files of a user's own corpus directory."""
    if not directory.is_dir():
        raise DownloadError(
            f"download.corpus: {str(directory)!r} is neither {WIKITEXT!r} nor an existing "
            "directory of train/valid/test text files")
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
                   mirrors: tuple[Mirror, ...] = MIRRORS,
                   sums: Mapping[str, str] | None = None,
                   timeout: float = 60.0, retries: int = 3, backoff: float = 1.0,
                   progress: bool = True) -> dict[str, Any]:
    """Write ``train.txt``, ``valid.txt`` and ``test.txt`` into ``out_dir``.

    ``corpus == "wikitext-2"``: read the directory named by ``$WIKITEXT_DIR`` when set
    (any bad or missing file is an error, not a fallback), else try ``mirrors`` in
    order; every split is checked against ``sums`` (default: the official sums from
    ``lstmlm/wikitext-2.sha256``) before anything is written. Any other value is a
    directory of the user's own ``{split}.txt`` / ``{split}.tokens`` /
    ``wiki.{split}.tokens`` files, copied as they are (UTF-8 checked, no checksum).

    ``timeout`` (seconds) bounds every connect and read, ``retries`` and ``backoff``
    control retries of transient failures (see :func:`fetch`); ``progress`` shows a
    tqdm bar on stderr.

    Returns ``{"corpus", "source", "verified", "files": {split: {"path", "bytes",
    "sha256", "from"}}}``. Raises :class:`DownloadError` with a readable message.
    """
    out_dir = Path(out_dir)
    if corpus != WIKITEXT:
        sources = _own_corpus(Path(corpus).expanduser())
        files = _install(sources, out_dir, None)
        return {"corpus": corpus, "source": str(Path(corpus).expanduser()),
                "verified": False, "files": files}

    sums = dict(load_sums() if sums is None else sums)
    if any(s not in sums for s in SPLITS):
        raise ValueError(f"sums must give a sha256 for each of {SPLITS}, got {sorted(sums)}")

    local = environ.get(WIKITEXT_DIR_ENV, "")
    if local:
        directory = Path(local).expanduser()
        files = _install(_from_wikitext_dir(directory, sums), out_dir, sums)
        return {"corpus": corpus, "source": f"{WIKITEXT_DIR_ENV}={directory}",
                "verified": True, "files": files}

    failures: list[str] = []
    for mirror in mirrors:
        # Staged outside out_dir, so a failed or half-finished download never appears
        # there; the directory and everything in it is removed on the way out.
        with tempfile.TemporaryDirectory(prefix="lstmlm-download-") as tmp:
            try:
                staged = _from_mirror(mirror, Path(tmp), sums, timeout=timeout,
                                      retries=retries, backoff=backoff, progress=progress)
            except DownloadError as err:
                log.warning("mirror failed: %s", err)
                failures.append(str(err))
                continue
            files = _install(staged, out_dir, sums, _origins(mirror))
        return {"corpus": corpus, "source": mirror.url, "verified": True, "files": files}
    raise DownloadError(_all_failed_message(failures))
