"""Reading a checkpoint (lstmlm.core.checkpoint), distrusted until checked.

It is read without torch (lstmlm.core.torch_archive: an unpickler that builds nothing but
tensors and plain data), so the command line and the server start without importing it:

    model, vocab, info = load("data/model.pt")            # the torch model
    weights, vocab, info = load_weights("data/model.pt")  # numpy arrays, no torch

Both check alike. The file must be a regular file no larger than this machine's memory
(never a device or a FIFO), laid out as our writer lays it out (every tensor stored whole,
so no size it claims exceeds the bytes it holds: lstmlm.core.torch_archive); its model
config must be valid and call for exactly the weights it holds, shapes compared before
anything is built (ModelConfig.weight_shapes: a config claiming a huge model costs
nothing); every weight must be finite, the vocabulary the one it was trained with (by
hash), and the metadata plain data of a bounded size, as JSON can carry it (the page
serves it).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from lstmlm.core.checkpoint import FORMAT, VOCAB_KEYS, CheckpointError
from lstmlm.core.files import open_regular
from lstmlm.core.params import parse_section
from lstmlm.core.torch_archive import ArchiveError, read_archive
from lstmlm.data.vocab import Vocabulary
from lstmlm.model.config import ModelConfig

if TYPE_CHECKING:
    import torch

    from lstmlm.model.lstm import LSTMLanguageModel


class Weights(NamedTuple):
    """A model's weights without torch: its config (the adaptive softmax's cutoffs as
    word counts) and float32 arrays named and shaped as the model's state_dict."""

    config: ModelConfig
    arrays: dict[str, np.ndarray]


class Checkpoint(NamedTuple):
    """What :func:`load` and :func:`load_weights` return: the model (the torch model, in
    eval mode, or its Weights), its vocabulary and the plain metadata training stored
    (epoch, valid_ppl, ...)."""

    model: LSTMLanguageModel | Weights
    vocab: Vocabulary
    info: dict[str, Any]


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
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an {FORMAT} file")
    missing = [k for k in ("model_config", "state_dict", "vocab", "info") if k not in payload]
    if missing:
        raise CheckpointError(f"{path}: damaged checkpoint, it lacks {', '.join(missing)}")
    record = payload["vocab"]
    if not isinstance(record, dict) or not VOCAB_KEYS <= record.keys():
        raise CheckpointError(f"{path}: the checkpoint lacks its vocabulary reference")
    return payload


def load_weights(path: str | Path, vocab_path: str | Path | None = None) -> Checkpoint:
    """The weights (as numpy arrays), vocabulary and metadata of a checkpoint, without
    torch and with every check :func:`load` makes."""
    path = Path(path)
    payload = _read_payload(path)
    vocab = _vocabulary(payload, path, vocab_path)
    weights = _weights(payload, len(vocab), path)
    return Checkpoint(weights, vocab, _plain_info(payload["info"], path))


def load(path: str | Path, vocab_path: str | Path | None = None,
         map_location: str | torch.device = "cpu") -> Checkpoint:
    """The model, vocabulary and metadata of a checkpoint.

    The vocabulary is the one inside the file. A ``vocab_path`` given as well must hold
    the same one (checked by hash, before the model is built). Weights that are not
    finite (a diverged run) are refused. Raises CheckpointError or VocabError, naming the
    file.
    """
    weights, vocab, info = load_weights(path, vocab_path)
    return Checkpoint(build_model(weights, len(vocab)).to(map_location), vocab, info)


def build_model(weights: Weights, vocab_size: int) -> LSTMLanguageModel:
    """The torch model (eval mode, on the CPU) holding checked ``weights``, built without
    its initialisation: the strict load overwrites every weight."""
    import torch

    from lstmlm.model.lstm import LSTMLanguageModel

    model = LSTMLanguageModel(weights.config, vocab_size, init_weights=False)
    model.load_state_dict({name: torch.from_numpy(np.array(array))
                           for name, array in weights.arrays.items()})
    return model.eval()


def _vocabulary(payload: dict, path: Path, vocab_path: str | Path | None) -> Vocabulary:
    """The vocabulary inside the file, checked against its hash; a ``vocab_path`` given as
    well must hold the same."""
    record = payload["vocab"]
    words, counts = record["words"], record["counts"]
    if (not isinstance(words, str) or not isinstance(counts, np.ndarray)
            or counts.ndim != 1 or counts.dtype.kind not in "iu"):
        raise CheckpointError(f"{path}: damaged checkpoint, its vocabulary is malformed")
    if counts.size != words.count("\n") + 1:  # before a list is built of either
        raise CheckpointError(f"{path}: damaged checkpoint, its vocabulary has "
                              f"{counts.size:,} counts for {words.count(chr(10)) + 1:,} words")
    inside = Vocabulary.checked(words.split("\n"), counts.tolist(), record["scheme"],
                                source=f"{path} (its vocabulary)")
    if inside.sha256 != record["sha256"]:
        raise CheckpointError(f"{path}: damaged checkpoint, its vocabulary does not match "
                              "the hash stored with it")
    if vocab_path is None:
        return inside
    vocab = Vocabulary.load(vocab_path)
    if vocab.sha256 != inside.sha256:
        raise CheckpointError(
            f"{vocab_path}: the model was trained with another vocabulary ({len(inside)} "
            f"words, sha256 {inside.sha256[:12]}…) than this one ({len(vocab)} words, sha256 "
            f"{vocab.sha256[:12]}…); leave --vocab out: the checkpoint holds its own")
    return vocab


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
    return Weights(config, arrays)


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


# What training writes as metadata is a few numbers (epoch, valid_loss, valid_ppl); these
# bounds leave room for more, and keep the page's /api/info small, fast and valid JSON.
MAX_INFO_VALUES = 1000     # counted as visited: a structure shared with itself counts whole
MAX_INFO_DEPTH = 8
MAX_INFO_CHARS = 10_000    # per string
MAX_INFO_INT = 2**63


def _plain_info(info: Any, path: Path) -> dict[str, Any]:
    """The checkpoint's metadata as plain JSON data (dicts with string keys, lists,
    strings, 64-bit integers, numbers; NaN and infinities as None), within the bounds
    above; else a CheckpointError, before anything walks or serves it."""
    left = [MAX_INFO_VALUES]

    def plain(value: Any, depth: int) -> Any:
        left[0] -= 1
        if left[0] < 0 or depth > MAX_INFO_DEPTH:
            raise CheckpointError(f"{path}: damaged checkpoint, its metadata holds more than "
                                  f"{MAX_INFO_VALUES:,} values or more than {MAX_INFO_DEPTH} "
                                  "levels")
        if isinstance(value, float):
            return value if math.isfinite(value) else None
        if _plain_scalar(value):
            return value
        if isinstance(value, (list, tuple)):
            return [plain(item, depth + 1) for item in value]
        if isinstance(value, dict) and all(isinstance(key, str) for key in value):
            return {plain(key, depth + 1): plain(item, depth + 1) for key, item in value.items()}
        raise CheckpointError(f"{path}: damaged checkpoint, its metadata holds a value of "
                              f"type {type(value).__name__[:30]} that is not plain data "
                              "(numbers, integers of 64 bits, UTF-8 texts of at most "
                              f"{MAX_INFO_CHARS:,} characters, lists, mappings with text keys)")

    if not isinstance(info, dict):
        raise CheckpointError(f"{path}: damaged checkpoint, its metadata is not a mapping")
    return plain(info, 0)


def _plain_scalar(value: Any) -> bool:
    """None, a bool, a 64-bit integer, or a string of at most MAX_INFO_CHARS that UTF-8
    can write (no lone surrogate)."""
    if value is None or isinstance(value, bool):
        return True
    if isinstance(value, int):
        return abs(value) < MAX_INFO_INT
    if not isinstance(value, str) or len(value) > MAX_INFO_CHARS:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
