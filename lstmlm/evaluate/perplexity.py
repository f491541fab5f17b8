"""Perplexity over whole streams, the way papers measure it.

The stream is batchified into B columns (see lstmlm.data.streams) and read ``bptt`` rows
at a time with the hidden state carried across batches, so every token is predicted
from all the text before it in its column. Every token counts, ``<eos>`` and ``<unk>``
included. The literature uses B = 10 for valid and B = 1 for test.
"""

from __future__ import annotations

import math

import torch

from lstmlm.data.streams import get_batch
from lstmlm.model.lstm import LSTMLanguageModel


@torch.no_grad()
def evaluate_loss(model: LSTMLanguageModel, data: torch.Tensor, bptt: int,
                  keep: list | None = None) -> float:
    """Mean loss (nats per token) over a whole (T, B) stream, state carried throughout.

    With a list ``keep``, each batch's features (T, B, D) and log p(target) (T, B) are
    appended to it as a pair (the neural cache reuses them: lstmlm.evaluate.adaptation), and the
    loss is taken from those log-probs: the same number, to the bit with the adaptive
    softmax (its loss is their mean), to fp32 rounding with the full one."""
    model.eval()
    device = next(model.parameters()).device
    state = model.init_state(data.size(1))
    total, count = torch.zeros((), device=device, dtype=torch.float64), 0
    for i in range(0, data.size(0) - 1, bptt):
        inputs, targets = get_batch(data, i, min(bptt, data.size(0) - 1 - i), device)
        out = model(inputs, state)
        state = out.state
        if keep is None:
            loss = model.loss(out.features, targets)
        else:
            log_probs = model.target_log_probs(out.features, targets)
            keep.append((out.features, log_probs))
            loss = (-log_probs).mean()
        total += loss.double() * targets.numel()
        count += targets.numel()
    return float(total) / count


def perplexity(loss: float) -> float:
    """exp(mean loss in nats); capped to stay finite for diverged models."""
    return math.exp(min(loss, 700.0))


def metric_entry(loss: float) -> dict:
    """How metrics/eval.json reports a mean loss: {loss, ppl}, rounded the one way."""
    return {"loss": round(loss, 6), "ppl": round(perplexity(loss), 3)}
