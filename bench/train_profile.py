"""Benchmark: where a default training step's time goes, with torch.profiler.

    python bench/train_profile.py [--steps 60] [--preset cpu] [-S model.emb=400 ...]

Trains the preset's model on WikiText-2 as the train stage does (same Trainer, same
batches), warm-up steps first, then profiles ``--steps`` steps twice: before the weight
average starts and after (SWA averages every step of the last quarter). Prints a table of
milliseconds per step by part:

    LSTM forward / backward     oneDNN's fused LSTM layers (mkldnn_rnn_layer and its backward)
    output layer and loss       the adaptive softmax (or full softmax), the projection, the loss
    embedding and dropouts      adaptive input, word and locked dropout, forward and backward
    optimiser                   Adam's fused step, zero_grad
    clipping                    clip_grad_norm_
    averaging                   the SWA (or NT-ASGD) update of the running average
    batching and Python         the rest of the step's wall time: slicing, the loop, the meter

Forward parts are timed by wrapping the model's methods in record_function scopes;
backward parts from autograd's per-node events, grouped by the forward op they undo.
"""

from __future__ import annotations

import argparse
import functools
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from data_speed import find_wikitext  # noqa: E402
from train_speed import prepare_ids, preset  # noqa: E402

from lstmlm.core.machine import set_cpu_threads  # noqa: E402
from lstmlm.data.streams import batch_starts, get_batch  # noqa: E402
from lstmlm.model.lstm import LSTMLanguageModel  # noqa: E402
from lstmlm.train.trainer import Trainer  # noqa: E402

PARTS = ("LSTM forward", "LSTM backward", "output layer and loss", "embedding and dropouts",
         "optimiser", "clipping", "averaging", "batching and Python")
# autograd nodes -> the part whose forward they undo (by name fragment, first match wins)
BACKWARD = (("MkldnnRnnLayer", "LSTM backward"), ("Rnn", "LSTM backward"),
            ("LogSoftmax", "output layer and loss"), ("NllLoss", "output layer and loss"),
            ("Addmm", "output layer and loss"), ("Mm", "output layer and loss"),
            ("Gather", "output layer and loss"), ("Index", "embedding and dropouts"),
            ("Embedding", "embedding and dropouts"), ("Mul", "embedding and dropouts"))


def scoped(name: str, method):
    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        with record_function(f"part::{name}"):
            return method(*args, **kwargs)
    return wrapper


def instrument(trainer: Trainer) -> None:
    """record_function scopes around the model's parts and the step's tail."""
    model = trainer.model
    # forward's own time, less its scoped parts below: the embedding, dropouts and glue
    model.forward = scoped("embedding and dropouts", model.forward)
    model._run_lstm = scoped("LSTM forward", model._run_lstm)
    model.loss = scoped("output layer and loss", model.loss)
    if model.projection is not None:
        model.projection.forward = scoped("output layer and loss", model.projection.forward)
    trainer.optimizer.step = scoped("optimiser", trainer.optimizer.step)
    trainer.optimizer.zero_grad = scoped("optimiser", trainer.optimizer.zero_grad)
    torch.nn.utils.clip_grad_norm_ = scoped("clipping", torch.nn.utils.clip_grad_norm_)
    start = trainer.start_averaging

    def start_averaging():
        start()
        trainer.average.update_parameters = scoped("averaging",
                                                   trainer.average.update_parameters)
    trainer.start_averaging = start_averaging


def run_steps(trainer: Trainer, steps: int) -> float:
    """``steps`` training steps from the start of the stream; returns the wall seconds."""
    trainer.net.train()
    batch = trainer.train_data.size(1)
    state = trainer.model.init_state(batch)
    c = trainer.config
    started = time.perf_counter()
    for step, (i, seq_len) in enumerate(batch_starts(trainer.train_data.size(0), c.bptt,
                                                     c.variable_bptt, trainer.rng)):
        if step == steps:
            break
        inputs, targets = get_batch(trainer.train_data, i, seq_len, trainer.device)
        loss, state = trainer.train_step(inputs, targets, state, trainer.step_lr(i, seq_len))
        loss.item()  # what the loop's meter does every few steps; here every step
    return time.perf_counter() - started


def table(prof, wall: float, steps: int) -> dict[str, float]:
    """Milliseconds per step by part: each scope's own time (less the scopes inside it),
    and backward nodes by the forward op they undo."""
    totals: dict[str, float] = defaultdict(float)
    for event in prof.events():
        name, ms = event.name, event.cpu_time_total / 1e3
        if name.startswith("part::"):
            totals[name[len("part::"):]] += ms
            outer = _outer_part(event)
            if outer is not None:
                totals[outer] -= ms
        elif name.startswith("autograd::engine::evaluate_function:"):
            node = name.split(":")[-1].strip()
            part = next((p for key, p in BACKWARD if key in node), "output layer and loss")
            totals[part] += ms
    per_step = {part: totals[part] / steps for part in PARTS[:-1]}
    per_step["batching and Python"] = max(0.0, 1e3 * wall / steps - sum(per_step.values()))
    return per_step


def _outer_part(event) -> str | None:
    """The nearest scope of ours around an event, if any."""
    parent = event.cpu_parent
    while parent is not None:
        if parent.name.startswith("part::"):
            return parent.name[len("part::"):]
        parent = parent.cpu_parent
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("-S", dest="overrides", action="append", default=[],
                        help="a Hydra override of the preset, as dvc exp run -S takes it")
    parser.add_argument("--wikitext")
    args = parser.parse_args()
    threads = set_cpu_threads(0)
    model_config, train_config = preset(args.preset, args.overrides)
    with tempfile.TemporaryDirectory() as tmp:
        train_ids, valid_ids, vocab_size = prepare_ids(find_wikitext(args.wikitext), Path(tmp))
    torch.manual_seed(train_config.seed)
    model = LSTMLanguageModel(model_config.for_vocab(vocab_size), vocab_size)
    trainer = Trainer(model, train_ids, valid_ids, train_config, torch.device("cpu"),
                      progress_bar=False)
    instrument(trainer)
    print(f"{args.preset} {' '.join(args.overrides)}: {trainer.precision}, {threads} threads, "
          f"batch {train_config.batch_size} x {train_config.bptt}, torch {torch.__version__}")
    results = {}
    for label, averaging in (("no average yet", False), ("averaging", True)):
        if averaging:
            trainer.start_averaging()
        run_steps(trainer, args.warmup)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            wall = run_steps(trainer, args.steps)
        results[label] = (table(prof, wall, args.steps), 1e3 * wall / args.steps)
    tokens = train_config.batch_size * train_config.bptt
    print("\n| part | " + " | ".join(f"ms/step, {label}" for label in results) + " |")
    print("|---|" + "---|" * len(results))
    for part in PARTS:
        print(f"| {part} | " + " | ".join(f"{r[0][part]:.1f}" for r in results.values()) + " |")
    print("| **step (wall)** | " + " | ".join(f"**{r[1]:.1f}**" for r in results.values())
          + " |")
    print("| tokens/s | " + " | ".join(f"{tokens * 1e3 / r[1]:,.0f}" for r in results.values())
          + " |")


if __name__ == "__main__":
    main()
