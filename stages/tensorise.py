"""Stage `tensorise`: encode each tokenised split as a memory-mappable id array.

Reads no params: everything it needs is in its inputs. Writes a small JSON of counts and
OOV rates (a DVC metric) and, for own prose, how the download stage split it.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from lstmlm.core.files import write_json
from lstmlm.data.tensorise import tensorise_corpus
from lstmlm.data.vocab import Vocabulary
from stages.guard import run_stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=Path, required=True, help="tokenised splits")
    parser.add_argument("--vocab", type=Path, required=True, help="vocabulary JSON")
    parser.add_argument("--ids", type=Path, required=True, help="output directory of .npy")
    parser.add_argument("--metrics", type=Path, required=True, help="output metrics JSON")
    args = parser.parse_args()

    started = time.perf_counter()
    vocab = Vocabulary.load(args.vocab)
    stats = tensorise_corpus(args.tokens, vocab, args.ids)
    write_json(args.metrics, stats)
    splits = stats["splits"]
    print(f"tensorise: {stats['dtype']} ids; " + ", ".join(
        f"{s} {v['tokens']:,} tokens (OOV {100 * v['oov_rate']:.2f}%)" for s, v in splits.items())
        + f" in {time.perf_counter() - started:.1f}s")


if __name__ == "__main__":
    run_stage(main)
