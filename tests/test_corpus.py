"""tokenise + tensorise on tiny fixtures, and the published WikiText-2 counts."""


import numpy as np
import pytest

from conftest import SHARED_WIKITEXT
from lstmlm.corpus import (WIKITEXT2_TOKENS, WIKITEXT2_VOCAB_SIZE, CorpusError, id_dtype,
                           load_ids, tokenise_corpus, tensorise_corpus)
from lstmlm.vocab import Vocabulary


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
    vocab, counts = tokenise_corpus(raw, tmp_path / "tok", tmp_path / "v.json", scheme="wikitext")
    assert len(vocab) == WIKITEXT2_VOCAB_SIZE == 33_278
    assert counts == WIKITEXT2_TOKENS == {"train": 2_088_628, "valid": 217_646, "test": 245_569}
    # Frequency order: the head of the vocabulary is what adaptive softmax expects.
    assert vocab.words[:3] == ("the", ",", ".")
    assert all(a >= b for a, b in zip(vocab.counts, vocab.counts[1:]))
