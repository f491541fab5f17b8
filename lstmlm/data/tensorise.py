"""The tensorise stage's work: each tokenised split encoded as a memory-mappable id array.

    ids/{split}.npy   token ids, uint16 when the vocabulary fits, else int32

Streams each split (lstmlm.data.textfile): memory holds one block of tokens and the
vocabulary's index. Ids are appended to the .npy file block by block, so the file is byte
for byte what ``np.save`` writes, whatever the number of parts.
"""

from __future__ import annotations

import io
from itertools import repeat
from pathlib import Path

import numpy as np

from lstmlm.core.errors import CorpusError
from lstmlm.core.files import atomic_path
from lstmlm.data.layout import SPLITS, ids_path, read_split_record, split_path
from lstmlm.data.textfile import in_parts, iter_text_blocks
from lstmlm.data.vocab import UNK, Vocabulary


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
    with atomic_path(dest) as tmp:
        tmp.write_bytes(npy_header(dtype, 0))
        results = in_parts(_encode_part, src, tmp, vocab)
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
        got = _encode_split(split_path(tokens_dir, split), ids_path(ids_dir, split), vocab)
        n, n_unk = got["tokens"], got["unk"]
        stats["splits"][split] = {
            "tokens": n,
            "unk": n_unk,
            # Out-of-vocabulary: tokens that were not <unk> in the text but became <unk>.
            "oov_rate": round((n_unk - got["unk_in_text"]) / n, 6),
            "unk_rate": round(n_unk / n, 6),
        }
    return stats
