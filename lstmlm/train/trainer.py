"""Training with truncated backpropagation through time over contiguous streams.

The batches are the (T, B) layout of ``lstmlm.data.streams``: B contiguous streams side by
side, read ``bptt`` rows at a time. Because column b of batch k+1 continues column b of
batch k, the hidden state at the end of one batch is the right starting state for the
next: it is carried over (detached, so gradients stop at the batch boundary).
``stateful: false`` resets it to zeros for every batch instead, as the seed notebook did.

The ``train`` section and its schedule live in ``lstmlm.train.schedule``. Read top to bottom:
one step (``Trainer.train_step``); one epoch (``Trainer.train_epoch``); what happens
between epochs (``Trainer.end_epoch``: the best weights, the plateau cut, the switch to
weight averaging); the loop (``Trainer.fit``).
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Callable

import numpy as np
import torch
from torch import nn

from lstmlm.core.errors import LstmlmError
from lstmlm.core.machine import full_precision, resolve_precision
from lstmlm.core.progress import Reporter
from lstmlm.data.streams import batch_starts, batchify, get_batch
from lstmlm.evaluate.perplexity import evaluate_loss, perplexity
from lstmlm.model.lstm import LSTMLanguageModel, Output, State, detach_state
from lstmlm.train.averaging import UniformAverage
from lstmlm.train.distributed import (
    all_reduce_tensor,
    broadcast_from_rank0,
    rank0_decides,
    wrap_model,
)
from lstmlm.train.schedule import (
    TrainConfig,
    check_batch_splits,
    get_lr,
    make_optimizer,
    should_start_averaging,
)

# Every LOG_EVERY steps the loop reads the loss back (the one host sync of the loop) and,
# under DDP, agrees on it and on stopping with the other ranks.
LOG_EVERY = 20
# A validation loss this many nats above a uniform guess's means training diverged.
DIVERGED_NATS = 10.0


class TrainingDiverged(LstmlmError, RuntimeError):
    """The loss became NaN or infinite, or far worse than a uniform guess."""

    @classmethod
    def because(cls, what: str, config: TrainConfig) -> "TrainingDiverged":
        """The one message for a run that diverged: what was seen, and the keys to change."""
        return cls(f"{what}: the model diverged; the learning rate may be too high "
                   f"(train.lr={config.lr:g}) or gradient clipping too loose "
                   f"(train.clip={config.clip:g})")


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


# --------------------------------------------------------------------------- one step


def activation_penalty(out: Output, config: TrainConfig) -> torch.Tensor | float:
    """AR and TAR (Merity et al. 2017): keep the top LSTM's dropped outputs small (AR)
    and its raw outputs slowly changing over time (TAR). out.top is (T, B, hidden)."""
    penalty: torch.Tensor | float = 0.0
    if config.activation_reg:
        penalty = penalty + config.activation_reg * out.top_dropped.pow(2).mean()
    if config.temporal_activation_reg and out.top.size(0) > 1:
        penalty = penalty + config.temporal_activation_reg * (
            out.top[1:] - out.top[:-1]).pow(2).mean()
    return penalty


class LossForward(nn.Module):
    """(inputs, targets, state) -> (mean loss, objective, new state): the model and its
    loss in one forward, so that DistributedDataParallel sees every parameter the loss
    uses (the adaptive softmax's tail clusters are skipped when no target falls in them).
    The objective adds AR/TAR to the loss; the loss alone is what is reported."""

    def __init__(self, model: LSTMLanguageModel, config: TrainConfig, precision: str):
        super().__init__()
        self.model, self.config = model, config
        self.bf16, self.bf16_output = precision in ("bf16", "bf16-all"), precision == "bf16-all"

    def forward(self, inputs: torch.Tensor, targets: torch.Tensor, state: State):
        # bf16: the embedding, LSTMs and dropouts under bfloat16 autocast (weights and
        # optimiser stay fp32); bf16-all: the output layer's products too. The log-softmax
        # and the loss are always fp32 (model.loss).
        with torch.autocast(inputs.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            out = self.model(inputs, state)
        loss = self.model.loss(out.features, targets, bf16=self.bf16_output)
        return loss, loss + activation_penalty(out, self.config), out.state


# --------------------------------------------------------------------------- the trainer


@dataclass
class Progress:
    """Everything between epochs that a resumed run needs: the one place that tracks
    the best weights, the plateau cuts and the switch to averaging."""

    epoch: int = 0
    steps: int = 0
    valid_losses: list[float] = field(default_factory=list)
    best_valid_loss: float = math.inf
    best_epoch: int = 0
    best_weights: dict[str, torch.Tensor] | None = None
    epochs_since_best: int = 0
    plateau_cuts: int = 0
    epochs_since_cut: int = 0
    averaging: bool = False
    history: list[EpochRecord] = field(default_factory=list)

    def to_dict(self) -> dict:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values["history"] = [asdict(r) for r in self.history]
        return values

    @classmethod
    def from_dict(cls, values: dict) -> "Progress":
        values = dict(values)
        values["history"] = [EpochRecord(**r) for r in values["history"]]
        return cls(**values)


class Trainer:
    """Owns the model, optimiser, weight average, RNG and progress; runs epochs.

    ``rank``/``world_size`` select this process's slice of the B streams under
    data-parallel training; with world_size 1 it is the whole batch. With world_size > 1
    (a process group must be running, see lstmlm.train.distributed) the model is wrapped in
    DistributedDataParallel; losses are reduced over ranks, validation runs on rank 0
    and is broadcast, and every stop decision is rank 0's, so all ranks agree.
    """

    def __init__(self, model: LSTMLanguageModel, train_ids: np.ndarray, valid_ids: np.ndarray,
                 config: TrainConfig, device: torch.device, *, rank: int = 0,
                 world_size: int = 1, reporter: Callable[..., Reporter] | None = Reporter):
        self.config, self.device = config, device
        self.model = model.to(device)
        self.rank, self.world_size = rank, world_size
        self.train_data, self.valid_data = split_streams(
            train_ids[:config.max_tokens or None], valid_ids, config.batch_size, rank,
            world_size, device)
        self.precision = resolve_precision(config.precision, device)
        self.net = wrap_model(LossForward(self.model, config, self.precision),
                              device, world_size)
        # Makes each epoch's progress report (rank 0's alone; None: none).
        self.reporter = reporter if rank == 0 else None
        self.optimizer = make_optimizer(model, config)
        self.average: torch.optim.swa_utils.AveragedModel | None = None
        self.rng = random.Random(config.seed)
        self.progress = Progress()
        # Called with the new best validation loss whenever one is found mid-epoch
        # (train.validate_every); the stage saves the checkpoint there.
        self.on_best: Callable[[float], None] | None = None

    # ------------------------------------------------------------------ one epoch

    def train_step(self, inputs: torch.Tensor, targets: torch.Tensor, state: State,
                   lr: float) -> tuple[torch.Tensor, State]:
        """Forward, backward, clip, update; returns the (detached) loss and state."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        loss, objective, state = self.net(inputs, targets, state)
        self.optimizer.zero_grad(set_to_none=True)
        objective.backward()
        if self.config.clip > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.clip)
        self.optimizer.step()
        if self.average is not None:
            self.average.update_parameters(self.model)
        return loss.detach(), detach_state(state)

    def step_lr(self, row: int, seq_len: int) -> float:
        """The rate for the batch starting at ``row``; longer sequences carry more
        gradient, so with variable BPTT the rate scales with the length (AWD-LSTM)."""
        c = self.config
        n_rows = self.train_data.size(0)
        lr = get_lr(c, self.progress.epoch + row / (n_rows - 1), self.progress.plateau_cuts)
        return lr * seq_len / c.bptt if c.variable_bptt else lr

    def train_epoch(self, deadline: float | None = None) -> tuple[float, int, float]:
        """One pass over the training streams. Returns (mean loss, tokens, seconds).
        Stops early, mid-epoch, when ``deadline`` (time.monotonic()) passes."""
        c = self.config
        self._seed_epoch()
        self.net.train()
        batch = self.train_data.size(1)
        state = self.model.init_state(batch)
        meter = LossMeter(self, deadline)
        for step, (i, seq_len) in enumerate(batch_starts(self.train_data.size(0), c.bptt,
                                                         c.variable_bptt, self.rng)):
            inputs, targets = get_batch(self.train_data, i, seq_len, self.device)
            self.start_swa_if_due(i)
            if not c.stateful:
                state = self.model.init_state(batch)
            loss, state = self.train_step(inputs, targets, state, self.step_lr(i, seq_len))
            self.progress.steps += 1
            if c.validate_every and self.progress.steps % c.validate_every == 0:
                self.validate_mid_epoch()
            if meter.add(step, loss, targets.numel()):
                break
        return meter.close()

    def epoch_reporter(self) -> Reporter | None:
        """The progress report of the epoch about to run, in tokens of every rank, with
        the run's tokens for its estimate (None when this process reports nothing)."""
        if self.reporter is None:
            return None
        c, p = self.config, self.progress
        tokens = (self.train_data.size(0) - 1) * self.train_data.size(1) * self.world_size
        return self.reporter(f"train epoch {p.epoch + 1}/{c.epochs}", tokens,
                             run=(p.epoch * tokens, c.epochs * tokens), part="epoch")

    def validate_mid_epoch(self) -> None:
        """Keep a new best found between epoch ends (schedules still act per epoch)."""
        valid_loss = self.validate()
        self.net.train()
        if self.keep_if_best(valid_loss, self.progress.epoch + 1) and self.on_best is not None:
            self.on_best(valid_loss)

    def keep_if_best(self, valid_loss: float, epoch: int) -> bool:
        """Snapshot the evaluated weights when ``valid_loss`` is a new best."""
        p = self.progress
        if valid_loss >= p.best_valid_loss:
            return False
        p.best_valid_loss, p.best_epoch = valid_loss, epoch
        p.best_weights = {k: v.detach().cpu().clone()
                          for k, v in self.eval_model.state_dict().items()}
        return True

    def _seed_epoch(self) -> None:
        """Under DDP, dropout masks differ per rank, and the RNG at an epoch's start
        depends only on (seed, rank, epoch): a resumed run draws what an uninterrupted
        one would."""
        if self.world_size > 1:
            torch.manual_seed(int(np.random.SeedSequence(
                [self.config.seed, self.rank, self.progress.epoch]).generate_state(1)[0]))

    # ------------------------------------------------------------------ between epochs

    @property
    def eval_model(self) -> LSTMLanguageModel:
        """The weights that are validated and saved: the running average once averaging
        has started (NT-ASGD's trigger, or SWA's share of the epochs), else the model's own."""
        return self.model if self.average is None else self.average.module

    def validate(self) -> float:
        """Mean validation loss, in fp32; under DDP computed once, by rank 0, and broadcast."""
        loss = 0.0
        if self.rank == 0:
            with full_precision():
                loss = evaluate_loss(self.eval_model, self.valid_data, self.config.bptt)
        return broadcast_from_rank0(loss, self.device)

    def check_diverged(self, valid_loss: float) -> None:
        """NaN/inf, or finite but far worse than a uniform guess (Adam with an absurd rate
        gives losses of 1e13 that are finite). Checked before anything is saved."""
        uniform = math.log(self.model.vocab_size)
        if not math.isfinite(valid_loss) or valid_loss > uniform + DIVERGED_NATS:
            raise TrainingDiverged.because(
                f"the validation loss became {valid_loss:.3g} nats per token after epoch "
                f"{self.progress.epoch + 1}, against {uniform:.2f} for a uniform guess",
                self.config)

    def end_epoch(self, valid_loss: float) -> bool:
        """Book-keeping after an epoch; returns whether it is the best so far."""
        c, p = self.config, self.progress
        p.epoch += 1
        p.valid_losses.append(valid_loss)
        is_best = self.keep_if_best(valid_loss, p.epoch)
        improved = p.best_epoch == p.epoch  # at its end, or mid-epoch (validate_every)
        p.epochs_since_best = 0 if improved else p.epochs_since_best + 1
        # Plateau: cut the rate once lr_patience epochs in a row brought no new best.
        p.epochs_since_cut = 0 if improved else p.epochs_since_cut + 1
        if c.schedule == "plateau" and p.epochs_since_cut > c.lr_patience:
            p.plateau_cuts, p.epochs_since_cut = p.plateau_cuts + 1, 0
        if (c.averaging == "ntasgd" and not p.averaging
                and should_start_averaging(p.valid_losses, c.nonmono)):
            p.averaging = True
            self.start_averaging()
        return is_best

    def start_averaging(self) -> None:
        """From now on keep a uniform average of the weights after every step."""
        self.average = UniformAverage(self.model, use_buffers=True)

    def start_swa_if_due(self, row: int) -> None:
        """averaging swa: start the average at train.average_from of the epochs."""
        c, p = self.config, self.progress
        done = p.epoch + row / (self.train_data.size(0) - 1)
        if c.averaging == "swa" and not p.averaging and done >= c.average_from * c.epochs:
            p.averaging = True
            self.start_averaging()

    def fit(self, on_epoch: Callable[[EpochRecord, bool], None] | None = None,
            deadline: float | None = None) -> list[EpochRecord]:
        """Train until train.epochs, early stopping or ``deadline``; after each epoch
        ``on_epoch(record, is_best)`` is called (to log and save)."""
        c, p = self.config, self.progress
        if c.max_minutes and deadline is None:
            deadline = time.monotonic() + 60 * c.max_minutes
        while p.epoch < c.epochs and p.epochs_since_best < c.early_stop_patience:
            lr = get_lr(c, p.epoch, p.plateau_cuts)
            train_loss, tokens, seconds = self.train_epoch(deadline)
            valid_loss = self.validate()
            self.check_diverged(valid_loss)
            is_best = self.end_epoch(valid_loss)
            record = EpochRecord(p.epoch, train_loss, perplexity(train_loss), valid_loss,
                                 perplexity(valid_loss), lr, tokens / seconds, seconds)
            p.history.append(record)
            if on_epoch is not None:
                on_epoch(record, is_best)
            if rank0_decides(deadline is not None and time.monotonic() > deadline, self.device):
                break
        return p.history

    # ------------------------------------------------------------------ resume state

    def state_dict(self) -> dict:
        """Everything needed to continue bit-identically from the end of an epoch."""
        return {
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "average": None if self.average is None else {
                k: v.detach().cpu() for k, v in self.average.state_dict().items()},
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "python_rng": self.rng.getstate(),  # (version, 625 ints, gauss): plain data
            "progress": self.progress.to_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if state["average"] is not None:
            self.start_averaging()
            self.average.load_state_dict(state["average"])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        version, internal, gauss = state["python_rng"]
        self.rng.setstate((version, tuple(internal), gauss))
        self.progress = Progress.from_dict(state["progress"])


def split_streams(train_ids: np.ndarray, valid_ids: np.ndarray, batch_size: int, rank: int,
                  world_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's (T, b) training columns and the (T, B) validation stream."""
    check_batch_splits(batch_size, world_size)
    per_rank = batch_size // world_size
    full = batchify(train_ids, batch_size)
    # Rank r takes columns [r * b, (r + 1) * b): whole streams, so BPTT state holds.
    train = full[:, rank * per_rank:(rank + 1) * per_rank].contiguous()
    # Per-epoch validation runs at the training batch size: the full stream, state
    # carried, but B streams wide, so it costs seconds instead of a minute on a CPU. The
    # evaluate stage then reports the literature's setting (batch 10 valid, 1 test).
    valid = batchify(valid_ids, min(batch_size, max(1, len(valid_ids) // 2)))
    if device.type == "cuda":
        train, valid = train.pin_memory(), valid.pin_memory()
    return train, valid


class LossMeter:
    """Sums the epoch's loss on the device, reads it back every LOG_EVERY steps (the one
    host sync of the loop) for the progress report and the divergence check, and decides
    when the deadline stops the epoch. Under DDP the read-back is an all-reduce, so every
    rank sees the global loss and rank 0's deadline decision (all stop after the same
    step: DDP needs every rank in every backward)."""

    def __init__(self, trainer: Trainer, deadline: float | None):
        self.trainer, self.deadline = trainer, deadline
        device = trainer.device
        self.total = torch.zeros((), device=device, dtype=torch.float64)
        self.window = torch.zeros((), device=device, dtype=torch.float64)
        self.tokens = self.window_tokens = 0
        self.started = time.perf_counter()
        self.report = trainer.epoch_reporter()

    def add(self, step: int, loss: torch.Tensor, n: int) -> bool:
        """Count one step of ``n`` tokens; True when the epoch must stop (deadline)."""
        self.total += loss.double() * n
        self.window += loss.double() * n
        self.tokens += n
        self.window_tokens += n
        past = self.deadline is not None and time.monotonic() > self.deadline
        stop = past and self.trainer.world_size == 1
        facts = {}
        if step % LOG_EVERY == 0:
            facts["loss"], rank0_stop = self._read_window(step, past)
            stop = stop or rank0_stop
        if self.report is not None:
            self.report.advance(n * self.trainer.world_size, **facts)
        return stop

    def _read_window(self, step: int, past: bool) -> tuple[float, bool]:
        """The mean loss since the last read, over every rank, and rank 0's stop."""
        t = self.trainer
        packed = torch.stack([self.window, self.window.new_tensor(float(self.window_tokens)),
                              self.window.new_tensor(float(past and t.rank == 0))])
        w_sum, w_tokens, rank0_stop = all_reduce_tensor(packed).tolist()
        loss = w_sum / w_tokens
        if not math.isfinite(loss):
            raise TrainingDiverged.because(f"the training loss became {loss} in epoch "
                                           f"{t.progress.epoch + 1}, batch {step}", t.config)
        self.window.zero_()
        self.window_tokens = 0
        return loss, rank0_stop > 0

    def close(self) -> tuple[float, int, float]:
        if self.report is not None:
            self.report.close()
        totals = torch.stack([self.total, self.total.new_tensor(float(self.tokens))])
        # The epoch's loss and tokens over all B streams (every rank's, under DDP).
        loss_total, tokens = all_reduce_tensor(totals).tolist()
        mean = loss_total / max(tokens, 1)
        if not math.isfinite(mean):
            raise TrainingDiverged.because(f"the training loss became {mean} in epoch "
                                           f"{self.trainer.progress.epoch + 1}",
                                           self.trainer.config)
        return mean, int(tokens), time.perf_counter() - self.started
