"""Data-parallel training: 2 CPU processes (gloo) against 1 process with the same global
batch, the train stage under torchrun (train.nproc: 2), and bench/gpu_check.py's no-CUDA exit.

The comparisons turn every dropout off: masks are drawn per rank, so only then do the two
runs compute the same function.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import ROOT, TINY_MODEL, TINY_TRAIN
from lstmlm.core.params import parse_section
from lstmlm.data.streams import load_ids
from lstmlm.data.tensorise import tensorise_corpus
from lstmlm.data.tokenise import tokenise_corpus
from lstmlm.data.vocab import Vocabulary
from lstmlm.model.config import ModelConfig
from lstmlm.model.lstm import LSTMLanguageModel
from lstmlm.train import trainer as training
from lstmlm.train.schedule import TrainConfig
from lstmlm.train.trainer import Trainer

torch.set_num_threads(1)

NO_DROPOUT = {**TINY_MODEL, "output_dropout": 0.0, "input_dropout": 0.0, "layer_dropout": 0.0,
              "word_dropout": 0.0}
ONE_STEP = {**TINY_TRAIN, "clip": 0.0}  # no clipping: it would hide a wrongly scaled gradient
FIT = {**TINY_TRAIN, "epochs": 2, "variable_bptt": True}
WORLD = 2


@pytest.fixture(scope="module")
def tiny_ids(tmp_path_factory) -> Path:
    """Tokenised and tensorised tiny corpus: a directory with ids/ and vocab.json."""
    from conftest import write_tiny_corpus

    root = tmp_path_factory.mktemp("ddp")
    write_tiny_corpus(root / "raw", sizes=(250, 40, 40))  # ~60 steps an epoch: quick
    vocab, _ = tokenise_corpus(root / "raw", root / "tokens", root / "vocab.json",
                               scheme="wikitext")
    tensorise_corpus(root / "tokens", vocab, root / "ids")
    return root


def load_data(root: Path):
    train = np.asarray(load_ids(root / "ids", "train"), dtype=np.int64)
    valid = np.asarray(load_ids(root / "ids", "valid"), dtype=np.int64)
    return train, valid, len(Vocabulary.load(root / "vocab.json"))


def make_trainer(root: Path, train_overrides: dict, rank: int = 0, world_size: int = 1,
                 one_step: bool = False) -> Trainer:
    train_ids, valid_ids, vocab_size = load_data(root)
    params = parse_section("train", train_overrides, TrainConfig)
    if one_step:  # exactly one batch: B streams of bptt + 1 tokens
        train_ids = train_ids[:params.batch_size * (params.bptt + 1)]
    torch.manual_seed(params.seed)
    model = LSTMLanguageModel(parse_section("model", NO_DROPOUT, ModelConfig), vocab_size)
    return Trainer(model, train_ids, valid_ids, params, torch.device("cpu"), rank=rank,
                   world_size=world_size, reporter=None)


def run_phases(root: Path, rank: int = 0, world_size: int = 1) -> dict:
    """What is compared between the 1- and 2-process runs (the same code for both)."""
    out = {}
    # 1. One step: loss, gradients (DDP-averaged) and the weights after the update.
    trainer = make_trainer(root, ONE_STEP, rank, world_size, one_step=True)
    loss, tokens, _ = trainer.train_epoch()
    out["step"] = {"loss": loss, "tokens": tokens,
                   "grads": {n: None if p.grad is None else p.grad.clone()
                             for n, p in trainer.model.named_parameters()},
                   "weights": {n: p.detach().clone() for n, p in trainer.model.named_parameters()}}
    # 2. Two epochs with variable BPTT, the LR schedule and validation.
    calls = []
    original = training.evaluate_loss
    training.evaluate_loss = lambda *a, **k: calls.append(1) or original(*a, **k)
    try:
        trainer = make_trainer(root, FIT, rank, world_size)
        history = trainer.fit()
    finally:
        training.evaluate_loss = original
    out["fit"] = {"history": [dataclasses.asdict(dataclasses.replace(r, tokens_per_s=0.0, epoch_seconds=0.0))
                              for r in history],
                  "weights": {n: p.detach().clone() for n, p in trainer.model.named_parameters()},
                  "validations": len(calls), "seed": torch.initial_seed()}
    # 3. A deadline only rank 0 has passed: every rank must stop after the same step.
    trainer = make_trainer(root, TINY_TRAIN, rank, world_size)
    _, tokens, _ = trainer.train_epoch(deadline=time.monotonic() - 1 if rank == 0 else None)
    out["deadline_tokens"] = tokens
    return out


def ddp_worker(rank: int, root: Path, port: int, out_dir: Path) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD, timeout=timedelta(seconds=60))
    try:
        torch.save(run_phases(root, rank, WORLD), out_dir / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def spawn(fn, args, timeout: float) -> None:
    """torch.multiprocessing.spawn, but a hung rank fails the test instead of hanging it."""
    import torch.multiprocessing as mp

    context = mp.start_processes(fn, args=args, nprocs=WORLD, join=False, start_method="spawn")
    deadline = time.monotonic() + timeout
    try:
        while not context.join(timeout=1):
            if time.monotonic() > deadline:
                raise AssertionError(f"the {WORLD} processes did not finish in {timeout:g} s")
    finally:
        for process in context.processes:
            if process.is_alive():
                process.terminate()


def assert_close_dicts(a: dict, b: dict, **tol) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert (a[name] is None) == (b[name] is None), name
        if a[name] is not None:
            torch.testing.assert_close(a[name], b[name], **tol, msg=lambda m: f"{name}: {m}")


def test_two_processes_match_one_process_with_the_same_global_batch(tiny_ids, tmp_path):
    spawn(ddp_worker, (tiny_ids, free_port(), tmp_path), timeout=120)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    single = run_phases(tiny_ids)

    # One step: the loss reduced over ranks is the global mean; DDP's averaged gradient
    # (each rank's loss a mean over its own half of the tokens) is the global gradient.
    b, bptt = TINY_TRAIN["batch_size"], TINY_TRAIN["bptt"]
    for result in ranks:
        step = result["step"]
        assert step["tokens"] == single["step"]["tokens"] == b * bptt
        assert step["loss"] == pytest.approx(single["step"]["loss"], rel=1e-6)
        assert_close_dicts(step["grads"], single["step"]["grads"], rtol=1e-5, atol=1e-7)
        assert_close_dicts(step["weights"], single["step"]["weights"], rtol=1e-5, atol=1e-6)

    # Two epochs: same losses, learning rates and weights; the ranks agree on everything.
    for result in ranks:
        for got, want in zip(result["fit"]["history"], single["fit"]["history"], strict=True):
            for key in ("train_loss", "valid_loss", "lr"):
                assert got[key] == pytest.approx(want[key], rel=1e-5), (got["epoch"], key)
        # ~120 Adam steps amplify float rounding (the sums run in another order) to ~1e-4.
        assert_close_dicts(result["fit"]["weights"], single["fit"]["weights"],
                           rtol=1e-3, atol=1e-3)
    assert ranks[0]["fit"]["history"] == ranks[1]["fit"]["history"]
    # Validation ran once per epoch, on rank 0 only; the others got its value.
    assert [r["fit"]["validations"] for r in ranks] == [FIT["epochs"], 0]
    assert ranks[0]["fit"]["seed"] != ranks[1]["fit"]["seed"]  # own dropout masks per rank

    # Rank 0's deadline stopped both ranks after the first step (no hang, same count).
    assert [r["deadline_tokens"] for r in ranks] == [b * bptt] * WORLD


def venv_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("DVCLIVE_TEST", "WIKITEXT_DIR")}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


@pytest.mark.slow
def test_train_stage_with_nproc_2_writes_one_checkpoint_and_one_log(tiny_ids, tmp_path):
    params = {"model": TINY_MODEL, "train": {**TINY_TRAIN, "nproc": WORLD, "device": "cpu"}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "stages.train", "--params", "params.yaml",
               "--ids", str(tiny_ids / "ids"), "--vocab", str(tiny_ids / "vocab.json"),
               "--checkpoint", str(out / "model.pt"), "--live", str(out / "live"),
               "--resume-dir", str(tmp_path / "resume")]
    env = {**venv_env(), "PYTHONPATH": str(ROOT)}  # stages/ is no installed package
    proc = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=180)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log
    assert "torch.distributed.run" in log and f"{WORLD} processes" in log
    assert log.count("train: best valid ppl") == 1  # rank 0 alone reports
    assert sorted(p.name for p in out.iterdir()) == ["live", "model.pt"]
    metrics = json.loads((out / "live" / "metrics.json").read_text())
    assert metrics["step"] == TINY_TRAIN["epochs"] - 1
    # One writer: one row per epoch in each curve, not one per rank.
    curve = (out / "live" / "plots" / "metrics" / "train" / "loss.tsv").read_text().splitlines()
    assert len(curve) == 1 + TINY_TRAIN["epochs"]
    assert not (tmp_path / "resume").exists()
    payload = torch.load(out / "model.pt", weights_only=True)
    assert payload["model_config"]["hidden"] == TINY_MODEL["hidden"]


def test_gpu_check_exits_clearly_without_cuda():
    env = venv_env()
    env["CUDA_VISIBLE_DEVICES"] = ""  # no CUDA device, even on a machine that has one
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py")], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "CUDA" in proc.stderr and "Traceback" not in proc.stderr
