"""Stage `tokenise`: tokenise the raw splits and build the vocabulary from train.

Reads params: tokenise.scheme, tokenise.min_freq, tokenise.max_size, and download.corpus
(to know when WikiText-103's published counts must come out). ``tokenise.scheme: auto``
is ``text`` for own prose the download stage split, else ``wikitext``
(lstmlm.corpus.resolve_scheme); vocab.json records the scheme used. The split record of
own prose, if any, is carried into --tokens for the tensorise stage's metrics.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from lstmlm.corpus import (WIKITEXT2_TOKENS, WIKITEXT2_VOCAB_SIZE, WIKITEXT103_TOKENS,
                           WIKITEXT103_VOCAB_SIZE, CorpusError, TokeniseConfig,
                           resolve_scheme, tokenise_corpus)
from lstmlm.download import DownloadConfig
from lstmlm.files import sha256_file
from lstmlm.guard import run_stage
from lstmlm.params import read_params

# Sizes of the official WikiText-2 files: a raw file of another size cannot be one of
# them, which spares hashing a large corpus only to find it is not WikiText-2.
WIKITEXT2_BYTES = {"train": 10_797_148, "valid": 1_121_681, "test": 1_256_449}


def is_wikitext2(raw_dir: Path) -> bool:
    """True when the raw files are WikiText-2 v1, byte for byte."""
    from lstmlm.wikitext import load_sums

    if any((raw_dir / f"{s}.txt").stat().st_size != n for s, n in WIKITEXT2_BYTES.items()):
        return False
    sums = load_sums()
    return all(sha256_file(raw_dir / f"{split}.txt") == sums[split] for split in WIKITEXT2_TOKENS)


def official_counts(raw_dir: Path, params, corpus: str) -> tuple[str, dict[str, int]] | None:
    """The corpus name and published counts the run must reproduce, or None.

    WikiText-2 is recognised by its checksums, whatever ``download.corpus`` says;
    WikiText-103 by ``download.corpus`` (no per-file checksums are published for it).
    """
    scheme = resolve_scheme(params.scheme, raw_dir)
    if (scheme, params.min_freq, params.max_size) != ("wikitext", 1, 0):
        return None
    if corpus == "wikitext-103":
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--raw", type=Path, required=True, help="directory of raw splits")
    parser.add_argument("--tokens", type=Path, required=True, help="output directory")
    parser.add_argument("--vocab", type=Path, required=True, help="output vocabulary JSON")
    args = parser.parse_args()
    sections = read_params(args.params, tokenise=TokeniseConfig, download=DownloadConfig)
    params = sections["tokenise"]

    started = time.perf_counter()
    vocab, counts = tokenise_corpus(args.raw, args.tokens, args.vocab, scheme=params.scheme,
                                    min_freq=params.min_freq, max_size=params.max_size)
    print(f"tokenise: scheme {vocab.scheme}, vocabulary {len(vocab):,} words; tokens "
          + " / ".join(f"{counts[s]:,}" for s in counts) + " (" + " / ".join(counts) + ")"
          + f" in {time.perf_counter() - started:.1f}s")
    official = official_counts(args.raw, params, sections["download"].corpus)
    if official is not None:
        check_counts(*official, len(vocab), counts)
        print(f"tokenise: {official[0]} counts match the published ones")


if __name__ == "__main__":
    run_stage(main)
