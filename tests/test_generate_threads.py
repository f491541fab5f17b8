"""The Python API draws on its own BLAS thread count (issue 21: with torch's default of
two threads, 200 words took 41 times longer on a busy machine) and leaves the caller's
setting as it was, between calls and between a stream's words; and the benchmark that
shows it takes its arguments as documented (it never runs in the suite)."""

from __future__ import annotations

import importlib.util
from concurrent.futures import ThreadPoolExecutor

import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from conftest import ROOT
from lstmlm.core.errors import LstmlmError
from lstmlm.core.threads import BLAS_THREADS
from lstmlm.generate.engine import FusedStep
from lstmlm.generate.generator import Generator


def blas_threads() -> int:
    """numpy's BLAS thread count, as threadpoolctl reads it."""
    counts = {lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"}
    assert len(counts) == 1, threadpool_info()
    return counts.pop()


@pytest.fixture
def two_threads():
    """The BLAS set to two threads, as a caller may have it; restored after the test."""
    with threadpool_limits(limits=2, user_api="blas"):
        assert blas_threads() == 2
        yield


@pytest.fixture
def threads_seen(monkeypatch) -> list[int]:
    """The BLAS thread count at each step of the LSTM."""
    seen: list[int] = []
    step = FusedStep.__call__

    def recording(self, token_id):
        seen.append(BLAS_THREADS.count()[0])
        return step(self, token_id)
    monkeypatch.setattr(FusedStep, "__call__", recording)
    return seen


def test_the_api_draws_on_one_thread_and_gives_the_setting_back(tiny_checkpoint, two_threads,
                                                                 threads_seen):
    _, model, vocab = tiny_checkpoint
    generator = Generator(model, vocab)
    assert len(generator.generate("the cat", words=10).tokens) == 10
    assert set(threads_seen) == {1}
    assert blas_threads() == 2
    for _ in generator.stream("the cat", words=10):
        assert blas_threads() == 2  # the caller's setting between words
    assert len(threads_seen) == 18 and set(threads_seen) == {1}


def test_threads_can_be_chosen_or_left_to_the_library(tiny_checkpoint, two_threads,
                                                      threads_seen):
    _, model, vocab = tiny_checkpoint
    Generator(model, vocab, threads=None).generate("the cat", words=4)
    Generator(model, vocab, threads=3).generate("the cat", words=4)
    assert threads_seen == [2, 2, 2, 3, 3, 3] and blas_threads() == 2
    for bad in (0, -1, True, "2", 1.5):
        with pytest.raises(LstmlmError, match="threads"):
            Generator(model, vocab, threads=bad)


def test_streams_drawn_side_by_side_run_on_the_process_setting(tiny_checkpoint, threads_seen):
    """A server draws several streams at once, one word at a time from worker threads.
    OpenBLAS has one thread pool for the process, which only the main thread may size
    (threadpoolctl): the command and the page size it once (set_process_threads, from
    --threads), and every word runs on that count; a worker's own setting is ignored."""
    _, model, vocab = tiny_checkpoint
    generator = Generator(model, vocab, threads=2)  # what a worker would ask for: ignored
    streams = [generator.stream("the cat", words=30, seed=seed) for seed in range(4)]
    with threadpool_limits(limits=1, user_api="blas"):  # as set_process_threads(1) does
        with ThreadPoolExecutor(4) as pool:
            for _ in range(30):
                list(pool.map(next, streams))
        assert blas_threads() == 1
    assert set(threads_seen) == {1} and len(threads_seen) == 4 * 29


def test_the_command_sizes_the_process_pool_once(tiny_checkpoint, capsys):
    """`python -m lstmlm generate --threads 2`, in this process: the BLAS runs on two
    threads from then on, whichever thread draws."""
    from lstmlm.generate.command import main as generate_main

    root, _, _ = tiny_checkpoint
    with threadpool_limits(limits=1, user_api="blas"):  # given back after the test
        assert generate_main(["--model", str(root / "model.pt"), "--threads", "2",
                              "--words", "3", "hi"]) == 0
        assert blas_threads() == 2
    assert capsys.readouterr().out.startswith("hi")


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
