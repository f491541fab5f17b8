"""Training with truncated backpropagation through time over contiguous streams.

The training stream is cut into B contiguous streams laid side by side (``batchify``).
For the alphabet as a stream of 26 tokens and B = 4:

    ┌ a g m s ┐
    │ b h n t │
    │ c i o u │   T rows (time), B columns (streams); the tail (y, z) that does not
    │ d j p v │   fill a row is dropped.
    │ e k q w │
    └ f l r x ┘

A batch is ``bptt`` consecutive rows: inputs rows [i, i+bptt) and targets rows
[i+1, i+1+bptt). Because column b of batch k+1 continues column b of batch k, the hidden
state at the end of one batch is the right starting state for the next: it is carried
over (detached, so gradients stop at the batch boundary). ``stateful: false`` resets it
to zeros for every batch instead, as the seed notebook did.
"""

from __future__ import annotations

import math
import os
import random
import time
from dataclasses import asdict, dataclass
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn

from .distributed import all_reduce_tensor, broadcast_from_rank0, is_distributed, rank0_decides
from .errors import LstmlmError
from .model import LSTMLanguageModel, State, detach_state

# Every LOG_EVERY steps the loop reads the loss back (the one host sync of the loop) and,
# under DDP, agrees on it and on stopping with the other ranks.
LOG_EVERY = 20
# A validation loss this many nats above a uniform guess's means training diverged.
DIVERGED_NATS = 10.0
# The cosine schedule ends at this fraction of train.lr.
COSINE_FLOOR = 0.05


class TrainingDiverged(LstmlmError, RuntimeError):
    """The loss became NaN or infinite."""


@dataclass
class EpochRecord:
    """What one epoch measured; logged by the caller (dvclive in the stage)."""

    epoch: int
    train_loss: float
    train_ppl: float
    valid_loss: float
    valid_ppl: float
    lr: float
    tokens_per_s: float
    epoch_seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


def pick_device(name: str) -> torch.device:
    """'auto' -> CUDA when present, else CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device: 'cuda' was asked for, but no CUDA device is available")
    return torch.device(name)


def set_cpu_threads(threads: int, processes: int = 1) -> int:
    """Use ``threads`` intra-op threads (0: this process's share of the cores, with
    ``processes`` training processes on the machine) and return the number used."""
    n = threads or max(1, (os.cpu_count() or 1) // max(1, processes))
    torch.set_num_threads(n)
    return n


def batchify(ids: np.ndarray, batch_size: int) -> torch.Tensor:
    """Stream of N ids -> (N // B, B) int64 tensor of B contiguous columns (see above)."""
    n_rows = len(ids) // batch_size
    if n_rows < 2:
        raise ValueError(f"a stream of {len(ids)} tokens is too short for {batch_size} "
                         "streams: each needs at least 2 tokens")
    data = torch.from_numpy(np.asarray(ids[: n_rows * batch_size], dtype=np.int64))
    return data.view(batch_size, n_rows).t().contiguous()


def batch_starts(n_rows: int, bptt: int, variable: bool,
                 rng: random.Random) -> Iterator[tuple[int, int]]:
    """(start row, sequence length) of each batch over a (T, B) stream.

    With ``variable`` the length is drawn around ``bptt`` as in AWD-LSTM (and now and
    then around bptt / 2) so that batch boundaries fall at different places each epoch.
    """
    i = 0
    while i < n_rows - 1:
        seq_len = bptt
        if variable:
            base = bptt if rng.random() < 0.95 else bptt / 2
            seq_len = max(5, int(rng.gauss(base, 5)))
        seq_len = min(seq_len, n_rows - 1 - i)
        yield i, seq_len
        i += seq_len


@torch.no_grad()
def evaluate_loss(model: LSTMLanguageModel, data: torch.Tensor, bptt: int,
                  autocast_dtype: torch.dtype | None = None) -> float:
    """Mean loss (nats per token) over a whole (T, B) stream, state carried throughout."""
    model.eval()
    device = next(model.parameters()).device
    state = model.init_state(data.size(1))
    total, count = torch.zeros((), device=device, dtype=torch.float64), 0
    for i in range(0, data.size(0) - 1, bptt):
        seq_len = min(bptt, data.size(0) - 1 - i)
        inputs = data[i:i + seq_len].to(device, non_blocking=True)
        targets = data[i + 1:i + 1 + seq_len].to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=autocast_dtype or torch.bfloat16,
                            enabled=autocast_dtype is not None):
            features, state = model(inputs, state)
            loss = model.loss(features.float(), targets)
        total += loss.double() * targets.numel()
        count += targets.numel()
    return float(total) / count


def perplexity(loss: float) -> float:
    """exp(mean loss in nats); capped to stay finite for diverged models."""
    return math.exp(min(loss, 700.0))


class LossForward(nn.Module):
    """(inputs, targets, state) -> (mean loss, new state): the model and its loss in one
    forward, so that DistributedDataParallel sees every parameter the loss uses (the
    adaptive softmax's tail clusters are skipped when no target falls in them)."""

    def __init__(self, model: LSTMLanguageModel):
        super().__init__()
        self.model = model

    def forward(self, inputs: torch.Tensor, targets: torch.Tensor,
                state: State) -> tuple[torch.Tensor, State]:
        features, state = self.model(inputs, state)
        return self.model.loss(features.float(), targets), state


class Trainer:
    """Owns the model, optimiser, scheduler and the RNG; runs epochs.

    ``rank``/``world_size`` select this process's slice of the B streams under
    data-parallel training; with world_size 1 it is the whole batch. With world_size > 1
    (a process group must be running, see lstmlm.distributed) the model is wrapped in
    DistributedDataParallel; losses are reduced over ranks, validation runs on rank 0
    and is broadcast, and every stop decision is rank 0's, so all ranks agree.
    """

    def __init__(self, model: LSTMLanguageModel, train_ids: np.ndarray, valid_ids: np.ndarray,
                 params, device: torch.device, *, rank: int = 0, world_size: int = 1,
                 progress: bool = True):
        self.params = params
        self.device = device
        self.model = model.to(device)
        self.rank, self.world_size = rank, world_size
        self.net: nn.Module = LossForward(self.model)
        if world_size > 1:
            if not is_distributed():
                raise RuntimeError(f"world_size {world_size} needs a running process group "
                                   "(lstmlm.distributed.setup_distributed)")
            from torch.nn.parallel import DistributedDataParallel

            # DDP broadcasts rank 0's weights here and averages gradients in backward.
            # An adaptive softmax leaves a tail cluster unused when no target of this
            # rank's batch falls in it: DDP must look for unused parameters then.
            self.net = DistributedDataParallel(
                self.net, device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=model.config.output == "adaptive")
        self.progress = progress and rank == 0
        if params.batch_size % world_size:
            raise ValueError(f"train.batch_size {params.batch_size} does not split over "
                             f"{world_size} processes")
        per_rank = params.batch_size // world_size
        full = batchify(train_ids, params.batch_size)
        # Rank r takes columns [r * b, (r + 1) * b): whole streams, so BPTT state holds.
        self.train_data = full[:, rank * per_rank:(rank + 1) * per_rank].contiguous()
        # Per-epoch validation runs at the training batch size: the full stream, state
        # carried, but B streams wide, so it costs seconds instead of a minute on a CPU. The
        # evaluate stage then reports the literature's setting (batch 10 valid, 1 test).
        self.valid_data = batchify(valid_ids, min(params.batch_size, max(1, len(valid_ids) // 2)))
        if device.type == "cuda":
            self.train_data = self.train_data.pin_memory()
            self.valid_data = self.valid_data.pin_memory()
        self.autocast_dtype = torch.bfloat16 if (device.type == "cuda" and params.bf16) else None
        self.optimizer = make_optimizer(model, params, device)
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, mode="min", factor=params.lr_factor, patience=params.lr_patience)
        self.rng = random.Random(params.seed)
        self.epoch = 0
        self.best_valid_loss = math.inf
        self.epochs_since_best = 0
        self.history: list[EpochRecord] = []

    # ------------------------------------------------------------------ resume state

    def state_dict(self) -> dict:
        """Everything needed to continue bit-identically from the end of an epoch."""
        return {
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "python_rng": _encode_random_state(self.rng.getstate()),
            "epoch": self.epoch,
            "best_valid_loss": self.best_valid_loss,
            "epochs_since_best": self.epochs_since_best,
            "history": [r.to_dict() for r in self.history],
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.rng.setstate(_decode_random_state(state["python_rng"]))
        self.epoch = state["epoch"]
        self.best_valid_loss = state["best_valid_loss"]
        self.epochs_since_best = state["epochs_since_best"]
        self.history = [EpochRecord(**r) for r in state["history"]]

    # ------------------------------------------------------------------ epochs

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def train_epoch(self, deadline: float | None = None) -> tuple[float, int, float]:
        """One pass over the training streams. Returns (mean loss, tokens, seconds).

        Stops early, mid-epoch, when ``deadline`` (time.monotonic()) passes.
        """
        from tqdm import tqdm

        p, device = self.params, self.device
        distributed = self.world_size > 1
        if distributed:
            # Dropout masks differ per rank, and the RNG at an epoch's start depends only on
            # (seed, rank, epoch): a resumed run draws what an uninterrupted one would.
            torch.manual_seed(int(np.random.SeedSequence(
                [p.seed, self.rank, self.epoch]).generate_state(1)[0]))
        self.net.train()
        per_rank_batch = self.train_data.size(1)
        state: State = self.model.init_state(per_rank_batch)
        # Loss is summed on the device and read back only for logging: no host sync per step.
        loss_sum = torch.zeros((), device=device, dtype=torch.float64)
        window_sum = torch.zeros((), device=device, dtype=torch.float64)
        tokens = window_tokens = 0
        started = time.perf_counter()
        n_rows = self.train_data.size(0)
        bar = tqdm(total=n_rows - 1, desc=f"epoch {self.epoch + 1}", unit="row", leave=False,
                   disable=None if self.progress else True, mininterval=1.0)
        base_lr = self.lr
        for step, (i, seq_len) in enumerate(batch_starts(n_rows, p.bptt, p.variable_bptt,
                                                         self.rng)):
            inputs = self.train_data[i:i + seq_len].to(device, non_blocking=True)
            targets = self.train_data[i + 1:i + 1 + seq_len].to(device, non_blocking=True)
            if not p.stateful:
                state = self.model.init_state(per_rank_batch)
            lr = self.cosine_lr(i / (n_rows - 1)) if p.schedule == "cosine" else base_lr
            # Longer sequences carry more gradient; scale the rate (AWD-LSTM) to match.
            if p.variable_bptt:
                lr *= seq_len / p.bptt
            self.optimizer.param_groups[0]["lr"] = lr
            with torch.autocast(device.type, dtype=self.autocast_dtype or torch.bfloat16,
                                enabled=self.autocast_dtype is not None):
                # Under DDP each rank's loss is the mean over its own tokens; DDP averages
                # the gradients over ranks, which with equal slices is the global mean's.
                loss, state = self.net(inputs, targets, state)
            state = detach_state(state)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if p.clip > 0:
                nn.utils.clip_grad_norm_(self.model.parameters(), p.clip)
            self.optimizer.step()
            n = targets.numel()
            loss_sum += loss.detach().double() * n
            window_sum += loss.detach().double() * n
            tokens += n
            window_tokens += n
            bar.update(seq_len)
            past_deadline = deadline is not None and time.monotonic() > deadline
            stop = past_deadline and not distributed
            if step % LOG_EVERY == 0:
                rank0_past = past_deadline and self.rank == 0
                window = torch.stack([window_sum, window_sum.new_tensor(float(window_tokens)),
                                      window_sum.new_tensor(float(rank0_past))])
                if distributed:
                    # Summed over ranks: every rank sees the global loss (so all raise on
                    # divergence together) and rank 0's deadline decision (so all stop
                    # after the same step; DDP needs every rank in every backward).
                    all_reduce_tensor(window)
                w_sum, w_tokens, rank0_stop = window.tolist()  # the one sync, for logging
                window_loss = w_sum / w_tokens
                stop = stop or rank0_stop > 0
                if not math.isfinite(window_loss):
                    raise TrainingDiverged(
                        f"the training loss became {window_loss} in epoch {self.epoch + 1}, "
                        f"batch {step}: the learning rate ({self.lr:g}) may be too high or "
                        f"gradient clipping too loose (train.clip={p.clip:g})")
                elapsed = time.perf_counter() - started
                bar.set_postfix(loss=f"{window_loss:.3f}",
                                tok_s=f"{tokens * self.world_size / elapsed:,.0f}")
                window_sum.zero_()
                window_tokens = 0
            if stop:  # under DDP only at a logging step, where the ranks agreed on it
                break
        # Leave the epoch-level rate in place: the plateau schedule and the logs read it.
        self.optimizer.param_groups[0]["lr"] = (
            self.cosine_lr(1.0) if p.schedule == "cosine" else base_lr)
        bar.close()
        totals = torch.stack([loss_sum, loss_sum.new_tensor(float(tokens))])
        if distributed:
            all_reduce_tensor(totals)  # the epoch's loss and tokens over all B streams
        loss_total, tokens_total = totals.tolist()
        tokens = int(tokens_total)
        mean_loss = loss_total / max(tokens, 1)
        if not math.isfinite(mean_loss):
            raise TrainingDiverged(f"the training loss became {mean_loss} in epoch "
                                   f"{self.epoch + 1}: lower train.lr or train.clip")
        return mean_loss, tokens, time.perf_counter() - started

    def cosine_lr(self, epoch_fraction: float) -> float:
        """The cosine schedule's rate at ``epoch_fraction`` of the current epoch: from
        train.lr down to COSINE_FLOOR of it at the end of the last planned epoch."""
        p = self.params
        progress = min(1.0, (self.epoch + epoch_fraction) / p.epochs)
        return p.lr * (COSINE_FLOOR + (1 - COSINE_FLOOR) * 0.5 * (1 + math.cos(math.pi * progress)))

    def validate(self) -> float:
        """Mean validation loss; under DDP computed once, by rank 0, and broadcast."""
        if self.world_size == 1:
            return evaluate_loss(self.model, self.valid_data, self.params.bptt,
                                 self.autocast_dtype)
        loss = (evaluate_loss(self.model, self.valid_data, self.params.bptt,
                              self.autocast_dtype) if self.rank == 0 else 0.0)
        return broadcast_from_rank0(loss, self.device)

    def fit(self, on_epoch: Callable[[EpochRecord, bool], None] | None = None,
            deadline: float | None = None) -> list[EpochRecord]:
        """Train until ``params.epochs``, early stopping or ``deadline``.

        After each epoch ``on_epoch(record, is_best)`` is called (to log, save the best
        checkpoint and the resume state).
        """
        p = self.params
        if p.max_minutes and deadline is None:
            deadline = time.monotonic() + 60 * p.max_minutes
        while self.epoch < p.epochs and self.epochs_since_best < p.early_stop_patience:
            lr = self.lr
            train_loss, tokens, seconds = self.train_epoch(deadline)
            valid_loss = self.validate()
            # Diverged: NaN/inf, or finite but far worse than a uniform guess (Adam with an
            # absurd rate gives losses of 1e13 that are finite). Raised before on_epoch, so a
            # diverged model is never saved; the value is the same on every rank.
            uniform = math.log(self.model.config.vocab_size)
            if not math.isfinite(valid_loss) or valid_loss > uniform + DIVERGED_NATS:
                raise TrainingDiverged(
                    f"the validation loss became {valid_loss:.3g} nats per token after epoch "
                    f"{self.epoch + 1}, against {uniform:.2f} for a uniform guess: the model "
                    f"diverged; the learning rate (train.lr={p.lr:g}) may be too high or "
                    f"gradient clipping too loose (train.clip={p.clip:g})")
            self.epoch += 1
            is_best = valid_loss < self.best_valid_loss
            if is_best:
                self.best_valid_loss, self.epochs_since_best = valid_loss, 0
            else:
                self.epochs_since_best += 1
            if p.schedule == "plateau":
                self.scheduler.step(valid_loss)
            record = EpochRecord(self.epoch, train_loss, perplexity(train_loss), valid_loss,
                                 perplexity(valid_loss), lr, tokens / seconds, seconds)
            self.history.append(record)
            if on_epoch is not None:
                on_epoch(record, is_best)
            past_deadline = deadline is not None and time.monotonic() > deadline
            if rank0_decides(past_deadline, self.device) if self.world_size > 1 else past_deadline:
                break
        return self.history


def make_optimizer(model: nn.Module, params, device: torch.device) -> torch.optim.Optimizer:
    """Adam, AdamW or SGD; fused kernels on CUDA."""
    fused = {"fused": True} if device.type == "cuda" else {}
    if params.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=params.lr,
                                weight_decay=params.weight_decay, **fused)
    if params.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=params.lr,
                                 weight_decay=params.weight_decay, **fused)
    if params.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=params.lr,
                               weight_decay=params.weight_decay)
    raise ValueError(f"train.optimizer: unknown optimiser {params.optimizer!r}")


def _encode_random_state(state: tuple) -> list:
    """random.Random state as plain lists (checkpoints hold no pickled objects)."""
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _decode_random_state(state: list) -> tuple:
    version, internal, gauss = state
    return (version, tuple(internal), gauss)
