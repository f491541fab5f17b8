"""Training curves as picture files that open anywhere, with no internet: ``make plots``.

    python -m lstmlm.plots [--curves metrics/train/plots/metrics] [--out plots]
    python -m lstmlm.plots --revs main workspace my-exp      # several runs on one chart

reads the per-epoch logs the train stage writes (dvclive's ``{train,valid}/ppl.tsv``:
``step`` counts epochs from 0) and draws perplexity per epoch for train and valid as
``perplexity.svg`` and ``perplexity.png``; with ``--revs``, those of each revision (a
branch, a commit, an experiment's name, or ``workspace``: lstmlm.revisions) on one chart,
a colour per revision. The chart is a Vega-Lite spec, the grammar DVC's own plots use;
vl-convert renders it offline (Vega bundled, no browser). It is an optional extra
(``pip install -e '.[plots]'``), so the pipeline's install stays without it.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path

from lstmlm.core.errors import LstmlmError, run_main
from lstmlm.revisions import WORKSPACE, read_at

SPLITS = ("train", "valid")
CURVES = Path("metrics/train/plots/metrics")  # where the pipeline keeps them (publish stage)
Curve = list[tuple[int, float]]


def read_curve(path: Path, rev: str = WORKSPACE) -> Curve:
    """(epoch, perplexity) rows of one dvclive ``ppl.tsv`` at a revision; its step 0 is
    epoch 1."""
    text = read_at(rev, path)
    where = str(path) if rev == WORKSPACE else f"{rev}:{Path(path).as_posix()}"
    if text is None:
        raise LstmlmError(f"{where}: no training curve here (run the pipeline first, or "
                          "pass --curves)")
    try:
        return [(int(row["step"]) + 1, float(row["ppl"]))
                for row in csv.DictReader(io.StringIO(text), delimiter="\t")]
    except (KeyError, ValueError) as err:
        raise LstmlmError(f"{where}: not a dvclive ppl.tsv ({err})") from None


def perplexity_spec(runs: dict[str, dict[str, Curve]]) -> dict:
    """A Vega-Lite line chart: perplexity per epoch, a line per split of each run; a
    colour per split for one run, else a colour per run and a dash per split."""
    values = [{"epoch": epoch, "perplexity": ppl, "split": split, "run": run}
              for run, curves in runs.items() for split, rows in curves.items()
              for epoch, ppl in rows]
    several = len(runs) > 1
    colour = {"field": "run", "sort": list(runs)} if several else {"field": "split",
                                                                     "sort": list(SPLITS)}
    spec = {
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
        "title": "Perplexity per epoch",
        "width": 480, "height": 300,
        "data": {"values": values},
        "mark": {"type": "line", "point": True},
        "encoding": {
            "x": {"field": "epoch", "type": "quantitative", "title": "epoch",
                  "axis": {"tickMinStep": 1, "format": "d"}},
            "y": {"field": "perplexity", "type": "quantitative", "title": "perplexity",
                  "scale": {"zero": False}},
            "color": {**colour, "type": "nominal", "title": None},
        },
    }
    if several:
        spec["encoding"]["strokeDash"] = {"field": "split", "type": "nominal", "title": None,
                                          "sort": list(SPLITS)}
    return spec


def runs_of(curves_dir: Path, revs: list[str] | None = None) -> dict[str, dict[str, Curve]]:
    """{run: {split: curve}}: the workspace's curves under ``curves_dir``, or each of
    ``revs``' at CURVES (the workspace's, for ``workspace``, still under ``curves_dir``)."""
    return {rev: {split: read_curve((curves_dir if rev == WORKSPACE else CURVES) / split
                                    / "ppl.tsv", rev) for split in SPLITS}
            for rev in revs or [WORKSPACE]}


def render(curves_dir: Path, revs: list[str] | None = None) -> tuple[str, bytes]:
    """The perplexity chart of the curves under ``curves_dir`` (in the workspace), or of
    those each of ``revs`` holds at CURVES, as SVG text and PNG bytes."""
    try:
        import vl_convert
    except ImportError:
        raise LstmlmError("drawing the curves needs the plots extra: pip install -e "
                          "'.[plots]' (or make plots)") from None
    spec = perplexity_spec(runs_of(curves_dir, revs))
    return vl_convert.vegalite_to_svg(spec), vl_convert.vegalite_to_png(spec, scale=2)


def draw(curves_dir: Path, out_dir: Path, revs: list[str] | None = None) -> list[Path]:
    """Write perplexity.svg and perplexity.png for the curves under ``curves_dir``, or of
    ``revs`` (see render)."""
    svg, png = render(curves_dir, revs)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "perplexity.svg", out_dir / "perplexity.png"]
    paths[0].write_text(svg, encoding="utf-8")
    paths[1].write_bytes(png)
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lstmlm.plots",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--curves", type=Path, default=CURVES,
                        help="dvclive's plots folder of a training run (default: %(default)s)")
    parser.add_argument("--revs", nargs="+", metavar="REV",
                        help="draw these revisions' curves on one chart: branches, commits, "
                        "experiments' names, 'workspace' (the --curves folder)")
    parser.add_argument("--out", type=Path, default=Path("plots"),
                        help="folder for the pictures (default: %(default)s)")
    args = parser.parse_args(argv)
    for path in draw(args.curves, args.out, args.revs):
        print(path, file=sys.stdout)


if __name__ == "__main__":
    run_main(main)
