"""The tokenise stage's work: every split tokenised, the vocabulary built from train.

    raw/{split}.txt      one line of text per line (lstmlm.data.layout)
    tokens/{split}.txt   the same lines tokenised, space-separated, each ending "<eos>"
    tokens/split.json    own prose's split record, carried on for the data metrics
    vocab.json           lstmlm.data.vocab

Each split streams through in blocks of whole lines (lstmlm.data.textfile), large ones in
parts done by worker processes, so memory holds a block and the training word counts.
The schemes themselves (how one line becomes tokens) are lstmlm.data.schemes.
"""

from __future__ import annotations

import shutil
from collections import Counter
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

from lstmlm.core.errors import CorpusError
from lstmlm.core.files import atomic_path
from lstmlm.core.params import spec
from lstmlm.data.layout import SPLIT_RECORD, SPLITS, split_path
from lstmlm.data.schemes import SCHEMES, tokenise_lines
from lstmlm.data.textfile import Piece, in_parts, iter_text_blocks
from lstmlm.data.vocab import EOS, Vocabulary, build_vocabulary


@dataclass(frozen=True)
class TokeniseConfig:
    """The ``tokenise`` section of params.yaml."""

    scheme: str = spec("auto", choices=("auto", *SCHEMES),
                       doc="auto: text for own prose that the download stage split, else "
                       "wikitext; wikitext: split on spaces (WikiText is tokenised already; "
                       "the standard behind published numbers); text: prose as people write "
                       "it, punctuation split off as in WikiText (as prompts are read); "
                       "basic_english: the seed notebook's torchtext tokeniser")
    min_freq: int = spec(1, low=1, doc="words seen fewer times in train become <unk>")
    max_size: int = spec(0, low=0, doc="cap on the vocabulary size, specials included; 0: none")


def resolve_scheme(scheme: str, raw_dir: Path) -> str:
    """The scheme ``tokenise.scheme`` means for the raw text in ``raw_dir``. ``auto``:
    ``text`` for prose the download stage split (its split record lies beside the splits),
    ``wikitext`` for text that came split (WikiText, a folder of train/valid/test files),
    taken as tokenised already, as before."""
    if scheme != "auto":
        return scheme
    return "text" if (Path(raw_dir) / SPLIT_RECORD).is_file() else "wikitext"


def _is_canonical_wikitext(block: str, words: list[str]) -> bool:
    """True when ``block`` is laid out as WikiText is: no whitespace but single spaces and
    newlines, the first line starting with a space, every line ending with one (an
    empty line is a single space).

    Such a block tokenises by string replacement alone (see :func:`_tokenise_block`). The
    last test counts the characters of ``words`` (``block.split()``): the block holds no
    whitespace but spaces and newlines exactly when they add up.
    """
    ends = block.count("\n")
    last_open = not block.endswith("\n")  # the final line of a file without a newline
    return (block.startswith(" ") and "  " not in block and block.count(" \n") == ends
            and (not last_open or block.endswith(" "))
            and sum(map(len, words)) == len(block) - block.count(" ") - ends)


def _tokenise_block(block: str, scheme: str,
                    counter: Counter | None) -> tuple[str, int, int]:
    """One block of whole lines tokenised: ``(text, lines, tokens)``, where the text
    holds one line per line, each ending in ``<eos>`` and a newline; words counted into
    ``counter`` when given. A Piece of a long line gives its tokens, each followed by a
    space, and no line: the line goes on in the next block."""
    if isinstance(block, Piece):
        tokens = SCHEMES[scheme](block)
        if counter is not None:
            counter.update(tokens)
        return " ".join(tokens) + " " if tokens else "", 0, len(tokens)
    if scheme == "wikitext":
        words = block.split()
        if _is_canonical_wikitext(block, words):
            # " w1 w2 \n" becomes "w1 w2 <eos>\n" and " \n" becomes "<eos>\n" (a line
            # that starts without a space loses nothing): what the general path below
            # gives, without a Python call per line.
            n_lines = block.count("\n") + (not block.endswith("\n"))
            text = block[1:].replace("\n ", "\n").replace("\n", f"{EOS}\n")
            if not block.endswith("\n"):
                text += f"{EOS}\n"
            if counter is not None:
                counter.update(words)
                counter[EOS] += n_lines
            return text, n_lines, len(words) + n_lines
    lines = block.split("\n")
    if lines[-1] == "":
        lines.pop()
    line_tokens = list(tokenise_lines(lines, scheme))
    if counter is not None:
        # One C-level pass over the block's tokens, not a call per line.
        counter.update(chain.from_iterable(line_tokens))
    text = "\n".join(map(" ".join, line_tokens)) + "\n"
    return text, len(line_tokens), sum(map(len, line_tokens))


def _tokenise_part(src: Path, span: tuple[int, int], dest: Path, scheme: str,
                   count: bool) -> tuple[Counter | None, int, int]:
    """Tokenise one part of a split into ``dest``: ``(word counts or None, lines, tokens)``."""
    counter = Counter() if count else None
    n_lines = n_tokens = 0
    with open(dest, "a", encoding="utf-8") as out:
        for block in iter_text_blocks(src, span=span):
            text, block_lines, block_tokens = _tokenise_block(block, scheme, counter)
            out.write(text)
            n_lines += block_lines
            n_tokens += block_tokens
    return counter, n_lines, n_tokens


def _tokenise_split(src: Path, dest: Path, scheme: str, counter: Counter | None) -> int:
    """Tokenise ``src`` into ``dest``, one line per line; count words into ``counter``
    when given (train). Returns the number of tokens, ``<eos>`` included."""
    with atomic_path(dest) as tmp:
        results = in_parts(_tokenise_part, src, tmp, scheme, counter is not None)
        n_lines = sum(lines for _, lines, _ in results)
        n_tokens = sum(tokens for _, _, tokens in results)
        # Raised inside atomic_path, so no half-made file replaces a previous output.
        if counter is not None and n_tokens == n_lines:  # no lines, or only empty ones
            raise CorpusError(f"{src}: the split holds no words")
        if not n_lines:
            raise CorpusError(f"{src}: the split is empty")
    if counter is not None:
        for part_counter, _, _ in results:
            counter.update(part_counter)
    return n_tokens


def tokenise_corpus(raw_dir: Path, tokens_dir: Path, vocab_path: Path, *, scheme: str,
                    min_freq: int = 1, max_size: int = 0) -> tuple[Vocabulary, dict[str, int]]:
    """Tokenise every split, build the vocabulary from train only, write both; carry the
    split record, if any, into ``tokens_dir``.

    Streams each split (see :func:`iter_text_blocks`): memory holds a block of lines and
    the training word counts. ``scheme`` may be ``auto`` (see :func:`resolve_scheme`): the
    vocabulary records the scheme it resolved to, which generation reads prompts with.
    Returns the vocabulary and the token count of each split.
    """
    scheme = resolve_scheme(scheme, raw_dir)
    counts: dict[str, int] = {}
    train_counter: Counter = Counter()
    for split in SPLITS:
        counts[split] = _tokenise_split(split_path(raw_dir, split),
                                        split_path(tokens_dir, split), scheme,
                                        train_counter if split == "train" else None)
    vocab = build_vocabulary(train_counter, min_freq=min_freq, max_size=max_size, scheme=scheme)
    vocab.save(vocab_path)
    record, carried = Path(raw_dir) / SPLIT_RECORD, Path(tokens_dir) / SPLIT_RECORD
    if record.is_file():
        with atomic_path(carried) as tmp:
            shutil.copyfile(record, tmp)
    else:
        carried.unlink(missing_ok=True)  # from an earlier run on other text
    return vocab, counts
