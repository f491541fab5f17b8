"""The Python API draws on its own thread count (issue 21: with torch's default of two
threads, 200 words took 41 times longer on a busy machine) and leaves the caller's torch
setting as it was, between calls and between a stream's words; and the benchmark that
shows it takes its arguments as documented (it never runs in the suite)."""

from __future__ import annotations

import importlib.util
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from conftest import ROOT
from lstmlm.errors import LstmlmError
from lstmlm.fused_step import FusedStep
from lstmlm.generate import Generator


@pytest.fixture
def two_threads():
    """torch set to two threads, as a caller may have it; restored after the test."""
    saved = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(saved)


@pytest.fixture
def threads_seen(monkeypatch) -> list[int]:
    """torch's thread count at each step of the LSTM."""
    seen: list[int] = []
    step = FusedStep.__call__

    def recording(self, token_id):
        seen.append(torch.get_num_threads())
        return step(self, token_id)
    monkeypatch.setattr(FusedStep, "__call__", recording)
    return seen


def test_the_api_draws_on_one_thread_and_gives_the_setting_back(tiny_checkpoint, two_threads,
                                                                 threads_seen):
    _, model, vocab = tiny_checkpoint
    generator = Generator(model, vocab)
    assert len(generator.generate("the cat", words=10).tokens) == 10
    assert set(threads_seen) == {1}
    assert torch.get_num_threads() == 2
    for _ in generator.stream("the cat", words=10):
        assert torch.get_num_threads() == 2  # the caller's setting between words
    assert len(threads_seen) == 18 and set(threads_seen) == {1}


def test_threads_can_be_chosen_or_left_to_torch(tiny_checkpoint, two_threads, threads_seen):
    _, model, vocab = tiny_checkpoint
    Generator(model, vocab, threads=None).generate("the cat", words=4)
    Generator(model, vocab, threads=3).generate("the cat", words=4)
    assert threads_seen == [2, 2, 2, 3, 3, 3] and torch.get_num_threads() == 2
    for bad in (0, -1, True, "2", 1.5):
        with pytest.raises(LstmlmError, match="threads"):
            Generator(model, vocab, threads=bad)


def test_streams_drawn_side_by_side_give_the_setting_back(tiny_checkpoint, two_threads,
                                                          threads_seen):
    """A server draws several streams at once, one word at a time from worker threads:
    each word on one thread, and the caller's setting intact after."""
    _, model, vocab = tiny_checkpoint
    generator = Generator(model, vocab)
    streams = [generator.stream("the cat", words=30, seed=seed) for seed in range(4)]
    with ThreadPoolExecutor(4) as pool:
        for _ in range(30):
            list(pool.map(next, streams))
    assert set(threads_seen) == {1} and len(threads_seen) == 4 * 29
    assert torch.get_num_threads() == 2


# ---------------------------------------------------------------------- the benchmark


def load_bench():
    spec = importlib.util.spec_from_file_location("generate_speed",
                                                  ROOT / "bench" / "generate_speed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_arguments(tmp_path, capsys):
    bench = load_bench()
    args = bench.parse_args([])
    assert (args.words, args.threads, args.api_words, args.load, args.api) == (2000, 1, 400,
                                                                               2, True)
    args = bench.parse_args(["--load", "0", "--no-api", "--words", "10", "--api-words", "5"])
    assert (args.load, args.api, args.words, args.api_words) == (0, False, 10, 5)
    for bad in (["--words", "0"], ["--load", "-1"], ["--threads", "x"], ["--api-words", "0"]):
        with pytest.raises(SystemExit):
            bench.parse_args(bad)
    assert "expected an integer >= 1, got '0'" in capsys.readouterr().err
    assert bench.main(["--model", str(tmp_path / "none.pt")]) == 1
    assert "no checkpoint" in capsys.readouterr().err
