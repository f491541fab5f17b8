"""Perplexity over whole streams, the way papers measure it.

The stream is batchified into B columns (see lstmlm.batching) and read ``bptt`` rows
at a time with the hidden state carried across batches, so every token is predicted
from all the text before it in its column. Every token counts, ``<eos>`` and ``<unk>``
included. The literature uses B = 10 for valid and B = 1 for test.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .batching import get_batch
from .model import LSTMLanguageModel
from .params import ParamsError, spec


@dataclass(frozen=True)
class EvaluateConfig:
    """The ``evaluate`` section of params.yaml."""

    batch_size: int = spec(10, low=1, doc="valid, as in the literature")
    test_batch_size: int = spec(1, low=1, doc="test, as in the literature")
    bptt: int = spec(70, low=1)
    # Adapted perplexities, reported beside the static ones (lstmlm.adaptation). Both
    # valid and test are read as test is, in test_batch_size columns: valid chooses the
    # cache's (θ, λ), which test then uses unchanged.
    adapt_valid_tokens: int = spec(50_000, low=0, doc="tokens of valid (from its start) that the "
                                   "adapted figures read and choose on; 0: all of it")
    cache_window: int = spec(3785, low=0, doc="neural cache: positions remembered; 0: off")
    cache_thetas: list[float] = spec([0.1, 0.2, 0.3, 0.662, 1.0],
                                     doc="neural cache: θ grid (> 0), chosen on valid")
    cache_lambdas: list[float] = spec([0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5],
                                      doc="neural cache: λ grid in [0, 1], chosen on valid")
    # Dynamic evaluation with Krause et al.'s RMS rule (lstmlm.adaptation): a step of
    # lr ∇ / (rms + epsilon) per segment, rms measured on dynamic_stat_tokens of train.
    dynamic_lr: float = spec(1e-4, low=0.0, doc="dynamic evaluation: step size; 0: off")
    dynamic_decay: float = spec(0.01, low=0.0, high=1.0,
                                doc="dynamic evaluation: pull back toward the trained weights")
    dynamic_epsilon: float = spec(1e-4, low=0.0, low_open=True,
                                  doc="dynamic evaluation: added to each weight's gradient RMS")
    dynamic_segment: int = spec(70, low=1, doc="dynamic evaluation: tokens per update")
    dynamic_stat_tokens: int = spec(40000, low=1,
                                    doc="dynamic evaluation: training tokens for the RMS, "
                                    "in whole batches of 100 streams x segment")

    def __post_init__(self) -> None:
        # params.py checks a list only as a list: the grids' numbers are checked here.
        grids = (("cache_thetas", lambda v: v > 0, "numbers > 0"),
                 ("cache_lambdas", lambda v: 0 <= v <= 1, "numbers in [0, 1]"))
        for key, allowed, words in grids:
            values = getattr(self, key)
            if not values or not all(_is_number(v) and allowed(v) for v in values):
                raise ParamsError(f"evaluate.{key}: {values!r} is not allowed; expected a "
                                 f"non-empty list of {words}")
            object.__setattr__(self, key, [float(v) for v in values])


def _is_number(value) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


@torch.no_grad()
def evaluate_loss(model: LSTMLanguageModel, data: torch.Tensor, bptt: int,
                  keep: list | None = None) -> float:
    """Mean loss (nats per token) over a whole (T, B) stream, state carried throughout.

    With a list ``keep``, each batch's features (T, B, D) and log p(target) (T, B) are
    appended to it as a pair (the neural cache reuses them: lstmlm.adaptation), and the
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
