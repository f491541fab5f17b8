"""Checkpoints: the weights, the model config and the vocabulary, in one file that stands alone.

A checkpoint carries its vocabulary (words, counts and scheme: about 0.5 MB for
WikiText-2), so a model.pt copied anywhere loads with nothing beside it. Nothing in the
file is a pickled object: only tensors, numbers, strings, lists and dicts. It is written
with ``torch.save`` and read without torch (lstmlm.torch_archive: an unpickler that
builds nothing else), so the command line and the server start without importing it:

    model, vocab, info = load("data/model.pt")            # the torch model
    weights, vocab, info = load_weights("data/model.pt")  # numpy arrays, no torch

A file is distrusted until checked, by both alike. It must be a regular file no larger
than this machine's memory (never a device or a FIFO); its model config must be valid
and call for exactly the weights it holds, shapes compared before anything is built
(ModelConfig.weight_shapes: a config claiming a huge model costs nothing); every weight
must be finite, and the vocabulary the one it was trained with (by hash).

Format 2 files, which name their vocabulary file instead of holding it, are still read;
:func:`upgrade` rewrites one as a stand-alone file.
"""

from __future__ import annotations

import dataclasses
import io
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from .errors import LstmlmError
from .files import atomic_path, open_regular
from .model_config import ModelConfig
from .params import parse_section
from .torch_archive import ArchiveError, read_archive
from .vocab import Vocabulary

if TYPE_CHECKING:
    import torch

    from .model import LSTMLanguageModel

FORMAT = "lstmlm-checkpoint/3"  # 3: the vocabulary inside the file
FORMAT_2 = "lstmlm-checkpoint/2"  # 2: the vocabulary file named by path; read, not written
# What each format's "vocab" entry holds.
VOCAB_KEYS = {FORMAT: {"sha256", "scheme", "words", "counts"},
              FORMAT_2: {"sha256", "path", "size"}}


class CheckpointError(LstmlmError, ValueError):
    """A checkpoint is missing, damaged, or does not fit the vocabulary it is used with."""


class Checkpoint(NamedTuple):
    """What :func:`load` returns: the model (eval mode), its vocabulary and the plain
    metadata training stored (epoch, valid_ppl, ...)."""

    model: LSTMLanguageModel
    vocab: Vocabulary
    info: dict[str, Any]


class Weights(NamedTuple):
    """A model's weights without torch: its config (the adaptive softmax's cutoffs as
    word counts) and float32 arrays named and shaped as the model's state_dict."""

    config: ModelConfig
    arrays: dict[str, np.ndarray]


class StoredWeights(NamedTuple):
    """What :func:`load_weights` returns: as :class:`Checkpoint`, the weights as arrays."""

    weights: Weights
    vocab: Vocabulary
    info: dict[str, Any]


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


def upgrade(path: str | Path, vocab_path: str | Path | None = None,
            out: str | Path | None = None) -> Path:
    """Rewrite a checkpoint in the current format, its vocabulary inside, at ``out``
    (default: in place); returns the path written. Weights, config and info stay as they
    are. For a format 2 file, the vocabulary is found as :func:`load` finds it."""
    model, vocab, info = load(path, vocab_path)
    out = Path(path if out is None else out)
    save_checkpoint(out, model, vocab, info)
    return out


# --------------------------------------------------------------------------- reading


def _read_payload(path: Path) -> dict:
    """A checkpoint's payload, its tensors as read-only numpy arrays, its structure
    checked (no code is unpickled)."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")  # no larger than RAM
    with open_regular(path, "checkpoint", memory, CheckpointError) as handle:
        try:
            payload = read_archive(handle)
        except ArchiveError as err:
            raise CheckpointError(f"{path}: not a readable checkpoint, perhaps truncated or "
                                  f"not a checkpoint ({err})") from None
    if not isinstance(payload, dict) or payload.get("format") not in (FORMAT, FORMAT_2):
        raise CheckpointError(f"{path}: not an {FORMAT} (or {FORMAT_2}) file")
    missing = [k for k in ("model_config", "state_dict", "vocab", "info") if k not in payload]
    if missing:
        raise CheckpointError(f"{path}: damaged checkpoint, it lacks {', '.join(missing)}")
    record = payload["vocab"]
    if not isinstance(record, dict) or not VOCAB_KEYS[payload["format"]] <= record.keys():
        raise CheckpointError(f"{path}: the checkpoint lacks its vocabulary reference")
    return payload


def read_checkpoint(path: str | Path) -> dict:
    """A checkpoint's payload as ``torch.load`` gives it (tensors as torch tensors), its
    structure checked: for comparing files (the weights are not checked: see load)."""
    import torch

    def tensors(value: Any) -> Any:
        if isinstance(value, np.ndarray):
            return torch.from_numpy(np.array(value))  # a writable copy
        return {k: tensors(v) for k, v in value.items()} if isinstance(value, dict) else value
    return tensors(_read_payload(Path(path)))


def load_weights(path: str | Path, vocab_path: str | Path | None = None) -> StoredWeights:
    """The weights (as numpy arrays), vocabulary and metadata of a checkpoint, without
    torch and with every check :func:`load` makes."""
    path = Path(path)
    payload = _read_payload(path)
    vocab = _vocabulary(payload, path, vocab_path)
    weights = _weights(payload, len(vocab), path)
    info = payload["info"] if isinstance(payload["info"], dict) else {}
    return StoredWeights(weights, vocab, info)


def load(path: str | Path, vocab_path: str | Path | None = None,
         map_location: str | torch.device = "cpu") -> Checkpoint:
    """The model, vocabulary and metadata of a checkpoint.

    The vocabulary is the one inside the file. A ``vocab_path`` given as well must hold
    the same one (checked by hash, before the model is built). A format 2 file names its
    vocabulary file: ``vocab_path``, else the stored path (relative to where training
    ran), else that file's name beside the checkpoint. Weights that are not finite (a
    diverged run) are refused. Raises CheckpointError or VocabError, naming the file.
    """
    weights, vocab, info = load_weights(path, vocab_path)
    return Checkpoint(build_model(weights, len(vocab)).to(map_location), vocab, info)


def build_model(weights: Weights, vocab_size: int) -> LSTMLanguageModel:
    """The torch model (eval mode, on the CPU) holding checked ``weights``, built without
    its initialisation: the strict load overwrites every weight."""
    import torch

    from .model import LSTMLanguageModel

    model = LSTMLanguageModel(weights.config, vocab_size, init_weights=False)
    model.load_state_dict({name: torch.from_numpy(np.array(array))
                           for name, array in weights.arrays.items()})
    return model.eval()


def _vocabulary(payload: dict, path: Path, vocab_path: str | Path | None) -> Vocabulary:
    record = payload["vocab"]
    if payload["format"] == FORMAT:
        inside = _embedded_vocabulary(record, path)
        if vocab_path is None:
            return inside
        size, advice = len(inside), "leave --vocab out: the checkpoint holds its own"
    else:
        vocab_path = vocab_path or _referenced_path(record, path)
        size, advice = record["size"], "pass the right one with --vocab"
    vocab = Vocabulary.load(vocab_path)
    if vocab.sha256 != record["sha256"]:
        raise CheckpointError(
            f"{vocab_path}: the model was trained with another vocabulary ({size} words, "
            f"sha256 {str(record['sha256'])[:12]}…) than this one ({len(vocab)} words, sha256 "
            f"{vocab.sha256[:12]}…); {advice}")
    return vocab


def _embedded_vocabulary(record: dict, path: Path) -> Vocabulary:
    words, counts = record["words"], record["counts"]
    if (not isinstance(words, str) or not isinstance(counts, np.ndarray)
            or counts.ndim != 1 or counts.dtype.kind not in "iu"):
        raise CheckpointError(f"{path}: damaged checkpoint, its vocabulary is malformed")
    vocab = Vocabulary.checked(words.split("\n"), counts.tolist(), record["scheme"],
                               source=f"{path} (its vocabulary)")
    if vocab.sha256 != record["sha256"]:
        raise CheckpointError(f"{path}: damaged checkpoint, its vocabulary does not match "
                              "the hash stored with it")
    return vocab


def _referenced_path(record: dict, path: Path) -> Path:
    """Format 2: the vocabulary file at its stored path, else its name beside ``path``."""
    if not isinstance(record["path"], str):
        raise CheckpointError(f"{path}: damaged checkpoint, its vocabulary path is malformed")
    stored = Path(record["path"])
    beside = path.parent / stored.name
    return beside if not stored.is_file() and beside.is_file() else stored


def _weights(payload: dict, vocab_size: int, path: Path) -> Weights:
    """The stored weights as float32 arrays, once the config is known to be valid, to
    call for exactly their names and shapes, and every weight to be finite."""
    try:
        config = parse_section("model", payload["model_config"], ModelConfig)
        expected = config.weight_shapes(vocab_size)
    except (ValueError, TypeError) as err:  # ParamsError is a ValueError
        raise CheckpointError(f"{path}: the stored model config is not valid ({err})") from None
    _check_shapes(payload["state_dict"], expected, path)
    arrays = {}
    for name, array in payload["state_dict"].items():
        arrays[name] = np.asarray(array, dtype=np.float32)  # native byte order
        if not np.isfinite(arrays[name]).all():
            raise CheckpointError(f"{path}: the weights are not finite ({name} holds NaN or "
                                  "infinity): the training run diverged; use an earlier "
                                  "checkpoint")
    return Weights(config.for_vocab(vocab_size), arrays)


def _check_shapes(weights: Any, expected: dict[str, tuple[int, ...]], path: Path) -> None:
    """Every weight the config calls for, of the shape it calls for, and nothing else."""
    if not isinstance(weights, dict):
        raise CheckpointError(f"{path}: damaged checkpoint, its state_dict is not a mapping")
    unfit = [f"{name} missing" for name in expected if name not in weights]
    unfit += [f"{name} not in the config" for name in weights if name not in expected]
    for name, want in expected.items():
        got = weights.get(name)
        if got is not None and not isinstance(got, np.ndarray):
            unfit.append(f"{name} not a tensor")
        elif got is not None and got.dtype.kind != "f":
            unfit.append(f"{name} of {got.dtype}, not floating point")
        elif got is not None and got.shape != want:
            unfit.append(f"{name} {got.shape}, the config needs {want}")
    if unfit:
        shown = "; ".join(unfit[:3]) + ("; …" if len(unfit) > 3 else "")
        raise CheckpointError(f"{path}: the weights do not fit the stored model config "
                              f"({shown})")
