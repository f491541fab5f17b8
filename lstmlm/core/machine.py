"""The machine a run uses: which device, how many CPU threads, which precision.

Training, evaluation, the params check and the command line all ask these questions; the
answers live here so that none of them has to import the training loop.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from lstmlm.core.errors import LstmlmError
from lstmlm.core.threads import cpu_threads


def pick_device(name: str, key: str = "train.device") -> torch.device:
    """'auto' -> CUDA when present, else CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise LstmlmError(f"{key}: 'cuda' was asked for, but no CUDA device is available "
                          "here; use auto or cpu")
    return torch.device(name)


def set_cpu_threads(threads: int, processes: int = 1, key: str = "train.threads") -> int:
    """Use ``threads`` intra-op threads (0: this process's share of the cores, with
    ``processes`` processes on the machine; lstmlm.core.threads.cpu_threads) and return the
    number used."""
    n = cpu_threads(threads, processes, key)
    torch.set_num_threads(n)
    return n


def cpu_has_bf16() -> bool:
    """Whether this x86 CPU computes in bfloat16 natively (AMX tiles or AVX512-BF16).
    Without them oneDNN emulates bf16 matrix products, slower than fp32, and has no bf16
    LSTM at all (an AVX2-only AMD EPYC)."""
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def resolve_precision(precision: str, device: torch.device) -> str:
    """'auto' -> bf16 on a CPU with bfloat16 instructions, where bfloat16 LSTMs train
    1.3x (AVX512-BF16, AMD EPYC) to 1.5x (AMX, Intel Xeon) faster for the same
    perplexity (docs/results.md); tf32 everywhere else, CUDA included."""
    if precision != "auto":
        return precision
    return "bf16" if device.type == "cpu" and cpu_has_bf16() else "tf32"


def set_precision(precision: str) -> None:
    """TF32 for training's matrix products and cuDNN's LSTM on CUDA (fp32 storage,
    inputs rounded to 10 mantissa bits, fp32 accumulation), for tf32 and bf16.
    Numbers that are reported run under ``full_precision``; on a CPU it changes nothing."""
    allow = precision != "fp32"
    torch.backends.cuda.matmul.allow_tf32 = allow
    torch.backends.cudnn.allow_tf32 = allow


@contextlib.contextmanager
def full_precision() -> Iterator[None]:
    """Plain fp32 matrix products (no TF32, no autocast) inside, whatever training uses:
    the numbers that pick the checkpoint and the reported perplexities are exact fp32."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        with torch.autocast("cuda", enabled=False), torch.autocast("cpu", enabled=False):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
