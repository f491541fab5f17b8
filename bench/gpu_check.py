"""GPU check: the default model on one CUDA GPU for a fixed budget (under 5 minutes).

    python bench/gpu_check.py [--minutes 3] [--batch-size 256] [--wikitext DIR] [--no-bf16]

Builds WikiText-2 ids (from --wikitext, $WIKITEXT_DIR or ../shared/data/wikitext-2), trains
the model of params.yaml (model and train sections; device cuda, bf16 autocast unless
--no-bf16) for --minutes, then prints:
  - tokens/s, valid perplexity and peak GPU memory (torch.cuda.max_memory_allocated);
  - achieved training FLOP/s (bench/train_speed.py's analytic count) as a fraction of this
    GPU's bf16 and fp32 matmul peaks, measured here with large matrix products;
  - whether cuDNN runs the LSTM (flags, version, and the op seen in a profiled step), the
    LSTM's output dtype under autocast, and the host syncs of a few training steps
    (torch.cuda.set_sync_debug_mode), grouped by the line that caused them.

Exits with a message (status 1) when there is no CUDA device.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

from data_speed import find_wikitext  # noqa: E402
from train_speed import prepare_ids, training_flops_per_token  # noqa: E402
from lstmlm.model import LSTMLanguageModel, ModelConfig  # noqa: E402
from lstmlm.params import read_params  # noqa: E402
from lstmlm.training import Trainer, perplexity  # noqa: E402


def matmul_peak_tflops(dtype: torch.dtype, n: int = 8192, repeat: int = 10) -> float:
    """Best TFLOP/s of an n x n x n matmul in ``dtype`` (fp32 without TF32)."""
    a = torch.randn(n, n, device="cuda", dtype=dtype)
    b = torch.randn(n, n, device="cuda", dtype=dtype)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    best = float("inf")
    for _ in range(3):
        a @ b
        start.record()
        for _ in range(repeat):
            a @ b
        end.record()
        end.synchronize()
        best = min(best, start.elapsed_time(end) / 1e3)
    del a, b
    return 2 * n ** 3 * repeat / best / 1e12


def cudnn_report(trainer: Trainer) -> None:
    """Flags, the op that runs the LSTM in one profiled step, and its autocast dtype."""
    print(f"cuDNN: available {torch.backends.cudnn.is_available()}, "
          f"enabled {torch.backends.cudnn.enabled}, version {torch.backends.cudnn.version()}")
    lstm = trainer.model.lstms[0]
    x = torch.randn(8, 4, lstm.input_size, device=trainer.device)
    with torch.autocast(trainer.device.type, dtype=torch.bfloat16,
                        enabled=trainer.autocast_dtype is not None):
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            out, _ = lstm(x)
    ops = sorted({e.name for e in prof.events() if "rnn" in e.name or "lstm" in e.name})
    print(f"LSTM ops: {', '.join(ops)}; output dtype under autocast: {out.dtype}")


def sync_report(trainer: Trainer, seconds: float = 1.0) -> None:
    """Host syncs in ~``seconds`` of training, by source line (set_sync_debug_mode)."""
    trainer.train_epoch(deadline=time.monotonic() + 0.2)  # warm-up outside the count
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            _, tokens, _ = trainer.train_epoch(deadline=time.monotonic() + seconds)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    steps = max(1, round(tokens / (trainer.params.batch_size * trainer.params.bptt)))
    syncs = [w for w in caught if "synchroniz" in str(w.message)]
    by_line = collections.Counter(f"{Path(w.filename).name}:{w.lineno}" for w in syncs)
    print(f"host syncs: {len(syncs)} in {steps} training steps "
          f"({len(syncs) / steps:.1f} per step); by line:")
    for where, count in by_line.most_common(8):
        print(f"  {where:<28} {count:>6}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=3.0, help="training budget")
    parser.add_argument("--batch-size", type=int, help="override train.batch_size")
    parser.add_argument("--no-bf16", action="store_true", help="fp32 instead of bf16 autocast")
    parser.add_argument("--params", default=str(ROOT / "params.yaml"))
    parser.add_argument("--wikitext")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit(f"gpu_check: no CUDA device is available (torch {torch.__version__}, "
                 f"CUDA build {torch.version.cuda or 'none'}); run it on a machine with a GPU")

    device = torch.device("cuda")
    props = torch.cuda.get_device_properties(device)
    print(f"GPU: {props.name}, {props.total_memory / 2**30:.0f} GiB, "
          f"{props.multi_processor_count} SMs; torch {torch.__version__}, "
          f"CUDA {torch.version.cuda}")
    params = read_params(args.params, "model", "train")
    overrides = {"device": "cuda", "bf16": not args.no_bf16, "epochs": 10_000,
                 "max_minutes": 0.0, "early_stop_patience": 10_000}
    if args.batch_size:
        overrides["batch_size"] = args.batch_size
    train_params = dataclasses.replace(params["train"], **overrides)

    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        train_ids, valid_ids, vocab_size = prepare_ids(find_wikitext(args.wikitext), Path(tmp))
        print(f"data: {len(train_ids):,} train tokens, vocabulary {vocab_size:,} "
              f"({time.perf_counter() - started:.0f} s)")
    torch.manual_seed(train_params.seed)
    config = ModelConfig.from_params(params["model"], vocab_size)
    trainer = Trainer(LSTMLanguageModel(config), train_ids, valid_ids, train_params, device,
                      progress=False)
    print(f"model: {sum(p.numel() for p in trainer.model.parameters()) / 1e6:.1f}M parameters; "
          f"batch {train_params.batch_size}, bptt {train_params.bptt}, "
          f"{'bf16 autocast' if trainer.autocast_dtype else 'fp32'}")
    for report in (cudnn_report, sync_report):  # diagnostics: a failure must not stop the run
        try:
            report(trainer)
        except Exception as err:  # noqa: BLE001
            print(f"{report.__name__} failed: {type(err).__name__}: {err}")

    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    tokens, seconds = 0, 0.0
    deadline = time.monotonic() + 60 * args.minutes
    while time.monotonic() < deadline:
        _, n, s = trainer.train_epoch(deadline)
        tokens, seconds = tokens + n, seconds + s
        trainer.epoch += 1
        print(f"  epoch {trainer.epoch}: {n / s:,.0f} tokens/s", flush=True)
    peak_memory = torch.cuda.max_memory_allocated()
    started = time.perf_counter()
    valid_loss = trainer.validate()
    valid_seconds = time.perf_counter() - started
    tokens_per_s = tokens / seconds

    flops = training_flops_per_token(config, train_ids) * tokens_per_s / 1e12
    bf16_peak = matmul_peak_tflops(torch.bfloat16)
    torch.backends.cuda.matmul.allow_tf32 = False
    fp32_peak = matmul_peak_tflops(torch.float32)
    print(f"\ntraining: {tokens_per_s:,.0f} tokens/s over {tokens:,} tokens ({seconds:.0f} s)")
    print(f"valid perplexity: {perplexity(valid_loss):.1f} (validation {valid_seconds:.1f} s)")
    print(f"peak GPU memory: {peak_memory / 2**30:.2f} GiB")
    print(f"achieved: {flops:.1f} TFLOP/s = {100 * flops / bf16_peak:.1f}% of the bf16 matmul "
          f"peak ({bf16_peak:.0f} TFLOP/s), {100 * flops / fp32_peak:.1f}% of the fp32 peak "
          f"({fp32_peak:.0f} TFLOP/s)")


if __name__ == "__main__":
    main()
