"""From text files to id arrays: the work of the tokenise and tensorise stages.

Layout on disk (paths are chosen by dvc.yaml, not here):

    raw/{train,valid,test}.txt     one line of text per line
    raw/split.json                 only for own prose: how download split it (owntext.py)
    tokens/{split}.txt             the same lines tokenised, space-separated, each ending "<eos>"
    tokens/split.json              the same record, carried on for the data metrics
    vocab.json                     see vocab.py
    ids/{split}.npy                token ids, uint16 when the vocabulary fits, else int32

A raw file is read as UTF-8; a byte-order mark at its start is dropped, never a word.

Both stages stream: files are read in blocks of about ``CHUNK_BYTES`` cut at line ends,
and ids are appended to the .npy file block by block, so memory follows the vocabulary
(the training word counts) and the block size, never the corpus. A split larger than
``PARALLEL_BYTES`` is cut at line starts into one part per CPU (``WORKERS``), done by
worker processes and joined in order, so the files are the same whatever the number of
parts. WikiText-103 (103M tokens) is tokenised and tensorised in a few hundred MB per
process. Workers start from a fork server, so a script that calls these functions on
such a split must guard its entry point with ``if __name__ == "__main__":``.

The .npy files load by memory map, so a stage that reads them costs no parse time.
"""

from __future__ import annotations

import codecs
import io
import json
import multiprocessing
import os
import shutil
import tempfile
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from itertools import chain, repeat
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from .errors import LstmlmError
from .files import atomic_path
from .params import spec
from .text import EOS, SCHEMES, UNK, tokenise_lines
from .vocab import Vocabulary, build_vocabulary

SPLITS = ("train", "valid", "test")
# Written beside the raw splits when the download stage split own prose (lstmlm.owntext).
SPLIT_RECORD = "split.json"

# Published statistics with the standard (whitespace + <eos>) scheme, vocabulary and
# token counts both including <eos>: WikiText-2 v1 and WikiText-103 v1 (Merity et al.
# 2016). The two share the valid and test articles, so their token counts agree there.
WIKITEXT2_VOCAB_SIZE = 33_278
WIKITEXT2_TOKENS = {"train": 2_088_628, "valid": 217_646, "test": 245_569}
WIKITEXT103_VOCAB_SIZE = 267_735
WIKITEXT103_TOKENS = {"train": 103_227_021, "valid": 217_646, "test": 245_569}

# 8 MiB per block: large enough that per-block costs vanish, small enough that a
# block's tokens (some 200 MB of Python strings at most) fit any machine.
CHUNK_BYTES = 1 << 23
# Splits up to this size are done in the stage's own process (WikiText-2's train split
# is 11 MB): starting workers would cost more than it saves.
PARALLEL_BYTES = 32 << 20
# Worker processes for a larger split; None: one per CPU this process may use, at most
# MAX_WORKERS (each holds its own word counts or vocabulary index, and a block).
WORKERS: int | None = None
MAX_WORKERS = 4


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


class CorpusError(LstmlmError, ValueError):
    """A corpus split is missing, empty, or does not fit its vocabulary."""


def resolve_scheme(scheme: str, raw_dir: Path) -> str:
    """The scheme ``tokenise.scheme`` means for the raw text in ``raw_dir``. ``auto``:
    ``text`` for prose the download stage split (its split record lies beside the splits),
    ``wikitext`` for text that came split (WikiText, a folder of train/valid/test files),
    taken as tokenised already, as before."""
    if scheme != "auto":
        return scheme
    return "text" if (Path(raw_dir) / SPLIT_RECORD).is_file() else "wikitext"


def read_split_record(directory: Path) -> dict | None:
    """The split record in ``directory``, or None when the text was not split here."""
    path = Path(directory) / SPLIT_RECORD
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def iter_text_blocks(path: Path, chunk_bytes: int | None = None,
                     span: tuple[int, int] | None = None) -> Iterator[str]:
    """A UTF-8 text file, or its bytes ``span = (start, end)`` cut at line starts, in
    blocks of whole lines, each ending in a newline (the last one only if the text does).

    Read ``chunk_bytes`` at a time (default: ``CHUNK_BYTES``, looked up per call) and
    decoded like ``Path.read_text`` (universal newlines: "\\r\\n" and "\\r" read as
    "\\n"), so the lines are those of the whole text; a byte-order mark at the start of
    the file is dropped. A line longer than a chunk is gathered whole: a block never
    splits a line.
    """
    chunk = chunk_bytes or CHUNK_BYTES
    start, end = span if span is not None else (0, None)
    # utf-8-sig drops a BOM at the start of what it decodes: only a span from byte 0 has one.
    codec = "utf-8-sig" if start == 0 else "utf-8"
    decoder = io.IncrementalNewlineDecoder(codecs.getincrementaldecoder(codec)(), True)
    pending: list[str] = []  # pieces of a line that has not ended yet
    try:
        with open(path, "rb") as handle:
            handle.seek(start)
            left = end - start if end is not None else -1
            while True:
                raw = handle.read(chunk if left < 0 else min(chunk, left))
                left -= len(raw) if left >= 0 else 0
                text = decoder.decode(raw, final=not raw)
                cut = text.rfind("\n") + 1
                if cut == 0:
                    pending.append(text)
                elif pending:
                    yield "".join(pending) + text[:cut]
                    pending = [text[cut:]]
                else:
                    yield text[:cut]
                    pending = [text[cut:]]
                if not raw:
                    break
    except FileNotFoundError:
        raise CorpusError(f"{path}: file not found") from None
    except UnicodeDecodeError as err:
        raise CorpusError(f"{path}: not UTF-8 text ({err})") from None
    if rest := "".join(pending):
        yield rest


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


def _spans(path: Path) -> list[tuple[int, int]]:
    """Byte ranges that cut ``path`` at line starts into one part per worker (a single
    part when the file is small); each boundary follows a b"\\n", so no UTF-8 character
    and no "\\r\\n" is split."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise CorpusError(f"{path}: file not found") from None
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    parts = WORKERS or min(cpus or 1, MAX_WORKERS)
    if size <= PARALLEL_BYTES or parts < 2:
        return [(0, size)]
    cuts = [0]
    with open(path, "rb") as handle:
        for k in range(1, parts):
            handle.seek(max(size * k // parts, cuts[-1]))
            handle.readline()  # on to the start of the next line
            cuts.append(handle.tell())
    cuts.append(size)
    return [(a, b) for a, b in zip(cuts, cuts[1:]) if b > a] or [(0, size)]


def _worker_context() -> multiprocessing.context.BaseContext:
    """How worker processes start: from a fork server, which starts once with this module
    imported. Not by plain fork: numpy's and torch's threads make every caller
    multi-threaded, and a child forked from a threaded process can deadlock. As with any
    such start, the caller's ``__main__`` must guard its entry point (the stages do)."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return context


def _in_parts(task: Callable[..., Any], src: Path, spans: list[tuple[int, int]],
              out: Path, parts_dir: str, *args: Any) -> list[Any]:
    """``task(src, span, dest, *args)`` for each span, results in order.

    One span: done in this process, straight into ``out``. Several: done by worker
    processes, each into a file of its own in ``parts_dir``, appended to ``out`` in order.
    """
    if len(spans) == 1:
        return [task(src, spans[0], out, *args)]
    parts = [Path(parts_dir) / str(i) for i in range(len(spans))]
    with ProcessPoolExecutor(len(spans), mp_context=_worker_context()) as pool:
        futures = [pool.submit(task, src, span, part, *args) for span, part in zip(spans, parts)]
        results = [future.result() for future in futures]
    with open(out, "ab") as joined:
        for part in parts:
            with open(part, "rb") as handle:
                shutil.copyfileobj(handle, joined, 1 << 20)
    return results


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
    with atomic_path(dest) as tmp, tempfile.TemporaryDirectory(
            prefix=f".{dest.name}.parts-", dir=dest.parent) as parts_dir:
        results = _in_parts(_tokenise_part, src, _spans(src), tmp, parts_dir, scheme,
                            counter is not None)
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
        counts[split] = _tokenise_split(Path(raw_dir) / f"{split}.txt",
                                        Path(tokens_dir) / f"{split}.txt", scheme,
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


def id_dtype(vocab_size: int) -> np.dtype:
    """The narrowest id type: uint16 holds 65,536 words, WikiText-2's 33,278 among them;
    larger vocabularies (WikiText-103's 267,735) get int32."""
    return np.dtype(np.uint16) if vocab_size <= np.iinfo(np.uint16).max + 1 else np.dtype(np.int32)


def npy_header(dtype: np.dtype, length: int) -> bytes:
    """The .npy header ``np.save`` writes for a 1-D array of ``length`` items of ``dtype``."""
    header = np.lib.format.header_data_from_array_1_0(np.empty(0, dtype))
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {**header, "shape": (length,)})
    return buffer.getvalue()


def _encode_part(src: Path, span: tuple[int, int], dest: Path,
                 vocab: Vocabulary) -> tuple[int, int, int]:
    """Append the ids of one part of a tokens file to ``dest`` (raw, no header):
    ``(tokens, ids that are <unk>, "<unk>" tokens in the text)``."""
    dtype, get, unk_id = id_dtype(len(vocab)), vocab.index.get, vocab.unk_id
    n_tokens = n_unk = unk_in_text = 0
    with open(dest, "ab") as out:
        for block in iter_text_blocks(src, span=span):
            tokens = block.split()
            # map() with two iterables calls index.get(token, unk_id) in C: a dict
            # lookup per token and no Python-level loop.
            ids = np.fromiter(map(get, tokens, repeat(unk_id)), dtype, len(tokens))
            n_tokens += len(ids)
            n_unk += int(np.count_nonzero(ids == unk_id))
            unk_in_text += tokens.count(UNK)
            ids.tofile(out)
    return n_tokens, n_unk, unk_in_text


def _encode_split(src: Path, dest: Path, vocab: Vocabulary) -> dict[str, int]:
    """Encode the tokens of ``src`` as the .npy file ``dest``; count them.

    The ids follow a provisional header, rewritten with the length once it is known
    (numpy pads the header so that the length can grow to 21 digits without changing
    its size): the file is byte for byte what ``np.save`` writes.
    """
    dtype = id_dtype(len(vocab))
    with atomic_path(dest) as tmp, tempfile.TemporaryDirectory(
            prefix=f".{dest.name}.parts-", dir=dest.parent) as parts_dir:
        tmp.write_bytes(npy_header(dtype, 0))
        results = _in_parts(_encode_part, src, _spans(src), tmp, parts_dir, vocab)
        n_tokens, n_unk, unk_in_text = (sum(column) for column in zip(*results))
        if not n_tokens:
            raise CorpusError(f"{src}: the split is empty")
        with open(tmp, "r+b") as out:
            out.write(npy_header(dtype, n_tokens))
    return {"tokens": n_tokens, "unk": n_unk, "unk_in_text": unk_in_text}


def tensorise_corpus(tokens_dir: Path, vocab: Vocabulary, ids_dir: Path) -> dict:
    """Encode each tokenised split as an id array; return counts and OOV rates, and how
    own prose was split (its record, less the source files' names and sums) when it was.

    Streams each split: memory holds one block of tokens and the vocabulary's index.
    """
    stats: dict = {"vocab_size": len(vocab), "dtype": id_dtype(len(vocab)).name, "splits": {}}
    record = read_split_record(tokens_dir)
    if record is not None:
        stats["split"] = {key: value for key, value in record.items() if key != "files"}
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
