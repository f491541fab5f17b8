"""Benchmark: training speed and quality on WikiText-2 for a fixed wall-clock budget.

    python bench/train_speed.py [--minutes 5] [--probe-seconds 60] [--skip-budget] [--flops-only]

Prints, in one run and on the same machine:
  1. tokens/s and valid perplexity after --minutes of training, for the default params
     (preset cpu) and for the seed notebook's configuration (preset seed);
  2. tokens/s of pytorch/examples' 2x200 tied LSTM with a full softmax against the same
     model with adaptive softmax (target: >= 3x);
  3. the old default model's (39de3af's preset cpu: 1x512, batch 32 x 70) tokens/s and
     training FLOP/s, as a share of this machine's measured matmul peak in the precision
     the run used (bf16 where the CPU has bfloat16 instructions, else fp32), both peaks
     shown; then the same for today's default, when it differs.

FLOPs are counted analytically (matmuls only; backward = 2x forward), with the adaptive
softmax tails weighted by how often their words occur as targets.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from data_speed import find_wikitext  # noqa: E402

from lstmlm.core.machine import cpu_has_bf16, set_cpu_threads
from lstmlm.core.params import parse_section
from lstmlm.data.streams import load_ids
from lstmlm.data.tensorise import tensorise_corpus
from lstmlm.data.tokenise import tokenise_corpus
from lstmlm.model.config import ModelConfig
from lstmlm.model.lstm import LSTMLanguageModel
from lstmlm.presets import compose
from lstmlm.train.schedule import TrainConfig
from lstmlm.train.trainer import Trainer

# pytorch/examples word_language_model defaults: 2x200, tied, batch 20, bptt 35.
SMALL_2X200 = {"emb": 200, "hidden": 200, "layers": 2, "output_dropout": 0.2,
               "input_dropout": 0.2, "layer_dropout": 0.2, "word_dropout": 0.0}


# The default of 39de3af (before issue 28), whatever conf/ says today: the speed target's
# model.
OLD_DEFAULT = ["model.emb=256", "model.hidden=512", "model.layers=1", "model.tie_weights=true",
               "model.output=adaptive", "train.batch_size=32", "train.bptt=70", "train.lr=0.003",
               "train.optimizer=adam", "train.clip=0.25", "train.averaging=swa",
               "train.epochs=8", "train.nproc=1", "train.threads=0"]


def preset(name: str, overrides: list[str] | tuple = ()) -> tuple[ModelConfig, TrainConfig]:
    """The model and train sections of a recipe in conf/preset/, with Hydra overrides."""
    params = compose(name, list(overrides), conf_dir=ROOT / "conf")
    return (parse_section("model", params["model"], ModelConfig),
            parse_section("train", params["train"], TrainConfig))


def matmul_peak_gflops(threads: int, dtype: torch.dtype = torch.float32, n: int = 2048,
                       seconds: float = 1.0) -> float:
    """Best GFLOP/s of a square matmul in ``dtype``, over 3 rounds of about ``seconds``
    each: the machine's practical peak. (A CPU without bfloat16 instructions emulates
    bf16 products, a hundred times slower: the rounds are sized from one product.)"""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    started = time.perf_counter()
    a @ b
    repeat = max(1, round(seconds / (time.perf_counter() - started)))
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(repeat):
            a @ b
        best = min(best, time.perf_counter() - started)
    return 2 * n ** 3 * repeat / best / 1e9


def training_flops_per_token(config: ModelConfig, vocab_size: int, targets: np.ndarray) -> float:
    """Matmul FLOPs to train on one token (forward + backward = 3x forward); ``config``
    sized for the vocabulary."""
    c = config
    forward = 0.0
    for layer in range(c.layers):
        n_in = c.emb if layer == 0 else c.hidden
        forward += 2 * 4 * c.hidden * (n_in + c.hidden)
    if c.tie_weights and c.hidden != c.emb:
        forward += 2 * c.hidden * c.emb
    d = c.out_dim
    if c.output == "full":
        forward += 2 * d * vocab_size
    else:
        edges = [*c.cutoffs, vocab_size]
        forward += 2 * d * (edges[0] + len(c.cutoffs))
        counts = np.bincount(np.asarray(targets), minlength=vocab_size)
        for i in range(len(c.cutoffs)):
            share = counts[edges[i]:edges[i + 1]].sum() / counts.sum()
            hidden = int(d // (c.div_value ** (i + 1)))
            forward += share * 2 * (d * hidden + hidden * (edges[i + 1] - edges[i]))
    return 3 * forward


def prepare_ids(wikitext: Path, work: Path) -> tuple[np.ndarray, np.ndarray, int]:
    """Tokenise and tensorise WikiText-2 into ``work``; return train, valid ids, vocab size."""
    raw = work / "raw"
    raw.mkdir()
    for split in ("train", "valid", "test"):
        (raw / f"{split}.txt").symlink_to(wikitext / f"wiki.{split}.tokens")
    vocab, _ = tokenise_corpus(raw, work / "tokens", work / "vocab.json", scheme="wikitext")
    tensorise_corpus(work / "tokens", vocab, work / "ids")
    return load_ids(work / "ids", "train"), load_ids(work / "ids", "valid"), len(vocab)


def run_budget(name: str, config: ModelConfig, train_config: TrainConfig, data,
               seconds: float) -> dict:
    """Train for ``seconds`` of wall time; return tokens/s, valid ppl and the config."""
    train_ids, valid_ids, vocab_size = data
    train_config = dataclasses.replace(train_config, epochs=1000, max_minutes=0.0,
                                       early_stop_patience=1000)
    torch.manual_seed(train_config.seed)
    config = config.for_vocab(vocab_size)
    trainer = Trainer(LSTMLanguageModel(config, vocab_size), train_ids, valid_ids,
                      train_config, torch.device("cpu"), reporter=None)
    started = time.perf_counter()
    tokens = 0
    train_seconds = 0.0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        _, n, s = trainer.train_epoch(deadline)
        tokens, train_seconds = tokens + n, train_seconds + s
        trainer.progress.epoch += 1
    ppl = float(np.exp(trainer.validate()))
    print(f"  {name:<28} {tokens / train_seconds:>9,.0f} tokens/s   valid ppl {ppl:8.1f}   "
          f"({tokens:,} tokens, {time.perf_counter() - started:.0f} s incl. validation)",
          flush=True)
    return {"tokens_per_s": tokens / train_seconds, "ppl": ppl, "config": config,
            "precision": trainer.precision}


def compare_softmaxes(default_train: TrainConfig, data, seconds: float) -> None:
    """pytorch/examples' 2x200 LSTM with a full softmax against an adaptive one."""
    print(f"\n2. 2x200 LSTM, full vs adaptive softmax ({seconds:g} s each)")
    small_train = dataclasses.replace(default_train, batch_size=20, bptt=35)
    full = run_budget("2x200 tied, full softmax",
                      ModelConfig(**SMALL_2X200, output="full", tie_weights=True),
                      small_train, data, seconds)
    adaptive = run_budget("2x200, adaptive softmax",
                          ModelConfig(**SMALL_2X200, output="adaptive"),
                          small_train, data, seconds)
    print(f"  adaptive / full: {adaptive['tokens_per_s'] / full['tokens_per_s']:.1f}x "
          "(target >= 3x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="budget per configuration")
    parser.add_argument("--probe-seconds", type=float, default=60.0,
                        help="training time for each tokens/s-only measurement")
    parser.add_argument("--skip-budget", action="store_true",
                        help="only the speed comparisons (2x200, FLOP/s)")
    parser.add_argument("--flops-only", action="store_true",
                        help="only the FLOP/s of the old and today's default (part 3)")
    parser.add_argument("--wikitext")
    args = parser.parse_args()

    threads = set_cpu_threads(0)
    print(f"machine: {os.cpu_count()} cores, torch {torch.__version__}, {threads} threads")
    default_model, default_train = preset("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        data = prepare_ids(find_wikitext(args.wikitext), Path(tmp))
        budget = args.minutes * 60

        if not (args.skip_budget or args.flops_only):
            print(f"\n1. {args.minutes:g} minutes of training each")
            run_budget("default params", default_model, default_train, data, budget)
            run_budget("seed notebook config", *preset("seed"), data, budget)

        if not args.flops_only:
            compare_softmaxes(default_train, data, args.probe_seconds)

        # Without bfloat16 instructions one 2048^3 bf16 product takes a minute: 512^3.
        bf16_n = 2048 if cpu_has_bf16() else 512
        peaks = {"fp32": matmul_peak_gflops(threads), "bf16": matmul_peak_gflops(
            threads, torch.bfloat16, n=bf16_n)}
        print(f"\n3. matmul peaks: fp32 {peaks['fp32']:.1f} GFLOP/s (2048^3), bf16 "
              f"{peaks['bf16']:.1f} GFLOP/s ({bf16_n}^3{'' if cpu_has_bf16() else ', emulated'}"
              "), best of 3")
        for label, overrides in (("old default (39de3af)", OLD_DEFAULT), ("default today", [])):
            model, train = preset("cpu", overrides)
            if label == "default today" and (model, train) == preset("cpu", OLD_DEFAULT):
                break
            print(f"  {label}: training FLOP/s ({args.probe_seconds:g} s)")
            result = run_budget(label, model, train, data, args.probe_seconds)
            flops = (training_flops_per_token(result["config"], data[2], data[0])
                     * result["tokens_per_s"]) / 1e9
            used = "bf16" if result["precision"].startswith("bf16") else "fp32"
            bf16 = (f"{100 * flops / peaks['bf16']:.0f}%" if cpu_has_bf16()
                    else "none: no bfloat16 instructions")
            print(f"  {flops:.1f} GFLOP/s achieved in {result['precision']}: "
                  f"{100 * flops / peaks[used]:.0f}% of the {used} peak (fp32 peak: "
                  f"{100 * flops / peaks['fp32']:.0f}%, bf16 peak: {bf16})")


if __name__ == "__main__":
    main()
