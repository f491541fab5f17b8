"""Text as people see it: a prompt read as tokens, and tokens written back as text.

A prompt is tokenised the way the vocabulary's scheme wrote its corpus
(:func:`tokenise_prompt`; for ``wikitext`` and ``text`` that is WikiText's own
conventions, lstmlm.data.schemes.wikitext_prompt_words). What the model writes is joined
back for reading by :class:`Detokeniser`, one token at a time, and by :func:`detokenise`
at once, from the rule table in lstmlm.data.schemes, so that tokenising what was
detokenised gives the tokens back.
"""

from __future__ import annotations

from typing import Iterable, Iterator

from lstmlm.data.schemes import (
    APOSTROPHE,
    BASIC_ENGLISH_SUFFIXES,
    CLOSING,
    HEADING,
    JOINERS,
    OPENING,
    QUOTE,
    SCHEMES,
    wikitext_prompt_words,
)
from lstmlm.data.vocab import EOS


def tokenise_prompt(prompt: str, scheme: str) -> list[str]:
    """Tokens of a generation prompt (no ``<eos>`` appended; line breaks become ``<eos>``).
    With the ``wikitext`` and ``text`` schemes the prompt is read as people write text
    (:func:`wikitext_prompt_words`); a prompt already in WikiText's form reads the same."""
    words = wikitext_prompt_words if scheme == "wikitext" else SCHEMES[scheme]
    lines = prompt.split("\n")
    tokens: list[str] = []
    for i, line in enumerate(lines):
        tokens.extend(words(line))
        if i < len(lines) - 1:
            tokens.append(EOS)
    return tokens




class Detokeniser:
    """Writes tokens as readable text, one token at a time (for printing words as they
    come): ``"".join(d.push(t) for t in tokens) == detokenise(tokens)``. Nothing is held
    back: how a token joins depends only on the tokens before it on its line.

    ``scheme`` is the vocabulary's tokenisation scheme; ``headings`` False drops heading
    lines ("= = History = =") with their line break instead of writing "== History ==".
    """

    def __init__(self, scheme: str = "wikitext", headings: bool = True):
        self.basic = scheme == "basic_english"
        self.headings = headings
        self._strip_space = False
        self._new_line()

    @classmethod
    def after(cls, prompt: str, scheme: str = "wikitext", headings: bool = True) -> "Detokeniser":
        """A detokeniser for the text that follows ``prompt``: it joins the first word to
        the prompt as it would join it to the prompt's last token."""
        detokeniser = cls(scheme, headings)
        for token in tokenise_prompt(prompt, scheme):
            detokeniser.push(token)
        detokeniser._strip_space = not prompt or prompt[-1].isspace()
        return detokeniser

    def _new_line(self) -> None:
        self._previous = ""          # the last token on this line ("" at its start)
        self._glue = True            # whether the next token joins without a space
        self._quote = self._single = False  # an open double / single quote
        self._dropping = False       # inside a heading line that is left out

    def push(self, token: str) -> str:
        """Add a token; return the text to write for it (perhaps empty)."""
        if token == EOS:
            dropped = self._dropping
            self._new_line()
            return self._emit("" if dropped else "\n")
        if not self._previous and token == HEADING and not self.headings:
            self._dropping = True
        if self._dropping:
            return ""
        text, glue_before, glue_after = self._join(token)
        piece = text if (self._glue or glue_before) else " " + text
        self._previous, self._glue = token, glue_after
        return self._emit(piece)

    def _emit(self, piece: str) -> str:
        if self._strip_space and piece:
            self._strip_space = False
            return piece.lstrip(" ")
        return piece

    def _join(self, token: str) -> tuple[str, bool, bool]:
        """(text, joins the token before, joins the token after) for one token."""
        if token in JOINERS:
            return JOINERS[token], True, True
        if token == QUOTE:
            self._quote = not self._quote
            return token, not self._quote, self._quote
        if self.basic:
            if token == "@":
                return "", True, True
            if self._previous == APOSTROPHE and token in BASIC_ENGLISH_SUFFIXES:
                return token, True, False
            if token == APOSTROPHE:
                return token, True, False
        elif token == APOSTROPHE:
            return self._apostrophe()
        if token == HEADING and self._previous == HEADING:
            return token, True, False
        # "O 'Neil", "K 'awiil": an apostrophe word continues the word before it.
        glue_before = token in CLOSING or (token[:1] == APOSTROPHE and token[1:2].isalpha())
        return token, glue_before, token in OPENING

    def _apostrophe(self) -> tuple[str, bool, bool]:
        if self._single or self._previous.endswith(("s", "S")):
            self._single = False
            return APOSTROPHE, True, False
        self._single = True
        return APOSTROPHE, False, True


def detokenise(tokens: Iterable[str], scheme: str = "wikitext", headings: bool = True) -> str:
    """Join tokens into readable text (see Detokeniser): ``<eos>`` becomes a line break,
    WikiText's separators join their neighbours, punctuation and quotes hug their words."""
    detokeniser = Detokeniser(scheme, headings)
    return "".join(detokeniser.push(token) for token in tokens)


def with_prompt(prompt: str, tokens: Iterable[str], scheme: str = "wikitext",
                headings: bool = True) -> Iterator[str]:
    """The prompt, then its continuation piece by piece, each word joined to what comes
    before it as the prompt's own words are: the text as a reader sees it (the command's
    output, ``Generation.full_text``)."""
    yield prompt
    detokeniser = Detokeniser.after(prompt, scheme, headings)
    yield from (detokeniser.push(token) for token in tokens)
