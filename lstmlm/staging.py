"""What a corpus source hands over: three split files staged outside the output directory,
where they came from, and how to check them once copied (see lstmlm.download.install).

The sources (lstmlm.wikitext, lstmlm.owntext) share the two checks below: finding a
split's file by its accepted names, and refusing a file that is not UTF-8 text.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from .fetch import DownloadError


@dataclass(frozen=True)
class Staged:
    """The train/valid/test files a source found or made, ready to be installed."""

    paths: Mapping[str, Path]        # split -> the file to copy
    source: str                      # where the corpus came from, for people
    verified: bool                   # checked against published checksums
    sums: Mapping[str, str] | None = None     # split -> the sha256 each copy must have
    origins: Mapping[str, str] | None = None  # split -> where it came from (default: its path)
    split: Mapping[str, Any] | None = None    # how own prose was split (lstmlm.owntext)
    leftover: Path | None = None     # a file to delete once the copies are installed

    def origin(self, split: str) -> str:
        return self.origins[split] if self.origins else str(self.paths[split])


def find_split(directory: Path, split: str, patterns: tuple[str, ...]) -> Path | None:
    """The first ``pattern.format(split=split)`` that is a file in ``directory``."""
    for pattern in patterns:
        candidate = directory / pattern.format(split=split)
        if candidate.is_file():
            return candidate
    return None


def check_utf8(path: Path, what: str) -> None:
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
