"""`make plots` / lstmlm.plots: the training curves as SVG and PNG files, drawn offline."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT

pytest.importorskip("vl_convert", reason="vl-convert-python is not installed (the plots extra)")

TRAIN = [412.5, 251.0, 190.25]
VALID = [300.0, 220.5, 201.75]


def write_curves(folder, train=TRAIN, valid=VALID):
    """What dvclive writes per epoch: {split}/ppl.tsv with columns step and ppl."""
    for split, values in (("train", train), ("valid", valid)):
        (folder / split).mkdir(parents=True)
        rows = "".join(f"{step}\t{value}\n" for step, value in enumerate(values))
        (folder / split / "ppl.tsv").write_text("step\tppl\n" + rows, encoding="utf-8")
    return folder


def test_the_chart_plots_each_epoch_of_train_and_valid(tmp_path):
    from lstmlm.plots import perplexity_spec, runs_of

    curves = write_curves(tmp_path / "curves")
    spec = perplexity_spec(runs_of(curves))
    assert spec["encoding"]["x"]["title"] == "epoch"
    points = {(v["split"], v["epoch"]): v["perplexity"] for v in spec["data"]["values"]}
    assert points == {**{("train", e + 1): p for e, p in enumerate(TRAIN)},
                      **{("valid", e + 1): p for e, p in enumerate(VALID)}}


def test_make_plots_command_writes_an_svg_and_a_png_offline(tmp_path):
    curves = write_curves(tmp_path / "curves")
    out = tmp_path / "pictures"
    done = subprocess.run([sys.executable, "-m", "lstmlm.plots", "--curves", str(curves),
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    svg = (out / "perplexity.svg").read_text(encoding="utf-8")
    assert svg.startswith("<svg") and ">epoch<" in svg and ">perplexity<" in svg
    assert ">train<" in svg and ">valid<" in svg
    # One point per epoch and split: the x axis ticks are whole epochs 1..3.
    assert {int(t) for t in re.findall(r">([123])</text>", svg)} == {1, 2, 3}
    png = (out / "perplexity.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5_000


def test_missing_curves_are_a_clear_error(tmp_path):
    done = subprocess.run([sys.executable, "-m", "lstmlm.plots", "--curves", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "no training curve here" in done.stderr


def test_make_plots_draws_revisions_and_experiments_on_one_chart(tmp_path, monkeypatch):
    """Two commits, an experiment (a ref under refs/exps, as DVC keeps it) and the
    workspace: one chart, a colour per run, each run's own epochs."""
    from lstmlm.plots import perplexity_spec, runs_of

    repo = tmp_path / "repo"
    curves = repo / "metrics" / "train" / "plots" / "metrics"
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    runs = {"main": [500.0, 400.0], "exp-lucky": [450.0, 300.0, 250.0], "workspace": [420.0]}
    for name, valid in runs.items():
        if curves.exists():
            shutil.rmtree(curves)
        write_curves(curves, train=[v + 10 for v in valid], valid=valid)
        if name == "workspace":
            break
        subprocess.run([*git, "add", "-A"], check=True)
        subprocess.run([*git, "commit", "-q", "-m", name], check=True)
        if name == "exp-lucky":  # an experiment's commit, off the branch
            subprocess.run([*git, "update-ref", "refs/exps/ab/cdef12/exp-lucky", "HEAD"],
                           check=True)
            subprocess.run([*git, "reset", "-q", "--hard", "main~1"], check=True)
    monkeypatch.chdir(repo)
    spec = perplexity_spec(runs_of(curves, list(runs)))
    drawn = {}
    for v in spec["data"]["values"]:
        if v["split"] == "valid":
            drawn.setdefault(v["run"], []).append(v["perplexity"])
    assert drawn == runs
    assert spec["encoding"]["color"]["field"] == "run"
    assert spec["encoding"]["strokeDash"]["field"] == "split"
    done = subprocess.run([sys.executable, "-m", "lstmlm.plots", "--revs", *runs, "--out",
                           "pictures"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    svg = (repo / "pictures" / "perplexity.svg").read_text(encoding="utf-8")
    assert all(f">{name}<" in svg for name in runs)
    unknown = subprocess.run([sys.executable, "-m", "lstmlm.plots", "--revs", "nope"],
                             capture_output=True, text=True, timeout=120,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert unknown.returncode == 2 and "unknown revision 'nope'" in unknown.stderr


def test_the_ladder_chart_redraws_from_its_json_a_line_per_recipe(tmp_path, monkeypatch):
    """bench/ladder.py --draw-only: every point of ladder.json on the chart, the seed
    recipe's on a line of its own; a rung trained again replaces its point."""
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    from ladder import chart_spec, main, merge

    results = [{"preset": "cpu-5min", "minutes": 4.3, "test": 173.0},
               {"preset": "seed", "minutes": 4.4, "test": 939.9, "rung": "cpu-5min"}]
    merge(results, {"preset": "cpu-15min", "minutes": 12.0, "test": 120.9})
    merge(results, {"preset": "seed", "minutes": 12.1, "test": 607.1, "rung": "cpu-15min"})
    merge(results, {"preset": "cpu-5min", "minutes": 4.2, "test": 170.0})
    assert sorted((r["preset"], r["test"]) for r in results) == [
        ("cpu-15min", 120.9), ("cpu-5min", 170.0), ("seed", 607.1), ("seed", 939.9)]
    (tmp_path / "ladder.json").write_text(json.dumps(results))
    monkeypatch.setattr(sys, "argv", ["ladder.py", "--draw-only", "--out", str(tmp_path)])
    main()
    assert (tmp_path / "ladder.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = (tmp_path / "ladder.svg").read_text(encoding="utf-8")
    assert all(label in svg for label in ("cpu-5min", "cpu-15min", "seed recipe"))
    values = chart_spec(results)["data"]["values"]
    assert sorted((v["label"], v["recipe"]) for v in values) == [
        ("cpu-15min", "ladder and default"), ("cpu-5min", "ladder and default"),
        ("seed", "seed recipe"), ("seed", "seed recipe")]
