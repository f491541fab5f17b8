"""Stage `download`: put the raw corpus's train.txt, valid.txt and test.txt in --out.

    python -m stages.download --out data/raw [--resume-dir data/resume/download]

Reads the ``download`` section of params.yaml. WikiText-2 comes from $WIKITEXT_DIR when
set, else from the mirrors in lstmlm.data.wikitext, and is verified by SHA-256; WikiText-103
likewise from $WIKITEXT103_DIR or its mirror, the zip verified by SHA-256 and, when a
download is interrupted, continued from --resume-dir by the next run. Any other
``download.corpus`` is your own text (lstmlm.data.owntext): prose is split by
``download.split`` and ``download.seed`` and the split recorded in --out/split.json.
"""

from __future__ import annotations

import argparse
import logging
import sys

from lstmlm.core.params import read_params
from lstmlm.data.corpus import DownloadConfig
from lstmlm.data.download import PreparedCorpus, prepare_corpus
from lstmlm.data.owntext import unmet_shares
from lstmlm.data.wikitext import WIKITEXT103
from stages.guard import run_stage


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB"):
        if n < 1024 or unit == "MiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def report(result: PreparedCorpus) -> None:
    """Where the corpus came from, each file, and how own prose was split."""
    check = "sha256 verified" if result.verified else "copied, not checksummed"
    if result.corpus == WIKITEXT103 and not result.verified:
        check += "; no per-file sums are published, the tokenise stage checks the counts"
    print(f"corpus {result.corpus} from {result.source} ({check})")
    for info in result.files.values():
        print(f"  {info.path}: {_size(info.bytes)}, sha256 {info.sha256[:12]}")
    if result.split is not None:
        split = result.split
        print(f"  split into {split['blocks']} blocks of lines (download.split "
              f"{split['fractions']}, download.seed {split['seed']}): valid blocks "
              f"{split['valid_blocks']}, test blocks {split['test_blocks']}; lines "
              + " / ".join(f"{n:,}" for n in split["lines"].values()) + " (train / valid / test)")
        if warning := unmet_shares(split):
            print(warning, file=sys.stderr)
        print("  " + reflow_report(split["reflow"]))


def reflow_report(done: dict) -> str:
    """What download.reflow did to own prose, in counts."""
    if done["mode"] == "off":
        return "download.reflow off: lines kept as they are"
    if not done["files_reflowed"]:
        return (f"download.reflow {done['mode']}: no file looked hard-wrapped; lines kept as "
                "they are")
    return (f"download.reflow {done['mode']}: {done['files_reflowed']} file(s) hard-wrapped; "
            f"{done['lines_joined']:,} line ends joined into paragraphs, "
            f"{done['words_dehyphenated']:,} of them words hyphenated across the line end")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="params file (default: %(default)s)")
    parser.add_argument("--out", default="data/raw", help="output directory (default: %(default)s)")
    parser.add_argument("--resume-dir", default=None,
                        help="where a large download is kept until verified, so that an "
                             "interrupted one is resumed (default: a temporary directory)")
    args = parser.parse_args()
    # Mirror failures and retries are logged as warnings by the library; show them plainly.
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    config = read_params(args.params, download=DownloadConfig)["download"]
    # A progress bar only where someone watches; in CI logs it is noise.
    report(prepare_corpus(config, args.out, resume_dir=args.resume_dir,
                          progress=sys.stderr.isatty()))


if __name__ == "__main__":
    run_stage(main)
