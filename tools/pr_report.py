"""Write a Markdown report that compares a result with a base revision, for a pull request.

    python tools/pr_report.py                      # workspace vs main
    python tools/pr_report.py --base origin/main --out report.md --plots-dir pr-plots
    python tools/pr_report.py --rev my-exp         # an experiment (or any git rev) vs main

Sections: changed params (`dvc params diff --md`), changed metrics (`dvc metrics diff --md`;
timing metrics left out unless --all-metrics), where the training curves were rendered
(`dvc plots diff BASE [REV] -o DIR`) and the generated samples (metrics/samples.md) at the
base and now. Run it from the repository root with `dvc` on PATH (or installed beside this
Python). A section whose command fails says so in the report; with --strict the exit status
is then 1.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

from lstmlm.core.errors import LstmlmError
from lstmlm.revisions import read_at

SAMPLES = "metrics/samples.md"

# The `dvc exp show` views of docs/experiments.md and `make exps`: only the params that
# differ between the rows, and the perplexities, static (evaluate's valid and test, best
# valid first) or adapted (test with the cache, with both), in 100 columns for a change of
# a param or two. Left out: losses, timings, step, lr, the cache's choices, the train
# stage's last-epoch numbers and dependency hashes.
EXP_SHOW_DROP = (r"Created|(step|lr)$|.*(loss|tokens_per_s|epoch_seconds|theta|lambda"
                 r"|valid\.ppl)$|train\.ppl|(data|stages|lstmlm)/|params\.yaml")
EXP_SHOW_ARGS = ["exp", "show", "--only-changed", "--drop", EXP_SHOW_DROP + "|cache|dynamic",
                 "--keep", r".*eval\.json:valid\.ppl$",
                 "--sort-by", "metrics/eval.json:valid.ppl", "--sort-order", "asc"]
EXP_SHOW_ADAPTED = ["exp", "show", "--only-changed",
                    "--drop", EXP_SHOW_DROP + r"|test|dynamic\.",
                    "--keep", r"(cache|dynamic\+cache)\.test\.ppl$"]
# Metrics that differ on every run (speed), hidden from the metrics diff by default.
TIMING_METRICS = re.compile(r"tokens_per_s|epoch_seconds")


class Failure(Exception):
    pass


def dvc_command() -> list[str]:
    found = shutil.which("dvc")
    return [found] if found else [sys.executable, "-m", "dvc"]


def run(args: list[str], shown: str | None = None) -> str:
    proc = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise Failure(f"`{shown or ' '.join(args)}` exited {proc.returncode}: "
                      f"{(proc.stderr or proc.stdout).strip()}")
    return proc.stdout


def dvc(*args: str) -> str:
    return run([*dvc_command(), *args], shown=" ".join(["dvc", *args]))


def drop_rows(table: str, pattern: re.Pattern) -> str:
    """A Markdown table without the body rows that match ``pattern``."""
    lines = table.strip().splitlines()
    kept = lines[:2] + [line for line in lines[2:] if not pattern.search(line)]
    return "\n".join(kept) if len(kept) > 2 else ""


def demote(markdown: str, levels: int = 2) -> str:
    """Headings pushed down so that a file's `# Samples` nests under the report's own."""
    return re.sub(r"^(#+) ", lambda m: "#" * (len(m.group(1)) + levels) + " ", markdown,
                  flags=re.M)


def build_report(base: str, rev: str | None, plots_dir: Path, plots_url: str | None,
                 all_metrics: bool, experiments: bool, failures: list[str]) -> str:
    revs = [base] + ([rev] if rev else [])
    label = rev or "workspace"
    out = [f"# Pipeline report: `{label}` vs `{base}`", ""]

    def section(title: str, body) -> None:
        out.extend([f"## {title}", ""])
        try:
            text = body()
        except (Failure, LstmlmError) as err:
            failures.append(str(err))
            text = f"_Could not be produced: {err}_"
        out.extend([text.strip(), ""])

    section("Params", lambda: dvc("params", "diff", *revs, "--md") or "No param changed.")

    def metrics() -> str:
        table = dvc("metrics", "diff", *revs, "--md")
        if not all_metrics:
            table = drop_rows(table, TIMING_METRICS)
        return table or "No metric changed" + ("." if all_metrics else " (timings left out).")

    section("Metrics", metrics)

    def plots() -> str:
        plots_dir.parent.mkdir(parents=True, exist_ok=True)  # dvc makes only the last folder
        dvc("plots", "diff", *revs, "-o", str(plots_dir))
        index = plots_dir / "index.html"
        where = (f"[the run's artifacts]({plots_url}) (`{index.as_posix()}`)" if plots_url
                 else f"`{index.as_posix()}`")
        return (f"Training curves per epoch, `{base}` and `{label}` in one chart per metric: "
                f"{where}. Open it in a browser, online or not (Vega is inline: "
                "tools/vega_template.py).")

    section("Training curves", plots)

    def samples() -> str:
        def body(text: str | None, where: str) -> str:
            if not text:
                return f"_No {SAMPLES} at {where}._"
            return demote(re.sub(r"\A# Samples\s*\n", "", text)).strip()

        now, before = read_at(rev, SAMPLES), read_at(base, SAMPLES)
        return "\n".join([f"### `{label}`", "", body(now, label), "",
                          f"<details><summary>Samples at <code>{base}</code></summary>", "",
                          body(before, base), "", "</details>"])

    section("Samples", samples)

    if experiments:
        section("Experiments", lambda: dvc(*EXP_SHOW_ARGS, "--md"))
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--base", default="main", help="revision to compare with (default: %(default)s)")
    add("--rev", help="git revision or experiment to report on (default: the workspace)")
    add("--out", type=Path, default=Path("report.md"), help="Markdown file (default: %(default)s)")
    add("--plots-dir", type=Path, default=Path("pr-plots"),
        help="where `dvc plots diff` writes index.html (default: %(default)s)")
    add("--plots-url", help="link to where the plots can be downloaded (e.g. the CI run)")
    add("--all-metrics", action="store_true", help="keep timing metrics in the diff")
    add("--experiments", action="store_true",
        help="append the `dvc exp show` table of the current commit's experiments")
    add("--strict", action="store_true", help="exit 1 if a section failed")
    args = parser.parse_args(argv)

    failures: list[str] = []
    report = build_report(args.base, args.rev, args.plots_dir, args.plots_url,
                          args.all_metrics, args.experiments, failures)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report, encoding="utf-8")
    print(f"wrote {args.out}" + (f" ({len(failures)} section(s) failed)" if failures else ""))
    for failure in failures:
        print(f"warning: {failure}", file=sys.stderr)
    return 1 if failures and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
