"""From id files to batches: a split's ids read back (:func:`load_ids`), and the (T, B)
layout, a stream of token ids as B contiguous columns.

For the alphabet as a stream of 26 tokens and B = 4:

    ┌ a g m s ┐
    │ b h n t │
    │ c i o u │   T rows (time), B columns (streams); the tail (y, z) that does not
    │ d j p v │   fill a row is dropped.
    │ e k q w │
    └ f l r x ┘

A batch is ``bptt`` consecutive rows: inputs rows [i, i+bptt) and targets rows
[i+1, i+1+bptt). Column b of batch k+1 continues column b of batch k, so a hidden state
carried from one batch to the next sees one unbroken text per column.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from lstmlm.core.errors import CorpusError
from lstmlm.data.layout import ids_path


def load_ids(ids_dir: Path, split: str, vocab_size: int | None = None) -> np.ndarray:
    """Memory-map one split's ids; check them against the vocabulary size when given."""
    path = ids_path(ids_dir, split)
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


def batchify(ids: np.ndarray, batch_size: int) -> torch.Tensor:
    """Stream of N ids -> (N // B, B) int64 tensor of B contiguous columns (see above)."""
    n_rows = len(ids) // batch_size
    if n_rows < 2:
        raise ValueError(f"a stream of {len(ids)} tokens is too short for {batch_size} "
                         "streams: each needs at least 2 tokens")
    data = torch.from_numpy(np.asarray(ids[: n_rows * batch_size], dtype=np.int64))
    return data.view(batch_size, n_rows).t().contiguous()


def batch_starts(n_rows: int, bptt: int, variable: bool,
                 rng: random.Random) -> Iterator[tuple[int, int]]:
    """(start row, sequence length) of each batch over a (T, B) stream.

    With ``variable`` the length is drawn around ``bptt`` as in AWD-LSTM (and now and
    then around bptt / 2) so that batch boundaries fall at different places each epoch.
    """
    i = 0
    while i < n_rows - 1:
        seq_len = bptt
        if variable:
            base = bptt if rng.random() < 0.95 else bptt / 2
            seq_len = max(5, int(rng.gauss(base, 5)))
        seq_len = min(seq_len, n_rows - 1 - i)
        yield i, seq_len
        i += seq_len


def get_batch(data: torch.Tensor, i: int, seq_len: int,
              device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs rows [i, i + seq_len) and targets one row further on, both (seq_len, B)."""
    inputs = data[i:i + seq_len].to(device, non_blocking=True)
    targets = data[i + 1:i + 1 + seq_len].to(device, non_blocking=True)
    return inputs, targets
