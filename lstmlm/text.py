"""Tokenisation schemes and detokenisation for reading.

Both schemes turn one line of text into a list of tokens and end it with ``<eos>``:

* ``wikitext``: split on whitespace. WikiText-2 is already tokenised, so this is the
  standard behind published perplexities (pytorch/examples, AWD-LSTM).
* ``basic_english``: torchtext's ``basic_english`` rules (lower-case, split off
  punctuation, drop double quotes), which the seed notebook used.
"""

from __future__ import annotations

import re
from typing import Callable, Iterable

EOS = "<eos>"
UNK = "<unk>"

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


SCHEMES: dict[str, Callable[[str], list[str]]] = {
    "wikitext": wikitext_words,
    "basic_english": basic_english_words,
}


def tokenise_lines(lines: Iterable[str], scheme: str) -> Iterable[list[str]]:
    """Tokens of each line, each list ending with ``<eos>`` (empty lines give ``[<eos>]``)."""
    words = SCHEMES[scheme]
    for line in lines:
        yield words(line) + [EOS]


def tokenise_prompt(prompt: str, scheme: str) -> list[str]:
    """Tokens of a generation prompt (no ``<eos>`` appended; line breaks become ``<eos>``)."""
    words = SCHEMES[scheme]
    lines = prompt.split("\n")
    tokens: list[str] = []
    for i, line in enumerate(lines):
        tokens.extend(words(line))
        if i < len(lines) - 1:
            tokens.append(EOS)
    return tokens


# WikiText writes intra-word hyphens and number separators as " @-@ ", " @,@ ", " @.@ ".
_AT_SEPARATORS = re.compile(r" @([-,.])@ ")
_SPACE_BEFORE_PUNCT = re.compile(r" +([.,;:!?)\]}'%]|'s|n't|'re|'ve|'ll|'d|'m)(?=\s|$)")
_SPACE_AFTER_OPEN = re.compile(r"([(\[{$]) +")


def detokenise(tokens: list[str]) -> str:
    """Join tokens into readable text: WikiText separators undone, no space before
    punctuation, ``<eos>`` as a line break."""
    lines, current = [], []
    for token in tokens:
        if token == EOS:
            lines.append(current)
            current = []
        else:
            current.append(token)
    lines.append(current)
    out = []
    for words in lines:
        text = " ".join(words)
        text = _AT_SEPARATORS.sub(r"\1", text)
        text = _SPACE_BEFORE_PUNCT.sub(r"\1", text)
        text = _SPACE_AFTER_OPEN.sub(r"\1", text)
        out.append(text.strip())
    return "\n".join(out)
