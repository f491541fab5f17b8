"""Reliability: bad params, interrupted training, corrupt inputs: a clear error and nothing lost.

The stage scripts run as real subprocesses (not through DVC, for speed) on a tiny corpus, as
modules like dvc.yaml runs them (``python -m stages.train``, this checkout's lstmlm first).
Importing torch costs a few seconds per process, so independent runs start together: module
fixtures launch them side by side and the tests read their results.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import TINY_MODEL, TINY_TRAIN, write_tiny_corpus
from lstmlm.core import files
from lstmlm.core.checkpoint import save_checkpoint
from lstmlm.core.params import parse_section
from lstmlm.data.download import prepare_corpus
from lstmlm.data.tensorise import tensorise_corpus
from lstmlm.data.tokenise import tokenise_corpus
from lstmlm.data.vocab import Vocabulary
from lstmlm.model.config import ModelConfig
from lstmlm.model.lstm import LSTMLanguageModel

ROOT = Path(__file__).resolve().parents[1]
slow = pytest.mark.slow

EPOCHS = 6
SIZES = (150, 30, 30)  # lines of train, valid, test: an epoch takes a few tenths of a second
TIMING = ("tokens_per_s", "epoch_seconds")  # measured speeds: the only fields that may differ
PARAMS = {
    "download": {"corpus": "corpus"},
    "tokenise": {"scheme": "wikitext"},
    "model": TINY_MODEL,
    "train": {**TINY_TRAIN, "epochs": EPOCHS},
    "evaluate": {"batch_size": 4, "test_batch_size": 2, "bptt": 8},
    "sample": {"words": 6},
    "prompts": ["the cat", "she"],
}
# Each stage's arguments, paths relative to the run directory as in dvc.yaml.
ARGS = {
    "download": ["--out", "raw"],
    "tokenise": ["--raw", "raw", "--tokens", "tokens", "--vocab", "vocab.json"],
    "tensorise": ["--tokens", "tokens", "--vocab", "vocab.json", "--ids", "ids",
                  "--metrics", "metrics/data.json"],
    "train": ["--ids", "ids", "--vocab", "vocab.json", "--checkpoint", "model.pt",
              "--live", "metrics/train", "--resume-dir", "resume"],
    "evaluate": ["--ids", "ids", "--vocab", "vocab.json", "--checkpoint", "model.pt",
                 "--out", "metrics/eval.json"],
    "sample": ["--vocab", "vocab.json", "--checkpoint", "model.pt", "--raw", "raw",
               "--out", "metrics/samples.md"],
}
PIPELINE = ("download", "tokenise", "tensorise", "train", "evaluate", "sample")


# --------------------------------------------------------------------------- helpers


def write_params(directory: Path, name: str = "params.yaml", **overrides: dict) -> Path:
    """PARAMS with some sections' keys overridden (a section given as None is dropped)."""
    params = {s: v.copy() for s, v in PARAMS.items()}
    for section, values in overrides.items():
        if values is None:
            params.pop(section, None)
        elif isinstance(values, dict):
            params.setdefault(section, {}).update(values)
        else:
            params[section] = values
    path = directory / name
    path.write_text(yaml.safe_dump(params), encoding="utf-8")
    return path


def _child_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DVC")}
    env["PYTHONUNBUFFERED"] = "1"
    # The stages and lstmlm of this checkout, whatever the cwd (see stages/__init__.py).
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def start(stage: str, cwd: Path, *extra: str, params: str = "params.yaml",
          prefix: tuple[str, ...] = ()) -> subprocess.Popen:
    """Start stage ``stage`` in ``cwd`` (``prefix`` + the module name, when given, replaces
    ``python -m``)."""
    reads_params = stage != "tensorise"  # tensorise needs no params
    command = [*(prefix or (sys.executable, "-m")), f"stages.{stage}",
               *(("--params", params) if reads_params else ()), *ARGS[stage], *extra]
    return subprocess.Popen(command, cwd=cwd, env=_child_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: float = 180) -> subprocess.CompletedProcess:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"{proc.args} timed out\nstdout:\n{out}\nstderr:\n{err}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def run(stage: str, cwd: Path, *extra: str, **kw) -> subprocess.CompletedProcess:
    return finish(start(stage, cwd, *extra, **kw))


def show(result: subprocess.CompletedProcess) -> str:
    return f"rc {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"


def assert_clean_error(result: subprocess.CompletedProcess, pattern: str) -> None:
    """Exit 2, ``error: <message>`` matching ``pattern`` on stderr, no traceback."""
    assert result.returncode == 2, show(result)
    assert "Traceback" not in result.stderr, show(result)
    assert re.search(r"error: .*" + pattern, result.stderr), show(result)


class Watched:
    """A running stage whose stdout lines are read as they come (to signal it mid-run)."""

    def __init__(self, proc: subprocess.Popen):
        self.proc, self.lines, self._queue = proc, [], queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self._queue.put(line)
        self._queue.put(None)

    def wait_for(self, prefix: str, timeout: float = 120) -> str:
        end = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(0.0, end - time.monotonic()))
            except queue.Empty:
                self.proc.kill()
                pytest.fail(f"no line starting {prefix!r} within {timeout}s: {self.lines}")
            if line is None:
                self.proc.wait()
                pytest.fail(f"ended (rc {self.proc.returncode}) before {prefix!r}: {self.lines}"
                            f"\nstderr:\n{self.proc.stderr.read()}")
            self.lines.append(line)
            if line.startswith(prefix):
                return line

    def finish(self, timeout: float = 120) -> subprocess.CompletedProcess:
        self.proc.wait(timeout=timeout)
        self._reader.join(timeout=10)
        while (line := self._queue.get_nowait() if not self._queue.empty() else None):
            self.lines.append(line)
        err = self.proc.stderr.read()
        return subprocess.CompletedProcess(self.proc.args, self.proc.returncode,
                                           "".join(self.lines), err)


def resume_epoch(path: Path) -> int | None:
    """The epoch of a resume state (None while there is none, or a damaged one). Safe while
    the stage runs: the state is replaced by an atomic rename, a reader sees a whole file."""
    try:
        return torch.load(path, weights_only=True)["trainer"]["progress"]["epoch"]
    except (FileNotFoundError, RuntimeError):
        return None


def wait_for_state(path: Path, epoch: int, timeout: float = 60) -> None:
    """Wait until the resume state of ``epoch`` (or a later one) is on disk."""
    end = time.monotonic() + timeout
    while (resume_epoch(path) or 0) < epoch:
        if time.monotonic() > end:
            pytest.fail(f"{path} did not reach epoch {epoch} within {timeout}s")
        time.sleep(0.01)


def tree(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` (hidden temporaries included) with its bytes."""
    return {str(p.relative_to(directory)): p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def without_timing(obj):
    if isinstance(obj, dict):
        return {k: without_timing(v) for k, v in obj.items() if k not in TIMING}
    return obj


def metric_files(directory: Path) -> dict[str, object]:
    """The metrics files under ``directory``, timing keys and timing plots removed.

    JSON is compared parsed (the exact floats), everything else byte for byte.
    """
    out = {}
    for path in sorted(directory.rglob("*")):
        if not path.is_file() or (path.suffix == ".tsv" and path.stem in TIMING):
            continue
        name = str(path.relative_to(directory))
        out[name] = (without_timing(json.loads(path.read_text())) if path.suffix == ".json"
                     else path.read_bytes())
    return out


def read_checkpoint(path: Path) -> dict:
    """A checkpoint's payload as torch reads it (plain data: weights_only)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_same_weights(a: Path, b: Path) -> None:
    pa, pb = read_checkpoint(a), read_checkpoint(b)
    assert pa["model_config"] == pb["model_config"]
    assert pa["info"] == pb["info"]
    assert pa["state_dict"].keys() == pb["state_dict"].keys()
    for name, tensor in pa["state_dict"].items():
        assert torch.equal(tensor, pb["state_dict"][name]), name


def epochs_printed(stdout: str) -> list[int]:
    return [int(m) for m in re.findall(r"^epoch (\d+):", stdout, flags=re.M)]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A tiny project: corpus/, raw/, tokens/, vocab.json, ids/ and params.yaml."""
    root = tmp_path_factory.mktemp("base")
    write_tiny_corpus(root / "corpus", sizes=SIZES)
    shutil.copytree(root / "corpus", root / "raw")
    vocab, _ = tokenise_corpus(root / "raw", root / "tokens", root / "vocab.json",
                               scheme="wikitext")
    assert len(vocab) > TINY_MODEL["cutoffs"][-1]
    tensorise_corpus(root / "tokens", vocab, root / "ids")
    write_params(root)
    return root


def project(base: Path, directory: Path, *keep: str) -> Path:
    """A copy of ``base`` (only ``keep`` of it, plus params.yaml, when given)."""
    if not keep:
        shutil.copytree(base, directory)
        return directory
    directory.mkdir(parents=True)
    for name in (*keep, "params.yaml"):
        src = base / name
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, directory / name)
    return directory


def smaller_vocabulary(vocab: Vocabulary) -> Vocabulary:
    """The vocabulary less its rarest ordinary word: another vocabulary, ids still in range."""
    drop = max(i for i, w in enumerate(vocab.words) if w not in ("<unk>", "<eos>"))
    keep = [i for i in range(len(vocab)) if i != drop]
    return Vocabulary(tuple(vocab.words[i] for i in keep), tuple(vocab.counts[i] for i in keep),
                      vocab.scheme)


def tiny_checkpoint(path: Path, vocab: Vocabulary, **model) -> None:
    torch.manual_seed(0)
    config = parse_section("model", {**TINY_MODEL, **model}, ModelConfig)
    save_checkpoint(path, LSTMLanguageModel(config, len(vocab)), vocab, {"epoch": 1})


@pytest.fixture(scope="module")
def pipelines(tmp_path_factory) -> tuple[Path, Path]:
    """The whole tiny pipeline, all six stages, run twice side by side from the corpus."""
    def pipeline(directory: Path) -> list[subprocess.CompletedProcess]:
        write_tiny_corpus(directory / "corpus", sizes=SIZES)
        write_params(directory)
        results = []
        for stage in PIPELINE:
            results.append(run(stage, directory))
            assert results[-1].returncode == 0, show(results[-1])
        return results

    dirs = [tmp_path_factory.mktemp(name) for name in ("run_a", "run_b")]
    with ThreadPoolExecutor(2) as pool:
        for future in [pool.submit(pipeline, d) for d in dirs]:
            future.result()
    return dirs[0], dirs[1]


# --------------------------------------------------------------------------- atomic writes


def test_a_crash_inside_atomic_path_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("previous")
    with pytest.raises(RuntimeError, match="crash"):
        with files.atomic_path(target) as tmp:
            tmp.write_text("half a fi")
            raise RuntimeError("crash")
    assert target.read_text() == "previous"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


WRITERS = {
    "vocab": lambda t, v: v.save(t / "vocab.json"),
    "tokens": lambda t, v: tokenise_corpus(t / "corpus", t / "tokens", t / "vocab2.json",
                                           scheme="wikitext"),
    "ids": lambda t, v: tensorise_corpus(t / "tokens", v, t / "ids"),
    "metrics json": lambda t, v: files.write_json(t / "metrics.json", {"ppl": 1.5}),
    "samples markdown": lambda t, v: files.write_text(t / "samples.md", "# Samples\n"),
    "checkpoint": lambda t, v: tiny_checkpoint(t / "model.pt", v, cutoffs=[5, 10], emb=8),
    "download": lambda t, v: prepare_corpus(str(t / "corpus"), t / "raw", progress=False),
}


@pytest.mark.parametrize("writer", list(WRITERS))
def test_a_crash_while_writing_keeps_every_previous_output(writer, tmp_path, monkeypatch):
    """Each writer crashes with its new file half written: the old outputs stay, whole."""
    corpus = write_tiny_corpus(tmp_path / "corpus", sizes=(40, 10, 10))
    shutil.copytree(corpus, tmp_path / "raw")
    vocab, _ = tokenise_corpus(corpus, tmp_path / "tokens", tmp_path / "vocab.json",
                               scheme="wikitext")
    tensorise_corpus(tmp_path / "tokens", vocab, tmp_path / "ids")
    files.write_json(tmp_path / "metrics.json", {"ppl": 2.5})
    files.write_text(tmp_path / "samples.md", "old samples\n")
    tiny_checkpoint(tmp_path / "model.pt", vocab, cutoffs=[5, 10])
    # Different content, so a write that got through would show.
    (corpus / "train.txt").write_text(" the cat sees a dog . \n" * 30, encoding="utf-8")
    before = tree(tmp_path)

    def crash(src, dst):  # the process dies after half the new file is on disk
        data = Path(src).read_bytes()
        Path(src).write_bytes(data[: len(data) // 2])
        raise KeyboardInterrupt

    other = smaller_vocabulary(vocab)
    monkeypatch.setattr(files.os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        WRITERS[writer](tmp_path, other)
    monkeypatch.undo()
    assert tree(tmp_path) == before  # nothing changed, no temporary left behind


# --------------------------------------------------------------------------- bad params

BAD_PARAMS = {  # stage: (params overrides, the key the message must name)
    "download": ({"download": {"corpus": 5}}, r"download\.corpus: 5"),
    "tokenise": ({"tokenise": {"scheme": "bpe"}}, r"tokenise\.scheme: 'bpe'"),
    "train": ({"train": {"lr": 0}}, r"train\.lr: 0 "),
    "evaluate": ({"evaluate": {"bptt": 0}}, r"evaluate\.bptt: 0 "),
    "sample": ({"sample": {"top_p": 1.5}}, r"sample\.top_p: 1\.5 "),
}


@pytest.fixture(scope="module")
def bad_param_runs(base, tmp_path_factory, pipelines):
    """Every stage started at once, each with a bad key, in a project full of outputs."""
    work = project(pipelines[0], tmp_path_factory.mktemp("bad") / "p")
    (work / "resume").mkdir()
    (work / "resume" / "state.pt").write_bytes(b"previous resume state")
    for stage, (overrides, _) in BAD_PARAMS.items():
        write_params(work, f"bad-{stage}.yaml", **overrides)
    before = tree(work)
    procs = {stage: start(stage, work, params=f"bad-{stage}.yaml") for stage in BAD_PARAMS}
    return before, work, {stage: finish(proc) for stage, proc in procs.items()}


@slow
@pytest.mark.parametrize("stage", list(BAD_PARAMS))
def test_a_bad_param_stops_each_stage_before_it_writes(stage, bad_param_runs):
    before, work, results = bad_param_runs
    assert_clean_error(results[stage], BAD_PARAMS[stage][1])
    assert tree(work) == before  # every previous output untouched, nothing new


# --------------------------------------------------------------------------- inputs that don't fit


def _ids_beyond_vocab(work: Path) -> None:
    np.save(work / "ids" / "valid.npy", np.array([1, 2, 60, 3] * 20, dtype=np.uint16))


def _other_vocabulary(work: Path) -> None:
    vocab = Vocabulary.load(work / "vocab.json")
    other = smaller_vocabulary(vocab)
    tiny_checkpoint(work / "model.pt", other)


def _other_config(work: Path) -> None:
    tiny_checkpoint(work / "model.pt", Vocabulary.load(work / "vocab.json"))
    payload = torch.load(work / "model.pt", weights_only=True)
    payload["model_config"]["hidden"] = 32  # the weights are for hidden 24
    torch.save(payload, work / "model.pt")


def _truncated_checkpoint(work: Path) -> None:
    tiny_checkpoint(work / "model.pt", Vocabulary.load(work / "vocab.json"))
    data = (work / "model.pt").read_bytes()
    (work / "model.pt").write_bytes(data[: len(data) // 2])


def _with_checkpoint(work: Path) -> None:
    tiny_checkpoint(work / "model.pt", Vocabulary.load(work / "vocab.json"))


def _empty(path: str):
    def setup(work: Path) -> None:
        (work / path).write_text("")
    return setup


def _truncated_vocab(work: Path) -> None:
    text = (work / "vocab.json").read_text()
    (work / "vocab.json").write_text(text[: len(text) // 2])


def _fifo_vocab(work: Path) -> None:
    """vocab.json replaced by a FIFO that nobody writes: a reader that opened it would
    wait forever."""
    (work / "vocab.json").unlink()
    os.mkfifo(work / "vocab.json")


def _params(**overrides):
    def setup(work: Path) -> None:
        write_params(work, **overrides)
    return setup


def _then(*setups):
    def setup(work: Path) -> None:
        for step in setups:
            step(work)
    return setup


BAD_INPUTS = {  # case: (stage, setup, what the error must say)
    "ids beyond the vocabulary": ("train", _ids_beyond_vocab,
                                  r"valid\.npy: holds id 60, but the vocabulary has only"),
    "checkpoint of another vocabulary": ("evaluate", _other_vocabulary,
                                         "trained with another vocabulary"),
    "checkpoint config that does not fit its weights": (
        "evaluate", _other_config, "weights do not fit the stored model config"),
    "truncated checkpoint": ("sample", _truncated_checkpoint,
                             "not a readable checkpoint, perhaps truncated"),
    "empty train split": ("tokenise", _empty("raw/train.txt"),
                          r"train\.txt: the split holds no words"),
    "empty valid split": ("tokenise", _empty("raw/valid.txt"), r"valid\.txt: the split is empty"),
    "empty tokenised split": ("tensorise", _empty("tokens/test.txt"),
                              r"test\.txt: the split is empty"),
    "truncated vocabulary": ("tensorise", _truncated_vocab, "not a vocabulary JSON file"),
    "vocabulary that is a FIFO": ("tensorise", _fifo_vocab,
                                  r"vocab\.json: not a regular file"),
    "corpus smaller than one batch": ("train", _params(train={"batch_size": 1000}),
                                      r"too short.*train\.batch_size"),
    "test split smaller than one batch": (
        "evaluate", _then(_with_checkpoint, _params(evaluate={"test_batch_size": 1000})),
        r"too short.*evaluate\.test_batch_size"),
}


@pytest.fixture(scope="module")
def bad_input_runs(base, tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    procs = {}
    for i, (case, (stage, setup, _)) in enumerate(BAD_INPUTS.items()):
        work = project(base, root / f"case{i}")
        setup(work)
        procs[case] = start(stage, work)
    return {case: finish(proc) for case, proc in procs.items()}


@slow
@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_an_input_that_does_not_fit_is_a_clear_error(case, bad_input_runs):
    assert_clean_error(bad_input_runs[case], BAD_INPUTS[case][2])


# --------------------------------------------------------------------------- determinism


@slow
def test_two_runs_of_the_pipeline_agree_except_for_timings(pipelines):
    a, b = pipelines
    metrics_a, metrics_b = metric_files(a / "metrics"), metric_files(b / "metrics")
    assert {"data.json", "eval.json", "samples.md", "train/metrics.json",
            "train/plots/metrics/valid/loss.tsv"} <= set(metrics_a)
    assert metrics_a == metrics_b
    # The timing fields exist and are all that was left out of the JSON.
    assert set(json.loads((a / "metrics/train/metrics.json").read_text())) >= set(TIMING)
    assert_same_weights(a / "model.pt", b / "model.pt")
    for data in ("raw", "tokens", "ids", "vocab.json"):
        assert (tree(a / data) if (a / data).is_dir() else (a / data).read_bytes()) == \
               (tree(b / data) if (b / data).is_dir() else (b / data).read_bytes()), data
    assert not (a / "resume").exists()  # removed once training finished


# --------------------------------------------------------------------------- interrupted training


def before_epoch_3(action: str) -> str:
    """Code for ``python -c CODE MODULE ARGS``: runs ``python -m MODULE ARGS`` (the train
    stage) with ``action``, Python code given the Trainer as ``self``, done as epoch 3 starts
    (epoch 2's checkpoint and resume state saved)."""
    return f"""
import runpy, sys, time, torch
from lstmlm.train.trainer import Trainer
original = Trainer.train_epoch
def train_epoch(self, *args, **kwargs):
    if self.progress.epoch == 2:
{textwrap.indent(action, " " * 8)}
    return original(self, *args, **kwargs)
Trainer.train_epoch = train_epoch
sys.argv = sys.argv[1:]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""


# Holds the run at epoch 3: a tiny epoch takes a tenth of a second, so a kill sent "during
# training" could otherwise land after the run has ended.
HOLD_AT_EPOCH_3 = before_epoch_3("time.sleep(600)")
# The model's weights turned to NaN at epoch 3, as an overflow would: the stage must stop,
# and the checkpoint must keep epoch 2's weights.
POISON_EPOCH_3 = before_epoch_3("""with torch.no_grad():
    self.model.encoder.weight.fill_(float("nan"))""")


@slow
def test_sigkill_then_rerun_resumes_and_ends_like_an_uninterrupted_run(base, pipelines, tmp_path):
    reference = pipelines[0]
    work = project(base, tmp_path / "p", "ids", "vocab.json")
    state = work / "resume" / "state.pt"
    run_ = Watched(start("train", work, prefix=(sys.executable, "-c", HOLD_AT_EPOCH_3)))
    run_.wait_for("epoch 2:")
    wait_for_state(state, 2)
    os.kill(run_.proc.pid, signal.SIGKILL)
    killed = run_.finish()
    assert killed.returncode == -signal.SIGKILL
    assert epochs_printed(killed.stdout)[:2] == [1, 2]

    # DVC deletes a stage's outputs before it runs it: the rerun must rebuild them all.
    (work / "model.pt").unlink()
    shutil.rmtree(work / "metrics")
    resumed = run("train", work)
    assert resumed.returncode == 0, show(resumed)
    done = int(re.search(r"resuming after epoch (\d+)", resumed.stdout)[1])
    assert done == 2
    assert epochs_printed(resumed.stdout) == list(range(done + 1, EPOCHS + 1))
    # The metrics history holds every epoch (the resumed ones replayed) and equals an
    # uninterrupted run's; so do the best checkpoint's weights.
    assert metric_files(work / "metrics" / "train") == \
           metric_files(reference / "metrics" / "train")
    assert len((work / "metrics/train/plots/metrics/valid/loss.tsv").read_text().split("\n")) \
           == EPOCHS + 2  # header, one row per epoch, final newline
    assert_same_weights(work / "model.pt", reference / "model.pt")
    assert not (work / "resume").exists()
    assert not list(work.glob(".*.tmp"))


@slow
def test_signals_stop_with_a_message_and_no_stale_or_damaged_state_is_resumed(base, tmp_path):
    work = project(base, tmp_path / "p", "ids", "vocab.json")
    state = work / "resume" / "state.pt"
    state.parent.mkdir()
    state.write_bytes(b"PK\x03\x04 half a zip")  # as if cut short (atomic_path prevents it)

    # The damaged state is set aside with a message. Ctrl-C during epoch 2: non-zero exit,
    # a message, epoch 1 kept for a later run. Each run here has more epochs than it can
    # finish (a tiny epoch takes a tenth of a second), so every signal lands mid-run.
    many = {"epochs": 400, "early_stop_patience": 400}
    write_params(work, train=many)
    run_ = Watched(start("train", work))
    assert re.match(r"train: ignoring \S*state\.pt: unreadable or damaged",
                    run_.wait_for("train: ignoring")), run_.lines
    run_.wait_for("epoch 1:")
    wait_for_state(state, 1)
    run_.proc.send_signal(signal.SIGINT)
    result = run_.finish()
    assert result.returncode == 130, show(result)
    assert "interrupted" in result.stderr and "Traceback" not in result.stderr, show(result)
    assert resume_epoch(state) >= 1

    # Another learning rate: the saved state is not continued. SIGTERM after epoch 5.
    write_params(work, train={**many, "lr": 2.0e-2})
    run_ = Watched(start("train", work))
    first = run_.wait_for("epoch ")
    assert first.startswith("epoch 1:"), run_.lines
    run_.wait_for("epoch 5:")
    wait_for_state(state, 5)
    run_.proc.send_signal(signal.SIGTERM)
    result = run_.finish()
    assert result.returncode == 130, show(result)
    assert re.search(r"ignoring \S*state\.pt: .*other params or data", result.stdout), show(result)
    assert "resuming" not in result.stdout
    assert "interrupted" in result.stderr and "Traceback" not in result.stderr, show(result)
    assert resume_epoch(state) >= 5

    # epochs: 3 after a 5-epoch state must train 3 epochs afresh, not "resume" past its end.
    write_params(work, train={**many, "lr": 2.0e-2, "epochs": 3})  # nothing else changed
    result = run("train", work)
    assert result.returncode == 0, show(result)
    assert "other params or data" in result.stdout and "resuming" not in result.stdout
    assert epochs_printed(result.stdout) == [1, 2, 3]
    assert read_checkpoint(work / "model.pt")["info"]["epoch"] <= 3
    assert json.loads((work / "metrics/train/metrics.json").read_text())["step"] == 2


def test_ctrl_c_before_the_first_epoch_ends_says_nothing_was_saved(base, tmp_path):
    """The message names no resume state that was never written."""
    work = project(base, tmp_path / "p", "ids", "vocab.json")
    write_params(work, train={"batch_size": 1, "bptt": 2})  # an epoch of seconds, not tenths
    run_ = Watched(start("train", work))
    run_.wait_for("train: ")
    end = time.monotonic() + 60
    while not (work / "metrics" / "train").is_dir():  # dvclive's folder: training starts next
        assert time.monotonic() < end and run_.proc.poll() is None, run_.lines
        time.sleep(0.01)
    run_.proc.send_signal(signal.SIGINT)
    result = run_.finish()
    assert result.returncode == 130, show(result)
    assert "no epoch had finished, so nothing was saved" in result.stderr, show(result)
    assert "saved in" not in result.stderr and not (work / "resume" / "state.pt").exists()
    assert not re.search(r"^epoch \d+:", result.stdout, flags=re.M), show(result)


# --------------------------------------------------------------------------- divergence

@slow
def test_divergence_stops_training_and_never_overwrites_the_best_checkpoint(base, pipelines,
                                                                            tmp_path):
    # A real run with an absurd learning rate, over a good checkpoint from an earlier run.
    huge = project(base, tmp_path / "huge", "ids", "vocab.json")
    write_params(huge, train={"lr": 1.0e6, "clip": 0.0})
    shutil.copy2(pipelines[0] / "model.pt", huge / "model.pt")
    good = (huge / "model.pt").read_bytes()
    huge_run = start("train", huge)
    poisoned = project(base, tmp_path / "poisoned", "ids", "vocab.json")
    poisoned_run = start("train", poisoned, prefix=(sys.executable, "-c", POISON_EPOCH_3))

    result = finish(huge_run)
    assert_clean_error(result, r"learning rate .*clip")
    assert (huge / "model.pt").read_bytes() == good

    result = finish(poisoned_run)
    assert_clean_error(result, r"(loss became nan|diverged).*learning rate.*clip")
    assert epochs_printed(result.stdout) == [1, 2]
    checkpoint = read_checkpoint(poisoned / "model.pt")
    assert checkpoint["info"]["epoch"] == 2
    saved = torch.load(poisoned / "resume" / "state.pt", weights_only=True)
    assert saved["trainer"]["progress"]["epoch"] == 2  # a rerun would resume from the last good epoch
    for name, tensor in checkpoint["state_dict"].items():
        assert torch.isfinite(tensor).all(), name
        assert torch.equal(tensor, saved["trainer"]["model"][name]), name
