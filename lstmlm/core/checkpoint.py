"""Checkpoints: the weights, the model config and the vocabulary, in one file that stands
alone; what the file holds, and writing it (reading it: lstmlm.core.loading).

    {"format": FORMAT,
     "model_config": the model section, cutoffs as word counts (ModelConfig.for_vocab),
     "state_dict": {name: tensor} as the model's state_dict names them,
     "vocab": {"sha256", "scheme", "words": one string, a word a line,
               "counts": int64 tensor (V,)},
     "info": plain metadata (epoch, valid_loss, valid_ppl)}

A checkpoint carries its vocabulary (about 0.5 MB for WikiText-2), so a model.pt copied
anywhere loads with nothing beside it. Nothing in the file is a pickled object: only
tensors, numbers, strings, lists and dicts, written with ``torch.save``.
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lstmlm.core.errors import LstmlmError
from lstmlm.core.files import atomic_path
from lstmlm.data.vocab import Vocabulary

if TYPE_CHECKING:
    import torch

    from lstmlm.model.lstm import LSTMLanguageModel

# 3: the vocabulary inside the file. Formats 1 and 2 named a vocabulary file beside the
# checkpoint; no released file uses them, and they are not read.
FORMAT = "lstmlm-checkpoint/3"
VOCAB_KEYS = {"sha256", "scheme", "words", "counts"}  # what the "vocab" entry holds


class CheckpointError(LstmlmError, ValueError):
    """A checkpoint is missing, damaged, or does not fit the vocabulary it is used with."""


# --------------------------------------------------------------------------- writing


def save_checkpoint(path: str | Path, model: LSTMLanguageModel, vocab: Vocabulary,
                    info: dict[str, Any] | None = None, *,
                    state_dict: dict[str, torch.Tensor] | None = None) -> None:
    """Write the checkpoint atomically; ``info`` holds plain metadata (epoch, ppl, ...).

    ``state_dict`` (e.g. the best epoch's weights) is saved instead of the model's current
    weights when given; the model then only supplies the config. The bytes depend only on
    the contents: torch.save names the records inside its zip archive after the file it
    writes to, so it writes to memory first, never to the temporary file's random name.
    """
    import torch

    weights = model.state_dict() if state_dict is None else state_dict
    payload = {
        "format": FORMAT,
        "model_config": dataclasses.asdict(model.config),
        "state_dict": {k: v.detach().cpu() for k, v in weights.items()},
        "vocab": _vocab_record(vocab),
        "info": info or {},
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getbuffer())


def _vocab_record(vocab: Vocabulary) -> dict[str, Any]:
    """The vocabulary as the file holds it: the words as one string, a line each, and the
    counts as one int64 tensor (V,). A list of words would be read back one pickle opcode
    at a time by weights_only's unpickler, which is plain Python."""
    import torch

    words = "\n".join(vocab.words)
    if words.count("\n") != len(vocab) - 1:  # tokenisers split on white space: never
        raise CheckpointError("a vocabulary word holds a line break; it cannot be stored")
    return {"sha256": vocab.sha256, "scheme": vocab.scheme, "words": words,
            "counts": torch.tensor(vocab.counts, dtype=torch.int64)}
