"""DVC stage: put the raw corpus's train.txt, valid.txt and test.txt in --out.

    python stages/download.py --out data/raw [--resume-dir data/resume/download]

Reads only the ``download`` section of params.yaml. WikiText-2 comes from $WIKITEXT_DIR
when set, else from the mirrors in lstmlm.download, and is verified by SHA-256;
WikiText-103 likewise from $WIKITEXT103_DIR or its mirror, the zip verified by SHA-256
and, when a download is interrupted, continued from --resume-dir by the next run. Any
other ``download.corpus`` is a directory of the user's own text files. On failure it
prints ``error: <message>`` and exits with status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys

from lstmlm.download import WIKITEXT103, DownloadConfig, DownloadError, prepare_corpus
from lstmlm.params import ParamsError, read_params


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB"):
        if n < 1024 or unit == "MiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def main(argv: list[str] | None = None) -> int:
    """Run the stage; returns the process exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="params file (default: %(default)s)")
    parser.add_argument("--out", default="data/raw", help="output directory (default: %(default)s)")
    parser.add_argument("--resume-dir", default=None,
                        help="where a large download is kept until verified, so that an "
                             "interrupted one is resumed (default: a temporary directory)")
    args = parser.parse_args(argv)
    # Mirror failures and retries are logged as warnings by the library; show them plainly.
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)

    try:
        params = read_params(args.params, download=DownloadConfig)["download"]
        # A progress bar only where someone watches; in CI logs it is noise.
        result = prepare_corpus(params.corpus, args.out, resume_dir=args.resume_dir,
                                progress=sys.stderr.isatty())
    except (ParamsError, DownloadError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    check = "sha256 verified" if result["verified"] else "copied, not checksummed"
    if result["corpus"] == WIKITEXT103 and not result["verified"]:
        check += "; no per-file sums are published, the tokenise stage checks the counts"
    print(f"corpus {result['corpus']} from {result['source']} ({check})")
    for info in result["files"].values():
        print(f"  {info['path']}: {_size(info['bytes'])}, sha256 {info['sha256'][:12]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
