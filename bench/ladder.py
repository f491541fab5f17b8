"""Benchmark: the ladder of budgets, test perplexity against minutes of training.

    python bench/ladder.py [--rungs cpu-5min cpu-15min] [--no-seed] [--out docs/img]
    python bench/ladder.py --draw-only          # redraw the chart from --out's ladder.json

Trains each rung's preset (conf/preset/) on WikiText-2 as the train stage does (the same
Trainer, per-epoch validation, the best epoch's weights kept), then the seed notebook's
recipe (preset seed) for the same minutes of training (train.max_minutes), for every rung
in ladder.json that has no seed point yet. The seed recipe reads the pipeline's WikiText
tokens here, not its own lower-cased basic_english ones, so that the perplexities compare.
The default run (preset cpu) is added from a pipeline's output when it is there
(--default-run, the repository by default): its minutes from metrics/ (the epochs'
seconds), its test perplexity from data/model.pt.

Test perplexity is static, over all of test at batch TEST_BATCH (state carried): the
evaluate stage's batch 1 would take the seed recipe's full softmax a quarter of an hour.
Results are merged into ``ladder.json`` (a preset trained again replaces its point) and
drawn as ``ladder.svg`` / ``ladder.png`` (Vega-Lite through vl-convert: the plots extra).

Minutes are minutes of training (the epochs' wall time, validation excluded), on this
machine: time it alone, and name the CPU beside the figures.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from data_speed import find_wikitext  # noqa: E402
from train_speed import prepare_ids, preset  # noqa: E402

from lstmlm.core.machine import full_precision, set_cpu_threads  # noqa: E402
from lstmlm.data.streams import batchify, load_ids  # noqa: E402
from lstmlm.evaluate.perplexity import evaluate_loss  # noqa: E402
from lstmlm.model.lstm import LSTMLanguageModel  # noqa: E402
from lstmlm.train.trainer import Trainer  # noqa: E402

TEST_BATCH = 10


def test_ppl(model: LSTMLanguageModel, test_ids: np.ndarray) -> float:
    with full_precision():
        return float(np.exp(evaluate_loss(model, batchify(test_ids, TEST_BATCH), 70)))


def train_and_test(name: str, data, minutes: float = 0.0) -> dict:
    """Train preset ``name`` (for at most ``minutes`` of wall time when given); return its
    minutes of training, best valid and static test perplexity."""
    train_ids, valid_ids, test_ids, vocab = data
    model_config, train_config = preset(name)
    if minutes:
        train_config = dataclasses.replace(train_config, max_minutes=minutes)
    torch.manual_seed(train_config.seed)
    model = LSTMLanguageModel(model_config.for_vocab(len(vocab)), len(vocab))
    trainer = Trainer(model, train_ids, valid_ids, train_config, torch.device("cpu"),
                      reporter=None)
    history = trainer.fit()
    model.load_state_dict(trainer.progress.best_weights)
    result = {"preset": name, "minutes": round(sum(r.epoch_seconds for r in history) / 60, 2),
              "epochs": len(history), "tokens_per_s": round(float(np.mean(
                  [r.tokens_per_s for r in history]))),
              "valid": round(float(np.exp(trainer.progress.best_valid_loss)), 2),
              "test": round(test_ppl(model, test_ids), 2)}
    print(f"  {name:<10} {result['minutes']:6.2f} min, {result['epochs']} epochs, "
          f"{result['tokens_per_s']:,} tokens/s: valid {result['valid']:.1f}, test "
          f"{result['test']:.1f}", flush=True)
    return result


def default_point(run: Path, test_ids: np.ndarray, vocab) -> dict | None:
    """The default run's point: its minutes from the ``run`` folder's metrics/, its test
    perplexity from its data/model.pt (when it was trained on the same vocabulary)."""
    from lstmlm.core.loading import load

    seconds = run / "metrics/train/plots/metrics/epoch_seconds.tsv"
    model_path = run / "data/model.pt"
    if not (seconds.exists() and model_path.exists()):
        return None
    model, model_vocab, _ = load(model_path)
    if model_vocab.words != vocab.words:
        print("  data/model.pt was trained on another vocabulary: no point for cpu")
        return None
    with seconds.open() as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    result = {"preset": "cpu", "minutes": round(sum(float(r["epoch_seconds"]) for r in rows)
                                                / 60, 2),
              "epochs": len(rows), "test": round(test_ppl(model, test_ids), 2)}
    print(f"  cpu (data/model.pt) {result['minutes']:6.2f} min: test {result['test']:.1f}")
    return result


def merge(results: list[dict], new: dict) -> None:
    """Put ``new`` in ``results``, replacing the point of the same preset (and rung)."""
    key = (new["preset"], new.get("rung"))
    results[:] = [r for r in results if (r["preset"], r.get("rung")) != key] + [new]


def chart_spec(results: list[dict]) -> dict:
    """Test perplexity against minutes of training: the ladder (and the default) and the
    seed recipe, a line each, each point labelled with its preset."""
    values = [{"minutes": r["minutes"], "test": r["test"], "label": r["preset"],
               "recipe": "seed recipe" if r["preset"] == "seed" else "ladder and default"}
              for r in results]
    encoding = {"x": {"field": "minutes", "type": "quantitative",
                      "title": "minutes of training"},
                "y": {"field": "test", "type": "quantitative",
                      "title": f"test perplexity (batch {TEST_BATCH}, log scale)",
                      "scale": {"type": "log"}},
                "color": {"field": "recipe", "type": "nominal", "title": None}}
    return {"$schema": "https://vega.github.io/schema/vega-lite/v5.json",
            "title": "WikiText-2: test perplexity against minutes of training",
            "width": 480, "height": 300, "data": {"values": values},
            "layer": [{"mark": {"type": "line", "point": True}, "encoding": encoding},
                      {"mark": {"type": "text", "dy": -10},
                       "encoding": {**encoding, "text": {"field": "label"}}}]}


def draw(results: list[dict], out: Path) -> None:
    import vl_convert  # the plots extra

    spec = chart_spec(sorted(results, key=lambda r: r["minutes"]))
    (out / "ladder.svg").write_text(vl_convert.vegalite_to_svg(spec), encoding="utf-8")
    (out / "ladder.png").write_bytes(vl_convert.vegalite_to_png(spec, scale=2))
    print(f"wrote {out / 'ladder.svg'} and .png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rungs", nargs="*", default=["cpu-5min", "cpu-15min"])
    parser.add_argument("--no-seed", action="store_true", help="train the rungs only")
    parser.add_argument("--out", type=Path, default=ROOT / "docs/img")
    parser.add_argument("--default-run", type=Path, default=ROOT,
                        help="the clone whose `make pipeline` gives the default's point")
    parser.add_argument("--draw-only", action="store_true")
    parser.add_argument("--wikitext")
    args = parser.parse_args()
    saved = args.out / "ladder.json"
    results = json.loads(saved.read_text()) if saved.exists() else []
    if not args.draw_only:
        print(f"{set_cpu_threads(0)} threads, torch {torch.__version__}")
        with tempfile.TemporaryDirectory() as tmp:
            data = prepare_data(find_wikitext(args.wikitext), Path(tmp))
        for rung in args.rungs:
            merge(results, train_and_test(rung, data))
        for rung in [] if args.no_seed else [r for r in results if r["preset"] != "seed"]:
            if rung["preset"] != "cpu" and not any(r.get("rung") == rung["preset"]
                                                   for r in results):
                point = train_and_test("seed", data, minutes=rung["minutes"])
                merge(results, {**point, "rung": rung["preset"]})
        default = default_point(args.default_run, data[2], data[3])
        if default is not None:
            merge(results, default)
        args.out.mkdir(parents=True, exist_ok=True)
        saved.write_text(json.dumps(results, indent=1) + "\n")
    draw(results, args.out)


def prepare_data(wikitext: Path, work: Path):
    """Train, valid and test ids of WikiText-2 and its vocabulary (as the pipeline's)."""
    from lstmlm.data.vocab import Vocabulary

    train_ids, valid_ids, _ = prepare_ids(wikitext, work)
    return (train_ids, valid_ids, load_ids(work / "ids", "test"),
            Vocabulary.load(work / "vocab.json"))


if __name__ == "__main__":
    main()
