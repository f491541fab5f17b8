"""A training run holds its outputs: a second run is refused, and killing DVC (even with
SIGKILL) stops the training it started, leaving a state the next `dvc repro` resumes.

Real processes throughout: the train stage as a subprocess, and a real `dvc repro`.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from conftest import TINY_MODEL, TINY_TRAIN, write_tiny_corpus
from helpers_dvc import command_env, copy_project, dvc, git, set_params
from lstmlm.corpus import tensorise_corpus, tokenise_corpus

ROOT = Path(__file__).resolve().parents[1]
slow = pytest.mark.slow


def resume_epoch(path: Path) -> int:
    try:
        return torch.load(path, weights_only=True)["trainer"]["progress"]["epoch"]
    except (FileNotFoundError, RuntimeError, EOFError):
        return 0


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def training_processes(marker: str) -> list[int]:
    """Pids of live `stages.train` processes whose command line holds ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if "stages.train" in cmd and marker in cmd and state != "Z":
                found.append(int(entry.name))
    return found


@pytest.fixture
def tiny_ids(tmp_path):
    write_tiny_corpus(tmp_path / "raw", sizes=(150, 30, 30))
    vocab, _ = tokenise_corpus(tmp_path / "raw", tmp_path / "tokens", tmp_path / "vocab.json",
                               scheme="wikitext")
    tensorise_corpus(tmp_path / "tokens", vocab, tmp_path / "ids")
    # Long enough to be still training whenever a test signals it (no early stop).
    params = {"model": TINY_MODEL,
              "train": {**TINY_TRAIN, "epochs": 400, "early_stop_patience": 400}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return tmp_path


def start_train(work: Path, live: str) -> subprocess.Popen:
    env = {**command_env(), "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "stages.train", "--ids", "ids", "--vocab", "vocab.json",
         "--checkpoint", f"{live}.pt", "--live", live, "--resume-dir", "resume"],
        cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@slow
def test_a_second_training_run_is_refused_with_the_first_ones_pid(tiny_ids):
    first = start_train(tiny_ids, "first")
    try:
        wait_for(lambda: resume_epoch(tiny_ids / "resume" / "state.pt") >= 1, 60, "epoch 1")
        second = start_train(tiny_ids, "second")
        out, err = second.communicate(timeout=60)
        assert second.returncode == 2, err
        assert f"another training run (process {first.pid}) is using resume" in err
        assert "Traceback" not in err
        assert not (tiny_ids / "second.pt").exists() and not (tiny_ids / "second").exists()
        assert first.poll() is None  # the first one trains on, undisturbed
    finally:
        first.send_signal(signal.SIGTERM)
        _, err = first.communicate(timeout=60)
    assert first.returncode == 130 and "interrupted" in err
    # Its lock died with it: a new run starts (and resumes).
    reached = resume_epoch(tiny_ids / "resume" / "state.pt")
    again = start_train(tiny_ids, "first")
    wait_for(lambda: resume_epoch(tiny_ids / "resume" / "state.pt") > reached, 60,
             "the next run's first epoch")
    again.send_signal(signal.SIGTERM)
    out, _ = again.communicate(timeout=60)
    assert "resuming after epoch" in out


@slow
def test_killing_dvc_stops_its_training_and_the_next_repro_resumes(tmp_path):
    repo = copy_project(tmp_path / "repo")
    write_tiny_corpus(repo / "corpus", sizes=(150, 30, 30))
    set_params(repo, {"download": {"corpus": "corpus"}, "model": TINY_MODEL,
                      "train": {**TINY_TRAIN, "epochs": 30}, "sample": {"words": 5}})
    git(repo, "-c", "init.defaultBranch=main", "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "tiny")
    state = repo / "data" / "resume" / "train" / "state.pt"
    proc = subprocess.Popen(["dvc", "repro"], cwd=repo, env=command_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: resume_epoch(state) >= 2, 180, "epoch 2 of the dvc-run training")
        assert training_processes(str(repo)) or training_processes("data/ids")
        proc.kill()  # SIGKILL: DVC gets no chance to clean up
        proc.wait()
        wait_for(lambda: not training_processes("data/resume/train"), 15,
                 "the training to stop with DVC")
    finally:
        proc.kill()
    stopped_at = resume_epoch(state)
    assert stopped_at >= 2  # a resumable state of the last finished epoch
    time.sleep(1.5)  # had it lived on, it would have written more epochs by now
    assert resume_epoch(state) == stopped_at
    output = dvc(repo, "repro")
    assert f"resuming after epoch {stopped_at}" in output, output
    steps = [int(line.split("\t")[0]) for line in
             (repo / "metrics/train/plots/metrics/valid/ppl.tsv").read_text().splitlines()[1:]]
    # One writer: each epoch once, in order (early stopping may end it before epoch 30).
    assert steps == list(range(len(steps))) and len(steps) > stopped_at


@slow
def test_nproc_that_does_not_split_the_batch_stops_before_any_worker_starts(tiny_ids):
    params = {"model": TINY_MODEL, "train": {**TINY_TRAIN, "nproc": 3, "batch_size": 4}}
    (tiny_ids / "params.yaml").write_text(yaml.safe_dump(params))
    proc = start_train(tiny_ids, "live")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert err.count("error:") == 1 and "train.batch_size: 4 does not split over train.nproc 3" in err
    assert "torch.distributed.run" not in out + err and "Traceback" not in err
