"""Shared fixtures: a tiny corpus with learnable structure, and tiny model params."""

from __future__ import annotations

import random
import signal
from pathlib import Path

import pytest

# A shell without job control starts a background job with SIGINT ignored, and a child
# inherits an ignored signal: no server or stage the tests Ctrl-C would stop. A handler of
# our own instead is reset to the default in every child, as if run from a terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

ROOT = Path(__file__).resolve().parents[1]
SHARED_WIKITEXT = ROOT.parent / "shared" / "data" / "wikitext-2"

TINY_MODEL = {"emb": 16, "hidden": 24, "layers": 2, "output_dropout": 0.1, "input_dropout": 0.1,
              "layer_dropout": 0.1, "word_dropout": 0.0, "cutoffs": [20, 40], "tie_weights": False}
TINY_TRAIN = {"epochs": 2, "batch_size": 4, "bptt": 8, "lr": 1.0e-2, "threads": 1,
              "device": "cpu",  # the params stage then skips importing torch (auto needs it)
              "precision": "tf32",  # fp32 on any CPU: the same numbers with or without bf16
              "averaging": "none"}  # the SWA tests ask for it themselves


def watching_torch(module: str) -> str:
    """Code for ``python -c CODE ARGS`` that runs ``python -m MODULE ARGS`` and, as it exits,
    says on stderr whether torch was imported: "torch imported" or "torch never imported"."""
    return f"""
import atexit, runpy, sys
atexit.register(lambda: sys.stderr.write(
    "torch imported\\n" if "torch" in sys.modules else "torch never imported\\n"))
sys.argv = [{module!r}, *sys.argv[1:]]
runpy.run_module({module!r}, run_name="__main__", alter_sys=True)
"""


def tiny_lines(n_lines: int, seed: int) -> list[str]:
    """Sentences from a small grammar: predictable enough for a tiny model to learn."""
    rng = random.Random(seed)
    subjects = ["the cat", "a dog", "the man", "she", "he", "the bird", "a child", "they"]
    verbs = ["sees", "likes", "eats", "finds", "wants", "has", "loves", "takes"]
    objects = ["the ball", "a fish", "the tree", "an apple", "the house", "a book",
               "the river", "some bread", "the car", "a hat"]
    extras = ["", "today", "again", "in the garden", "at night", ", and smiles", "@-@ fast"]
    lines = []
    for _ in range(n_lines):
        if rng.random() < 0.1:
            lines.append("")  # WikiText has empty lines; each still ends with <eos>
            continue
        words = [rng.choice(subjects), rng.choice(verbs), rng.choice(objects), rng.choice(extras)]
        lines.append(" " + " ".join(w for w in words if w) + " . ")
    return lines


def write_tiny_corpus(directory: Path, sizes=(600, 80, 80), seed: int = 0) -> Path:
    """train.txt / valid.txt / test.txt of the tiny grammar in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    for i, (split, n) in enumerate(zip(("train", "valid", "test"), sizes)):
        (directory / f"{split}.txt").write_text("\n".join(tiny_lines(n, seed + i)) + "\n",
                                                encoding="utf-8")
    return directory


@pytest.fixture
def tiny_corpus(tmp_path: Path) -> Path:
    return write_tiny_corpus(tmp_path / "corpus")


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A tiny untrained checkpoint on the tiny corpus's vocabulary (44 words; <unk> is never
    seen in the corpus, so it is the last id, in the second tail cluster): (directory, model,
    vocab), with model.pt and vocab.json in the directory. Built in well under a second."""
    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny"))


def build_tiny_checkpoint(root: Path):
    """The tiny_checkpoint fixture's files in ``root`` (bench/hostile_input.py too)."""
    import torch

    from lstmlm.core.checkpoint import save_checkpoint
    from lstmlm.data.tokenise import tokenise_corpus
    from lstmlm.model.config import ModelConfig
    from lstmlm.model.lstm import LSTMLanguageModel

    vocab, _ = tokenise_corpus(write_tiny_corpus(root / "raw"), root / "tok", root / "vocab.json",
                               scheme="wikitext")
    torch.manual_seed(0)
    model = LSTMLanguageModel(ModelConfig(emb=16, hidden=24, layers=2, cutoffs=[10, 30]),
                              len(vocab)).eval()
    save_checkpoint(root / "model.pt", model, vocab, {"epoch": 1})
    return root, model, vocab


@pytest.fixture
def tiny_data(tiny_corpus, tmp_path):
    """The tiny corpus tokenised and tensorised: (vocabulary, train ids, valid ids)."""
    from lstmlm.data.streams import load_ids
    from lstmlm.data.tensorise import tensorise_corpus
    from lstmlm.data.tokenise import tokenise_corpus

    vocab, _ = tokenise_corpus(tiny_corpus, tmp_path / "tok", tmp_path / "v.json",
                               scheme="wikitext")
    tensorise_corpus(tmp_path / "tok", vocab, tmp_path / "ids")
    return vocab, load_ids(tmp_path / "ids", "train"), load_ids(tmp_path / "ids", "valid")
