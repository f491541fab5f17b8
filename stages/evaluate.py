"""Stage `evaluate`: valid and test perplexity over the full streams.

Reads params: evaluate.* (dvc.yaml lists each key). The hidden state is carried across
batches, as in the literature (batch 10 for valid, 1 for test), so the static numbers
compare with published ones. Beside them, on the same streams, the adapted perplexities
of lstmlm.adaptation: the neural cache (θ, λ chosen on valid, applied to test), dynamic
evaluation, and both together; each is off when its window / learning rate is 0.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from lstmlm.checkpoint import load
from lstmlm.corpus import load_ids
from lstmlm.errors import LstmlmError, run_main
from lstmlm.files import write_json
from lstmlm.params import read_params
from lstmlm.adaptation import adapt_split, adapted_metrics, dynamic_rule
from lstmlm.batching import batchify
from lstmlm.evaluation import EvaluateConfig, evaluate_loss, full_precision, perplexity
from lstmlm.training import set_cpu_threads


def evaluate_split(model, data, bptt: int, keep: list | None = None) -> dict:
    """Loss, perplexity and speed over one whole (T, B) split (``keep``: evaluate_loss's)."""
    started = time.perf_counter()
    with full_precision():
        loss = evaluate_loss(model, data, bptt, keep)
    seconds = time.perf_counter() - started
    return {"loss": round(loss, 6), "ppl": round(perplexity(loss), 3),
            "tokens_per_s": round(data.numel() / seconds, 1)}


def log(line: str) -> None:
    print(f"evaluate: {line}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--ids", type=Path, required=True)
    parser.add_argument("--vocab", type=Path, required=True)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="output metrics JSON")
    args = parser.parse_args()
    params = read_params(args.params, evaluate=EvaluateConfig)["evaluate"]

    set_cpu_threads(0)
    model, vocab, _ = load(args.checkpoint, args.vocab)
    results, adapted = {}, {}
    rule = None  # dynamic evaluation's update, its gradient RMS measured on train
    if params.dynamic_lr:
        started = time.perf_counter()
        with full_precision():  # like every number the stage reports
            rule = dynamic_rule(model, load_ids(args.ids, "train", len(vocab)), params)
        log(f"dynamic: gradient rms over {rule.stat_tokens:,} training tokens, "
            f"{time.perf_counter() - started:.1f} s")
    chosen = {}  # the cache's (θ, λ) per method, picked on valid
    for split, batch_size in (("valid", params.batch_size), ("test", params.test_batch_size)):
        ids = load_ids(args.ids, split, len(vocab))
        try:
            data = batchify(ids, batch_size)
        except ValueError as err:  # the split is too short for the batch size
            key = "evaluate.batch_size" if split == "valid" else "evaluate.test_batch_size"
            raise LstmlmError(f"{args.ids / split}.npy: {err}; use a smaller {key} "
                              f"(now {batch_size})") from None
        kept = [] if params.cache_window else None  # for the cache: features, log-probs
        results[split] = evaluate_split(model, data, params.bptt, kept)
        log(f"{split} ppl {results[split]['ppl']:.2f} (batch {batch_size}, "
            f"{results[split]['tokens_per_s']:,.0f} tokens/s)")
        if params.cache_window or params.dynamic_lr:
            with full_precision():
                adapted[split] = adapt_split(model, data, kept, params, chosen, rule, log=log)
            for method, entry in adapted[split].items():
                log(f"{split} ppl {entry['ppl']:.2f} with {method} (adapted)")
    write_json(args.out, {**results, **adapted_metrics(adapted, chosen)})


if __name__ == "__main__":
    run_main(main)
