"""A stage run holds its outputs: a second training run is refused, and killing its
caller (DVC, even with SIGKILL) stops any stage, training leaving a state the next
`dvc repro` resumes.

Real processes throughout: stages as subprocesses under a caller that is killed, and a
real `dvc repro`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
import torch
import yaml
from helpers_dvc import built_tiny_repo, command_env, copy_project, copy_repo, dvc, git, set_params

from conftest import TINY_MODEL, TINY_TRAIN, tiny_lines, write_tiny_corpus
from lstmlm.data.tensorise import tensorise_corpus
from lstmlm.data.tokenise import tokenise_corpus

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


# --------------------------------------------------------------------------- every stage

# Each stage, its arguments (the inputs need not exist) and a file it opens early in its
# main(), once its watcher runs: the test holds the stage there, as if it were busy.
STAGES = {
    "params": (["--out", "params.ok"], "params.yaml"),
    "download": (["--out", "raw"], "params.yaml"),
    "tokenise": (["--raw", "raw", "--tokens", "tokens", "--vocab", "vocab.json"],
                 "params.yaml"),
    "tensorise": (["--tokens", "tokens", "--vocab", "vocab.json", "--ids", "ids",
                   "--metrics", "data.json"], "vocab.json"),
    "train": (["--ids", "ids", "--vocab", "vocab.json", "--checkpoint", "model.pt",
               "--live", "live", "--resume-dir", "resume"], "params.yaml"),
    "evaluate": (["--ids", "ids", "--vocab", "vocab.json", "--checkpoint", "model.pt",
                  "--out", "eval.json"], "params.yaml"),
    "sample": (["--vocab", "vocab.json", "--checkpoint", "model.pt", "--out", "samples.md"],
               "params.yaml"),
}
# Runs `python -m STAGE ARGS` with an audit hook that, when the stage opens a file named
# HOLD, writes "held" and sleeps (as a long computation or a slow read would): a signal
# still interrupts the sleep, as it would the real work.
HELD_STAGE = """
import os, runpy, sys, time
hold, held = sys.argv[1], []
def hook(event, args):
    if event == "open" and not held and isinstance(args[0], (str, bytes, os.PathLike)) \\
            and os.path.basename(os.fsdecode(args[0])) == hold:
        held.append(True)
        open("held", "w").close()
        time.sleep(600)
sys.addaudithook(hook)
sys.argv = sys.argv[2:]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""
# The caller: starts the stage, tells its pid, waits for it (as DVC or a shell would).
CALLER = ("import subprocess, sys; child = subprocess.Popen(sys.argv[1:]); "
          "print(child.pid, flush=True); child.wait()")


def gone(pid: int) -> bool:
    """Exited (a zombie nobody reaped yet counts: it runs no more code)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture(scope="module")
def stages_whose_caller_died(tmp_path_factory) -> dict[str, float | None]:
    """Every stage started at once under a caller of its own; each caller killed with
    SIGKILL once its stage is held in main(). Seconds each stage lived on after its
    caller died (None: still running 10 s later)."""
    env = {**command_env(), "PYTHONPATH": str(ROOT)}
    started = {}
    for stage, (args, hold) in STAGES.items():
        work = tmp_path_factory.mktemp(stage)
        caller = subprocess.Popen(
            [sys.executable, "-c", CALLER, sys.executable, "-c", HELD_STAGE, hold,
             f"stages.{stage}", *args],
            cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        started[stage] = (caller, int(caller.stdout.readline()), work / "held")
    lived = {}
    try:
        for stage, (caller, pid, held) in started.items():
            wait_for(held.exists, 180, f"{stage} to reach its main()")
            caller.kill()
            caller.wait()
            died = time.monotonic()
            while not gone(pid) and time.monotonic() - died < 10:
                time.sleep(0.05)
            lived[stage] = time.monotonic() - died if gone(pid) else None
    finally:
        for caller, pid, _ in started.values():
            caller.kill()
            caller.wait()
            if not gone(pid):
                os.kill(pid, signal.SIGKILL)
    return lived


@slow
@pytest.mark.parametrize("stage", list(STAGES))
def test_every_stage_stops_when_its_caller_dies(stage, stages_whose_caller_died):
    lived = stages_whose_caller_died[stage]
    assert lived is not None and lived < 5, f"{stage} ran on after its caller died"


@slow
def test_killing_dvc_during_evaluate_stops_it_before_it_writes(tmp_path_factory, tmp_path):
    """A real `dvc repro`, its stage run through dash (which forks it, so the stage's
    parent is the shell, not DVC), killed with SIGKILL while evaluate runs: evaluate must
    stop within seconds, not finish as an orphan and write its metrics."""
    repo = copy_repo(built_tiny_repo(tmp_path_factory, TINY_MODEL, TINY_TRAIN,
                                     write_tiny_corpus)[0], tmp_path / "repo")
    # A long test split and small dynamic-evaluation segments: evaluate then runs for tens
    # of seconds on it, far longer than the watcher needs.
    (repo / "corpus" / "test.txt").write_text("\n".join(tiny_lines(3000, 7)) + "\n",
                                              encoding="utf-8")
    set_params(repo, {"evaluate": {"dynamic_lr": 1.0e-4, "dynamic_segment": 2,
                                   "cache_window": 50, "test_batch_size": 1}})
    command = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]["evaluate"]["cmd"]
    args = command.split()
    output = repo / args[args.index("--out") + 1]  # the metrics file evaluate writes
    env = {**command_env(), "SHELL": "/bin/sh"}
    proc = subprocess.Popen(["dvc", "repro"], cwd=repo, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    watchdog = threading.Timer(600, proc.kill)  # bounds the read below
    watchdog.start()
    stage = None
    try:
        for line in proc.stdout:  # the stage's own lines come through DVC's stdout
            if line.startswith("evaluate: "):
                break
        else:
            pytest.fail(f"dvc repro ended (rc {proc.wait()}) before evaluate logged a line")
        stage = next(p for p in psutil.process_iter(["cmdline", "cwd"])
                     if (p.info["cmdline"] or [])[1:3] == ["-m", "stages.evaluate"]
                     and p.info["cwd"] == str(repo))
        assert Path(stage.parent().exe()).name in ("sh", "dash")  # DVC is its grandparent
        assert not output.exists()  # DVC deleted it before running the stage
        proc.kill()  # SIGKILL: DVC gets no chance to clean up
        proc.wait()
        died = time.monotonic()
        while not gone(stage.pid):
            assert time.monotonic() - died < 5, "evaluate ran on after DVC died"
            time.sleep(0.05)
    finally:
        watchdog.cancel()
        proc.kill()
        proc.wait()
        if stage is not None and not gone(stage.pid):
            stage.kill()  # the orphan of a failed run
    time.sleep(1)
    assert not output.exists()
