"""Will a configuration fit this machine? Checked before anything is allocated.

A typo such as ``model.hidden: 10000000`` should end with a message naming the key and
the estimate, not with an allocator's traceback minutes later, and it should be caught
by the `params` stage, before DVC deletes the last good outputs of `train`.
"""

from __future__ import annotations

import dataclasses
import math

import psutil

from lstmlm.core.errors import LstmlmError
from lstmlm.model.config import ModelConfig

# Bytes per parameter while training: weight, gradient and two Adam moments (fp32).
STATE_COPIES = {"adam": 4, "adamw": 4, "sgd": 2}
# fp32 activations kept per token for the backward pass, per LSTM unit: gates (4),
# cell, output, dropout masks and their gradients, rounded up.
ACTIVATIONS_PER_UNIT = 16
# Leave this share of the available memory for everything else.
HEADROOM = 0.8
GIB = 2 ** 30


def parameter_count(config: ModelConfig, vocab_size: int) -> int:
    """Parameters of LSTMLanguageModel(config, vocab_size), computed without building it:
    its weights' shapes (ModelConfig.weight_shapes), a tied weight counted once."""
    shapes = config.weight_shapes(vocab_size)
    if config.tie_weights and config.output == "full":
        del shapes["decoder.weight"]  # the encoder's own table
    return sum(math.prod(shape) for shape in shapes.values())


def training_bytes(config: ModelConfig, vocab_size: int, optimizer: str, batch_size: int,
                   bptt: int, averaging: bool = False) -> int:
    """A rough upper estimate of the memory one training process needs (``config``
    sized for the vocabulary: ModelConfig.for_vocab)."""
    copies = STATE_COPIES[optimizer] + (1 if averaging else 0)
    tokens = batch_size * bptt
    units = config.layers * config.hidden + 2 * config.emb
    logits = vocab_size if config.output == "full" else config.cutoffs[0] + config.out_dim
    return 4 * (copies * parameter_count(config, vocab_size)
                + tokens * (ACTIVATIONS_PER_UNIT * units + 3 * logits))


def available_bytes(device_type: str = "cpu") -> int:
    """Memory free for this process now: the GPU's free memory, or the system's."""
    if device_type == "cuda":
        import torch

        return torch.cuda.mem_get_info()[0]
    return psutil.virtual_memory().available


def check_fits(config: ModelConfig, vocab_size: int, train, device_type: str = "cpu") -> int:
    """Raise a LstmlmError naming the key most to blame when training would not fit;
    return the estimate in bytes."""
    def estimate(model_config: ModelConfig, batch_size: int) -> int:
        return training_bytes(model_config, vocab_size, train.optimizer, batch_size,
                              train.bptt, train.averaging != "none")

    need, have = estimate(config, train.batch_size), int(HEADROOM * available_bytes(device_type))
    if need <= have:
        return need
    # Blame the key whose default value would save the most.
    defaults = ModelConfig()
    culprits = {f"model.{k}": estimate(dataclasses.replace(config, **{k: getattr(defaults, k)}),
                                       train.batch_size)
                for k in ("emb", "hidden", "layers") if getattr(config, k) != getattr(defaults, k)}
    culprits["train.batch_size"] = estimate(config, 1)
    key = min(culprits, key=culprits.get)
    value = getattr(config, key.split(".")[1]) if key.startswith("model.") else train.batch_size
    raise LstmlmError(
        f"{key}: {value} needs too much memory: training would take about "
        f"{need / GIB:,.1f} GiB ({parameter_count(config, vocab_size):,} parameters, "
        f"vocabulary {vocab_size:,}), more than the {have / GIB:,.1f} GiB available "
        f"({device_type}); lower {key}")
