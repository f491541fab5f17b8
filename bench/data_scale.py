"""Benchmark: how the cost of tokenise + tensorise grows with the corpus (WikiText-103 scale).

    python bench/data_scale.py [--wikitext DIR] [--sizes 2,20,100] [--tmp DIR]

Builds synthetic corpora of about 2M, 20M and 100M training tokens from WikiText-2
(--wikitext, $WIKITEXT_DIR or ../shared/data/wikitext-2): copies of its train split in
which every 8th word (a different 8th in each copy) is replaced by one of 236,000
invented words, so that every size has a vocabulary of about 270k words, like
WikiText-103's 267,735 (each size gets the same vocabulary, so the sizes differ in
length only); valid and test are WikiText-2's, whose sizes WikiText-103 shares. Each
stage runs as its own child process, as in the pipeline (interpreter start-up
included); its peak RSS is read from the kernel (os.wait4) and, with its worker
processes together, sampled from /proc, as is their CPU time. The 100M corpus takes
about 1.5 GB of disk under --tmp while it is measured.

Targets on a 2-core CPU: 100M tokens in <= 90 s with peak RSS <= 2 GB, and time per
token at 100M within 1.3x of that at 2M.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from data_speed import find_wikitext  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")
N_INVENTED = 236_000
EVERY = 8  # one word in EVERY is replaced by an invented one
LETTERS = "abcdefghijklmnopqrstuvwxyz"


def invented_words(n: int) -> np.ndarray:
    """``n`` made-up words ("qx" plus base-26 digits: no WikiText-2 word looks like that)."""
    words = []
    for i in range(n):
        digits = []
        while True:
            i, r = divmod(i, 26)
            digits.append(LETTERS[r])
            if not i:
                break
        words.append("qx" + "".join(digits))
    return np.array(words, dtype=object)


def write_train(source: Path, dest: Path, copies: int) -> None:
    """``copies`` altered copies of WikiText-2's train split, one after the other."""
    flat: list[str] = []
    for line in source.read_text(encoding="utf-8").split("\n")[:-1]:
        flat.extend(line.split())
        flat.append("\n")  # a line end, kept in place by the join below
    base = np.array(flat, dtype=object)
    words_at = np.flatnonzero(base != "\n")
    invented = invented_words(N_INVENTED)
    with open(dest, "w", encoding="utf-8") as out:
        for copy in range(copies):
            tokens = base.copy()
            where = words_at[(words_at + copy) % EVERY == 0]
            # Cycle through the invented words, starting where the last copy stopped.
            start = copy * len(where)
            tokens[where] = invented[(start + np.arange(len(where))) % N_INVENTED]
            out.write(" " + " ".join(tokens.tolist()))


def make_corpus(wikitext: Path, directory: Path, million: int) -> None:
    raw = directory / "raw"
    raw.mkdir(parents=True)
    copies = max(1, round(million * 1e6 / 2_088_628))
    write_train(wikitext / "wiki.train.tokens", raw / "train.txt", copies)
    for split in ("valid", "test"):
        (raw / f"{split}.txt").symlink_to(wikitext / f"wiki.{split}.tokens")
    (directory / "params.yaml").write_text("tokenise:\n  scheme: wikitext\n")


def tree_usage(pid: int, cpu: dict[int, float]) -> int:
    """Resident memory (bytes) of a process and all its descendants now, from /proc
    (pages shared between them counted in each: an upper bound); records each one's CPU
    time so far (s) in ``cpu``."""
    total, stack = 0, [pid]
    while stack:
        proc = stack.pop()
        try:
            with open(f"/proc/{proc}/statm") as statm:
                total += int(statm.read().split()[1]) * PAGE
            with open(f"/proc/{proc}/stat") as stat:
                fields = stat.read().rpartition(")")[2].split()  # after the command name
            cpu[proc] = (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime
            with open(f"/proc/{proc}/task/{proc}/children") as children:
                stack.extend(int(child) for child in children.read().split())
        except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
            continue  # the process ended meanwhile
    return total


def measured(command: list[str], cwd: Path) -> dict:
    """Run a stage as a child process: wall time (s); CPU time (s) and peak RSS (bytes) of
    it with its workers together (sampled from /proc), and peak RSS of its own process.

    The workers are not the stage's children (a fork server starts them), so the
    kernel's accounting for the stage (wait4) leaves them out: /proc is sampled instead.
    """
    started = time.perf_counter()
    # This checkout's lstmlm, whatever the virtual environment has installed.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL)
    peak_tree, cpu, done = [0], {}, threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            peak_tree[0] = max(peak_tree[0], tree_usage(proc.pid, cpu))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - started
    done.set()
    sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        sys.exit(f"failed ({proc.returncode}): {' '.join(command)}")
    cpu[proc.pid] = usage.ru_utime + usage.ru_stime  # exact for the stage's own process
    return {"s": elapsed, "cpu": sum(cpu.values()),
            "rss": usage.ru_maxrss * 1024,  # KiB on Linux
            "tree_rss": max(peak_tree[0], usage.ru_maxrss * 1024)}


def measure_size(wikitext: Path, work: Path, million: int) -> dict:
    directory = work / f"{million}M"
    started = time.perf_counter()
    make_corpus(wikitext, directory, million)
    built = time.perf_counter() - started
    python = sys.executable
    tok = measured([python, str(ROOT / "stages/tokenise.py"), "--raw", "raw",
                    "--tokens", "tokens", "--vocab", "vocab.json"], directory)
    ten = measured([python, str(ROOT / "stages/tensorise.py"), "--tokens", "tokens",
                    "--vocab", "vocab.json", "--ids", "ids", "--metrics", "data.json"], directory)
    stats = json.loads((directory / "data.json").read_text())
    tokens = sum(split["tokens"] for split in stats["splits"].values())
    return {"million": million, "tokens": tokens, "vocab": stats["vocab_size"],
            "dtype": stats["dtype"], "built_s": built, "tokenise_s": tok["s"],
            "tensorise_s": ten["s"], "cpu_s": tok["cpu"] + ten["cpu"],
            "rss": max(tok["rss"], ten["rss"]), "tree_rss": max(tok["tree_rss"], ten["tree_rss"])}


def report(rows: list[dict]) -> None:
    print(f"{'corpus':>7} {'tokens':>12} {'vocab':>8} {'ids':>6} {'tokenise':>9} "
          f"{'tensorise':>9} {'total':>8} {'CPU':>8} {'ns/token':>8} {'RSS':>7} {'all':>7}")
    for r in rows:
        total = r["tokenise_s"] + r["tensorise_s"]
        print(f"{r['million']:>6}M {r['tokens']:>12,} {r['vocab']:>8,} {r['dtype']:>6} "
              f"{r['tokenise_s']:>8.1f}s {r['tensorise_s']:>8.1f}s {total:>7.1f}s "
              f"{r['cpu_s']:>7.1f}s "
              f"{1e9 * total / r['tokens']:>8.0f} {r['rss'] / 2**20:>5.0f}MB "
              f"{r['tree_rss'] / 2**20:>5.0f}MB")
    first, last = rows[0], rows[-1]
    per_token = [(r["tokenise_s"] + r["tensorise_s"]) / r["tokens"] for r in (first, last)]
    print(f"time per token at {last['million']}M / at {first['million']}M: "
          f"{per_token[1] / per_token[0]:.2f}x (target <= 1.3x)")
    print("targets at 100M: <= 90 s, peak RSS <= 2048 MB. Each stage runs alone, start-up "
          "included; CPU: user + system time of both stages and their workers, sampled "
          "every 50 ms (less disturbed than wall time by other processes); RSS: peak of a "
          "stage's own process, all: of a stage with its workers together (sampled)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wikitext")
    parser.add_argument("--sizes", default="2,20,100", help="millions of training tokens")
    parser.add_argument("--tmp", default=None, help="where the corpora are built")
    args = parser.parse_args()
    wikitext = find_wikitext(args.wikitext)
    rows = []
    for million in (int(s) for s in args.sizes.split(",")):
        # One size at a time, deleted once measured: the disk holds one corpus at most.
        with tempfile.TemporaryDirectory(prefix="lstmlm-data-scale-", dir=args.tmp) as tmp:
            rows.append(measure_size(wikitext, Path(tmp), million))
        r = rows[-1]
        print(f"{million}M: built in {r['built_s']:.1f}s, tokenise {r['tokenise_s']:.1f}s, "
              f"tensorise {r['tensorise_s']:.1f}s", file=sys.stderr)
    report(rows)


if __name__ == "__main__":
    main()
