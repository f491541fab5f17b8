"""What a corpus source hands over: three split files staged outside the output directory,
where they came from, and how to check them once copied (see lstmlm.data.download.install).
The sources are lstmlm.data.wikitext_fetch and lstmlm.data.owntext.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping


@dataclass(frozen=True)
class Staged:
    """The train/valid/test files a source found or made, ready to be installed."""

    paths: Mapping[str, Path]        # split -> the file to copy
    source: str                      # where the corpus came from, for people
    verified: bool                   # checked against published checksums
    sums: Mapping[str, str] | None = None     # split -> the sha256 each copy must have
    origins: Mapping[str, str] | None = None  # split -> where it came from (default: its path)
    split: Mapping[str, Any] | None = None    # how own prose was split (lstmlm.data.owntext)
    leftover: Path | None = None     # a file to delete once the copies are installed

    def origin(self, split: str) -> str:
        return self.origins[split] if self.origins else str(self.paths[split])
