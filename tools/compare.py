"""This run's figures beside another revision's, in a table a terminal shows whole.

    python tools/compare.py                  # the workspace beside HEAD (`make pipeline`'s end)
    python tools/compare.py --rev main       # beside a branch, a commit or an experiment
    python tools/compare.py --diff main      # `dvc metrics diff main`, less timings and counters
    python tools/compare.py --exps           # `dvc exp show`: the params that differ, the ppls

The table holds the perplexities that matter (static and adapted), the epochs and the
minutes of training, read from metrics/ in the workspace and, at the revision, as git
holds them. When dvc.lock differs from HEAD's, one line says what that means. ``--diff``
prints the metrics `dvc metrics diff` says changed, without the timings, step counters,
losses (the perplexities say the same) and batch sizes that make its table long.
``--exps`` prints tools/pr_report.py's two `dvc exp show` views: each experiment's params
that differ from the others', beside its static and its adapted perplexities.
Run it from the repository root (``--diff`` and ``--exps`` with `dvc` on PATH).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import re
import subprocess
import sys

from pr_report import EXP_SHOW_ADAPTED, EXP_SHOW_ARGS, Failure, dvc, dvc_command

from lstmlm.core.errors import LstmlmError
from lstmlm.revisions import read_at

EVAL, TRAIN = "metrics/eval.json", "metrics/train/metrics.json"
SECONDS = "metrics/train/plots/metrics/epoch_seconds.tsv"
# (row, file, dotted key) of the table
FIGURES = [("valid ppl", EVAL, "valid.ppl"), ("test ppl", EVAL, "test.ppl"),
           ("test ppl + cache", EVAL, "cache.test.ppl"),
           ("test ppl + dynamic eval", EVAL, "dynamic.test.ppl"),
           ("test ppl + both", EVAL, "dynamic+cache.test.ppl")]
# Metrics a comparison leaves out: speed, where a run stopped, and what the others repeat.
NOISE = re.compile(r"tokens_per_s|epoch_seconds|(^|\.)(step|lr|loss|batch|tokens)$")
# What a changed dvc.lock means, with params.yaml as committed and changed.
LOCK_NOTES = {
    False: "dvc.lock changed: this CPU's rounding, the same ppl to ~0.5 %: commit it, or "
           "`make restore`",
    True: "dvc.lock changed with params.yaml: commit both and metrics/ to keep this run, or "
          "`make restore`",
}


def dig(data: dict | None, key: str) -> float | None:
    for part in key.split("."):
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data if isinstance(data, (int, float)) else None


def figures(rev: str | None) -> dict[str, float | None]:
    """The table's figures at a revision (None: the workspace); None where missing."""
    files = {path: read_at(rev, path) for path in (EVAL, TRAIN, SECONDS)}
    parsed = {path: json.loads(files[path]) if files[path] else None for path in (EVAL, TRAIN)}
    out = {row: dig(parsed[path], key) for row, path, key in FIGURES}
    step = dig(parsed[TRAIN], "step")
    out["epochs"] = None if step is None else step + 1
    rows = list(csv.DictReader(io.StringIO(files[SECONDS] or ""), delimiter="\t"))
    out["training minutes"] = (sum(float(r["epoch_seconds"]) for r in rows) / 60
                               if rows else None)
    return out


def shown(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.2f}" if isinstance(value, float) and not value.is_integer() \
        else f"{value:,.0f}"


def table(header: list[str], rows: list[list[str]]) -> str:
    """Left-aligned first column, right-aligned numbers, two spaces between."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                               for i, (cell, w) in enumerate(zip(row, widths))).rstrip()
                     for row in [header, *rows])


def summary(rev: str) -> str:
    """The workspace's figures beside ``rev``'s, with the change."""
    now, then = figures(None), figures(rev)
    rows = []
    for name in now:
        change = "" if now[name] is None or then[name] is None else \
            f"{now[name] - then[name]:+,.2f}"
        rows.append([name, shown(now[name]), shown(then[name]), change])
    return table(["", "this run", rev, "change"], rows)


def changed(path: str) -> bool:
    """Whether ``path`` differs from HEAD's."""
    return subprocess.run(["git", "diff", "--quiet", "HEAD", "--", path]).returncode == 1


def metrics_diff(rev: str) -> str:
    """`dvc metrics diff REV` as a table, less NOISE."""
    changed = json.loads(dvc("metrics", "diff", rev, "--json") or "{}")
    rows = [[f"{path}: {name}", shown(v.get("old")), shown(v.get("new")),
             "" if v.get("diff") is None else f"{v['diff']:+,.3f}"]
            for path, metrics in changed.items() for name, v in metrics.items()
            if not NOISE.search(name)]
    rows.sort()
    if not rows:
        return f"No metric changed since {rev} (timings and step counters left out)."
    return table(["metric", rev, "workspace", "change"], rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", default="HEAD",
                        help="what to set beside the workspace (default: %(default)s)")
    parser.add_argument("--diff", metavar="REV", help="print `dvc metrics diff REV`, less "
                        "timings and step counters, instead")
    parser.add_argument("--exps", action="store_true", help="print the experiments: the "
                        "params that differ, the static and the adapted perplexities")
    args = parser.parse_args(argv)
    if args.exps:  # straight out: dvc fits its tables to a terminal, else to COLUMNS
        env = {"COLUMNS": "100", **os.environ}
        return max(subprocess.run([*dvc_command(), *view, "--no-pager"], env=env).returncode
                   for view in (EXP_SHOW_ARGS, EXP_SHOW_ADAPTED))
    try:
        print(metrics_diff(args.diff) if args.diff else summary(args.rev))
    except (Failure, LstmlmError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not args.diff and changed("dvc.lock"):
        print(LOCK_NOTES[changed("params.yaml")])
    return 0


if __name__ == "__main__":
    sys.exit(main())
