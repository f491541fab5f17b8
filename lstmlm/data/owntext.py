"""Your own text as a corpus: one plain-text file, a folder of ``.txt`` files, or a folder
that already holds train/valid/test files (copied as they are, as WikiText is).

Prose (a file, or a folder's ``.txt`` files in the order of their paths) is read whole as
UTF-8 and cut into at most ``MAX_BLOCKS`` blocks of consecutive lines with about the same
number of non-blank lines; ``round(blocks * share)`` blocks go to valid and to test, drawn
by ``random.Random(seed)``, the rest to train, each split in the order of the text (whole
blocks: a line's neighbours are its context). docs/text.md has the details; the choice is
recorded in ``split.json`` (:func:`split_prose`). Hard-wrapped prose is first joined
into paragraphs, file by file (``download.reflow``: lstmlm.data.reflow).
"""

from __future__ import annotations

import hashlib
import math
import random
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from lstmlm.data.fetch import DownloadError
from lstmlm.data.layout import SPLIT_NAMES, SPLITS, find_split, split_path
from lstmlm.data.reflow import reflow
from lstmlm.data.staging import Staged
from lstmlm.data.textfile import check_utf8, decode_utf8

# Blocks the prose is cut into (fewer when it has fewer non-blank lines): valid and test
# get whole blocks, so this sets how finely the shares are met (1% of the text).
MAX_BLOCKS = 100


def find_own_text(path: Path) -> Staged | list[Path]:
    """What an existing ``path`` holds, without reading a file: the staged splits of a
    folder of train/valid/test files, or else the prose files to split. Raises
    DownloadError naming ``download.corpus`` when it holds neither."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise DownloadError(f"download.corpus: {path} is not a regular file or a directory "
                            "(a device, a FIFO or a socket); name a text file or a folder")
    splits = {split: find_split(path, split) for split in SPLITS}
    if any(splits.values()):
        _check_all_splits(path, splits)
        return Staged(splits, str(path), False)
    prose = sorted(p for p in path.rglob("*.txt")
                   if p.is_file() and not any(part.startswith(".")
                                              for part in p.relative_to(path).parts))
    if not prose:
        raise DownloadError(f"download.corpus: {path} holds no .txt files of text and no "
                            f"train/valid/test files;\n{_listing(path)}")
    return prose


def _check_all_splits(directory: Path, splits: dict[str, Path | None]) -> None:
    missing = [f"  {split}: looked for " + " or ".join(p.format(split=split) for p in SPLIT_NAMES)
               for split, path in splits.items() if path is None]
    if missing:
        raise DownloadError(
            f"download.corpus: {directory} lacks {len(missing)} of the {len(SPLITS)} "
            "splits:\n" + "\n".join(missing) + "\n" + _listing(directory))


def _listing(directory: Path) -> str:
    present = sorted(p.name for p in directory.iterdir())
    if not present:
        return "  the directory is empty"
    return "  the directory holds: " + ", ".join(present[:20]) + (
        " ..." if len(present) > 20 else "")


@contextmanager
def own_text(path: Path, fractions: Sequence[float], seed: int,
             reflow_mode: str = "auto") -> Iterator[Staged]:
    """The user's text at an existing ``path``, staged: prose reflowed (``reflow_mode``)
    and split into a temporary directory (removed on the way out), or a folder's
    train/valid/test files as they are (checked to be UTF-8 text)."""
    found = find_own_text(path)
    if isinstance(found, Staged):
        for file in found.paths.values():
            check_utf8(file, f"download.corpus: {file}", DownloadError)
        yield found
        return
    with tempfile.TemporaryDirectory(prefix="lstmlm-split-") as tmp:
        yield split_prose(path, found, Path(tmp), fractions, seed, reflow_mode)


# --------------------------------------------------------------------------- splitting


def read_lines(path: Path, files: list[Path]) -> tuple[list[str], list[dict[str, Any]]]:
    """The lines of ``files`` one after the other, and each file's name (relative to
    ``path``), size and sha256 for the record."""
    lines: list[str] = []
    record = []
    for file in files:
        data = file.read_bytes()
        text = decode_utf8(data, f"download.corpus: {file}", DownloadError)
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        lines += text.split("\n")[:-1] if text.endswith("\n") else text.split("\n")
        name = file.name if file == path else file.relative_to(path).as_posix()
        record.append({"name": name, "bytes": len(data),
                       "sha256": hashlib.sha256(data).hexdigest()})
    return lines, record


def read_prose(path: Path, files: list[Path],
               reflow_mode: str) -> tuple[list[str], list[dict[str, Any]], dict[str, Any]]:
    """read_lines, each file reflowed on its own (a paragraph never runs on into the next
    file); the third item says what reflowing did, in counts."""
    lines: list[str] = []
    records: list[dict[str, Any]] = []
    done = {"mode": reflow_mode, "files_reflowed": 0, "lines_joined": 0,
            "words_dehyphenated": 0}
    for file in files:
        file_lines, record = read_lines(path, [file])
        reflowed = reflow(file_lines, reflow_mode)
        lines += reflowed.lines
        records += record
        done["files_reflowed"] += reflowed.wrapped
        for key, count in reflowed.counts().items():
            done[key] += count
    return lines, records, done


def cut_blocks(lines: list[str], max_blocks: int = MAX_BLOCKS) -> list[tuple[int, int]]:
    """``[start, end)`` line ranges covering ``lines``: at most ``max_blocks`` blocks with
    about the same number of non-blank lines each, and at least one each."""
    worded = [i for i, line in enumerate(lines) if line.strip()]
    n = min(max_blocks, len(worded))
    if n == 0:
        return []
    # Block k starts at its first non-blank line (block 0 at the top): blank lines stay
    # with the text before them.
    starts = [0] + [worded[len(worded) * k // n] for k in range(1, n)]
    return list(zip(starts, starts[1:] + [len(lines)]))


def choose_blocks(n: int, fractions: Sequence[float], seed: int) -> dict[str, list[int]]:
    """The blocks of each split, in text order: ``round(n * share)`` blocks, at least one,
    for valid and test, drawn with ``random.Random(seed)``; the rest for train."""
    n_valid, n_test = (max(1, round(n * share)) for share in fractions[1:])
    if n - n_valid - n_test < 1:
        return {}
    drawn = random.Random(seed).sample(range(n), n_valid + n_test)
    valid, test = sorted(drawn[:n_valid]), sorted(drawn[n_valid:])
    train = sorted(set(range(n)) - set(drawn))
    return {"train": train, "valid": valid, "test": test}


def unmet_shares(record: Mapping[str, Any]) -> str | None:
    """A warning when a split record's text was too short for its shares: valid or test
    got a block although its share of the blocks came to less than half of one (three
    lines split 90/5/5 become 1/1/1); None when every share was met to the nearest block."""
    blocks, fractions = record["blocks"], record["fractions"]
    got = {split: len(record[f"{split}_blocks"]) for split in ("valid", "test")}
    over = [f"{split} {got[split]} of {blocks}" for split, share in zip(got, fractions[1:])
            if got[split] > 2 * blocks * share]
    if not over:
        return None
    return (f"warning: download.split {list(fractions)} cannot be met in {blocks} blocks of "
            f"lines: {' and '.join(over)} blocks, as every split gets one at least; a text "
            f"of {math.ceil(0.5 / min(fractions[1:]))} non-blank lines or more meets them")


def split_prose(path: Path, files: list[Path], staging: Path, fractions: Sequence[float],
                seed: int, reflow_mode: str = "auto") -> Staged:
    """Split the prose of ``files`` into ``staging/{split}.txt`` (see the module
    docstring). The record, written to split.json and carried into metrics/data.json:
    ``fractions``, ``seed``, ``blocks`` (how many), ``valid_blocks``, ``test_blocks``
    (their numbers, from 0 at the top of the text), ``lines`` per split, ``reflow`` (what
    :func:`read_prose` did) and ``files``."""
    lines, files_record, reflowed = read_prose(path, files, reflow_mode)
    blocks = cut_blocks(lines)
    if len(blocks) < len(SPLITS):
        raise DownloadError(
            f"download.corpus: {path} is too short to split: {len(blocks)} non-blank "
            f"line(s), and download.split needs text for each of train, valid and test; "
            "use a longer text (3 lines at the very least)")
    chosen = choose_blocks(len(blocks), fractions, seed)
    if not chosen:
        raise DownloadError(
            f"download.split: {list(fractions)} leaves no text for train in the "
            f"{len(blocks)} blocks of {path}; give train a larger share, such as "
            "[0.9, 0.05, 0.05], or use a longer text")
    paths, counts = {}, {}
    for split in SPLITS:
        chunk = [line for k in chosen[split] for line in lines[slice(*blocks[k])]]
        paths[split] = split_path(staging, split)
        paths[split].write_text("".join(line + "\n" for line in chunk), encoding="utf-8",
                                newline="\n")
        counts[split] = len(chunk)
    record = {"fractions": list(fractions), "seed": seed, "blocks": len(blocks),
              "valid_blocks": chosen["valid"], "test_blocks": chosen["test"],
              "lines": counts, "reflow": reflowed, "files": files_record}
    return Staged(paths, str(path), False, split=record)
