"""Hard-wrapped prose joined back into paragraphs: ``download.reflow``.

Man pages, Project Gutenberg books and RFCs break their lines at a fixed width (70 to 80
characters), so every ten words or so the text has a line end, which a model learns
as ``<eos>``; and a word hyphenated across a break ("re-" / "lease") becomes two
fragments. Here, within one file:

- a line ends where its next word would not have fitted (its length, a space and the next
  line's first word pass the text's wrap width): it is joined to the next line; a shorter
  line (the last of a paragraph, a heading, a list item, a line of verse) keeps its end;
- a line that ends in a letter and a hyphen (ASCII, U+2010 as man pages write it, or a soft
  hyphen) before a line that starts with a lower-case letter is joined without the hyphen.

``auto`` does so only for text that looks hard-wrapped: the wrap width (the 95th
percentile of line lengths) is at most ``MAX_WRAP_WIDTH``, and at least a third of the
lines that run on into another line end mid-sentence where the next word would not fit.
Text written a paragraph or a sentence to a line is left as it is. ``on`` joins by the
same rules whatever the text looks like; ``off`` never joins.
"""

from __future__ import annotations

from dataclasses import dataclass

# Hyphen-minus, the Unicode hyphen (groff writes it in man pages), the soft hyphen.
HYPHENS = "-\u2010\u00ad"
# Text whose lines are longer than this is not hard-wrapped.
MAX_WRAP_WIDTH = 100
# Line ends that close a sentence (or a quotation, a parenthesis).
SENTENCE_ENDS = ".!?:;\"')]\u201d\u2019"


@dataclass(frozen=True)
class Reflowed:
    """The lines after reflowing, and what was done, in counts."""

    lines: list[str]
    joined: int = 0          # line ends removed
    dehyphenated: int = 0    # of those, words rejoined across a hyphen
    wrapped: bool = False    # whether the text was taken as hard-wrapped

    def counts(self) -> dict[str, int]:
        return {"lines_joined": self.joined, "words_dehyphenated": self.dehyphenated}


def wrap_width(lines: list[str]) -> int:
    """The 95th percentile of the lengths of the non-blank lines (0 for none)."""
    lengths = sorted(len(line.rstrip()) for line in lines if line.strip())
    return lengths[(len(lengths) - 1) * 95 // 100] if lengths else 0


def _first_word(line: str) -> str:
    words = line.split(maxsplit=1)
    return words[0] if words else ""


def _hyphenated(line: str, following: str) -> bool:
    """"re-" before "lease": a word broken across the line end."""
    end, start = line.rstrip(), following.lstrip()
    return (len(end) > 1 and end[-1] in HYPHENS and end[-2].isalpha()
            and start[:1].islower())


def _runs_on(line: str, following: str, width: int) -> bool:
    """Whether ``line`` ended only because ``following``'s first word did not fit."""
    if not line.strip() or not following.strip():
        return False
    return (_hyphenated(line, following)
            or len(line.rstrip()) + 1 + len(_first_word(following)) > width)


def looks_wrapped(lines: list[str], width: int) -> bool:
    """auto's test: a narrow text, many of whose lines end mid-sentence for want of room."""
    if not 0 < width <= MAX_WRAP_WIDTH:
        return False
    pairs = [(a, b) for a, b in zip(lines, lines[1:]) if a.strip() and b.strip()]
    broken = sum(1 for a, b in pairs
                 if _runs_on(a, b, width) and a.rstrip()[-1] not in SENTENCE_ENDS)
    return bool(pairs) and 3 * broken >= len(pairs)


def reflow(lines: list[str], mode: str) -> Reflowed:
    """``lines`` (one file's) with hard-wrapped paragraphs joined, per ``mode``."""
    width = wrap_width(lines)
    if mode == "off" or (mode == "auto" and not looks_wrapped(lines, width)):
        return Reflowed(list(lines))
    out: list[str] = []
    joined = dehyphenated = 0
    for previous, line in zip([""] + lines, lines):  # each line with the one before it
        if not _runs_on(previous, line, width):
            out.append(line)
        elif _hyphenated(previous, line):
            out[-1] = out[-1].rstrip()[:-1] + line.lstrip()
            joined, dehyphenated = joined + 1, dehyphenated + 1
        else:
            out[-1] = out[-1].rstrip() + " " + line.strip()
            joined += 1
    return Reflowed(out, joined, dehyphenated, True)
