"""GPU check: what precision each part of training really runs in, on one CUDA GPU.

    python bench/gpu_check.py [--params params.yaml] [--wikitext DIR]

Builds the model of --params (its model and train sections) on the GPU and prints:
  - the TF32 flags, cuDNN's version and the op that runs the LSTM;
  - the dtypes of the LSTM output, the loss and the gradients in one training step, with
    the configured train.precision, and again inside an enclosing bf16 autocast (which
    must not change the loss: the output layer always runs in fp32);
  - that validation equals a plain-fp32 computation of the same loss;
  - the GPU's bf16, TF32 and fp32 matmul peaks (8192^3 products);
  - precision bf16-all (the output layer's products in bf16 too): the loss of one batch
    against fp32's on the same features, and that every weight gets a finite gradient;
  - the two paths issue 23 found broken by reading: the tied adaptive input under CUDA bf16
    autocast (index_copy refused a bf16 source for an fp32 destination), and generation
    from a CUDA model (now on numpy, from copies of its weights): the input's dtype and
    difference from fp32, the numpy step against the model's own forward on the GPU,
    and 50 words drawn by each sampling path.
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

from lstmlm.core.machine import full_precision, set_precision
from lstmlm.core.params import read_params
from lstmlm.evaluate.perplexity import evaluate_loss
from lstmlm.model.config import ModelConfig
from lstmlm.model.lstm import LSTMLanguageModel
from lstmlm.train.schedule import TrainConfig
from lstmlm.train.trainer import Trainer


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


def check_tied_input(model: LSTMLanguageModel) -> dict:
    """The adaptive input under CUDA bf16 autocast: its dtype (the weights') and its
    largest difference from fp32 (bf16 products in the tail bands)."""
    device = next(model.parameters()).device
    ids = torch.randint(0, model.vocab_size, (35, 4), device=device)
    with torch.no_grad():
        plain = model.embed(ids)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            mixed = model.embed(ids)
    return {"dtype": str(mixed.dtype), "max_abs_diff_vs_fp32": float((mixed - plain).abs().max())}


def check_generation(model: LSTMLanguageModel) -> dict:
    """Generation from a model on the GPU: the numpy engine (on the CPU, from copies of
    the weights) against model.forward on the device (fp32), and the number of words
    each sampling path draws (50 asked)."""
    import numpy as np

    from lstmlm.data.vocab import Vocabulary
    from lstmlm.generate.engine import FusedStep
    from lstmlm.generate.generator import Generator
    from lstmlm.generate.options import SamplingOptions

    model.eval()
    device = next(model.parameters()).device
    words = ("<eos>", "<unk>") + tuple(f"w{i}" for i in range(model.vocab_size - 2))
    generator = Generator(model, Vocabulary(words, tuple(range(len(words), 0, -1))))
    ids = torch.randint(0, model.vocab_size, (40,)).tolist()
    with torch.inference_mode(), full_precision():
        expected = model(torch.tensor(ids, device=device).view(-1, 1)).features[:, 0]
    expected = expected.float().cpu().numpy()  # (T, D)
    step = FusedStep(generator.engine().step)
    ours = [step.prime(ids[:10])] + [step(token) for token in ids[10:]]
    worst = max(float(np.abs(f - expected[t]).max()) for f, t in zip(ours, range(9, 40)))
    report: dict = {"fused_step_max_abs_diff": worst}
    paths = {"sample defaults": {}, "temperature 1": dict(temperature=1.0, top_p=1.0),
             "greedy": dict(temperature=0.0), "top-k 40": dict(top_k=40)}
    for name, settings in paths.items():
        options = SamplingOptions(words=50, seed=0, **settings)
        report[f"words ({name})"] = len(generator.generate("w1 w2 w3", options).tokens)
    return report


def check_bf16_output(model: LSTMLanguageModel) -> dict:
    """precision bf16-all under CUDA: one batch's loss with the output layer's products in
    bf16 against fp32's on the same features, and the weights left without a finite
    gradient (none expected)."""
    device = next(model.parameters()).device
    ids = torch.randint(0, model.vocab_size, (36, 8), device=device)
    model.train()
    model.zero_grad(set_to_none=True)
    with torch.autocast(device.type, dtype=torch.bfloat16):
        features = model(ids[:-1], model.init_state(8)).features
    loss = model.loss(features, ids[1:], bf16=True)
    loss.backward()
    reference = model.loss(features.detach(), ids[1:])
    missing = [name for name, p in model.named_parameters()
               if p.grad is None or not bool(torch.isfinite(p.grad).all())]
    model.zero_grad(set_to_none=True)
    loss, reference = loss.item(), reference.item()
    return {"loss": loss, "fp32_loss": reference, "rel_diff": abs(loss - reference) / reference,
            "weights_without_finite_grad": missing}


def report_gpu_paths(model: LSTMLanguageModel) -> None:
    for name, check in (("bf16-all output layer", check_bf16_output),
                        ("tied input under bf16 autocast", check_tied_input),
                        ("generation", check_generation)):
        try:
            print(f"  {name}: {check(model)}", flush=True)
        except Exception as err:  # noqa: BLE001 (a report: show what failed, check the rest)
            print(f"  {name}: FAILED {type(err).__name__}: {err}", flush=True)


def build(params_path: str, data, device: torch.device, **train_overrides) -> Trainer:
    """A Trainer for the model and train sections of ``params_path`` on ``device``."""
    train_ids, valid_ids, vocab_size = data
    params = read_params(params_path, model=ModelConfig, train=TrainConfig)
    config = dataclasses.replace(params["train"], device=device.type, **train_overrides)
    set_precision(config.precision)
    torch.manual_seed(config.seed)
    model = LSTMLanguageModel(params["model"].for_vocab(vocab_size), vocab_size)
    return Trainer(model, train_ids, valid_ids, config, device, reporter=None)


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
    trainer = build(args.params, data, device)
    report_precision(trainer)
    report_gpu_paths(trainer.model)
    print(f"  matmul peaks: bf16 {matmul_peak_tflops(torch.bfloat16):.0f}, tf32 "
          f"{matmul_peak_tflops(torch.float32, tf32=True):.0f}, fp32 "
          f"{matmul_peak_tflops(torch.float32):.0f} TFLOP/s")


if __name__ == "__main__":
    main()
