"""Stage `evaluate`: valid and test perplexity over the full streams.

Reads params: evaluate.batch_size, evaluate.test_batch_size, evaluate.bptt. The hidden
state is carried across batches, as in the literature (batch 10 for valid, 1 for test),
so the numbers compare with published ones.
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
from lstmlm.batching import batchify
from lstmlm.evaluation import EvaluateConfig, evaluate_loss, full_precision, perplexity
from lstmlm.training import set_cpu_threads


def evaluate_split(model, ids, batch_size: int, bptt: int) -> dict:
    """Loss, perplexity and speed over one whole split."""
    data = batchify(ids, batch_size)
    started = time.perf_counter()
    with full_precision():
        loss = evaluate_loss(model, data, bptt)
    seconds = time.perf_counter() - started
    return {"loss": round(loss, 6), "ppl": round(perplexity(loss), 3),
            "tokens_per_s": round(data.numel() / seconds, 1)}


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
    results = {}
    for split, batch_size in (("valid", params.batch_size), ("test", params.test_batch_size)):
        ids = load_ids(args.ids, split, len(vocab))
        try:
            results[split] = evaluate_split(model, ids, batch_size, params.bptt)
        except ValueError as err:  # batchify: the split is too short for the batch size
            key = "evaluate.batch_size" if split == "valid" else "evaluate.test_batch_size"
            raise LstmlmError(f"{args.ids / split}.npy: {err}; use a smaller {key} "
                              f"(now {batch_size})") from None
        print(f"evaluate: {split} ppl {results[split]['ppl']:.2f} (batch {batch_size}, "
              f"{results[split]['tokens_per_s']:,.0f} tokens/s)", flush=True)
    write_json(args.out, results)


if __name__ == "__main__":
    run_main(main)
