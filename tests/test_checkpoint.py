"""Checkpoints: a model file that stands alone, older files still read, hostile files refused.

The hostile files are real: FIFOs made with os.mkfifo, /dev/zero, a sparse file larger
than the memory, a config claiming a model far larger than its weights. Each is opened in
a child process of its own, under a timeout and an address-space limit, so that a
regression (a read that blocks or never ends, memory filled) fails one test instead of
hanging or killing the suite.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import pytest
import torch
from helpers_hostile import (
    LOAD_CHILD,
    Tensor,
    forged_archive,
    forged_checkpoint,
    overlapping_zip,
    self_sharing,
    stride_zero_model,
)

from conftest import ROOT
from lstmlm.core import checkpoint, loading
from lstmlm.core.checkpoint import CheckpointError, save_checkpoint
from lstmlm.core.loading import load
from lstmlm.data.vocab import VocabError, Vocabulary
from lstmlm.model.config import ModelConfig
from lstmlm.model.lstm import LSTMLanguageModel


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def format_2_file(path: Path, model: LSTMLanguageModel, vocab: Vocabulary,
                  vocab_path: str | Path, info: dict | None = None) -> Path:
    """A checkpoint as the train stage wrote them before the vocabulary went inside
    (format 2: the vocabulary file named by path), byte for byte the old layout; no
    longer read."""
    payload = {
        "format": "lstmlm-checkpoint/2",
        "model_config": dataclasses.asdict(model.config),
        "vocab_size": model.vocab_size,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "vocab": {"sha256": vocab.sha256, "path": str(vocab_path), "scheme": vocab.scheme,
                  "size": len(vocab)},
        "info": info or {},
    }
    torch.save(payload, path)
    return path


def python(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


# --------------------------------------------------------------------------- alone


@pytest.fixture
def lone(tiny_checkpoint, tmp_path) -> Path:
    """The tiny model saved where it was trained, beside its vocab.json, then copied alone
    into an empty directory and the training directory deleted: no vocabulary file is
    left anywhere it could be looked for."""
    _, model, vocab = tiny_checkpoint
    trained = tmp_path / "trained"
    vocab.save(trained / "vocab.json")
    save_checkpoint(trained / "model.pt", model, vocab, {"epoch": 1})
    lone = tmp_path / "elsewhere" / "x.pt"
    lone.parent.mkdir()
    shutil.copy2(trained / "model.pt", lone)
    shutil.rmtree(trained)
    return lone


def test_a_checkpoint_copied_alone_loads_and_generates(tiny_checkpoint, lone):
    _, model, vocab = tiny_checkpoint
    import lstmlm

    generator = lstmlm.load(lone)
    assert generator.vocab == vocab and generator.info == {"epoch": 1}
    assert same_weights(generator.model, model)
    assert len(generator.generate("the cat", words=5, seed=0).tokens) == 5
    # Only plain data inside: the words as one string, the counts as one tensor.
    payload = torch.load(lone, weights_only=True)
    assert payload["format"] == checkpoint.FORMAT
    assert payload["vocab"]["words"].split("\n") == list(vocab.words)
    assert payload["vocab"]["counts"].tolist() == list(vocab.counts)

    result = python("-m", "lstmlm", "generate", "--model", "x.pt", "--words", "6",
                    "--seed", "0", "the cat", cwd=lone.parent)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() and "Traceback" not in result.stderr


def test_a_checkpoint_copied_alone_is_served(lone):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([sys.executable, "-m", "lstmlm", "serve", "--model", "x.pt",
                                "--port", "0"], cwd=lone.parent, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()  # "serving x.pt on http://127.0.0.1:PORT/ ..."
        assert "http://127.0.0.1:" in line, (line, process.poll())
        url = urlsplit(next(w for w in line.split() if w.startswith("http://")))
        connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
        connection.request("GET", "/api/info")
        response = connection.getresponse()
        assert response.status == 200
        assert json.loads(response.read())["vocab_size"] == 44
    finally:
        process.terminate()
        process.wait(30)


def test_a_vocabulary_given_as_well_must_be_the_one_inside(tiny_checkpoint, lone, tmp_path):
    root, _, vocab = tiny_checkpoint
    assert load(lone, root / "vocab.json").vocab == vocab
    other = Vocabulary(vocab.words[::-1], vocab.counts[::-1], vocab.scheme)
    other.save(tmp_path / "other.json")
    with pytest.raises(CheckpointError, match="trained with another vocabulary"):
        load(lone, tmp_path / "other.json")
    with pytest.raises(VocabError, match="vocabulary file not found"):
        load(lone, tmp_path / "missing.json")


def test_damage_to_the_vocabulary_inside_is_caught(tiny_checkpoint, tmp_path):
    root, _, _ = tiny_checkpoint
    payload = torch.load(root / "model.pt", weights_only=True)
    payload["vocab"]["words"] = payload["vocab"]["words"].replace("cat", "cut")
    torch.save(payload, tmp_path / "damaged.pt")
    with pytest.raises(CheckpointError, match="vocabulary does not match the hash"):
        load(tmp_path / "damaged.pt")


@pytest.mark.parametrize("info, needle", [
    ({"deep": self_sharing(60)}, "more than 1,000 values"),
    ({"deep": [[[[[[[[[[1]]]]]]]]]]}, "or more than 8 levels"),
    ({"weights": torch.ones(3)}, "type ndarray that is not plain data"),
    ({"big": 10**5000}, "type int"),
    ({"text": "\ud800"}, "type str"),
    ({1: "a key that is not a string"}, "type dict"),
])
def test_metadata_is_plain_bounded_data(tiny_checkpoint, tmp_path, info, needle):
    """What training writes as metadata (a few numbers) loads as it is, NaN and infinities
    as None (JSON has neither); metadata that is not plain, bounded data (self-shared
    60 levels deep, a tensor, an integer JSON cannot write, a lone surrogate) is refused
    in one line, at once, before the page serves it."""
    _, model, vocab = tiny_checkpoint
    save_checkpoint(tmp_path / "fine.pt", model, vocab,
                    {"epoch": 3, "valid_ppl": float("nan"), "loss": float("inf"), "n": [1.5]})
    assert load(tmp_path / "fine.pt").info == {"epoch": 3, "valid_ppl": None, "loss": None,
                                               "n": [1.5]}
    save_checkpoint(tmp_path / "odd.pt", model, vocab, info)
    started = time.monotonic()
    with pytest.raises(CheckpointError, match="damaged checkpoint, its metadata") as caught:
        loading.load_weights(tmp_path / "odd.pt")
    assert needle in str(caught.value) and "\n" not in str(caught.value)
    assert time.monotonic() - started < 5


# --------------------------------------------------------------------------- format 2


def test_a_format_2_file_is_refused_without_opening_the_path_it_names(tiny_checkpoint,
                                                                     tmp_path):
    """Format 2 named its vocabulary file by path; nothing released uses it, and a path
    inside a file is never opened (it could name /etc/shadow or /proc/self/pagemap)."""
    _, model, vocab = tiny_checkpoint
    named = tmp_path / "vocab.json"
    os.mkfifo(named)  # opening it for reading would block: the test would hang
    old = format_2_file(tmp_path / "old.pt", model, vocab, named)
    with pytest.raises(CheckpointError) as caught:
        load(old)
    assert str(caught.value) == f"{old}: not an lstmlm-checkpoint/3 file"


# --------------------------------------------------------------------------- hostile files
# Each in a child of its own (helpers_hostile.LOAD_CHILD) under a limit of 1 GiB more
# than its imports take: what it did, how long, and how far its memory grew.


def _altered(root: Path, tmp: Path, **config) -> str:
    """The tiny checkpoint with its stored config changed by ``config``."""
    payload = torch.load(root / "model.pt", weights_only=True)
    payload["model_config"].update(config)
    torch.save(payload, tmp / "altered.pt")
    return str(tmp / "altered.pt")


def _fifo(tmp: Path, name: str) -> str:
    os.mkfifo(tmp / name)
    return str(tmp / name)


def _sparse(tmp: Path, name: str, size: int) -> str:
    with open(tmp / name, "wb") as handle:
        handle.truncate(size)
    return str(tmp / name)


HOSTILE = {  # case: (make the files -> the child's arguments, the error expected, its message)
    "checkpoint that is a FIFO": (
        lambda root, tmp: ["checkpoint", _fifo(tmp, "model.pt")],
        "CheckpointError", "model.pt: not a regular file"),
    "vocabulary given as a FIFO": (
        lambda root, tmp: ["checkpoint", str(root / "model.pt"), _fifo(tmp, "v.json")],
        "VocabError", "v.json: not a regular file"),
    "vocabulary file of 2 GiB (sparse)": (
        lambda root, tmp: ["vocabulary", _sparse(tmp, "v.json", 2 << 30)],
        "VocabError", "more than a vocabulary file can be"),
    "checkpoint larger than the memory (sparse)": (
        lambda root, tmp: ["checkpoint", _sparse(tmp, "big.pt",
                                                 psutil.virtual_memory().total + (1 << 30))],
        "CheckpointError", "more than a checkpoint can be"),
    "config claiming far more than its weights": (  # hidden 4096: some 300 MB of LSTM
        lambda root, tmp: ["checkpoint", _altered(root, tmp, hidden=4096)],
        "CheckpointError", "weights do not fit the stored model config"),
    "vocabulary counts claiming 10**11 elements on one (stride 0)": (
        lambda root, tmp: ["checkpoint", str(forged_checkpoint(root, tmp / "c.pt",
                                                               {"counts": (10**11,)}))],
        "CheckpointError", "stride (0,), offset 0: not contiguous"),
    "weights of emb = hidden = 100,000 on one element each (stride 0)": (
        lambda root, tmp: ["checkpoint", str(stride_zero_model(root, tmp / "z.pt", emb=100_000,
                                                               hidden=100_000))],
        "CheckpointError", "not contiguous from the start of its storage"),
    "weights of hidden 2,000 on one element each (stride 0)": (
        lambda root, tmp: ["checkpoint", str(stride_zero_model(root, tmp / "z.pt", hidden=2000))],
        "CheckpointError", "not contiguous from the start of its storage"),
    "100 records sharing one payload of 4 MB": (
        lambda root, tmp: ["checkpoint", str(overlapping_zip(tmp / "o.pt", 100, bytes(4 << 20)))],
        "CheckpointError", "overlaps the next"),
}


@pytest.fixture(scope="module")
def hostile_runs(tiny_checkpoint, tmp_path_factory):
    """Every hostile case in a child process of its own, all started at once."""
    root, _, _ = tiny_checkpoint
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    children = {}
    for i, (case, (make, _, _)) in enumerate(HOSTILE.items()):
        tmp = tmp_path_factory.mktemp(f"hostile{i}")
        children[case] = subprocess.Popen(
            [sys.executable, "-c", LOAD_CHILD, "1024", *make(root, tmp)], env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    results, deadline = {}, time.monotonic() + 180
    for case, child in children.items():
        try:
            out, err = child.communicate(timeout=max(1.0, deadline - time.monotonic()))
            results[case] = json.loads(out) if out.strip() else {"crashed": err[-2000:]}
        except subprocess.TimeoutExpired:
            child.kill()
            child.communicate()
            results[case] = {"hung": "no answer within the time allowed"}
    return results


@pytest.mark.slow
@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_hostile_file_is_refused_at_once_without_filling_the_memory(case, hostile_runs):
    _, error, message = HOSTILE[case]
    result = hostile_runs[case]
    assert result.get("error") == error and message in result["message"], result
    assert result["seconds"] < 10, result
    assert result["growth"] < 100 << 20, result  # nothing of the claimed size was allocated


# --------------------------------------------------------------------------- without torch
#
# lstmlm.core.torch_archive reads what torch.save wrote without torch (the command and the page
# never import it); lstmlm.core.loading.load_weights makes every check load makes.


def test_weight_shapes_are_the_state_dict_of_the_model():
    """ModelConfig.weight_shapes, which the checkpoint checks against before building
    anything, names and shapes exactly what the model's state_dict holds."""
    import itertools

    for emb, hidden, layers, tie, output, cutoffs, div in itertools.product(
            [8, 12], [12, 16], [1, 3], [True, False], ["adaptive", "full"],
            [[10, 30], [0.1, 0.5, 0.7]], [2.0, 1.5]):
        config = ModelConfig(emb=emb, hidden=hidden, layers=layers, tie_weights=tie,
                             output=output, cutoffs=cutoffs, div_value=div).for_vocab(60)
        with torch.device("meta"):
            model = LSTMLanguageModel(config, 60, init_weights=False)
        assert config.weight_shapes(60) == {k: tuple(v.shape) for k, v in
                                            model.state_dict().items()}, config


def archive_of(obj, path: Path) -> Path:
    torch.save(obj, path)
    return path


def test_the_reader_reads_what_our_writer_writes(tiny_checkpoint, lone, tmp_path):
    """Our own checkpoint, and contiguous tensors of every dtype (a scalar, an empty one,
    one tensor saved twice, as tied weights are): the same values, dtypes and shapes as
    torch.load reads."""
    import numpy as np

    from lstmlm.core.torch_archive import read_archive

    tied = torch.arange(24.0).view(4, 6)
    plain = archive_of({"tied": tied, "again": tied, "scalar": torch.tensor(3),
                        "empty": torch.zeros(0, 3),
                        **{str(dtype): torch.arange(4).to(dtype) for dtype in (
                            torch.float64, torch.float32, torch.float16, torch.int64,
                            torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool)}},
                       tmp_path / "plain.pt")

    def compare(ours, theirs, where):
        if isinstance(theirs, torch.Tensor):
            assert isinstance(ours, np.ndarray) and not ours.flags.writeable, where
            assert ours.dtype == theirs.numpy().dtype and ours.shape == tuple(theirs.shape), where
            assert np.array_equal(ours, theirs.numpy()), where
        elif isinstance(theirs, dict):
            assert ours.keys() == theirs.keys(), where
            for key in theirs:
                compare(ours[key], theirs[key], f"{where}/{key}")
        else:
            assert ours == theirs, where

    for path in (lone, plain):
        with open(path, "rb") as handle:
            compare(read_archive(handle), torch.load(path, weights_only=True), path.name)


def test_views_strides_offsets_and_overlapping_records_are_refused(tmp_path):
    """What torch.save writes for views (a transpose, a slice from an offset, a stride of
    2 or 0, two tensors sharing a storage unequally), and records that overlap: none is
    what our writer writes, and each is refused in one line."""
    from lstmlm.core.torch_archive import ArchiveError, read_archive

    base = torch.arange(24.0).view(4, 6)
    cases = {
        "transposed": ({"t": base.t()}, "stride (1, 6), offset 0: not contiguous"),
        "offset": ({"row": base[2]}, "offset 12: not contiguous"),
        "every other": ({"s": torch.arange(9, dtype=torch.int16)[::2]}, "stride (2,)"),
        "stride 0": ({"z": torch.zeros(1).expand(1000)}, "stride (0,)"),
        "a shared storage": ({"all": base, "first rows": base[:2]},
                             "on a storage of 24 elements: not the whole of it"),
    }
    overlapping = overlapping_zip(tmp_path / "overlap.pt", 5, bytes(1000))
    with zipfile.ZipFile(overlapping) as archive:  # zipfile itself reads every record
        assert [len(archive.read(f"archive/data/{k}")) for k in range(5)] == \
            [1000 + 44 * (4 - k) for k in range(5)]
    paths = {case: archive_of(obj, tmp_path / f"{i}.pt")
             for i, (case, (obj, _)) in enumerate(cases.items())}
    paths["overlapping records"] = overlapping
    messages = {**{case: needle for case, (_, needle) in cases.items()},
                "overlapping records": "record archive/data/0 overlaps the next"}
    for case, path in paths.items():
        with open(path, "rb") as handle, pytest.raises(ArchiveError) as caught:
            read_archive(handle)
        assert messages[case] in str(caught.value) and "\n" not in str(caught.value), case


def test_the_weights_read_without_torch_are_the_models(tiny_checkpoint, lone):
    root, model, vocab = tiny_checkpoint
    weights, loaded_vocab, info = loading.load_weights(lone)
    assert loaded_vocab == vocab and info == {"epoch": 1} and weights.config == model.config
    state = model.state_dict()
    assert weights.arrays.keys() == state.keys()
    for name, array in weights.arrays.items():
        assert array.dtype.name == "float32" and torch.equal(torch.from_numpy(array.copy()),
                                                             state[name]), name


class _Command:
    """Unpickled, runs a shell command: what an untrusted file may hold."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_a_forged_archive_is_read_as_torch_reads_it(tmp_path):
    """The forging helper writes what torch.load reads (so the hostile cases below are
    the format's own, not a helper's mistakes)."""
    floats = torch.arange(12.0)
    path = forged_archive(tmp_path / "ok.pt", {"w": Tensor("0", 12, (3, 4), (4, 1), 0)},
                          {"0": floats.numpy().tobytes()})
    from lstmlm.core.torch_archive import read_archive

    with open(path, "rb") as handle:
        ours = read_archive(handle)["w"]
    assert torch.equal(torch.load(path, weights_only=True)["w"], floats.view(3, 4))
    assert ours.tolist() == floats.view(3, 4).tolist()


@pytest.mark.parametrize("case", ["forbidden global", "storage missing", "shape past its storage",
                                  "storage shorter than claimed", "compressed record"])
def test_hostile_archives_are_refused_before_anything_runs(tiny_checkpoint, tmp_path, case):
    """A pickle that would run a command, a storage the pickle names but the archive lacks,
    a tensor claiming a shape its storage does not hold (here 2**40 floats), a storage
    shorter than its claimed elements, a compressed record (a zip bomb's way in): each is
    a one-line CheckpointError, and nothing is run or allocated."""
    weight = "lstms.0.weight_hh_l0"  # (96, 24) in the tiny model
    marker = tmp_path / "ran"
    cases = {
        "forbidden global": (_Command(f"touch {marker}"), {}, {},
                             "holds a Python object (posix.system)"),
        "storage missing": (Tensor("gone", 96 * 24, (96, 24), (24, 1)), {}, {},
                            "lacks its record data/gone"),
        "shape past its storage": (Tensor("big", 4, (1 << 20, 1 << 20), (1 << 20, 1)),
                                   {"big": bytes(16)}, {}, "storage of 4 elements: not the whole"),
        "storage shorter than claimed": (Tensor("short", 96 * 24, (96, 24), (24, 1)),
                                         {"short": bytes(100)}, {}, "holds 100 bytes"),
        "compressed record": (Tensor("0", 1, (1,), (1,)), {}, {"compression": 8},
                              "is compressed"),
    }
    tensor, storages, options, message = cases[case]
    path = forged_checkpoint(tiny_checkpoint[0], tmp_path / "hostile.pt", {weight: tensor},
                             storages, options)
    for reader in (load, loading.load_weights):
        with pytest.raises(CheckpointError, match="not a readable checkpoint") as caught:
            reader(path)
        assert message in str(caught.value) and "\n" not in str(caught.value)
    assert not marker.exists()


# Run in a child without torch: load_weights on each file named, then whether torch was
# imported.
WITHOUT_TORCH_CHILD = textwrap.dedent("""
    import json, sys
    from lstmlm.core.loading import load_weights
    outcomes = []
    for path in sys.argv[1:]:
        try:
            weights, vocab, info = load_weights(path)
            outcomes.append(f"ok {len(weights.arrays)} weights, {len(vocab)} words")
        except Exception as err:
            outcomes.append(f"{type(err).__name__}: {err}")
    print(json.dumps({"outcomes": outcomes, "torch": "torch" in sys.modules}))
""")


def test_weights_are_read_and_checked_without_torch(tiny_checkpoint, lone, tmp_path):
    """load_weights, in a process that never imports torch, reads a good file and
    refuses what load refuses: weights that are not finite, a config the weights do not
    fit."""
    root, model, vocab = tiny_checkpoint
    broken = LSTMLanguageModel(model.config, len(vocab)).eval()
    broken.load_state_dict(model.state_dict())
    with torch.no_grad():
        broken.decoder.head.weight[0, 0] = float("inf")
    save_checkpoint(tmp_path / "inf.pt", broken, vocab)
    payload = torch.load(lone, weights_only=True)
    payload["model_config"]["hidden"] = 4096
    torch.save(payload, tmp_path / "lies.pt")
    result = python("-c", WITHOUT_TORCH_CHILD, str(lone), str(tmp_path / "inf.pt"),
                    str(tmp_path / "lies.pt"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["torch"] is False
    good, infinite, lies = report["outcomes"]
    assert good == f"ok {len(model.state_dict())} weights, {len(vocab)} words"
    assert infinite.startswith("CheckpointError") and "not finite (decoder.head.weight" in infinite
    assert lies.startswith("CheckpointError") and "do not fit the stored model config" in lies
