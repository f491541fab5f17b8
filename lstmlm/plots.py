"""Training curves as picture files that open anywhere, with no internet: ``make plots``.

    python -m lstmlm.plots [--curves metrics/train/plots/metrics] [--out plots]

reads the per-epoch logs the train stage writes (dvclive's ``{train,valid}/ppl.tsv``:
``step`` counts epochs from 0) and draws perplexity per epoch for train and valid as
``perplexity.svg`` and ``perplexity.png``. The chart is a Vega-Lite spec, the grammar DVC's
own plots use; vl-convert renders it offline (Vega bundled, no browser). It is an optional
extra (``pip install -e '.[plots]'``), so the pipeline's install stays without it.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from lstmlm.core.errors import LstmlmError, run_main

SPLITS = ("train", "valid")


def read_curve(path: Path) -> list[tuple[int, float]]:
    """(epoch, perplexity) rows of one dvclive ``ppl.tsv``; its step 0 is epoch 1."""
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            return [(int(row["step"]) + 1, float(row["ppl"]))
                    for row in csv.DictReader(handle, delimiter="\t")]
    except FileNotFoundError:
        raise LstmlmError(f"{path}: no training curve here (run the pipeline first, or "
                          "pass --curves)") from None
    except (KeyError, ValueError) as err:
        raise LstmlmError(f"{path}: not a dvclive ppl.tsv ({err})") from None


def perplexity_spec(curves: dict[str, list[tuple[int, float]]]) -> dict:
    """A Vega-Lite line chart: perplexity per epoch, one line per split."""
    values = [{"epoch": epoch, "perplexity": ppl, "split": split}
              for split, rows in curves.items() for epoch, ppl in rows]
    return {
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
            "color": {"field": "split", "type": "nominal", "title": None,
                      "sort": list(curves)},
        },
    }


def render(curves_dir: Path) -> tuple[str, bytes]:
    """The perplexity chart of the curves under ``curves_dir``, as SVG text and PNG bytes."""
    try:
        import vl_convert
    except ImportError:
        raise LstmlmError("drawing the curves needs the plots extra: pip install -e "
                          "'.[plots]' (or make plots)") from None
    spec = perplexity_spec({split: read_curve(Path(curves_dir) / split / "ppl.tsv")
                            for split in SPLITS})
    return vl_convert.vegalite_to_svg(spec), vl_convert.vegalite_to_png(spec, scale=2)


def draw(curves_dir: Path, out_dir: Path) -> list[Path]:
    """Write perplexity.svg and perplexity.png for the curves under ``curves_dir``."""
    svg, png = render(curves_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "perplexity.svg", out_dir / "perplexity.png"]
    paths[0].write_text(svg, encoding="utf-8")
    paths[1].write_bytes(png)
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lstmlm.plots",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--curves", type=Path, default=Path("metrics/train/plots/metrics"),
                        help="dvclive's plots folder of a training run (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("plots"),
                        help="folder for the pictures (default: %(default)s)")
    args = parser.parse_args(argv)
    for path in draw(args.curves, args.out):
        print(path, file=sys.stdout)


if __name__ == "__main__":
    run_main(main)
