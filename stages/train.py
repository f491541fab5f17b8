"""Stage `train`: train the LSTM language model; keep the best-by-valid checkpoint.

Reads params: model.*, train.*. Logs per-epoch metrics with dvclive. After every epoch it
saves a resume state outside DVC's outputs (so the run-cache stays on); if the stage is
interrupted, the next `dvc repro` continues from the last finished epoch, provided the
params and data are unchanged (checked by a fingerprint).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import sys
from pathlib import Path

import torch

from lstmlm.checkpoint import save_checkpoint
from lstmlm.corpus import load_ids
from lstmlm.distributed import all_agree, cleanup_distributed, local_world_size, setup_distributed
from lstmlm.errors import LstmlmError, run_main
from lstmlm.files import atomic_path, sha256_file
from lstmlm.model import LSTMLanguageModel, ModelConfig
from lstmlm.params import as_dict, check_cutoffs, read_params
from lstmlm.training import EpochRecord, Trainer, pick_device, set_cpu_threads
from lstmlm.vocab import Vocabulary

RESUME_FILE = "state.pt"


def fingerprint(params: dict, vocab: Vocabulary, ids_dir: Path) -> str:
    """Hash of everything that determines the training run; a resume state from a run
    with another fingerprint must not be continued."""
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode())
    digest.update(vocab.sha256.encode())
    for split in ("train", "valid"):
        digest.update(sha256_file(ids_dir / f"{split}.npy").encode())
    return digest.hexdigest()


def log_epoch(live, record: EpochRecord) -> None:
    """One dvclive step per epoch: the curves `dvc plots show` draws."""
    live.log_metric("train/loss", record.train_loss)
    live.log_metric("train/ppl", record.train_ppl)
    live.log_metric("valid/loss", record.valid_loss)
    live.log_metric("valid/ppl", record.valid_ppl)
    live.log_metric("lr", record.lr)
    live.log_metric("tokens_per_s", round(record.tokens_per_s, 1))
    live.log_metric("epoch_seconds", round(record.epoch_seconds, 2))
    live.next_step()


def read_resume_state(path: Path, run_id: str, say) -> dict | None:
    """The resume state at ``path`` if there is one and it belongs to this run; otherwise
    None, and ``say`` tells why (a damaged state is set aside, never a crash)."""
    if not path.exists():
        return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(saved, dict) or not {"trainer", "best"} <= saved.keys():
            raise ValueError("not a resume state")
    except Exception as err:  # torch raises many types for damaged files
        say(f"train: ignoring {path}: unreadable or damaged ({type(err).__name__}: {err}); "
            "starting afresh")
        return None
    if saved.get("fingerprint") != run_id:
        say(f"train: ignoring {path}: it belongs to other params or data")
        return None
    return saved


def install_signal_handlers() -> None:
    """SIGTERM behaves like Ctrl-C, so both end the stage through the same path."""
    def handler(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, handler)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--ids", type=Path, required=True, help="directory of id arrays")
    parser.add_argument("--vocab", type=Path, required=True, help="vocabulary JSON")
    parser.add_argument("--checkpoint", type=Path, required=True, help="output checkpoint")
    parser.add_argument("--live", type=Path, required=True, help="dvclive output directory")
    parser.add_argument("--resume-dir", type=Path, required=True,
                        help="where the resume state lives (not a DVC output)")
    args = parser.parse_args()

    sections = read_params(args.params, "model", "train")
    model_params, train_params = sections["model"], sections["train"]
    if train_params.nproc > 1 and "LOCAL_RANK" not in os.environ:
        return launch_torchrun(train_params.nproc)
    rank = int(os.environ.get("RANK", 0))
    world_size = int(os.environ.get("WORLD_SIZE", 1))

    vocab = Vocabulary.load(args.vocab)
    if model_params.output == "adaptive":
        check_cutoffs(list(model_params.cutoffs), len(vocab))
    train_ids = load_ids(args.ids, "train", len(vocab))
    valid_ids = load_ids(args.ids, "valid", len(vocab))
    if world_size > 1:
        device = setup_distributed(train_params.device)
    else:
        device = pick_device(train_params.device)
    threads = (set_cpu_threads(train_params.threads, local_world_size())
               if device.type == "cpu" else 0)

    torch.manual_seed(train_params.seed)
    config = ModelConfig.from_params(model_params, len(vocab))
    model = LSTMLanguageModel(config).to(device)
    # With world_size > 1 the Trainer wraps the model in DistributedDataParallel.
    try:
        trainer = Trainer(model, train_ids, valid_ids, train_params, device, rank=rank,
                          world_size=world_size)
    except ValueError as err:  # batchify: a split too short for the batch size
        raise LstmlmError(f"{args.ids}: {err}; use a longer corpus or a smaller "
                          f"train.batch_size (now {train_params.batch_size})") from None
    n_params = sum(p.numel() for p in model.parameters())
    if rank == 0:
        print(f"train: {n_params / 1e6:.1f}M parameters on {device}"
              + (f" ({threads} threads)" if threads else "")
              + (f", {world_size} processes" if world_size > 1 else ""), flush=True)

    # Resume state: fingerprinted so that changed params or data never resume a stale run.
    print_ = print if rank == 0 else (lambda *a, **k: None)
    run_id = fingerprint({"model": as_dict(model_params), "train": as_dict(train_params)},
                         vocab, args.ids)
    resume_path = args.resume_dir / RESUME_FILE
    best = {"state_dict": None, "info": None}
    saved = read_resume_state(resume_path, run_id, print_)
    if saved is not None:
        try:
            trainer.load_state_dict(saved["trainer"])
        except (KeyError, ValueError, TypeError, RuntimeError) as err:
            raise LstmlmError(f"{resume_path}: cannot resume from it ({type(err).__name__}: "
                              f"{err}); delete {args.resume_dir} to start afresh") from None
        best = saved["best"]
        print_(f"train: resuming after epoch {trainer.epoch} from {resume_path}")

    from dvclive import Live

    live = Live(str(args.live), dvcyaml=False, save_dvc_exp=False) if rank == 0 else None
    if live is not None:
        for record in trainer.history:  # DVC removed the old logs; replay the resumed epochs
            log_epoch(live, record)

    def write_best() -> None:
        save_checkpoint(args.checkpoint, model, vocab, args.vocab, best["info"],
                        state_dict=best["state_dict"])

    def on_epoch(record: EpochRecord, is_best: bool) -> None:
        if rank != 0:
            return
        print(f"epoch {record.epoch}: train ppl {record.train_ppl:.1f}, valid ppl "
              f"{record.valid_ppl:.1f}, lr {record.lr:.2e}, {record.tokens_per_s:,.0f} tokens/s, "
              f"{record.epoch_seconds:.0f}s" + (" (best)" if is_best else ""), flush=True)
        log_epoch(live, record)
        if is_best:
            best["state_dict"] = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            best["info"] = {"epoch": record.epoch, "valid_ppl": record.valid_ppl,
                            "valid_loss": record.valid_loss}
            write_best()
        with atomic_path(resume_path) as tmp:
            torch.save({"fingerprint": run_id, "trainer": trainer.state_dict(), "best": best}, tmp)

    if not all_agree(trainer.epoch, device):  # each rank read its own --resume-dir
        raise LstmlmError(f"the {world_size} processes resumed from different epochs: put "
                          f"{args.resume_dir} on a filesystem that every node shares")
    install_signal_handlers()
    try:
        if best["state_dict"] is not None and rank == 0:
            write_best()  # DVC deleted the checkpoint before this resumed run
        trainer.fit(on_epoch)
    except KeyboardInterrupt:
        print_(f"\ntrain: interrupted; {trainer.epoch} finished epoch(s) are saved in "
               f"{resume_path}. Run `dvc repro` again to resume.", file=sys.stderr)
        sys.exit(130)
    if rank == 0:
        if best["state_dict"] is None:
            raise LstmlmError("training finished no epoch; nothing to save")
        live.end()
        shutil.rmtree(args.resume_dir, ignore_errors=True)
        print(f"train: best valid ppl {best['info']['valid_ppl']:.1f} at epoch "
              f"{best['info']['epoch']}; checkpoint {args.checkpoint}")
    cleanup_distributed()


def launch_torchrun(nproc: int) -> int:
    """Re-run this script under torchrun with ``nproc`` processes (data parallel)."""
    import subprocess

    # Started the way this process was: as a module (`-m stages.train`, as dvc.yaml runs
    # it, see stages/__init__.py) or as a script path.
    target = ["-m", __spec__.name] if __spec__ is not None else [sys.argv[0]]
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
    run_main(main)
