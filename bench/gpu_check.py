"""GPU check: what precision each part of training really runs in, on one CUDA GPU.

    python bench/gpu_check.py [--params params.yaml] [--wikitext DIR]

Builds the model of --params (its model and train sections) on the GPU and prints:
  - the TF32 flags, cuDNN's version and the op that runs the LSTM;
  - the dtypes of the LSTM output, the loss and the gradients in one training step, with
    the configured train.precision, and again inside an enclosing bf16 autocast (which
    must not change the loss: the output layer always runs in fp32);
  - that validation equals a plain-fp32 computation of the same loss;
  - the GPU's bf16, TF32 and fp32 matmul peaks (8192^3 products).
bench/gpu_recipe.py runs this first, then the `awd` and `gpu-fast` recipes.

Exits with a message (status 1) when there is no CUDA device.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lstmlm.evaluation import evaluate_loss  # noqa: E402
from lstmlm.model import LSTMLanguageModel, ModelConfig  # noqa: E402
from lstmlm.params import read_params  # noqa: E402
from lstmlm.training import TrainConfig, Trainer, set_precision  # noqa: E402


def require_cuda(name: str) -> torch.device:
    if not torch.cuda.is_available():
        sys.exit(f"{name}: no CUDA device is available (torch {torch.__version__}, CUDA build "
                 f"{torch.version.cuda or 'none'}); run it on a machine with a GPU")
    props = torch.cuda.get_device_properties(0)
    print(f"GPU: {props.name}, {props.total_memory / 2**30:.0f} GiB, "
          f"{props.multi_processor_count} SMs; torch {torch.__version__}, CUDA {torch.version.cuda}, "
          f"cuDNN {torch.backends.cudnn.version()}", flush=True)
    return torch.device("cuda")


def matmul_peak_tflops(dtype: torch.dtype, tf32: bool = False, n: int = 8192) -> float:
    """Best TFLOP/s of an n x n x n matmul in ``dtype`` (fp32 with or without TF32)."""
    torch.backends.cuda.matmul.allow_tf32 = tf32
    a = torch.randn(n, n, device="cuda", dtype=dtype)
    b = torch.randn(n, n, device="cuda", dtype=dtype)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    best = float("inf")
    for _ in range(3):
        a @ b
        start.record()
        for _ in range(5):
            a @ b
        end.record()
        end.synchronize()
        best = min(best, start.elapsed_time(end) / 1e3)
    return 2 * n ** 3 * 5 / best / 1e12


def step_dtypes(trainer: Trainer) -> dict:
    """Dtypes of the LSTM output, the loss and the gradients in one training step."""
    inputs = trainer.train_data[:8].to(trainer.device)
    targets = trainer.train_data[1:9].to(trainer.device)
    state = trainer.model.init_state(inputs.size(1))
    trainer.model.train()
    out = trainer.model(inputs, state)
    loss = trainer.model.loss(out.features, targets)
    loss.backward()
    grads = sorted({str(p.grad.dtype) for p in trainer.model.parameters() if p.grad is not None})
    trainer.optimizer.zero_grad(set_to_none=True)
    return {"lstm_output": str(out.top.dtype), "loss": str(loss.dtype), "grads": grads}


def report_precision(trainer: Trainer) -> dict:
    """The precision report, printed and returned."""
    report = {"allow_tf32": {"matmul": torch.backends.cuda.matmul.allow_tf32,
                             "cudnn": torch.backends.cudnn.allow_tf32}}
    report["step"] = step_dtypes(trainer)
    with torch.autocast(trainer.device.type, dtype=torch.bfloat16):
        report["step_inside_bf16_autocast"] = step_dtypes(trainer)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        lstm = trainer.model.lstms[0]
        lstm(torch.randn(4, 2, lstm.input_size, device=trainer.device))
    report["lstm_ops"] = sorted({e.name for e in prof.events() if "rnn" in e.name or "lstm" in e.name})
    validated = trainer.validate()  # under train.precision, switched to fp32 inside
    set_precision("fp32")
    plain = evaluate_loss(trainer.eval_model, trainer.valid_data, trainer.config.bptt)
    set_precision(trainer.config.precision)
    report["validation_vs_plain_fp32"] = [validated, plain]
    for key, value in report.items():
        print(f"  {key}: {value}", flush=True)
    return report


def build(params_path: str, data, device: torch.device, **train_overrides) -> Trainer:
    """A Trainer for the model and train sections of ``params_path`` on ``device``."""
    train_ids, valid_ids, vocab_size = data
    params = read_params(params_path, model=ModelConfig, train=TrainConfig)
    config = dataclasses.replace(params["train"], device=device.type, **train_overrides)
    set_precision(config.precision)
    torch.manual_seed(config.seed)
    model = LSTMLanguageModel(params["model"], vocab_size)
    return Trainer(model, train_ids, valid_ids, config, device, progress_bar=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default=str(ROOT / "params.yaml"))
    parser.add_argument("--wikitext")
    args = parser.parse_args()
    device = require_cuda("gpu_check")
    sys.path.insert(0, str(ROOT / "bench"))
    import tempfile

    from data_speed import find_wikitext
    from train_speed import prepare_ids

    with tempfile.TemporaryDirectory() as tmp:
        data = prepare_ids(find_wikitext(args.wikitext), Path(tmp))
    report_precision(build(args.params, data, device))
    print(f"  matmul peaks: bf16 {matmul_peak_tflops(torch.bfloat16):.0f}, tf32 "
          f"{matmul_peak_tflops(torch.float32, tf32=True):.0f}, fp32 "
          f"{matmul_peak_tflops(torch.float32):.0f} TFLOP/s")


if __name__ == "__main__":
    main()
