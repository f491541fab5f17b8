"""WikiText-2 and WikiText-103 v1 from a local copy or a mirror, verified (the facts they
are checked against: lstmlm.data.wikitext).

WikiText-2's three files must be byte-identical to ``wiki.{split}.tokens`` of the official
``wikitext-2-v1.zip``, checked against its published sums. WikiText-103's are the same
members of ``wikitext-103-v1.zip``, whose own SHA-256 is checked (no per-file sums are
published); that 190 MB download is kept in a resume directory, when one is given, so that
an interrupted one is continued, not started again.

Each corpus comes from a local copy named by an environment variable when it is set
($WIKITEXT_DIR, $WIKITEXT103_DIR; a bad copy is an error, not a fallback), else from the
first mirror that delivers a verified copy. Everything is staged in a temporary directory
outside the output directory (lstmlm.data.staging): :func:`wikitext2` and
:func:`wikitext103` are context managers that yield the staged files while they exist.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Mapping

from lstmlm.core.files import sha256_file
from lstmlm.data.fetch import CHUNK, DownloadError, FetchOptions
from lstmlm.data.layout import SPLITS, find_split, split_path
from lstmlm.data.staging import Staged
from lstmlm.data.textfile import check_utf8
from lstmlm.data.wikitext import (
    WIKITEXT,
    WIKITEXT103,
    WIKITEXT103_DIR_ENV,
    WIKITEXT103_ZIP,
    WIKITEXT_DIR_ENV,
    load_sums,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Mirror:
    """One place to fetch WikiText from.

    ``kind="zip"``: ``url`` is a copy of the official zip; the members
    ``*/wiki.{split}.tokens`` are used. ``kind="files"``: ``url`` is a template with a
    ``{split}`` field naming one raw file per split (WikiText-2 only).
    """

    url: str
    kind: str = "zip"

    def __post_init__(self) -> None:
        if self.kind not in ("zip", "files"):
            raise ValueError(f"Mirror.kind must be 'zip' or 'files', not {self.kind!r}")
        if self.kind == "files" and "{split}" not in self.url:
            raise ValueError(f"a 'files' mirror needs a {{split}} field in its URL: {self.url}")

    def origins(self) -> dict[str, str]:
        """Where each split came from, for the summary (the staging paths are gone by then)."""
        if self.kind == "zip":
            return {s: f"{self.url} [wiki.{s}.tokens]" for s in SPLITS}
        return {s: self.url.format(split=s) for s in SPLITS}


# Live copies of WikiText-2 v1, tried in order. The original address
# (s3.amazonaws.com/research.metamind.io/wikitext/wikitext-2-v1.zip) answers 403 since
# 2024 and is deliberately absent. Hugging Face's Salesforce/wikitext now holds parquet
# only, which cannot be read without pyarrow, so it is not listed either.
MIRRORS: tuple[Mirror, ...] = (
    # Stephen Merity (the dataset's author) re-hosts the original zips here; it is the
    # address the WikiText page, pytorch/examples and most fixes for the dead S3 link
    # point to. Rejects Python's default User-Agent (see lstmlm.data.fetch.USER_AGENT).
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


def hash_mismatch(what: str, got: str, expected: str,
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
        raise hash_mismatch(what, got, sha256, "WikiText-103")


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
                target = split_path(staging, split)
                # ZipFile.open checks the member's CRC-32 as it reads, raising BadZipFile.
                with zf.open(member) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, CHUNK)
                got = sha256_file(target) if sums is not None else None
                if sums is not None and got != sums[split]:
                    raise hash_mismatch(f"{label}: wiki.{split}.tokens", got, sums[split])
                staged[split] = target
            return staged
    except (zipfile.BadZipFile, EOFError, zipfile.LargeZipFile) as err:
        raise DownloadError(f"{label}: not a valid zip archive (truncated or corrupt "
                            f"download): {err}") from None


# --------------------------------------------------------------------------- mirrors


@contextmanager
def _first_good_mirror(corpus: str, mirrors: tuple[Mirror, ...],
                       stage_one: Callable[[Mirror, Path], Staged],
                       base: Path | None = None) -> Iterator[Staged]:
    """Yield what ``stage_one(mirror, staging)`` staged for the first mirror that delivers
    a verified copy, while its staging directory exists; raise DownloadError listing every
    mirror's failure when none does.

    Each mirror gets a fresh temporary directory (inside ``base`` when given), outside the
    output directory: a failed or half-finished download never appears there, and the
    directory and everything in it is removed on the way out.
    """
    failures: list[str] = []
    for mirror in mirrors:
        with tempfile.TemporaryDirectory(prefix="lstmlm-download-", dir=base) as tmp:
            try:
                staged = stage_one(mirror, Path(tmp))
            except DownloadError as err:
                log.warning("mirror failed: %s", err)
                failures.append(str(err))
                continue
            yield staged  # outside the try: a failure to install is not the mirror's
            return
    raise DownloadError(_all_failed_message(corpus, failures))


def _all_failed_message(corpus: str, failures: list[str]) -> str:
    tried = "\n".join(f"  - {reason}" for reason in failures) or "  (no mirrors configured)"
    if corpus == WIKITEXT103:
        name, env, holding = "WikiText-103", WIKITEXT103_DIR_ENV, (
            f"{WIKITEXT103_ZIP} (checked against its SHA-256) or the extracted "
            "wiki.train.tokens, wiki.valid.tokens and wiki.test.tokens")
    else:
        name, env, holding = "WikiText-2", WIKITEXT_DIR_ENV, (
            "wiki.train.tokens, wiki.valid.tokens and wiki.test.tokens "
            "(checked against lstmlm/data/wikitext-2.sha256)")
    return (
        f"could not obtain {name} from any mirror:\n"
        f"{tried}\n"
        f"To use a local copy, point the stage at a directory holding {holding}:\n"
        f"  {env}=/path/to/{corpus} dvc repro\n"
        "or train on your own text (copied without a checksum check) by setting in "
        "params.yaml:\n"
        "  download:\n"
        "    corpus: /path/to/dir   # .txt files of prose, or train/valid/test files; "
        "or one text file"
    )


# --------------------------------------------------------------------------- WikiText-2


def _wikitext2_mirror(mirror: Mirror, staging: Path, sums: Mapping[str, str],
                      options: FetchOptions) -> Staged:
    """Download one mirror into ``staging`` and verify every split; raise DownloadError."""
    if mirror.kind == "zip":
        archive = staging / "download.zip"
        options.fetch(mirror.url, archive)
        try:
            paths = _extract_verified(archive, staging, sums, mirror.url)
        finally:
            archive.unlink(missing_ok=True)
    else:
        paths = {}
        for split in SPLITS:
            url = mirror.url.format(split=split)
            paths[split] = split_path(staging, split)
            options.fetch(url, paths[split])
            got = sha256_file(paths[split])
            if got != sums[split]:
                raise hash_mismatch(url, got, sums[split])
    return Staged(paths, mirror.url, True, sums, mirror.origins())


def _wikitext2_dir(directory: Path, sums: Mapping[str, str]) -> Staged:
    """Verify the three files in a local WikiText-2 copy."""
    if not directory.is_dir():
        raise DownloadError(f"{WIKITEXT_DIR_ENV}={directory}: not a directory")
    found: dict[str, Path] = {}
    for split in SPLITS:
        path = find_split(directory, split)
        if path is None:
            raise DownloadError(
                f"{WIKITEXT_DIR_ENV}={directory}: missing {directory / f'wiki.{split}.tokens'} "
                f"(expected sha256 {sums[split]})")
        got = sha256_file(path)
        if got != sums[split]:
            raise hash_mismatch(f"{WIKITEXT_DIR_ENV}: {path}", got, sums[split])
        found[split] = path
    return Staged(found, f"{WIKITEXT_DIR_ENV}={directory}", True, sums)


@contextmanager
def wikitext2(environ: Mapping[str, str], mirrors: tuple[Mirror, ...],
              sums: Mapping[str, str] | None, options: FetchOptions) -> Iterator[Staged]:
    """WikiText-2 from ``$WIKITEXT_DIR`` when set, else from the first good mirror; every
    split checked against ``sums`` (default: the official ones), here and once copied."""
    sums = dict(load_sums() if sums is None else sums)
    if any(s not in sums for s in SPLITS):
        raise ValueError(f"sums must give a sha256 for each of {SPLITS}, got {sorted(sums)}")
    local = environ.get(WIKITEXT_DIR_ENV, "")
    if local:
        yield _wikitext2_dir(Path(local).expanduser(), sums)
        return
    with _first_good_mirror(WIKITEXT, mirrors, lambda mirror, staging: _wikitext2_mirror(
            mirror, staging, sums, options)) as staged:
        yield staged


# --------------------------------------------------------------------------- WikiText-103


def _wikitext103_mirror(mirror: Mirror, staging: Path, partial_dir: Path,
                        archive: tuple[str, int | None], options: FetchOptions) -> Staged:
    """Download the zip into ``partial_dir`` (continuing a partial one left there by an
    interrupted run), verify it, and extract the splits into ``staging``. The zip stays
    until the splits are installed (``Staged.leftover``)."""
    if mirror.kind != "zip":
        raise ValueError(f"a WikiText-103 mirror must serve {WIKITEXT103_ZIP}: {mirror}")
    path = partial_dir / f"{WIKITEXT103_ZIP}.part"
    options.fetch(mirror.url, path, resume=True)
    try:
        _verify_archive(path, *archive, mirror.url)
    except DownloadError:
        path.unlink()  # never resume a file that failed its check: start afresh next time
        raise
    paths = _extract_verified(path, staging, None, mirror.url)
    return Staged(paths, mirror.url, True, origins=mirror.origins(), leftover=path)


def _wikitext103_dir(directory: Path, staging: Path, archive: tuple[str, int | None]) -> Staged:
    """The splits of a local WikiText-103 copy.

    The official zip is verified against its SHA-256 and extracted into ``staging``.
    Extracted files are accepted too, but no per-file sums are published for them: the
    tokenise stage's check of the official counts is what vouches for them then
    (``verified`` False).
    """
    label = f"{WIKITEXT103_DIR_ENV}={directory}"
    if not directory.is_dir():
        raise DownloadError(f"{label}: not a directory")
    zipped = directory / WIKITEXT103_ZIP
    if zipped.is_file():
        _verify_archive(zipped, *archive, f"{WIKITEXT103_DIR_ENV}: {zipped}")
        return Staged(_extract_verified(zipped, staging, None, str(zipped)), label, True)
    found = {split: find_split(directory, split) for split in SPLITS}
    missing = [f"wiki.{split}.tokens" for split, path in found.items() if path is None]
    if missing:
        raise DownloadError(f"{label}: holds neither {WIKITEXT103_ZIP} nor the extracted "
                            f"files (missing {', '.join(missing)})")
    for path in found.values():
        check_utf8(path, f"{WIKITEXT103_DIR_ENV}: {path}", DownloadError)
    return Staged(found, label, False)


@contextmanager
def wikitext103(environ: Mapping[str, str], mirrors: tuple[Mirror, ...],
                archive: tuple[str, int | None], resume_dir: str | Path | None,
                options: FetchOptions) -> Iterator[Staged]:
    """WikiText-103 from ``$WIKITEXT103_DIR`` when set, else from the first good mirror;
    ``archive`` is the zip's (sha256, size in bytes or None: any).

    The zip is downloaded into ``resume_dir`` when given, where an interrupted download
    stays and is continued by the next call; the 540 MB it extracts to are staged there
    too rather than in /tmp, which may be small or in memory.
    """
    base = Path(resume_dir) if resume_dir is not None else None
    if base is not None:
        base.mkdir(parents=True, exist_ok=True)
    local = environ.get(WIKITEXT103_DIR_ENV, "")
    if local:
        with tempfile.TemporaryDirectory(prefix="lstmlm-download-", dir=base) as tmp:
            yield _wikitext103_dir(Path(local).expanduser(), Path(tmp), archive)
        return
    with _first_good_mirror(WIKITEXT103, mirrors, lambda mirror, staging: _wikitext103_mirror(
            mirror, staging, base or staging, archive, options), base) as staged:
        yield staged
