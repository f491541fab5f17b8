"""Stage `tokenise`: tokenise the raw splits and build the vocabulary from train.

Reads params: tokenise.scheme, tokenise.min_freq, tokenise.max_size, and download.corpus
(to know when WikiText-103's published counts must come out). ``tokenise.scheme: auto``
is ``text`` for own prose the download stage split, else ``wikitext``
(lstmlm.data.tokenise.resolve_scheme); vocab.json records the scheme used. The split record of
own prose, if any, is carried into --tokens for the tensorise stage's metrics.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from lstmlm.core.params import read_params
from lstmlm.data.corpus import DownloadConfig
from lstmlm.data.tokenise import TokeniseConfig, tokenise_corpus
from lstmlm.data.wikitext import check_counts, official_counts
from stages.guard import run_stage


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
    official = official_counts(args.raw, vocab.scheme, params.min_freq, params.max_size,
                               sections["download"].corpus)
    if official is not None:
        check_counts(*official, len(vocab), counts)
        print(f"tokenise: {official[0]} counts match the published ones")


if __name__ == "__main__":
    run_stage(main)
