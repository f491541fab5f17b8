"""Stage `train`: train the LSTM language model; keep the best-by-valid checkpoint.

Reads params: model.*, train.*. Logs per-epoch metrics with dvclive. After every epoch it
saves a resume state outside DVC's outputs (lstmlm.train.resume); if the stage is interrupted,
the next `dvc repro` continues from the last finished epoch. A run holds a lock on the
resume directory and stops when DVC, its caller, is killed (stages/guard.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys
from pathlib import Path

import torch

from lstmlm.core.checkpoint import save_checkpoint
from lstmlm.core.errors import LstmlmError
from lstmlm.core.machine import pick_device, set_cpu_threads, set_precision
from lstmlm.core.params import read_params
from lstmlm.core.progress import duration, stamp
from lstmlm.data.streams import load_ids
from lstmlm.data.vocab import Vocabulary
from lstmlm.evaluate.perplexity import perplexity
from lstmlm.model.config import ModelConfig
from lstmlm.model.lstm import LSTMLanguageModel
from lstmlm.train.distributed import (
    all_agree,
    cleanup_distributed,
    local_world_size,
    setup_distributed,
)
from lstmlm.train.memory import check_fits
from lstmlm.train.resume import ResumeFile, RunLock, fingerprint
from lstmlm.train.schedule import TrainConfig
from lstmlm.train.trainer import EpochRecord, Trainer
from stages.guard import run_stage


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--ids", type=Path, required=True, help="directory of id arrays")
    parser.add_argument("--vocab", type=Path, required=True, help="vocabulary JSON")
    parser.add_argument("--checkpoint", type=Path, required=True, help="output checkpoint")
    parser.add_argument("--live", type=Path, required=True, help="dvclive output directory")
    parser.add_argument("--resume-dir", type=Path, required=True,
                        help="where the resume state lives (not a DVC output)")
    return parser.parse_args()


def log_epoch(live, record: EpochRecord) -> None:
    """One dvclive step per epoch: the curves `dvc plots show` draws."""
    for name in ("train_loss", "train_ppl", "valid_loss", "valid_ppl"):
        live.log_metric(name.replace("_", "/", 1), getattr(record, name))
    live.log_metric("lr", record.lr)
    live.log_metric("tokens_per_s", round(record.tokens_per_s, 1))
    live.log_metric("epoch_seconds", round(record.epoch_seconds, 2))
    live.next_step()


def build_trainer(args, vocab: Vocabulary, model_config, train_config, rank: int,
                  world_size: int) -> Trainer:
    """Data, device and model; checked to fit in memory before anything is allocated."""
    train_ids = load_ids(args.ids, "train", len(vocab))
    valid_ids = load_ids(args.ids, "valid", len(vocab))
    device = setup_distributed(train_config.device) if world_size > 1 else pick_device(
        train_config.device)
    if device.type == "cpu":
        set_cpu_threads(train_config.threads, local_world_size())
    set_precision(train_config.precision)
    check_fits(model_config, len(vocab), train_config, device.type)
    torch.manual_seed(train_config.seed)
    try:
        model = LSTMLanguageModel(model_config, len(vocab))
        return Trainer(model, train_ids, valid_ids, train_config, device, rank=rank,
                       world_size=world_size)
    except LstmlmError:  # a ParamsError is a ValueError too, and says what to change
        raise
    except ValueError as err:  # batchify: a split too short for the batch size
        raise LstmlmError(f"{args.ids}: {err}; use a longer corpus or a smaller "
                          f"train.batch_size (now {train_config.batch_size})") from None


def main() -> int | None:
    args = parse_args()
    params = read_params(args.params, model=ModelConfig, train=TrainConfig)
    if "LOCAL_RANK" in os.environ:  # a worker under torchrun: the launcher holds the lock
        return train(args, params)
    with RunLock(args.resume_dir):
        if params["train"].nproc > 1:
            return launch_torchrun(params["train"].nproc)
        return train(args, params)


def train(args, params: dict) -> None:
    train_config = params["train"]
    rank, world_size = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    vocab = Vocabulary.load(args.vocab)
    model_config = params["model"].for_vocab(len(vocab))  # cutoffs as word counts, checked
    trainer = build_trainer(args, vocab, model_config, train_config, rank, world_size)
    say = print if rank == 0 else (lambda *a, **k: None)
    say(f"train: {sum(p.numel() for p in trainer.model.parameters()) / 1e6:.1f}M parameters "
        f"on {trainer.device}, {trainer.precision}"
        + (f", {world_size} processes" if world_size > 1 else ""))
    run_id = fingerprint({k: dataclasses.asdict(v) for k, v in params.items()}, vocab.sha256,
                         args.ids)
    resume = ResumeFile(args.resume_dir, run_id, say)
    resume.restore(trainer)
    if not all_agree(trainer.progress.epoch, trainer.device):  # each rank read its own file
        raise LstmlmError(f"the {world_size} processes resumed from different epochs: put "
                          f"{args.resume_dir} on a filesystem that every node shares")
    if rank == 0:
        run_epochs(trainer, resume, args, vocab)
    else:
        trainer.fit()
    cleanup_distributed()


def epoch_line(trainer: Trainer, record: EpochRecord, is_best: bool) -> str:
    """What an epoch measured, when it ended, and when the run should end at this pace."""
    history, left = trainer.progress.history, trainer.config.epochs - record.epoch
    eta = sum(r.epoch_seconds for r in history) / len(history) * left
    return (f"epoch {record.epoch}: train ppl {record.train_ppl:.1f}, valid ppl "
            f"{record.valid_ppl:.1f}, lr {record.lr:.2e}, {record.tokens_per_s:,.0f} "
            f"tokens/s, {record.epoch_seconds:.0f}s" + (" (best)" if is_best else "")
            + f" [{stamp()}" + (f"; {left} to go, ETA {duration(eta)}" if left else "") + "]")


def run_epochs(trainer: Trainer, resume: ResumeFile, args, vocab: Vocabulary) -> None:
    """Rank 0's loop (log_and_fit); Ctrl-C, or SIGTERM, ends it saying what is kept."""
    try:  # SIGTERM too ends up here: run_stage makes it a KeyboardInterrupt
        log_and_fit(trainer, resume, args, vocab)
    except KeyboardInterrupt:
        done = trainer.progress.epoch
        print("\ntrain: interrupted; " + (
            f"{done} finished epoch(s) are saved in {resume.path}. Run `dvc repro` again to "
            "resume." if done else "no epoch had finished, so nothing was saved: `dvc repro` "
            "starts again."), file=sys.stderr)
        sys.exit(130)
    resume.remove()
    p = trainer.progress
    print(f"train: best valid ppl {perplexity(p.best_valid_loss):.1f} at epoch "
          f"{p.best_epoch}; checkpoint {args.checkpoint}")


def log_and_fit(trainer: Trainer, resume: ResumeFile, args, vocab: Vocabulary) -> None:
    """Train, logging each epoch, keeping the best checkpoint and the resume state."""
    from dvclive import Live

    live = Live(str(args.live), dvcyaml=False, save_dvc_exp=False)
    for record in trainer.progress.history:  # DVC removed the old logs; replay resumed epochs
        log_epoch(live, record)

    def save_best(*_) -> None:
        p = trainer.progress
        save_checkpoint(args.checkpoint, trainer.model, vocab,
                        {"epoch": p.best_epoch, "valid_loss": p.best_valid_loss,
                         "valid_ppl": perplexity(p.best_valid_loss)},
                        state_dict=p.best_weights)

    trainer.on_best = save_best  # a best found mid-epoch (train.validate_every)

    def on_epoch(record: EpochRecord, is_best: bool) -> None:
        print(epoch_line(trainer, record, is_best), flush=True)
        log_epoch(live, record)
        if is_best:
            save_best()
        resume.save(trainer)

    if trainer.progress.best_weights is not None:
        save_best()  # DVC deleted the checkpoint before this resumed run
    trainer.fit(on_epoch)
    if trainer.progress.best_weights is None:
        raise LstmlmError("training finished no epoch; nothing to save")
    live.end()


def launch_torchrun(nproc: int) -> int:
    """Re-run this stage under torchrun with ``nproc`` processes (data parallel)."""
    import subprocess

    # As dvc.yaml runs it: a module of the repository's stages/ (see stages/__init__.py).
    target = ["-m", "stages.train"]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={nproc}", *target, *sys.argv[1:]]
    print("train: launching " + " ".join(command), flush=True)
    proc = subprocess.Popen(command)
    # SIGTERM (from whoever stops the stage) goes on to torchrun, which stops the workers;
    # Ctrl-C reaches them through the terminal's process group, so here it only waits.
    signal.signal(signal.SIGTERM, lambda signum, frame: proc.send_signal(signum))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    return proc.wait()


if __name__ == "__main__":
    run_stage(main)
