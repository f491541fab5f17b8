"""Tokenisation schemes: how one line of text becomes tokens, each line ending ``<eos>``.

* ``wikitext``: split on whitespace. WikiText-2 is already tokenised, so this is the
  standard behind published perplexities (pytorch/examples, AWD-LSTM).
* ``text``: prose as people write it, tokenised as WikiText was
  (:func:`wikitext_prompt_words`: punctuation and clitics split off), for your own text.
* ``basic_english``: torchtext's ``basic_english`` rules (lower-case, split off
  punctuation, drop double quotes), which the seed notebook used.

Text people type (prompts) is read the way the vocabulary's scheme wrote its corpus, and
text the model writes is joined back for reading (both in lstmlm.generate.text). The
writing side reads the rule table below ("How tokens join"), which
:func:`wikitext_prompt_words` inverts, so that tokenising what was detokenised gives the
tokens back.
"""

from __future__ import annotations

import functools
import re
from typing import Callable, Iterable

from lstmlm.data.vocab import EOS

# torchtext.data.utils._basic_english_normalize, rule for rule and in the same order.
_BASIC_ENGLISH_RULES = [
    (re.compile(r"\'"), " '  "),
    (re.compile(r"\""), ""),
    (re.compile(r"\."), " . "),
    (re.compile(r"<br \/>"), " "),
    (re.compile(r","), " , "),
    (re.compile(r"\("), " ( "),
    (re.compile(r"\)"), " ) "),
    (re.compile(r"\!"), " ! "),
    (re.compile(r"\?"), " ? "),
    (re.compile(r"\;"), " "),
    (re.compile(r"\:"), " "),
    (re.compile(r"\s+"), " "),
]


def wikitext_words(line: str) -> list[str]:
    """Whitespace split: WikiText is already tokenised."""
    return line.split()


def basic_english_words(line: str) -> list[str]:
    """torchtext's ``basic_english`` tokeniser, re-implemented."""
    line = line.lower()
    for pattern, replacement in _BASIC_ENGLISH_RULES:
        line = pattern.sub(replacement, line)
    return line.split()


def tokenise_lines(lines: Iterable[str], scheme: str) -> Iterable[list[str]]:
    """Tokens of each line, each list ending with ``<eos>`` (empty lines give ``[<eos>]``)."""
    words = SCHEMES[scheme]
    for line in lines:
        yield words(line) + [EOS]


# --------------------------------------------------------------------------- how tokens join
# The one rule table: lstmlm.generate.text.Detokeniser applies it to write tokens as text,
# wikitext_prompt_words inverts it to read text as tokens.

# Joined to both neighbours. WikiText writes in-word hyphens and number separators as
# tokens of their own ("York @-@ based", "1 @,@ 000", "2 @.@ 5"), and splits off curly
# apostrophes too ("I ’ m").
JOINERS = {"@-@": "-", "@,@": ",", "@.@": ".", "’": "’"}
# Written without a space before them ("cat .", "Beatles 's", "don 't", "5 %").
CLITICS = frozenset({"'s", "'t", "'re", "'ve", "'ll", "'d", "'m"})
CLOSING = frozenset({".", ",", ";", ":", "!", "?", ")", "]", "}", "%", "”"}) | CLITICS
# Written without a space after them ("( and", "$ 5").
OPENING = frozenset({"(", "[", "{", "$", "£", "€", "“", "‘"})
# Double quotes alternate within a line: the first opens (no space after), the next
# closes (no space before). A single quote closes an open one, follows a plural as its
# possessive ("Beatles ' song"), or else opens ("the ' anti-hero '").
QUOTE, APOSTROPHE = '"', "'"
# A heading line is "= = History = =": the "=" marks join into "== History ==".
HEADING = "="
# Words whose final "." is part of the word, not a full stop (beside initials such as
# "J." and dotted forms such as "U.S."); from WikiText's own tokens.
# ("Jr", "c" and "etc" are left out: WikiText more often splits their full stop.)
ABBREVIATIONS = frozenset("No Nos St Dr Mr Mrs Ms Sr Op vs v o Bros var Inc Ltd Co Lt Col Gen "
                          "Sgt Rev Nr ssp pp".split())
# basic_english splits "don't" into don ' t, "it's" into it ' s and "1 @,@ 000" into
# 1 @ , @ 000: after an apostrophe these join, and a lone "@" is written as nothing.
BASIC_ENGLISH_SUFFIXES = frozenset({"s", "t", "re", "ve", "ll", "d", "m"})


# --------------------------------------------------------------------------- prompts

# A run of "=" standing alone: a heading's marks ("== History ==" is "= = History = =").
_HEADING_MARKS = re.compile(r"(?<=\s)(=+)(?=\s|$)|^(=+)(?=\s|$)")
# Always tokens of their own, wherever they stand in a word (WikiText has no word with
# one of them inside).
_ALWAYS_SPLIT = re.compile(r'([";!?()\[\]{}%–—/…“”‘’])')
# A word-like unit on either side of an in-word separator: a letter or digit, or <unk>.
_SEPARATORS = [
    (re.compile(r"(?<=[\w>])-(?=[\w<])"), " @-@ "),
    (re.compile(r"(?<=[\w>]),(?=[\w<])"), " @,@ "),
    (re.compile(r"(?<=[\d>])\.(?=[\d<])"), " @.@ "),
]
_DOTTED = re.compile(r"(?:[^\W\d_]+\.){2,}|[A-Z]\.")  # U.S., e.g., Ph.D., J.
# don't -> don 't: an apostrophe and letters after a letter, a digit or <unk>'s ">".
_WORDLIKE, _CLITIC = re.compile(r"[\w>]"), re.compile(r"'[^\W\d_]+")
_LONGEST_CLITIC = max(map(len, CLITICS))
# Split off the start / the end of a word: the one-character OPENING / CLOSING tokens.
_LEADING = frozenset(t for t in OPENING if len(t) == 1) | {QUOTE, APOSTROPHE}
_TRAILING = frozenset(t for t in CLOSING if len(t) == 1) | {QUOTE, APOSTROPHE}
_TRAILING_MARKS = "".join(sorted(_TRAILING))  # for str.rstrip


def _is_abbreviation(word: str) -> bool:
    return bool(_DOTTED.fullmatch(word)) or word[:-1] in ABBREVIATIONS


def _split_edges(chunk: str) -> tuple[list[str], str, list[str]]:
    """Punctuation before and after a word: ("(", "$"), "5,000", (".", ")"). In time linear
    in the chunk, however long its runs of punctuation: positions move, the text is
    sliced once."""
    start = _lead_length(chunk)
    end, trail = _trail(chunk[start:])
    return list(chunk[:start]), chunk[start:][:end], trail


def _lead_length(chunk: str) -> int:
    """How many of the chunk's first characters are opening punctuation of their own:
    never the last one, nor a clitic's apostrophe ('s)."""
    n = 0
    while (len(chunk) - n > 1 and chunk[n] in _LEADING
           and not (len(chunk) - n <= _LONGEST_CLITIC and chunk[n:].lower() in CLITICS)):
        n += 1
    return n


def _trail(chunk: str) -> tuple[int, list[str]]:
    """Where the word ends, and the closing punctuation after it, split off from the end
    one mark at a time ("..." whole); an ellipsis alone, or the full stop of an
    abbreviation, stays with the word."""
    dots = len(chunk) - len(chunk.lstrip("."))  # chunk[:end] is all dots when end <= dots
    run = len(chunk.rstrip(_TRAILING_MARKS))  # where the closing punctuation starts
    # Before this index the run is all dots: only there can chunk[:end] be an
    # abbreviation (U.S., Mr.), which holds letters and dots alone.
    dotted = len(chunk) - len(chunk[run:].lstrip("."))
    trail: list[str] = []
    end = len(chunk)
    while end > 1 and chunk[end - 1] in _TRAILING and end > dots:
        if end > 3 and chunk.endswith("...", 0, end):
            trail.append("...")
            end -= 3
        elif chunk[end - 1] == "." and end <= dotted and _is_abbreviation(chunk[:end]):
            break
        else:
            trail.append(chunk[end - 1])
            end -= 1
    return end, trail[::-1]


def _split_word(word: str) -> list[str]:
    """A word without its edge punctuation: clitics and in-word separators apart
    (O'Neil's -> O 'Neil 's), in time linear in the word."""
    end, clitics = len(word), []
    while ((cut := word.rfind("'", 0, end)) > 0 and _WORDLIKE.fullmatch(word, cut - 1, cut)
           and _CLITIC.fullmatch(word, cut, end)):
        clitics.append(word[cut:end])
        end = cut
    word = word[:end]
    clitics.reverse()
    for pattern, replacement in _SEPARATORS:
        word = pattern.sub(replacement, word)
    return word.split() + clitics


def _chunk_tokens(chunk: str) -> tuple[str, ...]:
    """The tokens of one chunk of text between spaces."""
    lead, word, trail = _split_edges(chunk)
    return (*lead, *_split_word(word), *trail)


# Prose repeats its words, and splitting them is most of the time it takes to read a few
# MB of it: short chunks are remembered (at most 65,536 of at most 32 characters).
_CACHED_CHUNK = 32
_cached_chunk_tokens = functools.lru_cache(maxsize=1 << 16)(_chunk_tokens)


def wikitext_prompt_words(line: str) -> list[str]:
    """Text as people write it, tokenised as WikiText was: punctuation split off
    ("Hello, world." -> Hello , world .), clitics apart (don 't, it 's), in-word hyphens
    and number separators as @-@, @,@, @.@ ("$5,000" -> $ 5 @,@ 000), headings as
    "= = History = =". Curly quotes are tokens of their own, as WikiText has them."""
    if "=" in line:
        line = _HEADING_MARKS.sub(lambda m: " ".join(m.group(0)), line)  # "==" -> "= ="
    tokens: list[str] = []
    for chunk in _ALWAYS_SPLIT.sub(r" \1 ", line).split():
        tokens += (_cached_chunk_tokens(chunk) if len(chunk) <= _CACHED_CHUNK
                   else _chunk_tokens(chunk))
    return tokens


SCHEMES: dict[str, Callable[[str], list[str]]] = {
    "wikitext": wikitext_words,
    "text": wikitext_prompt_words,
    "basic_english": basic_english_words,
}
