"""Get the raw corpus: WikiText-2 or WikiText-103 (verified by SHA-256), or your own text.

The output contract is one directory holding exactly ``train.txt``, ``valid.txt`` and
``test.txt`` (UTF-8) and, when own prose was split here, ``split.json``: how it was split
(lstmlm.data.owntext), which the tokenise stage reads (``tokenise.scheme: auto``) and carries
on to metrics/data.json.

The sources (lstmlm.data.wikitext_fetch, lstmlm.data.owntext) stage their files outside
that directory, and nothing unverified ever lands in it: :func:`install` copies the staged
files in with :func:`lstmlm.core.files.atomic_path`, hashing each copy before its rename (a
WikiText-2 copy must match its published sum). The one exception is WikiText-103 given as
extracted files in ``$WIKITEXT103_DIR``: no sums exist for them, so the tokenise stage's
check of the published counts stands in.

This package's download code uses only the standard library (urllib) plus tqdm for the
progress bar, and imports neither torch nor DVC.
"""

from __future__ import annotations

import os
import shutil
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from lstmlm.core.errors import shown
from lstmlm.core.files import atomic_path, sha256_file, write_json
from lstmlm.data.corpus import DownloadConfig
from lstmlm.data.fetch import DownloadError, FetchOptions
from lstmlm.data.layout import SPLIT_RECORD, SPLITS, split_path
from lstmlm.data.owntext import find_own_text, own_text
from lstmlm.data.staging import Staged
from lstmlm.data.wikitext import WIKITEXT, WIKITEXT103, WIKITEXT103_BYTES, WIKITEXT103_SHA256
from lstmlm.data.wikitext_fetch import (
    MIRRORS,
    MIRRORS_103,
    Mirror,
    hash_mismatch,
    wikitext2,
    wikitext103,
)


@dataclass(frozen=True)
class RawFile:
    """One installed split."""

    path: str
    bytes: int
    sha256: str
    origin: str  # the URL, archive member or file it came from


@dataclass(frozen=True)
class PreparedCorpus:
    """What :func:`prepare_corpus` installed, and from where."""

    corpus: str
    source: str
    verified: bool  # checked against published checksums
    files: Mapping[str, RawFile]
    split: Mapping[str, Any] | None = None  # own prose: how it was split (split.json)


def check_corpus(corpus: str, environ: Mapping[str, str] = os.environ) -> None:
    """Raise DownloadError when ``download.corpus`` names own text that is missing or holds
    nothing usable. Cheap (it lists a folder and reads no file): the params stage runs it,
    so that a typo stops the run before DVC deletes the download stage's outputs."""
    if corpus not in (WIKITEXT, WIKITEXT103):
        find_own_text(_existing_path(corpus, environ))


def _existing_path(corpus: str, environ: Mapping[str, str]) -> Path:
    path = Path(corpus).expanduser()
    if not path.exists():
        raise DownloadError(
            f"download.corpus: {shown(corpus)} is not {WIKITEXT!r}, {WIKITEXT103!r}, or an existing "
            "text file or directory" + _queued_run_hint(path, environ))
    return path


def _queued_run_hint(path: Path, environ: Mapping[str, str]) -> str:
    """Why a relative path that exists in the repository is missing here: DVC runs a queued
    experiment in a temporary copy (.dvc/tmp/exps/...) that holds only what git and DVC
    track, and points $DVC_ROOT at the repository it came from."""
    root = environ.get("DVC_ROOT")
    if path.is_absolute() or not root or Path(root).resolve() == Path.cwd().resolve() \
            or not (Path(root) / path).exists():
        return ""
    return (f".\nIt exists in {root}, but this run works in {Path.cwd()}, a temporary copy "
            "DVC made of the repository, as it does for a queued experiment (`dvc exp run "
            "--queue`). The path is relative and the text is not tracked by git or DVC, so "
            f"the copy lacks it. Use an absolute path (download.corpus: "
            f"{(Path(root) / path).resolve()}) or track the text (`dvc add {path}`, then "
            "commit the .dvc file)")


def install(staged: Staged, out_dir: Path) -> dict[str, RawFile]:
    """Copy staged splits into ``out_dir`` atomically, as ``{split}.txt``, with the split
    record when there is one (else any old one is removed).

    The copy is hashed inside ``atomic_path`` before its rename, so even a source that
    changes between verification and copy cannot leave a wrong file in ``out_dir``.
    """
    files: dict[str, RawFile] = {}
    for split in SPLITS:
        dest = split_path(out_dir, split)
        with atomic_path(dest) as tmp:
            shutil.copyfile(staged.paths[split], tmp)
            digest = sha256_file(tmp)
            if staged.sums is not None and digest != staged.sums[split]:
                raise hash_mismatch(str(staged.paths[split]), digest, staged.sums[split])
            size = tmp.stat().st_size
        files[split] = RawFile(str(dest), size, digest, staged.origin(split))
    if staged.split is not None:
        write_json(out_dir / SPLIT_RECORD, staged.split)
    else:
        (out_dir / SPLIT_RECORD).unlink(missing_ok=True)
    if staged.leftover is not None:
        staged.leftover.unlink(missing_ok=True)
    return files


def prepare_corpus(corpus: str | DownloadConfig, out_dir: str | Path, *,
                   environ: Mapping[str, str] = os.environ,
                   mirrors: tuple[Mirror, ...] | None = None,
                   sums: Mapping[str, str] | None = None,
                   archive_sha256: str = WIKITEXT103_SHA256,
                   archive_bytes: int | None = WIKITEXT103_BYTES,
                   resume_dir: str | Path | None = None,
                   timeout: float = 60.0, retries: int = 3, backoff: float = 1.0,
                   progress: bool = True) -> PreparedCorpus:
    """Write ``train.txt``, ``valid.txt`` and ``test.txt`` into ``out_dir``.

    ``corpus`` is ``download.corpus`` or the whole section (for own prose's ``split`` and
    ``seed``). ``"wikitext-2"``: ``$WIKITEXT_DIR`` when set, else ``mirrors`` (default
    :data:`MIRRORS`) in order; every split is checked against ``sums`` (default: the
    official sums). ``"wikitext-103"``: likewise with ``$WIKITEXT103_DIR`` and ``mirrors``
    (default :data:`MIRRORS_103`); the zip must have ``archive_bytes`` bytes (None: any)
    and the SHA-256 ``archive_sha256``, and is downloaded into ``resume_dir`` when given
    (see :func:`lstmlm.data.wikitext_fetch.wikitext103`). Anything else is your own text
    (lstmlm.data.owntext). ``timeout``, ``retries``, ``backoff`` and ``progress`` are
    :class:`lstmlm.data.fetch.FetchOptions`.

    Raises :class:`DownloadError` with a readable message.
    """
    config = corpus if isinstance(corpus, DownloadConfig) else DownloadConfig(corpus)
    options = FetchOptions(timeout, retries, backoff, progress)
    with _source(config, environ, mirrors, sums, (archive_sha256, archive_bytes), resume_dir,
                 options) as staged:
        files = install(staged, Path(out_dir))
    return PreparedCorpus(config.corpus, staged.source, staged.verified, files, staged.split)


def _source(config: DownloadConfig, environ: Mapping[str, str],
            mirrors: tuple[Mirror, ...] | None, sums: Mapping[str, str] | None,
            archive: tuple[str, int | None], resume_dir: str | Path | None,
            options: FetchOptions) -> AbstractContextManager[Staged]:
    """The source ``download.corpus`` names, as a context manager that stages its files."""
    if config.corpus == WIKITEXT:
        return wikitext2(environ, MIRRORS if mirrors is None else mirrors, sums, options)
    if config.corpus == WIKITEXT103:
        return wikitext103(environ, MIRRORS_103 if mirrors is None else mirrors, archive,
                           resume_dir, options)
    return own_text(_existing_path(config.corpus, environ), config.split, config.seed,
                    config.reflow)
