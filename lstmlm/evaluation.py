"""Perplexity over whole streams, the way papers measure it.

The stream is batchified into B columns (see lstmlm.batching) and read ``bptt`` rows
at a time with the hidden state carried across batches, so every token is predicted
from all the text before it in its column. Every token counts, ``<eos>`` and ``<unk>``
included. The literature uses B = 10 for valid and B = 1 for test.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Iterator

import torch

from .batching import get_batch
from .model import LSTMLanguageModel
from .params import spec


@dataclass(frozen=True)
class EvaluateConfig:
    """The ``evaluate`` section of params.yaml."""

    batch_size: int = spec(10, low=1, doc="valid, as in the literature")
    test_batch_size: int = spec(1, low=1, doc="test, as in the literature")
    bptt: int = spec(70, low=1)


@contextlib.contextmanager
def full_precision() -> Iterator[None]:
    """Plain fp32 matrix products (no TF32) inside, whatever training uses: the numbers
    that pick the checkpoint and the reported perplexities are exact fp32."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        with torch.autocast("cuda", enabled=False), torch.autocast("cpu", enabled=False):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@torch.no_grad()
def evaluate_loss(model: LSTMLanguageModel, data: torch.Tensor, bptt: int) -> float:
    """Mean loss (nats per token) over a whole (T, B) stream, state carried throughout."""
    model.eval()
    device = next(model.parameters()).device
    state = model.init_state(data.size(1))
    total, count = torch.zeros((), device=device, dtype=torch.float64), 0
    for i in range(0, data.size(0) - 1, bptt):
        inputs, targets = get_batch(data, i, min(bptt, data.size(0) - 1 - i), device)
        out = model(inputs, state)
        state = out.state
        total += model.loss(out.features, targets).double() * targets.numel()
        count += targets.numel()
    return float(total) / count


def perplexity(loss: float) -> float:
    """exp(mean loss in nats); capped to stay finite for diverged models."""
    return math.exp(min(loss, 700.0))
