"""The GPU recipe: one prepared run for a machine with one CUDA GPU.

    python bench/gpu_recipe.py --wikitext DIR --fast-params gpu-fast.yaml \\
        --awd-params awd.yaml --fast-minutes 10 --awd-seconds 60 [--out DIR]

The params files are the `gpu-fast` and `awd` recipes composed from conf/ (on a machine
with the project's venv: `python -m lstmlm.presets gpu-fast > gpu-fast.yaml`), so the GPU
machine needs only torch, numpy, tqdm and PyYAML. In order, printing as it goes:
  1. bench/gpu_check.py's precision report on the gpu-fast model;
  2. a timed slice of `awd`: tokens/s and the projected time of its 750 epochs;
  3. `gpu-fast` end to end with the pipeline's own code: train (epochs sized to
     --fast-minutes from the speed measured in a warm-up, the budget also enforced as
     train.max_minutes), evaluate (valid batch 10, test batch 1, fp32, as the evaluate
     stage does), and generate a few samples as the sample stage does.
Results also go to --out/gpu_recipe.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from gpu_check import build, report_precision, require_cuda  # noqa: E402

from lstmlm.core.machine import full_precision
from lstmlm.data.streams import batchify, load_ids
from lstmlm.data.tensorise import tensorise_corpus
from lstmlm.data.tokenise import tokenise_corpus
from lstmlm.evaluate.perplexity import evaluate_loss, perplexity


def prepare(wikitext: Path, work: Path) -> tuple[dict, object]:
    """Tokenise and tensorise WikiText-2 as the pipeline does: ids per split, vocabulary."""
    raw = work / "raw"
    raw.mkdir()
    for split in ("train", "valid", "test"):
        (raw / f"{split}.txt").symlink_to(Path(wikitext).resolve() / f"wiki.{split}.tokens")
    vocab, _ = tokenise_corpus(raw, work / "tokens", work / "vocab.json", scheme="wikitext")
    tensorise_corpus(work / "tokens", vocab, work / "ids")
    ids = {s: load_ids(work / "ids", s).copy() for s in ("train", "valid", "test")}
    return ids, vocab


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def tokens_per_second(trainer, seconds: float) -> float:
    """Training speed over ``seconds`` after a short warm-up (cuDNN plans, allocator)."""
    trainer.train_epoch(deadline=time.monotonic() + min(5.0, seconds))
    synchronize()
    _, tokens, elapsed = trainer.train_epoch(deadline=time.monotonic() + seconds)
    synchronize()
    return tokens / elapsed


def awd_slice(args, data, device) -> dict:
    trainer = build(args.awd_params, data, device)
    rate = tokens_per_second(trainer, args.awd_seconds)
    epoch_s = len(data[0]) / rate
    out = {"tokens_per_s": rate, "epoch_seconds": epoch_s, "epochs": trainer.config.epochs,
           "projected_hours": trainer.config.epochs * epoch_s / 3600,
           "peak_memory_gib": (torch.cuda.max_memory_allocated() / 2**30
                               if device.type == "cuda" else None)}
    print(f"awd: {rate:,.0f} tokens/s, {epoch_s:.1f} s an epoch (training only); "
          f"{trainer.config.epochs} epochs ≈ {out['projected_hours']:.1f} h", flush=True)
    return out


def evaluate_splits(model, ids: dict, device) -> dict:
    """The evaluate stage's static numbers: valid at batch 10, test at batch 1, fp32."""
    results = {}
    for split, batch in (("valid", 10), ("test", 1)):
        started = time.perf_counter()
        with full_precision():
            loss = evaluate_loss(model, batchify(ids[split], batch).to(device), 70)
        results[split] = {"loss": loss, "ppl": perplexity(loss),
                          "seconds": time.perf_counter() - started}
        print(f"gpu-fast: {split} ppl {perplexity(loss):.2f} (batch {batch})", flush=True)
    return results


def gpu_fast(args, data, ids, vocab, device) -> dict:
    probe = build(args.fast_params, data, device)
    rate = tokens_per_second(probe, args.probe_seconds)
    del probe
    # Epochs that fit the budget, validation (about 2 % of an epoch's time) included.
    epochs = max(1, int(args.fast_minutes * 60 * rate / len(data[0]) / 1.03))
    print(f"gpu-fast: {rate:,.0f} tokens/s in the warm-up; {epochs} epochs fit "
          f"{args.fast_minutes:g} minutes", flush=True)
    trainer = build(args.fast_params, data, device, epochs=epochs,
                    max_minutes=args.fast_minutes, early_stop_patience=epochs)
    started = time.perf_counter()
    trainer.fit(lambda r, best: print(f"  epoch {r.epoch}: train ppl {r.train_ppl:.1f}, valid "
                                      f"ppl {r.valid_ppl:.1f}, {r.tokens_per_s:,.0f} tokens/s",
                                      flush=True))
    train_seconds = time.perf_counter() - started
    model = trainer.eval_model
    model.load_state_dict(trainer.progress.best_weights)
    result = {"epochs": epochs, "train_seconds": train_seconds, "warmup_tokens_per_s": rate,
              "history": [dataclasses.asdict(r) for r in trainer.progress.history],
              "eval": evaluate_splits(model, ids, device), "samples": samples(model, vocab)}
    print(f"gpu-fast: trained {train_seconds / 60:.1f} min; best epoch "
          f"{trainer.progress.best_epoch}", flush=True)
    return result


def samples(model, vocab) -> list[str]:
    """A few texts, as the sample stage writes them (its default options)."""
    try:
        from lstmlm.generate.generator import Generator
        from lstmlm.generate.options import SamplingOptions

        generator = Generator(model.cpu().eval(), vocab)
        texts = [f"{p} {generator.generate(p, SamplingOptions()).text}"
                 for p in ("The Beatles are", "Super Mario is")]
    except Exception as err:  # noqa: BLE001 - a sampling problem must not lose the numbers
        texts = [f"sampling failed: {type(err).__name__}: {err}"]
    for text in texts:
        print(f"  > {text}", flush=True)
    return texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wikitext", required=True)
    parser.add_argument("--fast-params", required=True)
    parser.add_argument("--awd-params", required=True)
    parser.add_argument("--fast-minutes", type=float, default=10.0)
    parser.add_argument("--awd-seconds", type=float, default=60.0)
    parser.add_argument("--probe-seconds", type=float, default=20.0)
    parser.add_argument("--out", type=Path, default=Path("bench/out"))
    parser.add_argument("--cpu-smoke", action="store_true",
                        help="a few seconds of everything on the CPU on a slice of the data, "
                        "to check the script before spending GPU time")
    args = parser.parse_args()
    device = torch.device("cpu") if args.cpu_smoke else require_cuda("gpu_recipe")
    results: dict = {"device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"}
    args.out.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        (args.out / "gpu_recipe.json").write_text(json.dumps(results, indent=1, default=str))

    with tempfile.TemporaryDirectory() as tmp:
        ids, vocab = prepare(Path(args.wikitext), Path(tmp))
    if args.cpu_smoke:
        ids = {split: values[:20_000] for split, values in ids.items()}
    data = (ids["train"], ids["valid"], len(vocab))
    print("1. precision report (gpu-fast model)", flush=True)
    results["precision"] = report_precision(build(args.fast_params, data, device))
    save()
    print("2. awd slice", flush=True)
    results["awd"] = awd_slice(args, data, device)
    save()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    print("3. gpu-fast end to end", flush=True)
    results["gpu_fast"] = gpu_fast(args, data, ids, vocab, device)
    save()


if __name__ == "__main__":
    main()
