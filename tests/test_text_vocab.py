"""Tokenisation schemes, detokenisation and the vocabulary."""

import json
import os
import random
import subprocess
import sys
from collections import Counter

import pytest

from conftest import ROOT, SHARED_WIKITEXT
from lstmlm.core.errors import shorten
from lstmlm.data.schemes import basic_english_words, tokenise_lines, wikitext_prompt_words
from lstmlm.data.vocab import EOS, UNK, VocabError, Vocabulary, build_vocabulary
from lstmlm.generate.text import Detokeniser, detokenise, tokenise_prompt


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


@pytest.mark.parametrize("text, tokens", [
    ("Hello, world.", "Hello , world ."),
    ("I don't know; it's John's.", "I don 't know ; it 's John 's ."),  # WikiText-2's clitics
    ("A York-based firm", "A York @-@ based firm"),
    ("$5,000.", "$ 5 @,@ 000 ."),
    ("It grew 2.5% (to 1,200,000) in 1990–95!", "It grew 2 @.@ 5 % ( to 1 @,@ 200 @,@ 000 ) "
                                               "in 1990 – 95 !"),
    ('She sang "Hey Jude" in the U.S. with Dr. No.', 'She sang " Hey Jude " in the U.S. with '
                                                     'Dr. No.'),
    ("O'Neil's 18- to 49-year-olds...", "O 'Neil 's 18- to 49 @-@ year @-@ olds ..."),
    ("== History ==", "= = History = ="),
    ("the Beatles' 'White Album'", "the Beatles ' ' White Album '"),
    ("“Curly” quotes’", "“ Curly ” quotes ’"),
    # Text already in WikiText's form reads the same.
    ("the well @-@ known band , with 1 @,@ 000 fans 's", "the well @-@ known band , with 1 @,@ "
                                                        "000 fans 's"),
])
def test_prompts_are_tokenised_as_wikitext_writes_text(text, tokens):
    assert wikitext_prompt_words(text) == tokens.split()
    assert tokenise_prompt(text + "\n" + text, "wikitext") == tokens.split() + [EOS] + tokens.split()


# Run in a child under a timeout: each prompt is half a million characters, which reads in
# under a second if reading is linear in the text and in minutes if it is quadratic.
LONG_RUNS_CHILD = """
from lstmlm.generate.text import tokenise_prompt
n = 499_999  # a word, one full stop and n // 3 ellipses
assert tokenise_prompt("word" + "." * n, "wikitext") == ["word", "."] + ["..."] * (n // 3)
assert tokenise_prompt("word" + ".," * (n // 2), "text") == ["word"] + [".", ","] * (n // 2)
assert tokenise_prompt("x" + "'s" * (n // 2), "wikitext") == ["x"] + ["'s"] * (n // 2)
assert tokenise_prompt("(" * n + "word", "wikitext") == ["("] * n + ["word"]
print("read")
"""


def test_long_runs_of_punctuation_are_read_in_linear_time():
    """A word and half a million dots, commas, clitics or brackets (a prompt pasted by a
    hostile page, a corpus line): split as shorter runs are, at once."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", LONG_RUNS_CHILD], env=env, timeout=60,
                            capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout == "read\n", result.stderr[-2000:]


def test_prompts_with_the_basic_english_scheme_use_its_own_rules():
    assert tokenise_prompt("Don't stop", "basic_english") == ["don", "'", "t", "stop"]


@pytest.mark.skipif(not (SHARED_WIKITEXT / "wiki.valid.tokens").is_file(),
                    reason=f"no WikiText-2 copy at {SHARED_WIKITEXT}")
def test_detokenised_valid_lines_tokenise_back_to_the_same_tokens():
    """Issue 14's criterion: for WikiText-2's valid prose lines (headings and empty lines
    aside), tokenising the detokenised line gives the original tokens for >= 95% of lines
    (99.3% when written; the misses are WikiText's own inconsistencies, e.g. "Jr." and
    "Jr ." both occur)."""
    lines = (SHARED_WIKITEXT / "wiki.valid.tokens").read_text(encoding="utf-8").split("\n")
    prose = [line.split() for line in lines if line.strip() and not line.strip().startswith("=")]
    same = sum(wikitext_prompt_words(detokenise(tokens)) == tokens for tokens in prose)
    rate = same / len(prose)
    print(f"round trip on valid: {same}/{len(prose)} lines = {rate:.2%}")
    assert len(prose) > 1800 and rate >= 0.95


def test_detokenise_pairs_quotes_and_renders_headings():
    line = 'The song " Hey Jude " , his " best " , and the Beatles \' \' White Album \' .'
    assert detokenise(line.split()) == ('The song "Hey Jude", his "best", and the Beatles\' '
                                        "'White Album'.")
    tokens = "= = History = = <eos> <eos> It was 1 @,@ 000 km long . <eos> = Next = <eos>".split()
    assert detokenise(tokens) == "== History ==\n\nIt was 1,000 km long.\n= Next =\n"
    assert detokenise(tokens, headings=False) == "\nIt was 1,000 km long.\n"
    assert detokenise(["(", "$", "5", ")", "O", "'Neil", "’", "s"]) == "($5) O'Neil’s"


def test_basic_english_output_is_readable():
    source = "In 1 @,@ 000 cases , don 't stop ; it 's 2 @.@ 5 % of the Beatles ' songs"
    tokens = basic_english_words(source)
    assert " ".join(tokens) == ("in 1 @ , @ 000 cases , don ' t stop it ' s 2 @ . @ 5 % of "
                                "the beatles ' songs")
    assert detokenise(tokens, "basic_english") == ("in 1,000 cases, don't stop it's 2.5% of "
                                                   "the beatles' songs")
    assert detokenise(tokens) != detokenise(tokens, "basic_english")  # the scheme matters


@pytest.mark.parametrize("scheme", ["wikitext", "basic_english"])
def test_stream_detokeniser_matches_detokenise(scheme):
    alphabet = ["a", "cats", "(", "$", ".", ",", "'s", "'t", ")", "%", "@-@", "@,@", "@.@", "@",
                EOS, "'", '"', "=", "s", "t", "“", "’", "..."]
    rng = random.Random(0)
    for headings in (True, False):
        for _ in range(1500):
            tokens = [rng.choice(alphabet) for _ in range(rng.randrange(0, 14))]
            detokeniser = Detokeniser(scheme, headings)
            pieces = [detokeniser.push(t) for t in tokens]
            assert "".join(pieces) == detokenise(tokens, scheme, headings), tokens


@pytest.mark.parametrize("prompt, tokens, text", [
    ("Hello", [",", "world", "."], "Hello, world."),
    ("Hello ", ["world", "."], "Hello world."),
    ("He said (", ["yes", ")"], "He said (yes)"),
    ('She sang "Hey', ["Jude", '"', "."], 'She sang "Hey Jude".'),
    ("", ["The", "end"], "The end"),
    ("a well", ["@-@", "known", "fact"], "a well-known fact"),
    ("It was", [EOS, "New", "line"], "It was\nNew line"),
])
def test_continuations_join_their_prompt(prompt, tokens, text):
    detokeniser = Detokeniser.after(prompt)
    assert prompt + "".join(detokeniser.push(t) for t in tokens) == text


def test_shorten_keeps_one_short_line():
    assert shorten("a  b\nc") == "a b c"
    long = "word " * 20_000
    assert len(shorten(long)) < 100 and shorten(long).endswith("(100,000 characters)")


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


def test_a_word_twice_is_named_with_its_file(tmp_path):
    (tmp_path / "v.json").write_text('{"format": "lstmlm-vocab/1", "words": ["a", "<unk>", '
                                     '"<eos>", "a"], "counts": [3, 0, 1, 2]}')
    with pytest.raises(VocabError) as caught:
        Vocabulary.load(tmp_path / "v.json")
    assert str(caught.value) == (f"{tmp_path / 'v.json'}: damaged vocabulary: the vocabulary "
                                 "holds the word 'a' twice")


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
