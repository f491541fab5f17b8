"""Benchmark: tokenise + tensorise of WikiText-2, timed as the pipeline runs them.

    python bench/data_speed.py [--wikitext DIR] [--repeat 3]

Runs the two stage scripts as subprocesses (interpreter start-up included) on the
WikiText-2 files from --wikitext, $WIKITEXT_DIR or ../shared/data/wikitext-2, and prints
each stage's wall time and their sum. Target on a 2-core CPU: <= 5 s together.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def find_wikitext(arg: str | None) -> Path:
    """The WikiText-2 directory: argument, environment, or the shared offline copy."""
    for candidate in (arg, os.environ.get("WIKITEXT_DIR"), ROOT.parent / "shared/data/wikitext-2"):
        if candidate and Path(candidate, "wiki.train.tokens").is_file():
            return Path(candidate)
    sys.exit("no WikiText-2 copy found: pass --wikitext DIR or set WIKITEXT_DIR")


def timed(command: list[str], cwd: Path) -> float:
    # This checkout's lstmlm, whatever the virtual environment has installed.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    started = time.perf_counter()
    subprocess.run(command, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wikitext")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    source = find_wikitext(args.wikitext)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "raw").mkdir()
        for split in ("train", "valid", "test"):
            (work / "raw" / f"{split}.txt").symlink_to(source / f"wiki.{split}.tokens")
        (work / "params.yaml").write_text("tokenise:\n  scheme: wikitext\n")
        tokenise = [sys.executable, str(ROOT / "stages/tokenise.py"), "--raw", "raw",
                    "--tokens", "tokens", "--vocab", "vocab.json"]
        tensorise = [sys.executable, str(ROOT / "stages/tensorise.py"), "--tokens", "tokens",
                     "--vocab", "vocab.json", "--ids", "ids", "--metrics", "data.json"]
        runs = []
        for _ in range(args.repeat):
            runs.append((timed(tokenise, work), timed(tensorise, work)))
    best = min(runs, key=sum)
    print(f"tokenise  {best[0]:.2f} s")
    print(f"tensorise {best[1]:.2f} s")
    print(f"together  {sum(best):.2f} s (best of {args.repeat}; target <= 5 s)")


if __name__ == "__main__":
    main()
