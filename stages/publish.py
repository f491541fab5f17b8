"""Stage `publish`: copy the results a pull request reviews into metrics/, tracked by git.

The costly stages write every output to DVC's cache (data/), so that their run-cache
entries travel to other machines whole. Reviewers need the small files in git instead:
`dvc metrics diff main` and `dvc plots diff main` read them in a clone with no cache.
This stage copies them there; it imports no torch and takes a fraction of a second.

    data/eval.json               -> metrics/eval.json
    data/train-log/metrics.json  -> metrics/train/metrics.json
    data/train-log/plots/metrics -> metrics/train/plots/metrics/  (the dvclive curves)
    data/samples.md              -> metrics/samples.md
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eval", type=Path, required=True, help="evaluate's metrics JSON")
    parser.add_argument("--train-log", type=Path, required=True, help="train's dvclive folder")
    parser.add_argument("--samples", type=Path, required=True, help="sample's Markdown")
    parser.add_argument("--out", type=Path, required=True, help="folder tracked by git")
    return parser.parse_args()


def copies(args: argparse.Namespace) -> list[tuple[Path, Path]]:
    """(source, destination) pairs; a destination mirrors what dvc.yaml declares."""
    return [(args.eval, args.out / "eval.json"),
            (args.train_log / "metrics.json", args.out / "train" / "metrics.json"),
            (args.train_log / "plots" / "metrics", args.out / "train" / "plots" / "metrics"),
            (args.samples, args.out / "samples.md")]


def copy(source: Path, dest: Path) -> None:
    """A file or folder copied; DVC removed the old destination before this stage ran."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, dest, dirs_exist_ok=True)
    else:
        shutil.copyfile(source, dest)


def main() -> None:
    for source, dest in copies(parse_args()):
        copy(source, dest)
        print(f"publish: {source} -> {dest}")


if __name__ == "__main__":
    main()
