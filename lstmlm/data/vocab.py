"""The vocabulary: words sorted by training frequency, stored as JSON.

Ids follow frequency (most frequent first, ties broken alphabetically), which adaptive
softmax relies on: its cutoffs split the id range into a frequent head and rarer tails.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import Any, Iterable

from lstmlm.core.errors import LstmlmError, shown
from lstmlm.core.files import open_regular, write_text

# The two words every vocabulary has: the end of a line, and any word it does not hold.
EOS = "<eos>"
UNK = "<unk>"
FORMAT = "lstmlm-vocab/1"
# A vocabulary file larger than this is refused unread (WikiText-103's is 5 MB).
MAX_FILE_BYTES = 1 << 30


class VocabError(LstmlmError, ValueError):
    """A vocabulary file is missing, malformed or does not match what uses it."""


@dataclass(frozen=True)
class Vocabulary:
    """Words in id order, with their training counts."""

    words: tuple[str, ...]
    counts: tuple[int, ...]
    scheme: str = "wikitext"
    index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "index", {w: i for i, w in enumerate(self.words)})
        if len(self.index) != len(self.words):  # the index keeps a word's last id
            twice = next(w for i, w in enumerate(self.words) if self.index[w] != i)
            raise VocabError(f"the vocabulary holds the word {shown(twice)} twice")
        for special in (UNK, EOS):
            if special not in self.index:
                raise VocabError(f"vocabulary lacks {special}")

    def __len__(self) -> int:
        return len(self.words)

    @property
    def unk_id(self) -> int:
        return self.index[UNK]

    @property
    def eos_id(self) -> int:
        return self.index[EOS]

    @property
    def sha256(self) -> str:
        """A hash of the word list and scheme: checkpoints record it to catch mismatches."""
        payload = json.dumps({"scheme": self.scheme, "words": self.words}, ensure_ascii=False)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    def encode(self, tokens: Iterable[str]) -> list[int]:
        """Ids of tokens; unknown words become ``<unk>``."""
        get, unk = self.index.get, self.unk_id
        return [get(t, unk) for t in tokens]

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.words[i] for i in ids]

    def save(self, path: str | Path) -> None:
        """Write the JSON file: the text ``core.files.write_json`` gives (indent 2, sorted keys),
        built by json's C encoder, since its indenting encoder is pure Python and takes
        seconds for a WikiText-103 vocabulary."""
        write_text(path, "".join([
            '{\n  "counts": ', _json_list(list(self.counts)),
            ',\n  "format": ', json.dumps(FORMAT),
            ',\n  "scheme": ', json.dumps(self.scheme, ensure_ascii=False),
            ',\n  "words": ', _json_list(list(self.words)), "\n}\n"]))

    @classmethod
    def load(cls, path: str | Path) -> "Vocabulary":
        """Read a vocabulary JSON file (refused unless it is a regular file of at most
        ``MAX_FILE_BYTES``: never a device, a FIFO or a huge sparse file)."""
        with open_regular(path, "vocabulary file", MAX_FILE_BYTES, VocabError) as handle:
            try:
                raw = json.loads(handle.read().decode("utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise VocabError(f"{path}: not a vocabulary JSON file ({err})") from None
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise VocabError(f"{path}: not a {FORMAT} file")
        return cls.checked(raw.get("words"), raw.get("counts"), raw.get("scheme", "wikitext"),
                           source=str(path))

    @classmethod
    def checked(cls, words: Any, counts: Any, scheme: Any, source: str) -> "Vocabulary":
        """A vocabulary from stored data (a JSON file, a checkpoint's copy), its types
        checked first; a VocabError names ``source`` when they are wrong."""
        if not isinstance(words, list) or not isinstance(counts, list):
            raise VocabError(f"{source}: damaged vocabulary, it lacks its words or counts lists")
        if len(words) != len(counts):
            raise VocabError(f"{source}: words and counts differ in length")
        if not all(isinstance(w, str) for w in words):
            raise VocabError(f"{source}: damaged vocabulary, a word is not a string")
        if not all(isinstance(c, int) and c >= 0 for c in counts) or not isinstance(scheme, str):
            raise VocabError(f"{source}: damaged vocabulary, a count or its scheme is malformed")
        try:
            return cls(tuple(words), tuple(counts), scheme)
        except VocabError as err:  # a word twice, <unk> or <eos> missing
            raise VocabError(f"{source}: damaged vocabulary: {err}") from None


def _json_list(items: list) -> str:
    """A list as ``json.dumps(..., indent=2)`` writes it one level inside a dict."""
    if not items:
        return "[]"
    # Strings are escaped, so the separator's newline can only appear between items.
    body = json.dumps(items, ensure_ascii=False, separators=(",\n    ", ": "))
    return "[\n    " + body[1:-1] + "\n  ]"


def build_vocabulary(counts: Counter, *, min_freq: int = 1, max_size: int = 0,
                     scheme: str = "wikitext") -> Vocabulary:
    """Vocabulary from training counts: frequency order, ``<unk>`` and ``<eos>`` always in.

    Words seen fewer than ``min_freq`` times are left out; ``max_size`` (0: no limit)
    caps the size, the specials counted in. Ties are broken alphabetically so that the
    order, and therefore every id, is the same on every machine.
    """
    specials = (UNK, EOS)
    kept = [(w, c) for w, c in counts.items() if c >= min_freq or w in specials]
    for special in specials:
        if special not in counts:
            kept.append((special, 0))
    # By count, most frequent first, ties alphabetically: two stable sorts with C keys,
    # (reverse=True keeps ties in order), much faster than a Python key for 270k words.
    kept.sort(key=itemgetter(0))
    kept.sort(key=itemgetter(1), reverse=True)
    if max_size:
        if max_size < len(specials):
            raise VocabError(f"tokenise.max_size: {max_size} leaves no room for <unk> and <eos>")
        head = [wc for wc in kept if wc[0] not in specials][: max_size - len(specials)]
        kept = sorted(head + [wc for wc in kept if wc[0] in specials],
                      key=lambda wc: (-wc[1], wc[0]))
    return Vocabulary(tuple(w for w, _ in kept), tuple(c for _, c in kept), scheme)
