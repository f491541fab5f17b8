"""The DVC workflow end to end, in throw-away git + DVC repos that run the real pipeline
(dvc.yaml, stages/, lstmlm/) on the tiny corpus with tiny params: what a param change
reruns, the run-cache, experiments and the queue, plots, the PR report and the CI
workflow's steps (remotes on real servers: test_remote.py).

The pipeline is built once per session (~20 s on 2 cores); each test works on its own copy
(cache and run-cache included), so it starts from a finished, committed pipeline.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml
from helpers_browser import chromium
from helpers_dvc import (
    ROOT,
    STAGES,
    VENV_BIN,
    assert_clean,
    built_tiny_repo,
    cached_stages,
    copy_repo,
    dvc,
    git,
    ran_stages,
    read_params,
    run,
    set_params,
    unchanged_stages,
    wait_for_queue,
)

from conftest import TINY_MODEL, TINY_TRAIN, write_tiny_corpus

slow = pytest.mark.slow  # everything that runs the pipeline (see pyproject's markers)
TRAIN_CURVES = ("train/loss", "train/ppl", "valid/loss", "valid/ppl", "lr")


def load_pr_report():
    spec = importlib.util.spec_from_file_location("pr_report", ROOT / "tools" / "pr_report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- fixtures -------------------------------------------------------------------------

@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """(repo, output of its first `dvc repro`): the tiny pipeline, run and committed on main."""
    return built_tiny_repo(tmp_path_factory, TINY_MODEL, TINY_TRAIN, write_tiny_corpus)


@pytest.fixture
def repo(built, tmp_path):
    """A fresh copy of the built repo for one test."""
    return copy_repo(built[0], tmp_path / "repo")


@pytest.fixture(scope="module")
def pr_repo(built, tmp_path_factory):
    """The built repo after `git checkout -b pr` and `dvc exp run -S model.emb=20`, the
    result committed on pr: (repo, exp run output, experiment name)."""
    repo = copy_repo(built[0], tmp_path_factory.mktemp("dvc") / "pr")
    git(repo, "checkout", "-q", "-b", "pr")
    output = dvc(repo, "exp", "run", "-S", "model.emb=20")
    name = re.search(r"Ran experiment\(s\): ([\w-]+)", output).group(1)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "emb 20")
    return repo, output, name


@pytest.fixture
def pr_copy(pr_repo, tmp_path):
    return copy_repo(pr_repo[0], tmp_path / "pr")


# --- what a change reruns -------------------------------------------------------------

@slow
def test_first_repro_runs_every_stage_in_order(built):
    repo, output = built
    assert ran_stages(output) == list(STAGES)
    assert (repo / "data" / "model.pt").is_file()
    assert "# Samples" in (repo / "metrics" / "samples.md").read_text(encoding="utf-8")
    # Everything git needs for diffs across commits is committed; data/ is DVC's.
    assert git(repo, "status", "--porcelain") == ""
    tracked = git(repo, "ls-files").split()
    for path in ("dvc.lock", "metrics/eval.json", "metrics/data.json", "metrics/samples.md",
                 "metrics/train/metrics.json", "metrics/train/plots/metrics/valid/ppl.tsv"):
        assert path in tracked
    # ...as copies (publish) of what the costly stages put in DVC's cache, which is what
    # lets their run-cache entries travel whole (test_remote.py).
    for copy, source in (("metrics/eval.json", "data/eval.json"),
                         ("metrics/samples.md", "data/samples.md"),
                         ("metrics/train/metrics.json", "data/train-log/metrics.json"),
                         ("metrics/train/plots/metrics/valid/ppl.tsv",
                          "data/train-log/plots/metrics/valid/ppl.tsv")):
        assert (repo / copy).read_bytes() == (repo / source).read_bytes(), copy
    lock = yaml.safe_load((repo / "dvc.lock").read_text(encoding="utf-8"))
    for stage in ("train", "evaluate", "sample"):
        assert all(out["path"].startswith("data/") for out in lock["stages"][stage]["outs"])


@slow
def test_second_repro_does_nothing(repo):
    watched = [repo / "data" / "model.pt", repo / "metrics" / "eval.json", repo / "dvc.lock"]
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in watched}
    output = dvc(repo, "repro")
    assert ran_stages(output) == [] and cached_stages(output) == [], output
    assert unchanged_stages(output) == list(STAGES), output
    assert "Data and pipelines are up to date." in output
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in watched} == before
    assert_clean(repo)
    assert git(repo, "status", "--porcelain") == ""


@slow
def test_tokenise_params_rerun_tokenise_and_what_its_outputs_change(repo):
    # Every word of the tiny corpus is frequent: min_freq 2 rebuilds the same vocabulary,
    # so tokenise reruns and DVC stops there (identical outputs).
    set_params(repo, {"tokenise": {"min_freq": 2}})
    output = dvc(repo, "repro")
    assert ran_stages(output) == ["params", "tokenise"], output
    assert unchanged_stages(output) == ["download", "tensorise", "train", "evaluate", "sample",
                                        "publish"]

    # A vocabulary cap changes the vocabulary: everything downstream of tokenise reruns.
    vocab_size = json.loads((repo / "metrics" / "data.json").read_text())["vocab_size"]
    set_params(repo, {"tokenise": {"max_size": vocab_size - 2}})
    output = dvc(repo, "repro")
    assert ran_stages(output) == ["params", "tokenise", "tensorise", "train", "evaluate",
                                  "sample", "publish"], output
    assert unchanged_stages(output) == ["download"]
    assert json.loads((repo / "metrics" / "data.json").read_text())["vocab_size"] == vocab_size - 2
    assert_clean(repo)


@slow
def test_corpus_param_reruns_the_data_stages(repo):
    """download.corpus: download and tokenise (whose scheme may depend on the corpus kind)
    rerun, and sample (own text draws its prompts); the same text under another name makes
    the same tokens and samples, so it stops there."""
    shutil.copytree(repo / "corpus", repo / "corpus-copy")
    git(repo, "add", "corpus-copy")
    output = dvc(repo, "exp", "run", "-S", "download.corpus=corpus-copy")
    assert ran_stages(output) == ["params", "download", "tokenise", "sample"], output
    assert unchanged_stages(output) == ["tensorise", "train", "evaluate", "publish"]


@slow
def test_sample_param_reruns_only_sample_and_its_copy(repo):
    output = dvc(repo, "exp", "run", "-S", "sample.words=12")
    assert ran_stages(output) == ["params", "sample", "publish"], output
    assert unchanged_stages(output) == ["download", "tokenise", "tensorise", "train", "evaluate"]
    assert read_params(repo)["sample"]["words"] == 12  # -S leaves params.yaml changed
    assert "12 words" in (repo / "metrics" / "samples.md").read_text(encoding="utf-8")


@slow
def test_a_value_hydra_cannot_lex_runs_once_quoted_as_the_docs_say(repo):
    """`-S` goes through Hydra's override grammar, which stops at `~` and letters beyond
    ASCII: DVC then fails with Hydra's lexer error. Quoted inside the override, as
    docs/experiments.md says, the same value reaches the pipeline."""
    shutil.copytree(repo / "corpus", repo / "café corpus~")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "the corpus again, under an awkward name")
    refused = run(["dvc", "exp", "run", "-S", "download.corpus=café corpus~"], repo, check=False)
    assert "LexerNoViableAltException" in refused, refused
    output = dvc(repo, "exp", "run", "-S", "download.corpus='café corpus~'")
    assert ran_stages(output)[:3] == ["params", "download", "tokenise"], output
    assert read_params(repo)["download"]["corpus"] == "café corpus~"
    docs = (ROOT / "docs" / "experiments.md").read_text(encoding="utf-8")
    assert """-S "download.corpus='""" in docs


@slow
def test_model_param_reruns_train_evaluate_sample(pr_repo):
    repo, output, name = pr_repo
    assert ran_stages(output) == ["params", "train", "evaluate", "sample", "publish"], output
    assert unchanged_stages(output) == ["download", "tokenise", "tensorise"]
    assert name in dvc(repo, "exp", "list", "--name-only", "--rev", "main")


def outputs_of_train(repo: Path) -> dict[str, bytes]:
    files = [repo / "data" / "model.pt", *sorted((repo / "data" / "train-log").rglob("*.*")),
             *sorted((repo / "metrics" / "train").rglob("*.*"))]
    return {str(p.relative_to(repo)): p.read_bytes() for p in files}


BAD_EDITS = {  # params.yaml text edit -> what the message must say
    "misspelt key": (("  hidden: ", "  hiden: "), r"model\.hiden: unknown key; did you mean 'model\.hidden'"),
    "misspelt section": (("model:", "modle:"), r"modle: unknown params section; did you mean 'model'"),
    "float for an integer": (("  emb: 16", "  emb: 16.0"), r"model\.emb: 16\.0 is not allowed"),
    "bad value": (("  lr: 0.01", "  lr: 0"), r"train\.lr: 0 is not allowed"),
}


@slow
@pytest.mark.parametrize("edit", BAD_EDITS, ids=list(BAD_EDITS))
def test_a_bad_params_yaml_stops_repro_first_and_keeps_the_last_good_outputs(repo, edit):
    (old, new), message = BAD_EDITS[edit]
    params = repo / "params.yaml"
    text = params.read_text(encoding="utf-8")
    assert old in text, text
    params.write_text(text.replace(old, new, 1), encoding="utf-8")
    before = outputs_of_train(repo)
    result = run(["dvc", "repro"], repo, check=False)
    assert re.search(message, result), result
    assert "Traceback" not in result
    assert ran_stages(result) == ["params"], result  # it failed; nothing else ran
    assert outputs_of_train(repo) == before  # model.pt and the curves survive


@slow
def test_exp_run_with_a_misspelt_key_fails_instead_of_recording_the_baseline(repo):
    result = run(["dvc", "exp", "run", "-S", "+model.hiden=24"], repo, check=False)
    assert "model.hiden: unknown key; did you mean 'model.hidden'" in result, result
    assert not dvc(repo, "exp", "list", "--name-only").strip()


@slow
def test_queue_of_presets_records_each_preset_name(repo):
    """`dvc exp run --queue -S 'preset=cpu,seed'` queues one run per recipe, each with the
    preset's name and values in its params (queued, not run: seed trains for hours)."""
    output = dvc(repo, "exp", "run", "--queue", "-S", "preset=cpu,seed")
    names = re.findall(r"Queued experiment '([\w-]+)'", output)
    assert len(names) == 2, output
    shown = json.loads(dvc(repo, "exp", "show", "--json"))
    queued = {rev["name"]: rev["data"]["params"]["params.yaml"]["data"]
              for row in shown for exp in row.get("experiments") or [] for rev in exp["revs"]
              if rev.get("name") in names}
    by_preset = {p["preset"]: p for p in queued.values()}
    assert set(by_preset) == {"cpu", "seed"}
    assert by_preset["seed"]["model"]["emb"] == 800 and by_preset["seed"]["train"]["epochs"] == 50
    assert by_preset["cpu"]["model"]["emb"] == read_params(repo)["model"]["emb"]
    dvc(repo, "queue", "remove", "--all")


@slow
def test_earlier_params_come_back_from_the_run_cache(pr_copy):
    repo = pr_copy
    git(repo, "checkout", "-q", "main", "--", "params.yaml")  # back to model.emb 16
    output = dvc(repo, "repro")
    assert {"train", "evaluate", "sample"} <= set(cached_stages(output)), output
    assert "Stage 'train' is cached - skipping run, checking out outputs" in output
    assert set(ran_stages(output)) <= {"params", "publish"}, output
    # The restored files are main's, byte for byte (timings included).
    for path in ("metrics/eval.json", "metrics/train/metrics.json"):
        assert (repo / path).read_text(encoding="utf-8") == git(repo, "show", f"main:{path}")
    assert_clean(repo)


# --- experiments ----------------------------------------------------------------------

def experiments(repo: Path) -> dict[str, dict]:
    """name -> exp show's data of each experiment of HEAD."""
    found = {}
    for row in json.loads(dvc(repo, "exp", "show", "--json")):
        for exp in row.get("experiments") or []:
            for rev in exp["revs"]:
                found[rev["name"]] = rev["data"]
    return found


@slow
def test_queued_sweep_apply_and_branch(pr_copy):
    repo = pr_copy
    git(repo, "checkout", "-q", "main")
    dvc(repo, "checkout", "-q")
    assert_clean(repo)
    output = dvc(repo, "exp", "run", "--queue", "-S", "model.emb=18,20")
    names = re.findall(r"Queued experiment '([\w-]+)'", output)
    assert len(names) == 2, output
    try:
        dvc(repo, "queue", "start", "-j", "1")
        status = wait_for_queue(repo, names)
    finally:
        dvc(repo, "queue", "stop", "--kill", check=False)
    logs = {n: dvc(repo, "queue", "logs", n, check=False) for n in names}
    assert status.count("Success") == 2, f"{status}\n{logs}"

    # Queued runs execute in a temp copy: they ran from tracked files alone, and each has
    # its params and metrics. emb 20 was trained on branch pr already: run-cache.
    assert "Stage 'train' is cached" in "".join(logs.values())
    found = experiments(repo)
    embs = {}
    for name in names:
        data = found[name]
        emb = data["params"]["params.yaml"]["data"]["model"]["emb"]
        embs[emb] = name
        metrics = data["metrics"]["metrics/eval.json"]["data"]
        assert metrics["valid"]["ppl"] > 1 and metrics["test"]["ppl"] > 1
    assert set(embs) == {18, 20}

    # The view in docs/experiments.md: changed params and the perplexities, nothing else.
    table = dvc(repo, *load_pr_report().EXP_SHOW_ARGS, "--md")
    header = table.splitlines()[0]
    for column in ("model.emb", "test.ppl", "metrics/eval.json:valid.ppl"):
        assert column in header, table
    for column in ("tokens_per_s", "loss", "model.hidden", "data/ids", "lstmlm/", "train.ppl",
                   "cache", "Created"):
        assert column not in header, table
    for name in names:
        assert name in table

    # Keep one: as a git branch, and applied to the workspace (outputs checked out).
    branch_18 = embs[18]
    dvc(repo, "exp", "branch", branch_18, "emb18")
    assert yaml.safe_load(git(repo, "show", "emb18:params.yaml"))["model"]["emb"] == 18
    dvc(repo, "exp", "apply", branch_18)
    assert read_params(repo)["model"]["emb"] == 18
    assert (repo / "metrics/eval.json").read_text() == git(repo, "show", "emb18:metrics/eval.json")
    assert_clean(repo)


# --- the remote benchmark -------------------------------------------------------------

@slow
def test_pull_speed_bench_times_a_fresh_clone_that_runs_nothing(repo, tmp_path):
    """bench/pull_speed.py: a clone of a repo whose remote holds its results pulls them and
    `dvc repro` runs no stage; with no remote it says what to do first."""
    bench = ["python", str(ROOT / "bench" / "pull_speed.py"), "--repo", str(repo)]
    unset = run(bench, tmp_path, check=False)
    assert "no DVC remote" in unset and "push" in unset, unset
    dvc(repo, "remote", "add", "--local", "-d", "store", str(tmp_path / "store"))
    dvc(repo, "push")
    output = run(bench, tmp_path)
    assert re.search(r"dvc pull : +[\d.]+ s", output), output
    assert "(stages run: none)" in output, output


# --- plots ----------------------------------------------------------------------------

def vega_specs(html: str) -> dict[str, dict]:
    """div id -> the Vega-Lite spec dvc wrote into it."""
    return {m.group(1): json.loads(m.group(2)) for m in re.finditer(
        r'<div id = "([^"]+)">\s*<script type = "text/javascript">\s*var spec = (\{.*\});', html)}


def curve_data(specs: dict[str, dict], curve: str) -> list[list[dict]]:
    """The data of every chart drawn from metrics/train/plots/metrics/<curve>.tsv."""
    needle = f"metrics/train/plots/metrics/{curve}.tsv"
    return [spec["data"]["values"] for spec in specs.values()
            if spec["title"]["text"].endswith(needle)]


def x_titles(spec) -> set[str]:
    """The titles of every x encoding in a Vega-Lite spec (layers included)."""
    if isinstance(spec, list):
        return set().union(*map(x_titles, spec)) if spec else set()
    if not isinstance(spec, dict):
        return set()
    x = spec.get("x")
    found = {x.get("title")} if isinstance(x, dict) and "field" in x else set()
    return found.union(*map(x_titles, spec.values()))


@slow
def test_plots_show_and_diff_render_the_training_curves(pr_copy):
    repo = pr_copy
    (repo / "out").mkdir()  # dvc makes the output folder, not its parents
    out = dvc(repo, "plots", "show", "-o", "out/show")
    assert "out/show/index.html" in out
    specs = vega_specs((repo / "out/show/index.html").read_text(encoding="utf-8"))
    assert {div: x_titles(spec) for div, spec in specs.items()} == \
        {div: {"epoch"} for div in specs}  # dvclive's step counts epochs here
    for curve in TRAIN_CURVES:
        charts = curve_data(specs, curve)
        assert charts, f"no chart for {curve}: {sorted(specs)}"
        column = curve.rsplit("/", 1)[-1]
        tsv = (repo / f"metrics/train/plots/metrics/{curve}.tsv").read_text().split()
        expected = [float(v) for v in tsv[3::2]]  # header "step <name>", then rows
        for values in charts:
            assert [float(v[column]) for v in values] == expected
            assert [int(v["step"]) for v in values] == list(range(TINY_TRAIN["epochs"]))

    dvc(repo, "plots", "diff", "main", "-o", "out/diff")
    specs = vega_specs((repo / "out/diff/index.html").read_text(encoding="utf-8"))
    for values in curve_data(specs, "valid/ppl"):
        by_rev = {}
        for v in values:
            by_rev.setdefault(v["rev"], []).append(float(v["ppl"]))
        assert set(by_rev) == {"main", "workspace"}
        assert by_rev["main"] != by_rev["workspace"]  # emb 16 vs 20


@slow
def test_each_training_curve_is_drawn_once(pr_copy):
    """Each logged curve is one chart: dvc.yaml declares the dvclive plots folder once (the
    train stage's plots output), plus the combined perplexity chart."""
    (pr_copy / "out").mkdir()
    dvc(pr_copy, "plots", "show", "-o", "out/show")
    specs = vega_specs((pr_copy / "out/show/index.html").read_text(encoding="utf-8"))
    assert all(len(curve_data(specs, c)) == 1 for c in TRAIN_CURVES), sorted(specs)


class DrawnPlots(HTMLParser):
    """Which plot divs of a rendered page contain a <canvas> or <svg> (Vega's output)."""

    def __init__(self, ids):
        super().__init__()
        self.ids, self.drawn = set(ids), set()
        self.current, self.depth = None, 0

    def handle_starttag(self, tag, attrs):
        if tag == "div":
            if self.current:
                self.depth += 1
            elif dict(attrs).get("id") in self.ids:
                self.current, self.depth = dict(attrs)["id"], 1
        elif tag in ("canvas", "svg") and self.current:
            self.drawn.add(self.current)

    def handle_endtag(self, tag):
        if tag == "div" and self.current:
            self.depth -= 1
            if self.depth == 0:
                self.current = None


def test_the_offline_template_inlines_the_vega_dvc_asks_for():
    """.dvc/config names tools/plots_template.html for `dvc plots show|diff`: the libraries
    of DVC's own page, at the versions it asks the CDN for, inline."""
    from dvc_render.vega import VegaRenderer

    from tools.vega_template import TEMPLATE, VERSIONS
    from tools.vega_template import page as make_page

    wanted = dict(re.findall(r"npm/(vega[\w-]*)@([\d.]+)", VegaRenderer.SCRIPTS))
    assert wanted == VERSIONS, "DVC asks for other versions: run tools/vega_template.py"
    config = (ROOT / ".dvc" / "config").read_text(encoding="utf-8")
    assert re.search(r"html_template = \.\./tools/plots_template\.html", config)
    page = TEMPLATE.read_text(encoding="utf-8")
    assert "{plot_divs}" in page and "{scripts}" not in page
    assert page.count("<script>") == 3 and "<script src" not in page
    assert 'var e="5.20.2"' in page  # vega's own build
    # What tools/vega_template.py writes around the three builds it packs.
    made = make_page({name: f"var {name[-3:]}=1;\n//# sourceMappingURL={name}.min.js.map"
                      for name in VERSIONS})
    assert "<script>var ega=1;</script>" in made and "sourceMapping" not in made
    assert made.count("<script>") == 3 and "{plot_divs}" in made and "{scripts}" not in made
    with pytest.raises(ValueError, match="cannot be inlined"):
        make_page({"vega": "s = '</script>'"})


class ScriptSources(HTMLParser):
    """The src of every <script> of a page ("" for an inline one)."""

    def __init__(self):
        super().__init__()
        self.sources = []

    def handle_starttag(self, tag, attrs):
        if tag == "script":
            self.sources.append(dict(attrs).get("src") or "")


@slow
def test_plots_diff_writes_an_offline_page_that_draws_in_headless_chromium(pr_copy, tmp_path):
    """`dvc plots diff main` renders into the project's template (.dvc/config): every
    script is in the page, none comes from the internet, and chromium, offline, draws
    every chart."""
    browser = chromium()
    out = pr_copy / "out" / "diff"
    out.parent.mkdir()
    dvc(pr_copy, "plots", "diff", "main", "-o", str(out))
    page = (out / "index.html").read_text(encoding="utf-8")
    scripts = ScriptSources()
    scripts.feed(page)
    assert len(scripts.sources) >= 3 and not [s for s in scripts.sources if s], scripts.sources
    assert not re.search(r"""src=["']?(https?:)?//""", page)
    ids = list(vega_specs(page))
    assert len(ids) >= len(TRAIN_CURVES)

    profile = tmp_path / "chromium-profile"
    proc = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         f"--user-data-dir={profile}", "--virtual-time-budget=10000", "--dump-dom",
         (out / "index.html").as_uri()],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    parser = DrawnPlots(ids)
    parser.feed(proc.stdout)
    assert parser.drawn == set(ids), f"not drawn: {sorted(set(ids) - parser.drawn)}"


# --- PR report ------------------------------------------------------------------------

def eval_ppl(text: str) -> tuple[float, float]:
    data = json.loads(text)
    return data["valid"]["ppl"], data["test"]["ppl"]


@slow
def test_pr_report_compares_workspace_and_experiment_with_main(pr_repo, tmp_path):
    repo, _, exp_name = pr_repo
    repo = copy_repo(repo, tmp_path / "pr")
    run(["python", "tools/pr_report.py", "--base", "main", "--out", "out/report.md",
         "--plots-dir", "out/plots", "--strict"], repo)
    report = (repo / "out/report.md").read_text(encoding="utf-8")
    assert report.startswith("# Pipeline report: `workspace` vs `main`")
    row = r"\|\s*params\.yaml\s*\|\s*model\.emb\s*\|\s*16\s*\|\s*20\s*\|"
    assert re.search(row, report), report
    assert "sample.words" not in report  # only what changed
    before = eval_ppl(git(repo, "show", "main:metrics/eval.json"))
    after = eval_ppl((repo / "metrics/eval.json").read_text())
    for old, new in zip(before, after):
        assert re.search(rf"\|\s*{old:g}\s*\|\s*{new:g}\s*\|", report), (old, new, report)
    assert "tokens_per_s" not in report and "epoch_seconds" not in report
    assert "out/plots/index.html" in report and (repo / "out/plots/index.html").is_file()
    samples_main = git(repo, "show", "main:metrics/samples.md")
    samples_now = (repo / "metrics/samples.md").read_text(encoding="utf-8")
    assert samples_main != samples_now
    for text in (samples_main, samples_now):
        first_sample = re.search(r"^\*\*.*$", text, flags=re.M).group(0)
        assert first_sample in report

    # The same against an experiment name, from a clean main checkout.
    git(repo, "checkout", "-q", "main")
    run(["python", "tools/pr_report.py", "--rev", exp_name, "--out", "out/exp.md",
         "--plots-dir", "out/exp-plots", "--strict", "--experiments"], repo)
    report = (repo / "out/exp.md").read_text(encoding="utf-8")
    assert f"`{exp_name}` vs `main`" in report
    assert re.search(r"model\.emb\s*\|\s*16\s*\|\s*20\s*\|", report), report
    assert samples_now.splitlines()[2] in report  # the experiment's samples, not the workspace's
    assert "## Experiments" in report and exp_name in report.split("## Experiments")[1]


@slow
def test_compare_sets_the_figures_beside_a_revision_and_says_what_a_changed_lock_means(pr_copy):
    """tools/compare.py, what `make pipeline` ends with: a table that fits 100 columns, the
    curated `dvc metrics diff`, and one line when dvc.lock differs from HEAD's."""
    repo = pr_copy
    table = run(["python", "tools/compare.py", "--rev", "main"], repo)
    assert max(map(len, table.splitlines())) <= 100, table
    now = json.loads((repo / "metrics/eval.json").read_text())
    then = json.loads(git(repo, "show", "main:metrics/eval.json"))
    row = next(line for line in table.splitlines() if line.startswith("test ppl "))
    assert row.split()[2:4] == [f"{now['test']['ppl']:,.2f}", f"{then['test']['ppl']:,.2f}"]
    assert re.search(rf"^epochs\s+{TINY_TRAIN['epochs']}\s+{TINY_TRAIN['epochs']}\s", table, re.M)
    assert "training minutes" in table and "dvc.lock" not in table  # all committed

    diff = run(["python", "tools/compare.py", "--diff", "main"], repo)
    assert "metrics/eval.json: test.ppl" in diff and max(map(len, diff.splitlines())) <= 100
    assert not re.search(r"tokens_per_s|epoch_seconds|step|\.lr|loss|batch", diff), diff

    with open(repo / "dvc.lock", "a", encoding="utf-8") as lock:
        lock.write("# as another CPU's bf16 run would leave it\n")
    assert "this CPU's rounding, the same ppl to ~0.5 %" in run(
        ["python", "tools/compare.py"], repo)
    set_params(repo, {"sample": {"words": 11}})
    assert "dvc.lock changed with params.yaml" in run(["python", "tools/compare.py"], repo)


@slow
def test_make_exps_shows_the_params_that_differ_beside_the_perplexities(pr_repo, tmp_path):
    repo, _, exp_name = pr_repo
    repo = copy_repo(repo, tmp_path / "exps")
    git(repo, "checkout", "-q", "main")  # the experiment's baseline
    shown = run(["python", "tools/compare.py", "--exps"], repo)
    static, adapted = shown.split("Experiment")[1:]
    for table in (static, adapted):
        assert "model.emb" in table and "sample.words" not in table and exp_name in table
        assert re.search(rf"\[{exp_name}\]\s.*\s20\s", table), table  # its emb
    assert "test.ppl" in static and "valid.ppl" in static and "cache" not in static
    assert "cache.test.ppl" in adapted and "dynamic+cache.test.ppl" in adapted
    assert not re.search(r"loss|tokens_per_s|theta|lambda|Created", shown), shown


def test_pr_report_markdown_helpers():
    pr_report = load_pr_report()
    table = "| a | b |\n|---|---|\n| x | tokens_per_s |\n| y | ppl |\n"
    assert pr_report.drop_rows(table, re.compile("tokens")) == "| a | b |\n|---|---|\n| y | ppl |"
    assert pr_report.drop_rows(table, re.compile(r"\| [xy] ")) == ""
    assert pr_report.demote("# A\ntext\n## B\n") == "### A\ntext\n#### B\n"


# --- CI workflow and docs -------------------------------------------------------------

# What the workflow's `run:` steps do on a PR checkout, run here offline against a tiny repo:
# the steps that need the internet are left out, each for the reason given.
OFFLINE = {"Install": "`make venv` installs packages (done: this venv)",
           "Comment on the PR": "`gh` posts to GitHub"}
GITHUB = {"github.base_ref": "main", "github.event.number": "7",
          "github.server_url": "https://github.invalid", "github.repository": "me/lstmlm",
          "github.run_id": "42"}


def pr_workflow_steps() -> list[dict]:
    workflow = yaml.safe_load((ROOT / ".github/workflows/pr.yml").read_text(encoding="utf-8"))
    (job,) = workflow["jobs"].values()
    return job["steps"]


def expand(script: str) -> str:
    """${{ github.x }} replaced as Actions would (an unknown expression fails the test)."""
    return re.sub(r"\$\{\{\s*([\w.]+)\s*\}\}", lambda m: GITHUB[m.group(1)], script)


def made_venv(checkout: Path) -> None:
    """.venv as `make venv` leaves it: this venv's bin and lib, and a stamp newer than the
    checkout's requirements, so that `make pipeline` installs nothing."""
    venv = checkout / ".venv"
    venv.mkdir()
    for name in ("bin", "lib"):
        (venv / name).symlink_to(VENV_BIN.parent / name)
    shutil.copy(VENV_BIN.parent / "pyvenv.cfg", venv / "pyvenv.cfg")
    (venv / ".installed").touch()


@slow
def test_pr_workflow_steps_pull_the_authors_results_and_write_the_report(pr_repo, tmp_path):
    """A PR whose author pushed the results to the DVC remote: on a fresh checkout of the
    PR, the workflow's steps pull them, `make pipeline` runs no stage, and the report
    compares the PR with its base branch; the curves are where the upload step looks."""
    author = copy_repo(pr_repo[0], tmp_path / "author")  # branch pr: model.emb 20, committed
    dvc(author, "remote", "add", "-d", "storage", str(tmp_path / "store"))
    git(author, "commit", "-q", "-m", "DVC remote", "--", ".dvc/config")
    dvc(author, "push")
    origin = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", str(origin))
    git(author, "push", "-q", str(origin), "main", "pr")
    checkout = tmp_path / "checkout"  # actions/checkout with fetch-depth 0, on the PR
    git(tmp_path, "clone", "-q", "--branch", "pr", str(origin), str(checkout))
    made_venv(checkout)

    steps = [s for s in pr_workflow_steps() if "run" in s]
    assert {s["name"] for s in steps} >= set(OFFLINE)
    logs = {}
    for step in steps:
        if step["name"] not in OFFLINE:
            logs[step["name"]] = run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c",
                                      expand(step["run"])], checkout, timeout=600)
    everything = "".join(logs.values())
    assert (checkout / "data/model.pt").is_file() and "::warning::" not in everything
    assert ran_stages(everything) == [] and cached_stages(everything) == [], everything

    report = (checkout / "report.md").read_text(encoding="utf-8")
    assert report.startswith("# Pipeline report: `workspace` vs `origin/main`"), report
    assert re.search(r"\|\s*params\.yaml\s*\|\s*model\.emb\s*\|\s*16\s*\|\s*20\s*\|", report)
    before = eval_ppl(git(checkout, "show", "origin/main:metrics/eval.json"))
    after = eval_ppl((checkout / "metrics/eval.json").read_text())
    for old, new in zip(before, after):
        assert re.search(rf"\|\s*{old:g}\s*\|\s*{new:g}\s*\|", report), (old, new, report)
    assert "https://github.invalid/me/lstmlm/actions/runs/42" in report
    upload = next(s for s in pr_workflow_steps() if "upload-artifact" in s.get("uses", ""))
    assert (checkout / upload["with"]["path"] / "index.html").is_file()
    comment = next(s for s in steps if s["name"] == "Comment on the PR")
    body = re.search(r"--body-file (\S+)", comment["run"]).group(1)
    assert (checkout / body).read_text(encoding="utf-8") == report


def test_docs_show_the_exp_show_command_the_report_uses():
    import shlex

    docs = (ROOT / "docs/experiments.md").read_text(encoding="utf-8")
    assert "dvc " + shlex.join(load_pr_report().EXP_SHOW_ARGS) in docs
    for command in ("dvc exp run --queue", "dvc queue start", "dvc exp apply", "dvc exp branch",
                    "tools/pr_report.py", "docs/remote.md"):
        assert command in docs, command
