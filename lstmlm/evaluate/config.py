"""The ``evaluate`` section of params.yaml: how the evaluate stage reads valid and test,
and the settings of the adapted perplexities (lstmlm.evaluate.adaptation)."""

from __future__ import annotations

from dataclasses import dataclass

from lstmlm.core.params import spec


@dataclass(frozen=True)
class EvaluateConfig:
    """The ``evaluate`` section of params.yaml."""

    batch_size: int = spec(10, low=1, doc="valid, as in the literature")
    test_batch_size: int = spec(1, low=1, doc="test, as in the literature")
    bptt: int = spec(70, low=1)
    max_tokens: int = spec(0, low=0, doc="tokens of valid and of test (from their starts) that "
                           "the stage reads, for a quick run; 0: all (what papers report)")
    # Adapted perplexities, reported beside the static ones. Both valid and test are read
    # as test is, in test_batch_size columns: valid chooses the cache's (θ, λ), which test
    # then uses unchanged.
    adapt_valid_tokens: int = spec(50_000, low=0, doc="tokens of valid (from its start) that the "
                                   "adapted figures read and choose on; 0: all of it")
    cache_window: int = spec(3785, low=0, doc="neural cache: positions remembered; 0: off")
    cache_thetas: list[float] = spec([0.1, 0.2, 0.3, 0.662, 1.0], item_low=0.0,
                                     item_low_open=True,
                                     doc="neural cache: θ grid (> 0), chosen on valid")
    cache_lambdas: list[float] = spec([0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5],
                                      item_low=0.0, item_high=1.0,
                                      doc="neural cache: λ grid in [0, 1], chosen on valid")
    # Dynamic evaluation with Krause et al.'s RMS rule: a step of lr ∇ / (rms + epsilon)
    # per segment, rms measured on dynamic_stat_tokens of train.
    dynamic_lr: float = spec(1e-4, low=0.0, doc="dynamic evaluation: step size; 0: off")
    dynamic_decay: float = spec(0.01, low=0.0, high=1.0,
                                doc="dynamic evaluation: pull back toward the trained weights")
    dynamic_epsilon: float = spec(1e-4, low=0.0, low_open=True,
                                  doc="dynamic evaluation: added to each weight's gradient RMS")
    dynamic_segment: int = spec(70, low=1, doc="dynamic evaluation: tokens per update")
    dynamic_stat_tokens: int = spec(40000, low=1,
                                    doc="dynamic evaluation: training tokens for the RMS, "
                                    "in whole batches of 100 streams x segment")
