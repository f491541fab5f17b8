"""Checkpoints: a state_dict, the model config and a reference to the vocabulary.

No pickled modules: everything in the file is a tensor, a number, a string, a list or a
dict, so it loads with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from .errors import LstmlmError
from .files import atomic_path
from .model import LSTMLanguageModel, ModelConfig
from .vocab import Vocabulary

FORMAT = "lstmlm-checkpoint/2"  # 2: model_config is the model section, vocab_size apart


class CheckpointError(LstmlmError, ValueError):
    """A checkpoint is missing, damaged, or does not fit the vocabulary it is used with."""


def save_checkpoint(path: str | Path, model: LSTMLanguageModel, vocab: Vocabulary,
                    vocab_path: str | Path, info: dict[str, Any] | None = None, *,
                    state_dict: dict[str, torch.Tensor] | None = None) -> None:
    """Write the checkpoint atomically; ``info`` holds plain metadata (epoch, ppl, ...).

    ``state_dict`` (e.g. the best epoch's weights) is saved instead of the model's current
    weights when given; the model then only supplies the config.
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
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load and check a checkpoint's payload (weights only; no code is unpickled)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many types for damaged files
        raise CheckpointError(f"{path}: not a readable checkpoint, perhaps truncated "
                              f"({type(err).__name__}: {err})") from None
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


def load_model(path: str | Path, vocab: Vocabulary | None = None,
               map_location: str | torch.device = "cpu") -> tuple[LSTMLanguageModel, dict]:
    """Rebuild the model from a checkpoint; if ``vocab`` is given, check it is the one
    the model was trained with. Returns the model (in eval mode) and the payload."""
    payload = read_checkpoint(path, map_location)
    if vocab is not None and payload["vocab"]["sha256"] != vocab.sha256:
        raise CheckpointError(
            f"{path}: the model was trained with another vocabulary "
            f"({payload['vocab']['size']} words, sha256 {payload['vocab']['sha256'][:12]}…) "
            f"than the one given ({len(vocab)} words, sha256 {vocab.sha256[:12]}…)")
    return model_from_payload(payload, path), payload


def model_from_payload(payload: dict, path: str | Path = "checkpoint") -> LSTMLanguageModel:
    """Rebuild a checkpoint's model (eval mode). It is built without its initialisation:
    every weight is overwritten by the strict load that follows."""
    try:
        config = ModelConfig(**payload["model_config"])
        model = LSTMLanguageModel(config, payload["vocab_size"], init_weights=False)
        model.load_state_dict(payload["state_dict"])
    except (KeyError, ValueError, TypeError, AttributeError, RuntimeError) as err:
        raise CheckpointError(f"{path}: the weights do not fit the stored model config "
                              f"({err})") from None
    return model.eval()


def load_vocab_for(payload: dict, vocab_path: str | Path | None = None) -> Vocabulary:
    """The vocabulary a checkpoint refers to (or ``vocab_path``), checked by hash."""
    path = Path(vocab_path or payload["vocab"]["path"])
    vocab = Vocabulary.load(path)
    if vocab.sha256 != payload["vocab"]["sha256"]:
        raise CheckpointError(f"{path}: this vocabulary ({len(vocab)} words) is not the one "
                              f"the model was trained with ({payload['vocab']['size']} words); "
                              "pass the right one with --vocab")
    return vocab
