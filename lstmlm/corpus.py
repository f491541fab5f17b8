"""From text files to id arrays: the work of the tokenise and tensorise stages.

Layout on disk (paths are chosen by dvc.yaml, not here):

    raw/{train,valid,test}.txt     one line of text per line
    tokens/{split}.txt             the same lines tokenised, space-separated, each ending "<eos>"
    vocab.json                     see vocab.py
    ids/{split}.npy                token ids, uint16 when the vocabulary fits, else int32

The .npy files load by memory map, so a stage that reads them costs no parse time.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import LstmlmError
from .files import atomic_path
from .params import spec
from .text import SCHEMES, tokenise_lines
from .vocab import Vocabulary, build_vocabulary

SPLITS = ("train", "valid", "test")

# Published statistics of WikiText-2 v1 with the standard (whitespace + <eos>) scheme.
WIKITEXT2_VOCAB_SIZE = 33_278
WIKITEXT2_TOKENS = {"train": 2_088_628, "valid": 217_646, "test": 245_569}


@dataclass(frozen=True)
class TokeniseConfig:
    """The ``tokenise`` section of params.yaml."""

    scheme: str = spec("wikitext", choices=SCHEMES,
                       doc="wikitext: the standard behind published numbers; basic_english: "
                       "the seed notebook's torchtext tokeniser")
    min_freq: int = spec(1, low=1, doc="words seen fewer times in train become <unk>")
    max_size: int = spec(0, low=0, doc="cap on the vocabulary size, specials included; 0: none")


class CorpusError(LstmlmError, ValueError):
    """A corpus split is missing, empty, or does not fit its vocabulary."""


def read_lines(path: Path) -> list[str]:
    """Lines of a UTF-8 text file, without their line endings."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CorpusError(f"{path}: file not found") from None
    except UnicodeDecodeError as err:
        raise CorpusError(f"{path}: not UTF-8 text ({err})") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the file ends the last line; it opens no new one
    return lines


def tokenise_corpus(raw_dir: Path, tokens_dir: Path, vocab_path: Path, *, scheme: str,
                    min_freq: int = 1, max_size: int = 0) -> tuple[Vocabulary, dict[str, int]]:
    """Tokenise every split, build the vocabulary from train only, write both.

    Returns the vocabulary and the token count of each split.
    """
    counts: dict[str, int] = {}
    train_counter: Counter = Counter()
    for split in SPLITS:
        lines = list(tokenise_lines(read_lines(Path(raw_dir) / f"{split}.txt"), scheme))
        n_tokens = sum(map(len, lines))
        if split == "train" and n_tokens == len(lines):  # no lines, or only empty ones
            raise CorpusError(f"{raw_dir}/{split}.txt: the split holds no words")
        if not lines:
            raise CorpusError(f"{raw_dir}/{split}.txt: the split is empty")
        if split == "train":
            for tokens in lines:
                train_counter.update(tokens)
        counts[split] = n_tokens
        with atomic_path(Path(tokens_dir) / f"{split}.txt") as tmp:
            tmp.write_text("".join(" ".join(tokens) + "\n" for tokens in lines), encoding="utf-8")
    vocab = build_vocabulary(train_counter, min_freq=min_freq, max_size=max_size, scheme=scheme)
    vocab.save(vocab_path)
    return vocab, counts


def id_dtype(vocab_size: int) -> np.dtype:
    """The narrowest id type: uint16 holds 65,536 words, WikiText-2's 33,278 among them."""
    return np.dtype(np.uint16) if vocab_size <= np.iinfo(np.uint16).max + 1 else np.dtype(np.int32)


def tensorise_corpus(tokens_dir: Path, vocab: Vocabulary, ids_dir: Path) -> dict:
    """Encode each tokenised split as an id array; return counts and OOV rates."""
    stats: dict = {"vocab_size": len(vocab), "dtype": id_dtype(len(vocab)).name, "splits": {}}
    for split in SPLITS:
        tokens = Path(tokens_dir, f"{split}.txt").read_text(encoding="utf-8").split()
        if not tokens:
            raise CorpusError(f"{tokens_dir}/{split}.txt: the split is empty")
        ids = np.array(vocab.encode(tokens), dtype=id_dtype(len(vocab)))
        # Out-of-vocabulary: tokens that were not <unk> in the text but became <unk>.
        unk_in_text = tokens.count(vocab.words[vocab.unk_id])
        n_unk = int(np.count_nonzero(ids == vocab.unk_id))
        stats["splits"][split] = {
            "tokens": len(ids),
            "unk": n_unk,
            "oov_rate": round((n_unk - unk_in_text) / len(ids), 6),
            "unk_rate": round(n_unk / len(ids), 6),
        }
        with atomic_path(Path(ids_dir) / f"{split}.npy") as tmp:
            with open(tmp, "wb") as handle:
                np.save(handle, ids)
    return stats


def load_ids(ids_dir: Path, split: str, vocab_size: int | None = None) -> np.ndarray:
    """Memory-map one split's ids; check them against the vocabulary size when given."""
    path = Path(ids_dir) / f"{split}.npy"
    try:
        ids = np.load(path, mmap_mode="r")
    except FileNotFoundError:
        raise CorpusError(f"{path}: id file not found (run the tensorise stage)") from None
    except ValueError as err:
        raise CorpusError(f"{path}: not a valid .npy id file ({err})") from None
    if ids.ndim != 1 or ids.dtype.kind not in "iu":
        raise CorpusError(f"{path}: expected a 1-D integer array, got {ids.dtype} {ids.shape}")
    if len(ids) == 0:
        raise CorpusError(f"{path}: the split is empty")
    if vocab_size is not None:
        top = int(ids.max())
        if top >= vocab_size:
            raise CorpusError(f"{path}: holds id {top}, but the vocabulary has only "
                              f"{vocab_size} words; re-run tensorise for this vocabulary")
    return ids
