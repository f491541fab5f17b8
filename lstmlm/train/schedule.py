"""The ``train`` section of params.yaml (TrainConfig) and what it decides over a run: the
learning rate as a function of progress, the optimiser, and when weight averaging starts.

Torch is imported only by ``make_optimizer``, so that the params check reads the section
without loading the training loop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from lstmlm.core.params import ParamsError, spec

# The cosine schedule ends at this fraction of train.lr.
COSINE_FLOOR = 0.05


@dataclass(frozen=True)
class TrainConfig:
    """The ``train`` section of params.yaml."""

    epochs: int = spec(8, low=1)
    batch_size: int = spec(32, low=1)
    bptt: int = spec(70, low=1)
    variable_bptt: bool = spec(False, doc="draw each batch's length around bptt (AWD-LSTM)")
    stateful: bool = spec(True, doc="carry the hidden state across batches")
    optimizer: str = spec("adam", choices=("adam", "adamw", "sgd"))
    lr: float = spec(3.0e-3, low=0.0, low_open=True)
    weight_decay: float = spec(0.0, low=0.0)
    clip: float = spec(0.25, low=0.0, doc="max gradient norm; 0 disables clipping")
    schedule: str = spec("cosine", choices=("cosine", "plateau", "constant"),
                         doc="cosine: decay per batch over train.epochs; plateau: on valid loss")
    lr_factor: float = spec(0.5, low=0.0, high=1.0, low_open=True, high_open=True,
                            doc="schedule plateau: multiply the rate by this on a plateau")
    lr_patience: int = spec(0, low=0, doc="schedule plateau: epochs without improvement first")
    early_stop_patience: int = spec(3, low=1)
    averaging: str = spec("swa", choices=("none", "ntasgd", "swa"),
                          doc="ntasgd: average the weights once valid stops improving; "
                          "swa: from train.average_from on")
    nonmono: int = spec(5, low=1, doc="averaging ntasgd: epochs to look back")
    average_from: float = spec(0.75, low=0.0, high=1.0, high_open=True,
                               doc="averaging swa: the share of train.epochs after which "
                               "every step's weights join a uniform average")
    activation_reg: float = spec(0.0, low=0.0, doc="AR: alpha * mean(dropped top output^2)")
    temporal_activation_reg: float = spec(0.0, low=0.0,
                                          doc="TAR: beta * mean((h_t - h_{t-1})^2)")
    validate_every: int = spec(0, low=0, doc="also validate (and keep a new best) every this "
                               "many steps, for epochs of hours; 0: at epoch ends only")
    max_minutes: float = spec(0.0, low=0.0, doc="wall-clock budget; 0 means none")
    seed: int = spec(1234, low=0, high=2**63 - 1)
    device: str = spec("auto", choices=("auto", "cpu", "cuda"))
    precision: str = spec("auto", choices=("auto", "tf32", "fp32", "bf16", "bf16-all"),
                          doc="tf32: TensorFloat-32 matrix products on CUDA (fp32 on a CPU); "
                          "bf16: also bfloat16 autocast for the model's body (on a CPU with "
                          "bfloat16 instructions the LSTMs too; the output layer stays fp32); "
                          "bf16-all: the output layer's products in bf16 too, its "
                          "log-softmax and the loss in fp32; auto: bf16 on a CPU with "
                          "bfloat16 instructions (AVX512-BF16 or AMX), else tf32")
    threads: int = spec(0, low=0, doc="CPU threads; 0 uses every core")
    nproc: int = spec(1, low=1, doc="processes under torchrun")

    def __post_init__(self) -> None:
        check_batch_splits(self.batch_size, self.nproc)


def get_lr(config: TrainConfig, progress: float, plateau_cuts: int = 0) -> float:
    """The learning rate after ``progress`` epochs (fractional: 2.5 is half-way through
    the third). cosine: from train.lr down to COSINE_FLOOR of it over train.epochs;
    plateau: train.lr cut by lr_factor once per plateau so far; constant: train.lr."""
    if config.schedule == "cosine":
        done = min(1.0, progress / config.epochs)
        return config.lr * (COSINE_FLOOR + (1 - COSINE_FLOOR) * 0.5 * (1 + math.cos(math.pi * done)))
    if config.schedule == "plateau":
        return config.lr * config.lr_factor ** plateau_cuts
    return config.lr


def make_optimizer(model, config: TrainConfig):
    """Adam, AdamW or SGD, with fused kernels: one pass over each parameter instead of a
    dozen element-wise ops. On this project's 2-core CPU that makes Adam's step 4x faster
    (42 -> 10 ms for the default model's 8.6M weights), a quarter of a training step."""
    import torch

    kinds = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}
    return kinds[config.optimizer](model.parameters(), lr=config.lr,
                                   weight_decay=config.weight_decay, fused=True)


def should_start_averaging(valid_losses: list[float], nonmono: int) -> bool:
    """NT-ASGD's trigger (Merity et al. 2017): the newest validation loss is worse than
    the best of those more than ``nonmono`` epochs before it."""
    earlier = valid_losses[:-1]
    return len(earlier) > nonmono and valid_losses[-1] > min(earlier[:-nonmono])


def check_batch_splits(batch_size: int, processes: int) -> None:
    """The B training streams are dealt out whole, batch_size / processes to each process
    (the params check for train.nproc, and the trainer for the processes really running)."""
    if batch_size % processes:
        raise ParamsError(f"train.batch_size: {batch_size} does not split over train.nproc "
                          f"{processes} processes; use a multiple of it")
