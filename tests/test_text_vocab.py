"""Tokenisation schemes, detokenisation and the vocabulary."""

import json
from collections import Counter

import pytest

from lstmlm.text import EOS, UNK, basic_english_words, detokenise, tokenise_lines, tokenise_prompt
from lstmlm.vocab import Vocabulary, VocabError, build_vocabulary


# torchtext's documented example and its rule-by-rule behaviour.
@pytest.mark.parametrize("line, expected", [
    ("You can now install TorchText using pip!",
     ["you", "can", "now", "install", "torchtext", "using", "pip", "!"]),
    ("Hello, World. (Yes?)", ["hello", ",", "world", ".", "(", "yes", "?", ")"]),
    ("don't", ["don", "'", "t"]),
    ('He said "hi"; then: bye', ["he", "said", "hi", "then", "bye"]),
    ("line<br />break", ["line", "break"]),
    ("  many   spaces\tand\ttabs ", ["many", "spaces", "and", "tabs"]),
])
def test_basic_english_matches_torchtext(line, expected):
    assert basic_english_words(line) == expected


def test_wikitext_scheme_adds_one_eos_per_line_even_empty():
    lines = [" = Title = ", "", " a b c "]
    assert list(tokenise_lines(lines, "wikitext")) == [
        ["=", "Title", "=", EOS], [EOS], ["a", "b", "c", EOS]]


def test_basic_english_scheme_lowercases_and_ends_lines():
    assert list(tokenise_lines(["The Cat."], "basic_english")) == [["the", "cat", ".", EOS]]


def test_prompt_tokenisation_turns_newlines_into_eos():
    assert tokenise_prompt("a b\nc", "wikitext") == ["a", "b", EOS, "c"]
    assert tokenise_prompt("", "wikitext") == []


def test_detokenise_undoes_wikitext_conventions():
    tokens = "the well @-@ known band , with 1 @,@ 000 fans ( and 2 @.@ 5 albums ) .".split()
    assert detokenise(tokens) == "the well-known band, with 1,000 fans (and 2.5 albums)."
    assert detokenise(["a", EOS, "b", "'s", "!"]) == "a\nb's!"


def test_vocabulary_is_frequency_sorted_with_alphabetical_ties():
    counts = Counter({"b": 3, "a": 3, "c": 5, "d": 1, EOS: 4})
    vocab = build_vocabulary(counts)
    assert vocab.words == ("c", EOS, "a", "b", "d", UNK)
    assert vocab.counts == (5, 4, 3, 3, 1, 0)


def test_vocabulary_min_freq_and_max_size_keep_specials():
    counts = Counter({"x": 10, "y": 5, "z": 1, EOS: 7})
    assert build_vocabulary(counts, min_freq=2).words == ("x", EOS, "y", UNK)
    assert build_vocabulary(counts, max_size=3).words == ("x", EOS, UNK)
    with pytest.raises(VocabError):
        build_vocabulary(counts, max_size=1)


def test_vocabulary_json_round_trip_and_hash(tmp_path):
    vocab = build_vocabulary(Counter("a b b c c c".split() + [EOS]), scheme="basic_english")
    vocab.save(tmp_path / "v.json")
    loaded = Vocabulary.load(tmp_path / "v.json")
    assert loaded == vocab and loaded.sha256 == vocab.sha256
    assert loaded.encode(["c", "zzz"]) == [0, loaded.unk_id]
    other = build_vocabulary(Counter("a b b c c c".split() + [EOS]), scheme="wikitext")
    assert other.sha256 != vocab.sha256  # the scheme is part of the identity


def test_vocabulary_load_rejects_garbage(tmp_path):
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(VocabError, match="not a lstmlm-vocab"):
        Vocabulary.load(tmp_path / "bad.json")
    with pytest.raises(VocabError, match="not found"):
        Vocabulary.load(tmp_path / "missing.json")


def test_vocabulary_load_rejects_a_file_without_its_lists(tmp_path):
    (tmp_path / "v.json").write_text('{"format": "lstmlm-vocab/1", "counts": [1]}')
    with pytest.raises(VocabError, match="lacks its words or counts"):
        Vocabulary.load(tmp_path / "v.json")
    (tmp_path / "w.json").write_text('{"format": "lstmlm-vocab/1", "words": [1], "counts": [1]}')
    with pytest.raises(VocabError, match="not a string"):
        Vocabulary.load(tmp_path / "w.json")


def test_vocabulary_file_is_the_indented_json_of_before(tmp_path):
    # Words that JSON must escape, non-ASCII and ", " inside a word; ties in the counts.
    words = ['q"x', "a, b", "\\", "été", "tab\there", "z", "a"]
    counts = Counter({w: n for w, n in zip(words, (9, 7, 7, 3, 3, 3, 1))} | {EOS: 5})
    vocab = build_vocabulary(counts, scheme="basic_english")
    assert vocab.words == ('q"x', "\\", "a, b", EOS, "tab\there", "z", "été", "a", UNK)
    vocab.save(tmp_path / "v.json")
    expected = json.dumps({"format": "lstmlm-vocab/1", "scheme": "basic_english",
                           "words": list(vocab.words), "counts": list(vocab.counts)},
                          indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    assert (tmp_path / "v.json").read_text(encoding="utf-8") == expected
    assert Vocabulary.load(tmp_path / "v.json") == vocab
