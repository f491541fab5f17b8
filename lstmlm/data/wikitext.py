"""WikiText-2 and WikiText-103 v1 (tokenised, Merity et al. 2016): the published facts.

Their names, the local copies' environment variables, WikiText-2's official SHA-256 sums
(``wikitext-2.sha256``, shipped beside this module) and file sizes, WikiText-103's zip,
and both corpora's published vocabulary and token counts. The download stage fetches and
checks the files with these (lstmlm.data.wikitext_fetch); the tokenise stage checks that
the published counts come out (:func:`official_counts`).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from lstmlm.core.errors import CorpusError
from lstmlm.core.files import sha256_file
from lstmlm.data.layout import SPLITS, split_path

WIKITEXT = "wikitext-2"
WIKITEXT_DIR_ENV = "WIKITEXT_DIR"
SUMS_FILE = "wikitext-2.sha256"
# Sizes of the official WikiText-2 files: a raw file of another size cannot be one of
# them, which spares hashing a large corpus only to find it is not WikiText-2.
WIKITEXT2_BYTES = {"train": 10_797_148, "valid": 1_121_681, "test": 1_256_449}

WIKITEXT103 = "wikitext-103"
WIKITEXT103_DIR_ENV = "WIKITEXT103_DIR"
WIKITEXT103_ZIP = "wikitext-103-v1.zip"
# The sum and size recorded for wikitext-103-v1.zip in huggingface/datasets' wikitext
# dataset_infos.json (the same sum other dataset registries pin).
WIKITEXT103_SHA256 = "242ba0f20b329cfdf1ccc61e9e9e5b59becf189db7f7a81cd2a0e2fc31539590"
WIKITEXT103_BYTES = 190_229_076

# Published statistics with the standard (whitespace + <eos>) scheme, vocabulary and
# token counts both including <eos>. The two corpora share the valid and test articles,
# so their token counts agree there.
WIKITEXT2_VOCAB_SIZE = 33_278
WIKITEXT2_TOKENS = {"train": 2_088_628, "valid": 217_646, "test": 245_569}
WIKITEXT103_VOCAB_SIZE = 267_735
WIKITEXT103_TOKENS = {"train": 103_227_021, "valid": 217_646, "test": 245_569}


def parse_sums(text: str) -> dict[str, str]:
    """Parse ``sha256sum`` output naming ``wiki.{split}.tokens`` into ``{split: hex}``."""
    sums: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        digest, _, name = line.strip().partition(" ")
        name = name.strip().lstrip("*")  # "*" marks binary mode in sha256sum output
        for split in SPLITS:
            if name == f"wiki.{split}.tokens":
                sums[split] = digest.lower()
    missing = [s for s in SPLITS if s not in sums]
    if missing:
        raise ValueError(f"checksum list lacks wiki.{{{','.join(missing)}}}.tokens")
    return sums


def load_sums() -> dict[str, str]:
    """The official WikiText-2 v1 SHA-256 sums, ``{split: hex}``, from the package data."""
    return parse_sums(resources.files(__package__).joinpath(SUMS_FILE)
                      .read_text(encoding="utf-8"))


def is_wikitext2(raw_dir: Path) -> bool:
    """True when the raw splits in ``raw_dir`` are WikiText-2 v1, byte for byte."""
    if any(split_path(raw_dir, s).stat().st_size != n for s, n in WIKITEXT2_BYTES.items()):
        return False
    sums = load_sums()
    return all(sha256_file(split_path(raw_dir, split)) == sums[split] for split in SPLITS)


def official_counts(raw_dir: Path, scheme: str, min_freq: int, max_size: int,
                    corpus: str) -> tuple[str, dict[str, int]] | None:
    """The corpus name and published counts a tokenisation must reproduce, or None.

    Only the standard tokenisation (``scheme`` wikitext, every word kept) has published
    counts. WikiText-2 is recognised by its checksums, whatever ``download.corpus`` says;
    WikiText-103 by ``corpus`` (no per-file checksums are published for it).
    """
    if (scheme, min_freq, max_size) != ("wikitext", 1, 0):
        return None
    if corpus == WIKITEXT103:
        return "WikiText-103", {"vocab": WIKITEXT103_VOCAB_SIZE, **WIKITEXT103_TOKENS}
    if is_wikitext2(raw_dir):
        return "WikiText-2", {"vocab": WIKITEXT2_VOCAB_SIZE, **WIKITEXT2_TOKENS}
    return None


def check_counts(name: str, expected: dict[str, int], vocab_size: int,
                 counts: dict[str, int]) -> None:
    """Stop if the published counts do not come out (a tokeniser regression or, for
    WikiText-103's unverifiable extracted files, a wrong copy)."""
    got = {"vocab": vocab_size, **counts}
    if got != expected:
        raise CorpusError(f"{name} counts differ from the published ones: got {got}, "
                          f"expected {expected}; a damaged or different copy of {name}, "
                          "or a tokeniser regression")
