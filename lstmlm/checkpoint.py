"""Checkpoints: a state_dict, the model config and a reference to the vocabulary.

No pickled modules: everything in the file is a tensor, a number, a string, a list or a
dict, so it loads with ``torch.load(..., weights_only=True)``. :func:`load` is the one way
to read one back (the stages, the command line, the server and the Python API use it):

    model, vocab, info = load("data/model.pt")
"""

from __future__ import annotations

import dataclasses
import io
import re
from pathlib import Path
from typing import Any, NamedTuple

import torch

from .errors import LstmlmError
from .files import atomic_path
from .model import LSTMLanguageModel, ModelConfig
from .vocab import Vocabulary

FORMAT = "lstmlm-checkpoint/2"  # 2: model_config is the model section, vocab_size apart


class CheckpointError(LstmlmError, ValueError):
    """A checkpoint is missing, damaged, or does not fit the vocabulary it is used with."""


class Checkpoint(NamedTuple):
    """What :func:`load` returns: the model (eval mode), its vocabulary and the plain
    metadata training stored (epoch, valid_ppl, ...)."""

    model: LSTMLanguageModel
    vocab: Vocabulary
    info: dict[str, Any]


def save_checkpoint(path: str | Path, model: LSTMLanguageModel, vocab: Vocabulary,
                    vocab_path: str | Path, info: dict[str, Any] | None = None, *,
                    state_dict: dict[str, torch.Tensor] | None = None) -> None:
    """Write the checkpoint atomically; ``info`` holds plain metadata (epoch, ppl, ...).

    ``state_dict`` (e.g. the best epoch's weights) is saved instead of the model's current
    weights when given; the model then only supplies the config. The bytes depend only on
    the contents: torch.save names the records inside its zip archive after the file it
    writes to, so it writes to memory first, never to the temporary file's random name.
    """
    weights = model.state_dict() if state_dict is None else state_dict
    payload = {
        "format": FORMAT,
        "model_config": dataclasses.asdict(model.config),
        "vocab_size": model.vocab_size,
        "state_dict": {k: v.detach().cpu() for k, v in weights.items()},
        "vocab": {"sha256": vocab.sha256, "path": str(vocab_path), "scheme": vocab.scheme,
                  "size": len(vocab)},
        "info": info or {},
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getbuffer())


def _why_unreadable(err: Exception) -> str:
    """torch.load's error in one line, without its advice to retry with
    ``weights_only=False`` or to allow-list globals: that would run code from the file."""
    text = str(err)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
        found = re.search(r"GLOBAL (\S+)", text)
        if found:
            return f"it holds a Python object ({found.group(1)}), not only tensors and plain data"
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    reason = lines[0] if lines else type(err).__name__
    if "weights_only" in reason or "trust" in reason:
        reason = type(err).__name__
    return reason[:200]


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load and check a checkpoint's payload (weights only; no code is unpickled)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many types for damaged files
        raise CheckpointError(f"{path}: not a readable checkpoint, perhaps truncated or not "
                              f"a checkpoint ({_why_unreadable(err)})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an {FORMAT} file")
    missing = [k for k in ("model_config", "vocab_size", "state_dict", "vocab", "info")
               if k not in payload]
    if missing:
        raise CheckpointError(f"{path}: damaged checkpoint, it lacks {', '.join(missing)}")
    vocab_ref = payload["vocab"]
    if not isinstance(vocab_ref, dict) or not {"sha256", "path", "size"} <= vocab_ref.keys():
        raise CheckpointError(f"{path}: the checkpoint lacks its vocabulary reference")
    return payload


def load(path: str | Path, vocab_path: str | Path | None = None,
         map_location: str | torch.device = "cpu") -> Checkpoint:
    """The model, vocabulary and metadata of a checkpoint.

    The vocabulary is ``vocab_path`` or else the one the checkpoint refers to (looked for
    at its stored path, relative to where training ran, then beside the checkpoint);
    either way it must be the one the model was trained with (checked by hash, before
    the model is built). Weights that are not finite (a diverged run) are refused.
    Raises CheckpointError or VocabError, with a message naming the file.
    """
    path = Path(path)
    payload = read_checkpoint(path, map_location)
    vocab = _vocabulary(payload, path, vocab_path)
    model = _model(payload, path).to(map_location)
    info = payload["info"] if isinstance(payload["info"], dict) else {}
    return Checkpoint(model, vocab, info)


def _vocabulary(payload: dict, path: Path, vocab_path: str | Path | None) -> Vocabulary:
    ref = payload["vocab"]
    if vocab_path is None:
        stored = Path(ref["path"])
        beside = path.parent / stored.name
        vocab_path = beside if not stored.is_file() and beside.is_file() else stored
    vocab = Vocabulary.load(vocab_path)
    if vocab.sha256 != ref["sha256"]:
        raise CheckpointError(
            f"{vocab_path}: the model was trained with another vocabulary ({ref['size']} words, "
            f"sha256 {str(ref['sha256'])[:12]}…) than this one ({len(vocab)} words, sha256 "
            f"{vocab.sha256[:12]}…); pass the right one with --vocab")
    return vocab


def _model(payload: dict, path: Path) -> LSTMLanguageModel:
    """Rebuild the model (eval mode), without its initialisation: every weight is
    overwritten by the strict load that follows."""
    try:
        config = ModelConfig(**payload["model_config"])
        model = LSTMLanguageModel(config, payload["vocab_size"], init_weights=False)
        model.load_state_dict(payload["state_dict"])
    except (KeyError, ValueError, TypeError, AttributeError, RuntimeError) as err:
        raise CheckpointError(f"{path}: the weights do not fit the stored model config "
                              f"({err})") from None
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"{path}: the weights are not finite ({name} holds NaN or "
                                  "infinity): the training run diverged; use an earlier "
                                  "checkpoint")
    return model.eval()
