"""Stage `tokenise`: tokenise the raw splits and build the vocabulary from train.

Reads params: tokenise.scheme, tokenise.min_freq, tokenise.max_size.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from lstmlm.corpus import (WIKITEXT2_TOKENS, WIKITEXT2_VOCAB_SIZE, CorpusError,
                           TokeniseConfig, tokenise_corpus)
from lstmlm.errors import run_main
from lstmlm.files import sha256_file
from lstmlm.params import read_params


def is_standard_wikitext2(raw_dir: Path, params) -> bool:
    """True when the raw files are WikiText-2 v1 and the settings are the standard ones,
    i.e. when the published counts must come out."""
    from lstmlm.download import load_sums

    if (params.scheme, params.min_freq, params.max_size) != ("wikitext", 1, 0):
        return False
    sums = load_sums()
    return all(sha256_file(raw_dir / f"{split}.txt") == sums[split] for split in WIKITEXT2_TOKENS)


def check_wikitext2_counts(vocab_size: int, counts: dict[str, int]) -> None:
    """Stop if the standard WikiText-2 counts do not come out (a tokeniser regression)."""
    expected = {"vocab": WIKITEXT2_VOCAB_SIZE, **WIKITEXT2_TOKENS}
    got = {"vocab": vocab_size, **counts}
    if got != expected:
        raise CorpusError(f"WikiText-2 counts differ from the published ones: got {got}, "
                          f"expected {expected}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--raw", type=Path, required=True, help="directory of raw splits")
    parser.add_argument("--tokens", type=Path, required=True, help="output directory")
    parser.add_argument("--vocab", type=Path, required=True, help="output vocabulary JSON")
    args = parser.parse_args()
    params = read_params(args.params, tokenise=TokeniseConfig)["tokenise"]

    started = time.perf_counter()
    vocab, counts = tokenise_corpus(args.raw, args.tokens, args.vocab, scheme=params.scheme,
                                    min_freq=params.min_freq, max_size=params.max_size)
    print(f"tokenise: scheme {params.scheme}, vocabulary {len(vocab):,} words; tokens "
          + " / ".join(f"{counts[s]:,}" for s in counts) + " (" + " / ".join(counts) + ")"
          + f" in {time.perf_counter() - started:.1f}s")
    if is_standard_wikitext2(args.raw, params):
        check_wikitext2_counts(len(vocab), counts)
        print("tokenise: WikiText-2 counts match the published ones")


if __name__ == "__main__":
    run_main(main)
