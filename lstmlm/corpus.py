"""From text files to id arrays: the work of the tokenise and tensorise stages.

Layout on disk (paths are chosen by dvc.yaml, not here):

    raw/{train,valid,test}.txt     one line of text per line
    tokens/{split}.txt             the same lines tokenised, space-separated, each ending "<eos>"
    vocab.json                     see vocab.py
    ids/{split}.npy                token ids, uint16 when the vocabulary fits, else int32

Both stages stream: files are read in blocks of about ``CHUNK_CHARS`` characters cut at
line ends, and ids are appended to the .npy file block by block, so memory follows the
vocabulary (the training word counts) and the chunk size, never the corpus. WikiText-103
(103M tokens) is tokenised and tensorised in a few hundred MB.

The .npy files load by memory map, so a stage that reads them costs no parse time.
"""

from __future__ import annotations

import io
from collections import Counter
from itertools import chain, repeat
from pathlib import Path
from typing import Iterator

import numpy as np

from .errors import LstmlmError
from .files import atomic_path
from .text import EOS, UNK, tokenise_lines
from .vocab import Vocabulary, build_vocabulary

SPLITS = ("train", "valid", "test")

# Published statistics with the standard (whitespace + <eos>) scheme, vocabulary and
# token counts both including <eos>: WikiText-2 v1 and WikiText-103 v1 (Merity et al.
# 2016). The two share the valid and test articles, so their token counts agree there.
WIKITEXT2_VOCAB_SIZE = 33_278
WIKITEXT2_TOKENS = {"train": 2_088_628, "valid": 217_646, "test": 245_569}
WIKITEXT103_VOCAB_SIZE = 267_735
WIKITEXT103_TOKENS = {"train": 103_227_021, "valid": 217_646, "test": 245_569}

# About 8M characters per block: large enough that per-block costs vanish, small enough
# that a block's tokens (a few hundred MB of Python strings at most) fit any machine.
CHUNK_CHARS = 1 << 23


class CorpusError(LstmlmError, ValueError):
    """A corpus split is missing, empty, or does not fit its vocabulary."""


def iter_text_blocks(path: Path, chunk_chars: int | None = None) -> Iterator[str]:
    """A UTF-8 text file in blocks of whole lines, each ending in a newline (the last one
    only if the file does); together they are the file's text. Blocks are read
    ``chunk_chars`` characters at a time (default: ``CHUNK_CHARS``, looked up per call).

    The file is opened like ``Path.read_text`` (universal newlines: "\\r\\n" and "\\r"
    read as "\\n"), so lines are the same as those of the whole text. A line longer than
    ``chunk_chars`` is gathered whole: a block never splits a line.
    """
    chunk_chars = chunk_chars or CHUNK_CHARS
    pending: list[str] = []  # pieces of a line that has not ended yet
    try:
        with open(path, encoding="utf-8") as handle:
            while block := handle.read(chunk_chars):
                cut = block.rfind("\n") + 1
                if cut == 0:
                    pending.append(block)
                    continue
                yield "".join(pending) + block[:cut] if pending else block[:cut]
                pending = [block[cut:]] if cut < len(block) else []
    except FileNotFoundError:
        raise CorpusError(f"{path}: file not found") from None
    except UnicodeDecodeError as err:
        raise CorpusError(f"{path}: not UTF-8 text ({err})") from None
    if pending:
        yield "".join(pending)


def iter_line_chunks(path: Path, chunk_chars: int | None = None) -> Iterator[list[str]]:
    """Lines of a UTF-8 text file, without their line endings, a block of lines at a time.

    Joined, the blocks are ``text.split("\\n")`` less the empty string after a final
    newline: the newline that ends the file ends the last line; it opens no new one.
    """
    for block in iter_text_blocks(path, chunk_chars):
        lines = block.split("\n")
        if lines[-1] == "":
            lines.pop()
        yield lines


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
    ``counter`` when given."""
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


def _tokenise_split(src: Path, dest: Path, scheme: str, counter: Counter | None) -> int:
    """Stream ``src`` into ``dest`` tokenised, one line per line; count words into
    ``counter`` when given (train). Returns the number of tokens, ``<eos>`` included."""
    n_lines = n_tokens = 0
    with atomic_path(dest) as tmp:
        with open(tmp, "w", encoding="utf-8") as out:
            for block in iter_text_blocks(src):
                text, block_lines, block_tokens = _tokenise_block(block, scheme, counter)
                out.write(text)
                n_lines += block_lines
                n_tokens += block_tokens
        # Raised inside atomic_path, so no half-made file replaces a previous output.
        if counter is not None and n_tokens == n_lines:  # no lines, or only empty ones
            raise CorpusError(f"{src}: the split holds no words")
        if not n_lines:
            raise CorpusError(f"{src}: the split is empty")
    return n_tokens


def tokenise_corpus(raw_dir: Path, tokens_dir: Path, vocab_path: Path, *, scheme: str,
                    min_freq: int = 1, max_size: int = 0) -> tuple[Vocabulary, dict[str, int]]:
    """Tokenise every split, build the vocabulary from train only, write both.

    Streams each split (see :func:`iter_line_chunks`): memory holds one block of lines and
    the training word counts. Returns the vocabulary and the token count of each split.
    """
    counts: dict[str, int] = {}
    train_counter: Counter = Counter()
    for split in SPLITS:
        counts[split] = _tokenise_split(Path(raw_dir) / f"{split}.txt",
                                        Path(tokens_dir) / f"{split}.txt", scheme,
                                        train_counter if split == "train" else None)
    vocab = build_vocabulary(train_counter, min_freq=min_freq, max_size=max_size, scheme=scheme)
    vocab.save(vocab_path)
    return vocab, counts


def id_dtype(vocab_size: int) -> np.dtype:
    """The narrowest id type: uint16 holds 65,536 words, WikiText-2's 33,278 among them;
    larger vocabularies (WikiText-103's 267,735) get int32."""
    return np.dtype(np.uint16) if vocab_size <= np.iinfo(np.uint16).max + 1 else np.dtype(np.int32)


def npy_header(dtype: np.dtype, length: int) -> bytes:
    """The .npy header ``np.save`` writes for a 1-D array of ``length`` items of ``dtype``.

    numpy pads the header so that the length can grow to 21 digits without changing its
    size, which lets the header be rewritten in place once the length is known.
    """
    header = np.lib.format.header_data_from_array_1_0(np.empty(0, dtype))
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {**header, "shape": (length,)})
    return buffer.getvalue()


def _encode_split(src: Path, dest: Path, vocab: Vocabulary) -> dict[str, int]:
    """Stream the tokens of ``src`` into the .npy file ``dest`` as ids; count them.

    The ids go out block by block after a provisional header, which is rewritten with
    the final length at the end: the file is byte for byte what ``np.save`` writes.
    """
    dtype, get, unk_id = id_dtype(len(vocab)), vocab.index.get, vocab.unk_id
    n_tokens = n_unk = unk_in_text = 0
    with atomic_path(dest) as tmp:
        with open(tmp, "wb") as out:
            out.write(npy_header(dtype, 0))
            for block in iter_text_blocks(src):
                tokens = block.split()
                # map() with two iterables calls index.get(token, unk_id) in C: a dict
                # lookup per token and no Python-level loop.
                ids = np.fromiter(map(get, tokens, repeat(unk_id)), dtype, len(tokens))
                n_tokens += len(ids)
                n_unk += int(np.count_nonzero(ids == unk_id))
                unk_in_text += tokens.count(UNK)
                ids.tofile(out)
            if not n_tokens:
                raise CorpusError(f"{src}: the split is empty")
            out.seek(0)
            out.write(npy_header(dtype, n_tokens))  # same size: the padding absorbs digits
    return {"tokens": n_tokens, "unk": n_unk, "unk_in_text": unk_in_text}


def tensorise_corpus(tokens_dir: Path, vocab: Vocabulary, ids_dir: Path) -> dict:
    """Encode each tokenised split as an id array; return counts and OOV rates.

    Streams each split: memory holds one block of tokens and the vocabulary's index.
    """
    stats: dict = {"vocab_size": len(vocab), "dtype": id_dtype(len(vocab)).name, "splits": {}}
    for split in SPLITS:
        got = _encode_split(Path(tokens_dir) / f"{split}.txt", Path(ids_dir) / f"{split}.npy",
                            vocab)
        n, n_unk = got["tokens"], got["unk"]
        stats["splits"][split] = {
            "tokens": n,
            "unk": n_unk,
            # Out-of-vocabulary: tokens that were not <unk> in the text but became <unk>.
            "oov_rate": round((n_unk - got["unk_in_text"]) / n, 6),
            "unk_rate": round(n_unk / n, 6),
        }
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
