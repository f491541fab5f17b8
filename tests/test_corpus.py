"""tokenise + tensorise on tiny fixtures, streaming, int32 ids, and the published counts."""

import io
import os
import random
import subprocess
import sys
import tracemalloc
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, SHARED_WIKITEXT, write_tiny_corpus
from lstmlm.core.errors import CorpusError
from lstmlm.data import textfile as corpus
from lstmlm.data import tokenise
from lstmlm.data.schemes import tokenise_lines
from lstmlm.data.streams import load_ids
from lstmlm.data.tensorise import id_dtype, tensorise_corpus
from lstmlm.data.textfile import Piece, iter_text_blocks
from lstmlm.data.tokenise import tokenise_corpus
from lstmlm.data.vocab import Vocabulary, build_vocabulary
from lstmlm.data.wikitext import (
    WIKITEXT2_TOKENS,
    WIKITEXT2_VOCAB_SIZE,
    check_counts,
    official_counts,
)


def test_tokenise_and_tensorise_round_trip(tiny_corpus, tmp_path):
    vocab, counts = tokenise_corpus(tiny_corpus, tmp_path / "tokens", tmp_path / "vocab.json",
                                    scheme="wikitext")
    raw_train = (tiny_corpus / "train.txt").read_text().split("\n")[:-1]
    assert counts["train"] == sum(len(line.split()) + 1 for line in raw_train)
    stats = tensorise_corpus(tmp_path / "tokens", vocab, tmp_path / "ids")
    ids = load_ids(tmp_path / "ids", "train", len(vocab))
    assert isinstance(ids, np.memmap) and ids.dtype == np.uint16
    assert len(ids) == counts["train"] == stats["splits"]["train"]["tokens"]
    words = Vocabulary.load(tmp_path / "vocab.json").decode(ids.tolist())
    assert words == [w for line in raw_train for w in line.split() + ["<eos>"]]
    assert stats["splits"]["train"]["oov_rate"] == 0.0  # the vocabulary comes from train


def test_oov_rate_counts_words_unseen_in_train(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "train.txt").write_text("a b a\n")
    (raw / "valid.txt").write_text("a zzz\n")  # 3 tokens with <eos>, one OOV
    (raw / "test.txt").write_text("<unk> b\n")  # <unk> in the text is not OOV
    vocab, _ = tokenise_corpus(raw, tmp_path / "tok", tmp_path / "v.json", scheme="wikitext")
    stats = tensorise_corpus(tmp_path / "tok", vocab, tmp_path / "ids")
    assert stats["splits"]["valid"]["oov_rate"] == pytest.approx(1 / 3, abs=1e-6)
    assert stats["splits"]["test"]["oov_rate"] == 0.0
    assert stats["splits"]["test"]["unk_rate"] == pytest.approx(1 / 3, abs=1e-6)


def test_id_dtype_widens_past_uint16():
    assert id_dtype(33_278) == np.uint16
    assert id_dtype(65_536) == np.uint16
    assert id_dtype(65_537) == np.int32


def test_ids_that_do_not_fit_the_vocabulary_are_rejected(tmp_path):
    (tmp_path / "ids").mkdir()
    np.save(tmp_path / "ids" / "train.npy", np.array([0, 5, 99], dtype=np.uint16))
    with pytest.raises(CorpusError, match="holds id 99, but the vocabulary has only 10"):
        load_ids(tmp_path / "ids", "train", 10)
    (tmp_path / "ids" / "valid.npy").write_bytes(b"garbage")
    with pytest.raises(CorpusError, match="not a valid .npy"):
        load_ids(tmp_path / "ids", "valid")
    np.save(tmp_path / "ids" / "test.npy", np.array([], dtype=np.uint16))
    with pytest.raises(CorpusError, match="empty"):
        load_ids(tmp_path / "ids", "test")


def test_empty_split_is_a_clear_error(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "train.txt").write_text("")
    (raw / "valid.txt").write_text("a\n")
    (raw / "test.txt").write_text("a\n")
    with pytest.raises(CorpusError, match="train.txt"):
        tokenise_corpus(raw, tmp_path / "tok", tmp_path / "v.json", scheme="wikitext")


@pytest.mark.skipif(not SHARED_WIKITEXT.is_dir(), reason="no offline WikiText-2 copy")
def test_wikitext2_published_counts(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    for split in ("train", "valid", "test"):
        (raw / f"{split}.txt").symlink_to(SHARED_WIKITEXT / f"wiki.{split}.tokens")
    # tokenise.scheme's default, auto, reads WikiText as before: split on spaces.
    vocab, counts = tokenise_corpus(raw, tmp_path / "tok", tmp_path / "v.json", scheme="auto")
    assert vocab.scheme == "wikitext"
    assert len(vocab) == WIKITEXT2_VOCAB_SIZE == 33_278
    assert counts == WIKITEXT2_TOKENS == {"train": 2_088_628, "valid": 217_646, "test": 245_569}
    # Frequency order: the head of the vocabulary is what adaptive softmax expects.
    assert vocab.words[:3] == ("the", ",", ".")
    assert all(a >= b for a, b in zip(vocab.counts, vocab.counts[1:]))


# --------------------------------------------------------------------------- streaming


def block_lines(blocks: list[str]) -> list[str]:
    lines = "".join(blocks).split("\n")
    return lines[:-1] if lines[-1] == "" else lines


def test_text_blocks_hold_the_lines_of_the_whole_text(tmp_path):
    # CRLF and CR line ends, empty lines, a line longer than a block, non-ASCII, a
    # Unicode line separator (not a line end here, as in str.split("\n")), no final newline.
    text = ("a b\r\nc\rd\n\n" + "long " * 40 + "\n\u00e9t\u00e9 \u2028 x\n" * 5 + "\n\nlast")
    path = tmp_path / "t.txt"
    path.write_bytes(text.encode("utf-8"))
    blocks = list(iter_text_blocks(path, chunk_bytes=16))
    assert len(blocks) >= 5  # read a block at a time, never the whole text at once
    # Whole lines, or pieces of the long line cut after a space.
    assert all(block.endswith("\n") or isinstance(block, Piece) for block in blocks[:-1])
    assert {block for block in blocks if isinstance(block, Piece)} == {"long " * 3, "long " * 4}
    assert block_lines(blocks) == path.read_text().split("\n")
    path.write_text("x\n\n")
    assert block_lines(list(iter_text_blocks(path, 1))) == ["x", ""]
    path.write_text("")
    assert list(iter_text_blocks(path)) == []
    with pytest.raises(CorpusError, match="not UTF-8"):
        path.write_bytes(b"ok\ncaf\xe9\n")
        list(iter_text_blocks(path))
    path.write_text("a " + "x" * 200 + "\n")  # no space where a long line could be cut
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(corpus, "MAX_RUN_CHARS", 100)
        with pytest.raises(CorpusError, match="a line runs more than 100 characters without"):
            list(iter_text_blocks(path, chunk_bytes=16))


def test_small_blocks_write_the_same_files_as_np_save(tiny_corpus, tmp_path, monkeypatch):
    outputs = {}
    for name, chunk in (("whole", 1 << 23), ("blocks", 50)):
        monkeypatch.setattr(corpus, "CHUNK_BYTES", chunk)
        out = tmp_path / name
        vocab, _ = tokenise_corpus(tiny_corpus, out / "tokens", out / "vocab.json",
                                   scheme="wikitext")
        tensorise_corpus(out / "tokens", vocab, out / "ids")
        outputs[name] = {p.relative_to(out): p.read_bytes()
                         for p in sorted(out.rglob("*")) if p.is_file()}
    assert outputs["blocks"] == outputs["whole"] and len(outputs["whole"]) == 7
    tokens = (tmp_path / "whole" / "tokens" / "valid.txt").read_text().split()
    expected = io.BytesIO()
    np.save(expected, np.array(vocab.encode(tokens), dtype=np.uint16))
    assert outputs["blocks"][Path("ids/valid.npy")] == expected.getvalue()


@pytest.mark.parametrize("scheme", ["wikitext", "text", "basic_english"])
def test_lines_longer_than_a_block_tokenise_as_they_did_whole(tmp_path, monkeypatch, scheme):
    """Long lines come in pieces cut after a space (so memory follows the block, not the
    line): the tokens, lines and vocabulary are those of whole lines, whatever the scheme."""
    raw = tmp_path / "raw"
    raw.mkdir()
    long = " ".join(f"Word{i % 7}, (it's) “x”\t<br />{i}..." for i in range(60))
    for split in ("train", "valid", "test"):
        (raw / f"{split}.txt").write_text(f" {long} \nshort line\n\n= = H = =\n {long}  ")
    outputs = {}
    for chunk in (1 << 23, 64):
        monkeypatch.setattr(corpus, "CHUNK_BYTES", chunk)
        out = tmp_path / str(chunk)
        tokenise_corpus(raw, out / "tokens", out / "vocab.json", scheme=scheme)
        outputs[chunk] = {p.name: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    assert outputs[64] == outputs[1 << 23]
    assert outputs[64]["train.txt"].count(b"<eos>\n") == 5


def test_parts_done_by_worker_processes_give_the_same_files(tmp_path, monkeypatch):
    raw = write_tiny_corpus(tmp_path / "raw", sizes=(400, 60, 60))
    # CRLF line ends, non-ASCII words and a line longer than a block, across the cuts.
    lines = (raw / "train.txt").read_text().split("\n")
    lines[100] = " " + " ".join(["\u00e9t\u00e9", "na\u00efve"] * 40) + " "
    (raw / "train.txt").write_bytes("\r\n".join(lines).encode("utf-8"))
    outputs = {}
    for workers in (1, 3):
        monkeypatch.setattr(corpus, "WORKERS", workers)
        monkeypatch.setattr(corpus, "PARALLEL_BYTES", 0 if workers > 1 else 1 << 30)
        monkeypatch.setattr(corpus, "CHUNK_BYTES", 256)
        assert len(corpus._spans(raw / "train.txt")) == workers
        out = tmp_path / str(workers)
        vocab, _ = tokenise_corpus(raw, out / "tokens", out / "vocab.json", scheme="wikitext")
        stats = tensorise_corpus(out / "tokens", vocab, out / "ids")
        outputs[workers] = (stats, {p.relative_to(out): p.read_bytes()
                                    for p in sorted(out.rglob("*")) if p.is_file()})
    assert outputs[3] == outputs[1] and len(outputs[1][1]) == 7  # no part files left over
    assert "na\u00efve" in (tmp_path / "3" / "tokens" / "train.txt").read_text()


def test_tokenise_and_tensorise_memory_does_not_follow_the_corpus(tmp_path, monkeypatch):
    raw = write_tiny_corpus(tmp_path / "raw", sizes=(40_000, 20, 20))
    size = (raw / "train.txt").stat().st_size  # about 1.2 MB
    monkeypatch.setattr(corpus, "CHUNK_BYTES", 4096)
    tracemalloc.start()
    try:
        vocab, _ = tokenise_corpus(raw, tmp_path / "tok", tmp_path / "v.json", scheme="wikitext")
        tokenise_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        tensorise_corpus(tmp_path / "tok", vocab, tmp_path / "ids")
        tensorise_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # Reading the split whole would take more than its size in strings alone.
    assert tokenise_peak < size / 4 and tensorise_peak < size / 4, (size, tokenise_peak,
                                                                     tensorise_peak)
    # The same text in three lines: memory follows the block, not the longest line.
    text = (raw / "train.txt").read_text().split("\n")
    (raw / "train.txt").write_text("".join(" ".join(text[k::3]) + "\n" for k in range(3)))
    tracemalloc.start()
    try:
        tokenise_corpus(raw, tmp_path / "tok3", tmp_path / "v3.json", scheme="wikitext")
        long_lines_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert long_lines_peak < size / 4, (size, long_lines_peak)


def test_vocabulary_past_uint16_gives_int32_ids(tmp_path):
    words = [f"w{i:05x}" for i in range(70_000)]  # made-up words, each seen once
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "train.txt").write_text("".join(" " + " ".join(words[i:i + 100]) + " \n"
                                           for i in range(0, len(words), 100)))
    (raw / "valid.txt").write_text(f" {words[-1]} {words[0]} unseen \n")
    (raw / "test.txt").write_text(f" {words[65_600]} \n")
    vocab, _ = tokenise_corpus(raw, tmp_path / "tok", tmp_path / "v.json", scheme="wikitext")
    assert len(vocab) == 70_002  # the words, <eos> and <unk>
    stats = tensorise_corpus(tmp_path / "tok", vocab, tmp_path / "ids")
    assert stats["dtype"] == "int32"
    valid = load_ids(tmp_path / "ids", "valid", len(vocab))
    assert isinstance(valid, np.memmap) and valid.dtype == np.int32
    assert vocab.decode(valid.tolist()) == [words[-1], words[0], "<unk>", "<eos>"]
    train = load_ids(tmp_path / "ids", "train", len(vocab))
    assert int(train.max()) > 65_535 and len(train) == 70_000 + 700
    assert stats["splits"]["valid"]["oov_rate"] == 0.25


def test_a_missing_tokens_file_is_a_clear_error(tmp_path):
    vocab = build_vocabulary(Counter(["a", "<eos>"]))
    with pytest.raises(CorpusError, match="train.txt: file not found"):
        tensorise_corpus(tmp_path / "nowhere", vocab, tmp_path / "ids")


# --------------------------------------------------------------------------- count checks


def test_count_check_on_a_tiny_fixture(tiny_corpus, tmp_path):
    vocab, counts = tokenise_corpus(tiny_corpus, tmp_path / "tok", tmp_path / "v.json",
                                    scheme="wikitext")
    check_counts("Tiny", {"vocab": len(vocab), **counts}, len(vocab), counts)
    off_by_one = {"vocab": len(vocab), **counts, "test": counts["test"] + 1}
    with pytest.raises(CorpusError, match="Tiny counts differ from the published ones"):
        check_counts("Tiny", off_by_one, len(vocab), counts)
    standard = ("wikitext", 1, 0)  # scheme, min_freq, max_size
    assert official_counts(tiny_corpus, *standard, "wikitext-103") == (
        "WikiText-103", {"vocab": 267_735, "train": 103_227_021, "valid": 217_646,
                         "test": 245_569})
    assert official_counts(tiny_corpus, *standard, "wikitext-2") is None  # not its bytes
    assert official_counts(tiny_corpus, "basic_english", 1, 0, "wikitext-103") is None


def test_tokenise_stage_stops_when_wikitext103_counts_differ(tiny_corpus, tmp_path):
    (tmp_path / "params.yaml").write_text("download:\n  corpus: wikitext-103\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "stages.tokenise", "--params",
                           str(tmp_path / "params.yaml"), "--raw", str(tiny_corpus),
                           "--tokens", str(tmp_path / "tok"), "--vocab", str(tmp_path / "v.json")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "error: WikiText-103 counts differ from the published ones" in proc.stderr
    assert "'train': 103227021" in proc.stderr and "Traceback" not in proc.stderr


def reference_tokenise(block: str, scheme: str) -> tuple[str, Counter]:
    """The tokens file text and word counts of a block, line by line (the plain way)."""
    lines = block.split("\n")
    if lines[-1] == "":
        lines.pop()
    tokenised = list(tokenise_lines(lines, scheme))
    return "".join(" ".join(tokens) + "\n" for tokens in tokenised), Counter(
        token for tokens in tokenised for token in tokens)


def test_wikitext_blocks_tokenise_as_line_by_line():
    # Blocks laid out as WikiText (taken whole by string replacement) and blocks that
    # break the layout in each way the check looks for (taken line by line).
    rng = random.Random(0)
    pieces = ["a", "bé", "@-@", "<unk>", " ", " ", " ", "\n", "\n", "  ", "\t", "\xa0",
              "\u2028", "\u3000", "\x1c"]
    canonical = [" = A = \n", " \n", " a b @-@ c \n", " é <unk> . \n"]
    blocks = ["".join(rng.choices(canonical, k=rng.randint(1, 6))) for _ in range(300)]
    blocks += ["".join(rng.choices(pieces, k=rng.randint(1, 12))) for _ in range(3000)]
    blocks += [" a b ", " a b \n c", "\n a \n", " a \n\n b \n", "a b \n", " a b\n", " \xa0 \n",
               " a\xa0b \n", "  \n", " a  b \n"]
    fast = 0
    for block in blocks:
        counter: Counter = Counter()
        text, n_lines, n_tokens = tokenise._tokenise_block(block, "wikitext", counter)
        expected_text, expected_counts = reference_tokenise(block, "wikitext")
        assert (text, counter) == (expected_text, expected_counts), repr(block)
        assert n_lines == expected_text.count("\n") and n_tokens == len(expected_text.split())
        fast += tokenise._is_canonical_wikitext(block, block.split())
    assert 300 <= fast < len(blocks) - 10  # both paths were taken
