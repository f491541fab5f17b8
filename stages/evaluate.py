"""Stage `evaluate`: valid and test perplexity over the full streams, static and adapted.

Reads params: the evaluate section. The static numbers compare with published ones: the
hidden state carried across batches, batch 10 for valid and 1 for test, as in the
literature. Beside them, the adapted perplexities of lstmlm.evaluate.adaptation: the neural cache,
dynamic evaluation, and both together (each off when its window / learning rate is 0).
They read valid the way test is read, in test_batch_size columns (valid's first
adapt_valid_tokens tokens), choose each cache's (θ, λ) there, and apply the choice to test.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Callable

import torch

from lstmlm.core.errors import LstmlmError
from lstmlm.core.files import write_json
from lstmlm.core.loading import load
from lstmlm.core.machine import full_precision, set_cpu_threads
from lstmlm.core.params import read_params
from lstmlm.data.streams import batchify, load_ids
from lstmlm.evaluate.adaptation import adapt_test, adapt_valid, adapted_metrics, dynamic_rule
from lstmlm.evaluate.config import EvaluateConfig
from lstmlm.evaluate.perplexity import evaluate_loss, metric_entry
from stages.guard import run_stage


def log(line: str) -> None:
    print(f"evaluate: {line}", flush=True)


def stream(ids, batch_size: int, key: str) -> torch.Tensor:
    """A split as a (T, B) stream; too short for the batch size is the key's fault."""
    try:
        return batchify(ids, batch_size)
    except ValueError as err:
        raise LstmlmError(f"{err}; use a smaller {key} (now {batch_size})") from None


def evaluate_split(model, data: torch.Tensor, bptt: int, name: str,
                   keep: list | None = None) -> dict:
    """Loss, perplexity, batch and speed over one whole (T, B) stream (``keep``:
    evaluate_loss's, for the cache)."""
    started = time.perf_counter()
    with full_precision():
        loss = evaluate_loss(model, data, bptt, keep)
    entry = {**metric_entry(loss), "batch": data.size(1),
             "tokens_per_s": round(data.numel() / (time.perf_counter() - started), 1)}
    log(f"{name} ppl {entry['ppl']:.2f} (batch {entry['batch']}, "
        f"{entry['tokens_per_s']:,.0f} tokens/s)")
    return entry


def adapted(model, ids: dict, config: EvaluateConfig, test: torch.Tensor,
            test_kept: list | None, load_train: Callable[[], Any]) -> dict:
    """The adapted entries of eval.json: chosen on valid, then applied to test;
    ``load_train()`` gives the training ids, read only when dynamic evaluation is on."""
    rule = None
    with full_precision():  # like every number the stage reports
        if config.dynamic_lr:
            started = time.perf_counter()
            rule = dynamic_rule(model, load_train(), config)
            log(f"dynamic: gradient rms over {rule.stat_tokens:,} training tokens, "
                f"{time.perf_counter() - started:.1f} s")
        valid = stream(ids["valid"][:config.adapt_valid_tokens or None],
                       config.test_batch_size, "evaluate.test_batch_size")
        valid_kept = [] if config.cache_window else None
        evaluate_split(model, valid, config.bptt, "valid (read as test is, for adaptation)",
                       valid_kept)
        valid_results, choices = adapt_valid(model, valid, valid_kept, config, rule, log)
        test_results = adapt_test(model, test, test_kept, config, rule, choices, log)
    for split, results in (("valid", valid_results), ("test", test_results)):
        for method, entry in results.items():
            log(f"{split} ppl {entry['ppl']:.2f} with {method} (adapted, batch "
                f"{entry['batch']}, {entry['tokens']:,} tokens)")
    return adapted_metrics(valid_results, test_results, choices)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--ids", type=Path, required=True)
    parser.add_argument("--vocab", type=Path, required=True)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="output metrics JSON")
    args = parser.parse_args()
    config = read_params(args.params, evaluate=EvaluateConfig)["evaluate"]

    set_cpu_threads(0)
    model, vocab, _ = load(args.checkpoint, args.vocab)
    ids = {split: load_ids(args.ids, split, len(vocab))[:config.max_tokens or None]
           for split in ("valid", "test")}
    valid = stream(ids["valid"], config.batch_size, "evaluate.batch_size")
    test = stream(ids["test"], config.test_batch_size, "evaluate.test_batch_size")
    test_kept = [] if config.cache_window else None  # for the cache: features, log-probs
    results = {"valid": evaluate_split(model, valid, config.bptt, "valid"),
               "test": evaluate_split(model, test, config.bptt, "test", test_kept)}
    if config.cache_window or config.dynamic_lr:
        results.update(adapted(model, ids, config, test, test_kept,
                               lambda: load_ids(args.ids, "train", len(vocab))))
    write_json(args.out, results)


if __name__ == "__main__":
    run_stage(main)
