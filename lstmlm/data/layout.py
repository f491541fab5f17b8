"""Where the data stages' files lie: the splits, and the name of each one's file.

    raw/{split}.txt      the download stage's output: one line of text per line, UTF-8
    raw/split.json       own prose only: how the download stage split it
                         (lstmlm.data.owntext), carried on to metrics/data.json
    tokens/{split}.txt   the tokenise stage's (and tokens/split.json, the record carried)
    ids/{split}.npy      the tensorise stage's: token ids
"""

from __future__ import annotations

import json
from pathlib import Path

SPLITS = ("train", "valid", "test")
# Written beside the raw splits when the download stage split own prose.
SPLIT_RECORD = "split.json"
# Names accepted for one split in a folder someone else filled ($WIKITEXT_DIR, a folder
# of train/valid/test files), in order of preference: WikiText's own names first.
SPLIT_NAMES = ("wiki.{split}.tokens", "{split}.txt", "{split}.tokens")


def split_path(directory: Path, split: str) -> Path:
    """A split's text in a stage's folder (raw/, tokens/)."""
    return Path(directory) / f"{split}.txt"


def ids_path(directory: Path, split: str) -> Path:
    """A split's ids in the tensorise stage's folder."""
    return Path(directory) / f"{split}.npy"


def find_split(directory: Path, split: str) -> Path | None:
    """The first of SPLIT_NAMES that is a file in ``directory``."""
    for pattern in SPLIT_NAMES:
        candidate = Path(directory) / pattern.format(split=split)
        if candidate.is_file():
            return candidate
    return None


def read_split_record(directory: Path) -> dict | None:
    """The split record in ``directory``, or None when the text was not split here."""
    path = Path(directory) / SPLIT_RECORD
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
