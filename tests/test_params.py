"""Params: each section is its component's config class; bad values stop with a message
naming the key; the `params` stage checks the whole file before any stage runs."""

import dataclasses
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers_hostile import billion_laughs, self_sharing

from conftest import watching_torch
from lstmlm.core.params import ParamsError, parse_section, read_params
from lstmlm.data.tokenise import TokeniseConfig
from lstmlm.evaluate.config import EvaluateConfig
from lstmlm.generate.options import SamplingOptions
from lstmlm.model.config import ModelConfig
from lstmlm.train.schedule import TrainConfig
from stages.params import SECTIONS, read_all

ROOT = Path(__file__).resolve().parents[1]
CLASSES = {"model": ModelConfig, "train": TrainConfig, "tokenise": TokeniseConfig,
           "sample": SamplingOptions, "evaluate": EvaluateConfig}


def test_project_params_yaml_parses_completely():
    params = read_all(ROOT / "params.yaml")
    assert isinstance(params["model"], ModelConfig) and isinstance(params["train"].lr, float)
    assert params["prompts"] and all(isinstance(p, str) for p in params["prompts"])


def test_every_dvc_yaml_param_exists_in_params_yaml():
    """A key listed in dvc.yaml but missing from params.yaml would fail the stage."""
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for stage in dvc["stages"].values():
        for key in stage.get("params", []):
            section, _, name = key.partition(".")
            assert section in params and (not name or name in params[section]), key


def test_each_params_key_is_listed_by_some_stage():
    """A key no stage lists (itself or its whole section) would change nothing when set."""
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    listed = {k for stage in dvc["stages"].values() for k in stage.get("params", [])}
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for section, cls in SECTIONS.items():
        keys = [section] if cls is list else [f"{section}.{k}" for k in params[section]]
        unlisted = {k for k in keys if k not in listed and k.split(".")[0] not in listed}
        assert not unlisted, unlisted


def test_params_yaml_sets_every_field_so_code_defaults_never_decide_a_run():
    """dvc.yaml tracks params.yaml, not the code: a key left to its code default could
    change without DVC noticing."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for section, cls in SECTIONS.items():
        if cls is not list:
            assert set(params[section]) == {f.name for f in dataclasses.fields(cls)}, section


def test_code_defaults_equal_the_cpu_preset():
    """One place for defaults: the config classes' defaults are the committed params."""
    params = read_all(ROOT / "params.yaml")
    for section, cls in SECTIONS.items():
        if cls is not list:
            assert params[section] == cls(), section


def test_yaml_exponent_without_dot_is_accepted_as_a_number():
    # PyYAML reads 1e-4 as the string "1e-4".
    assert parse_section("train", yaml.safe_load("lr: 1e-4"), TrainConfig).lr == pytest.approx(1e-4)


BAD = [
    ("model", {"emb": -5}, r"model\.emb: -5 .*>= 1"),
    ("model", {"emb": 0}, r"model\.emb: 0"),
    ("model", {"emb": 1.5}, r"model\.emb: 1\.5 .*integer"),
    ("model", {"emb": 16.0}, r"model\.emb: 16\.0 .*integer"),
    ("model", {"emb": "big"}, r"model\.emb: 'big'"),
    ("model", {"emb": True}, r"model\.emb: True"),
    ("model", {"output_dropout": 1.0}, r"model\.output_dropout: 1\.0 .*< 1"),
    ("model", {"output_dropout": -0.1}, r"model\.output_dropout: -0\.1"),
    ("model", {"input_dropout": 2}, r"model\.input_dropout: 2"),
    ("model", {"layers": 0}, r"model\.layers: 0"),
    ("model", {"output": "softmax"}, r"model\.output: 'softmax' .*'adaptive', 'full'"),
    ("model", {"cutoffs": [10000, 2000]}, r"model\.cutoffs: .*increasing"),
    ("model", {"cutoffs": []}, r"model\.cutoffs"),
    ("model", {"cutoffs": [0, 5]}, r"model\.cutoffs: \[0, 5\] .*numbers > 0"),
    ("model", {"cutoffs": "2000"}, r"model\.cutoffs: '2000' .*list"),
    ("model", {"div_value": 8.0, "emb": 32, "hidden": 32}, r"model\.div_value: 8 .*width 0"),
    ("model", {"tie_weights": "yes"}, r"model\.tie_weights: 'yes' .*true or false"),
    ("model", {"hiden": 512}, r"model\.hiden: unknown key; did you mean 'model\.hidden'"),
    ("model", {"dropout": 0.1}, r"model\.dropout: unknown key; did you mean 'model\..*_dropout'"),
    ("model", {"embedding_size": 3}, r"model\.embedding_size: unknown key"),
    ("train", {"bptt": 0}, r"train\.bptt: 0 .*>= 1"),
    ("train", {"optimizer": "adagrad"}, r"train\.optimizer: 'adagrad' .*'adam', 'adamw', 'sgd'"),
    ("train", {"optimiser": "adam"}, r"did you mean 'train\.optimizer'"),
    ("train", {"lr": 0}, r"train\.lr: 0 .*> 0"),
    ("train", {"lr": "fast"}, r"train\.lr: 'fast'"),
    ("train", {"lr": float("nan")}, r"train\.lr: nan"),
    ("train", {"batch_size": -1}, r"train\.batch_size: -1"),
    ("train", {"epochs": 2.5}, r"train\.epochs: 2\.5"),
    ("train", {"epochs": "1e0"}, r"train\.epochs: '1e0' .*integer"),
    ("train", {"seed": 2 ** 70}, r"train\.seed: 1180591620717411303424 .*in \[0, 9223372036854775807\]"),
    ("train", {"device": "tpu"}, r"train\.device: 'tpu'"),
    ("train", {"lr_factor": 1.0}, r"train\.lr_factor: 1\.0"),
    ("train", {"stateful": "no"}, r"train\.stateful: 'no'"),
    ("train", {"averaging": "ema"}, r"train\.averaging: 'ema' .*'none', 'ntasgd', 'swa'"),
    ("tokenise", {"scheme": "bpe"}, r"tokenise\.scheme: 'bpe'"),
    ("tokenise", {"min_freq": 0}, r"tokenise\.min_freq: 0"),
    ("sample", {"top_p": 0}, r"sample\.top_p: 0 .*> 0"),
    ("sample", {"top_p": 1.5}, r"sample\.top_p: 1\.5 .*<= 1"),
    ("sample", {"temperature": -1}, r"sample\.temperature: -1"),
    ("sample", {"top_k": -3}, r"sample\.top_k: -3"),
    ("sample", {"words": 0}, r"sample\.words: 0"),
    ("sample", {"prompts": ["ok"]}, r"sample\.prompts: unknown key"),
    ("evaluate", {"batch_size": 0}, r"evaluate\.batch_size: 0"),
]


@pytest.mark.parametrize("section, raw, message", BAD, ids=[f"{s}-{list(r)[0]}" for s, r, _ in BAD])
def test_bad_values_name_the_key_the_value_and_what_is_allowed(section, raw, message):
    with pytest.raises(ParamsError, match=message):
        parse_section(section, raw, CLASSES[section])


def test_prompts_must_be_a_list_of_strings(tmp_path):
    for bad in ("prompts: hello\n", "prompts: [ok, 3]\n", "prompts: []\n"):
        (tmp_path / "p.yaml").write_text(bad)
        with pytest.raises(ParamsError, match="prompts: .*list of non-empty strings"):
            read_params(tmp_path / "p.yaml", prompts=list)


def test_cutoffs_beyond_the_vocabulary_are_rejected():
    config = ModelConfig(cutoffs=[20, 100])
    with pytest.raises(ValueError, match=r"model\.cutoffs: .*vocabulary size 100"):
        config.for_vocab(100)
    config.for_vocab(101)


def test_unknown_section_and_invalid_yaml(tmp_path):
    (tmp_path / "p.yaml").write_text("modle:\n  emb: 3\n")
    with pytest.raises(ParamsError, match="did you mean 'model'"):
        read_all(tmp_path / "p.yaml")  # the params stage's reading: every section
    (tmp_path / "q.yaml").write_text("model: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        read_params(tmp_path / "q.yaml", model=ModelConfig)


def test_a_stage_with_a_bad_param_exits_2_and_leaves_outputs_untouched(tmp_path, tiny_corpus):
    (tmp_path / "params.yaml").write_text("tokenise:\n  scheme: wikitxt\n")
    vocab = tmp_path / "vocab.json"
    vocab.write_text("previous output")
    result = subprocess.run(
        [sys.executable, "-m", "stages.tokenise", "--params", str(tmp_path / "params.yaml"),
         "--raw", str(tiny_corpus), "--tokens", str(tmp_path / "tokens"), "--vocab", str(vocab)],
        cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2
    assert "tokenise.scheme: 'wikitxt'" in result.stderr
    assert "Traceback" not in result.stderr
    assert vocab.read_text() == "previous output"
    assert not (tmp_path / "tokens").exists()


def test_a_yaml_alias_bomb_is_refused_at_once_in_one_short_line(tmp_path):
    """A "billion laughs" params.yaml: the params stage refused it by echoing the value,
    all 9**9 items of it (hours; at 5 levels a line of 3.8 MB). Aliases are refused as
    they are read, and any value echoed is shown bounded, however deep or shared."""
    (tmp_path / "params.yaml").write_text(billion_laughs(), encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "stages.params", "--params", str(tmp_path / "params.yaml"),
         "--conf", str(ROOT / "conf"), "--out", str(tmp_path / "ok")],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result.stderr[:500]
    assert "line 2, column 87: an alias (*l0) is not read here" in result.stderr

    from lstmlm.core.errors import shown

    shared = self_sharing(60)
    assert len(shown(shared)) <= 80 and len(shown({"deep": shared})) <= 80


def test_an_unknown_preset_or_an_alias_in_conf_is_one_line(tmp_path, monkeypatch):
    """`preset: mine` in params.yaml (no conf/preset/mine.yaml) was a 75-line Hydra
    traceback from the hand-edit check; an alias in conf/ would be expanded by Hydra."""
    from lstmlm.presets import compose
    from stages.params import warn_hand_edits

    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({**params, "preset": "mine"}))
    with pytest.raises(ParamsError) as caught:
        warn_hand_edits(tmp_path / "params.yaml", ROOT / "conf")
    assert str(caught.value).startswith("preset: 'mine' is not a preset of ")
    assert "the presets are: awd, cpu, cpu-15min, cpu-5min, gpu-fast, quick, seed, wt103" in str(
        caught.value)
    conf = shutil.copytree(ROOT / "conf", tmp_path / "conf")
    with open(conf / "config.yaml", "a", encoding="utf-8") as handle:
        handle.write("x: &x [1]\ny: *x\n")
    with pytest.raises(ParamsError, match="an alias \\(\\*x\\) is not read here"):
        compose(conf_dir=conf)


# --------------------------------------------------------------------------- the params stage


def run_params_stage(tmp_path, edit=None, env=None, start=("-m", "stages.params")):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    if edit:
        edit(params)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return subprocess.run(
        [sys.executable, *start, "--params", str(tmp_path / "params.yaml"),
         "--conf", str(ROOT / "conf"), "--vocab", str(tmp_path / "vocab.json"),
         "--out", str(tmp_path / "ok")], cwd=ROOT, capture_output=True, text=True,
        env={**__import__("os").environ, **(env or {})})


CHECKS = [
    (lambda p: p["model"].update(hiden=16), r"model\.hiden: unknown key; did you mean 'model\.hidden'"),
    (lambda p: p.update(modle=p.pop("model")), r"modle: unknown params section; did you mean 'model'"),
    (lambda p: p["train"].update(threads=100000), r"train\.threads: 100000 is not allowed"),
    (lambda p: p["train"].update(device="cuda"), r"train\.device: 'cuda' .*no CUDA device"),
    (lambda p: p["model"].update(hidden=10_000_000), r"model\.hidden: 10000000 needs too much memory: .* GiB"),
    (lambda p: p["model"].update(emb=1_000_000_000), r"model\.emb: 1000000000 needs too much memory"),
    (lambda p: p["train"].update(nproc=3, batch_size=4), r"train\.batch_size: 4 does not split over"),
    (lambda p: p["sample"].update(top_p=2.0), r"sample\.top_p: 2\.0"),
]


@pytest.mark.slow
@pytest.mark.parametrize("edit, message", CHECKS, ids=[m.split(":")[0] for _, m in CHECKS])
def test_params_stage_stops_on_any_bad_key_with_a_clear_message(tmp_path, edit, message):
    result = run_params_stage(tmp_path, edit)
    assert result.returncode == 2, result.stderr
    assert __import__("re").search(message, result.stderr), result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "ok").exists()


WATCHED_PARAMS_STAGE = ("-c", watching_torch("stages.params"))


@pytest.mark.slow
def test_params_stage_on_the_cpu_checks_memory_without_importing_torch(tmp_path):
    """Only torch knows whether CUDA is here, so `auto` imports it; `cpu` is checked
    without it (most of the stage's time), the memory check included."""
    on_cpu = run_params_stage(tmp_path, lambda p: p["train"].update(device="cpu"),
                              start=WATCHED_PARAMS_STAGE)
    assert on_cpu.returncode == 0, on_cpu.stderr
    assert on_cpu.stderr.splitlines()[-1] == "torch never imported", on_cpu.stderr
    too_big = run_params_stage(
        tmp_path, lambda p: (p["train"].update(device="cpu"), p["model"].update(hidden=10**7)),
        start=WATCHED_PARAMS_STAGE)
    assert too_big.returncode == 2, too_big.stderr
    assert "model.hidden: 10000000 needs too much memory" in too_big.stderr
    assert too_big.stderr.splitlines()[-1] == "torch never imported", too_big.stderr
    auto = run_params_stage(tmp_path, start=WATCHED_PARAMS_STAGE)
    assert auto.returncode == 0 and auto.stderr.splitlines()[-1] == "torch imported", auto.stderr


@pytest.mark.slow
def test_params_stage_passes_the_project_params_and_warns_about_hand_edits(tmp_path):
    result = run_params_stage(tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "ok").read_text() == "params checked\n"
    assert "warning" not in result.stderr
    edited = run_params_stage(tmp_path, lambda p: p["model"].update(emb=300))
    assert edited.returncode == 0
    assert "warning: params.yaml differs from conf/" in edited.stderr and "model.emb" in edited.stderr
    # Inside `dvc exp run` DVC composed the file itself: no warning.
    inside = run_params_stage(tmp_path, lambda p: p["model"].update(emb=300),
                              env={"DVC_EXP_NAME": "exp-1"})
    assert "warning" not in inside.stderr


# --------------------------------------------------------------------------- presets


def test_the_default_prompts_are_the_ones_own_text_replaces():
    from lstmlm.generate.prompts import DEFAULT_PROMPTS

    conf = yaml.safe_load((ROOT / "conf" / "config.yaml").read_text(encoding="utf-8"))
    assert tuple(conf["prompts"]) == DEFAULT_PROMPTS


def test_committed_params_yaml_is_the_cpu_preset():
    from lstmlm.presets import compose

    committed = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert committed == compose("cpu", conf_dir=ROOT / "conf") == compose(conf_dir=ROOT / "conf")
    assert committed["preset"] == "cpu"


def test_the_presets_the_readme_names_are_the_presets_there_are():
    """Every `preset=NAME` and every row of the README's preset table is a preset in conf/,
    and every preset in conf/ is in that table."""
    from lstmlm.presets import presets

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    named = set(re.findall(r"preset=([\w-]+)", readme))
    table = set(re.findall(r"^\| `([\w-]+)` \|", readme, flags=re.M))
    assert table and named
    assert named | table <= set(presets(ROOT / "conf"))
    assert table == set(presets(ROOT / "conf"))


@pytest.mark.parametrize("preset", sorted(p.stem for p in (ROOT / "conf" / "preset").glob("*.yaml")))
def test_each_preset_composes_into_valid_params(preset, tmp_path):
    from lstmlm.presets import compose, dump

    params = compose(preset, conf_dir=ROOT / "conf")
    assert params["preset"] == preset
    (tmp_path / "params.yaml").write_text(dump(params))
    read_all(tmp_path / "params.yaml")


# Keys that say where a recipe runs, not what it trains: a preset may leave them to the base.
MACHINE_KEYS = {"train.device", "train.threads", "train.nproc"}


def training_choices(params: dict) -> dict:
    """The tokenise, model and train keys of composed params, but the machine's."""
    return {f"{section}.{key}": value for section in ("tokenise", "model", "train")
            for key, value in params[section].items()
            if f"{section}.{key}" not in MACHINE_KEYS}


@pytest.mark.parametrize("preset", sorted(p.stem for p in (ROOT / "conf" / "preset").glob("*.yaml")
                                          if p.stem != "cpu"))
def test_a_change_of_the_defaults_cannot_change_a_preset(preset, tmp_path):
    """Every training choice of a recipe is stated in its own file: with every default in
    conf/config.yaml replaced, the recipe composes to the same training params."""
    from lstmlm.presets import compose

    conf = tmp_path / "conf"
    shutil.copytree(ROOT / "conf", conf)
    base = yaml.safe_load((conf / "config.yaml").read_text())
    for section in ("tokenise", "model", "train"):
        base[section] = {key: "changed-default" for key in base[section]}
    (conf / "config.yaml").write_text(yaml.safe_dump(base, sort_keys=False))
    changed = training_choices(compose(preset, conf_dir=conf))
    assert changed == training_choices(compose(preset, conf_dir=ROOT / "conf"))
    assert "changed-default" not in changed.values()


def test_seed_preset_is_exactly_the_seed_notebook_recipe():
    from lstmlm.presets import compose

    seed = compose("seed", conf_dir=ROOT / "conf")
    recipe = {
        "tokenise": {"scheme": "basic_english"},
        "model": {"emb": 800, "hidden": 512, "layers": 2, "input_dropout": 0.65,
                  "layer_dropout": 0.65, "output_dropout": 0.65, "word_dropout": 0.0,
                  "weight_dropout": 0.0, "output": "full", "tie_weights": False},
        "train": {"optimizer": "adam", "lr": 1.0e-3, "batch_size": 128, "bptt": 50,
                  "stateful": False, "variable_bptt": False, "epochs": 50, "schedule": "plateau",
                  "averaging": "none", "activation_reg": 0.0, "temporal_activation_reg": 0.0},
    }
    for section, values in recipe.items():
        for key, value in values.items():
            assert seed[section][key] == value, f"{section}.{key}"


def test_presets_command_answers_help_and_unknown_names_without_a_traceback():
    def presets_command(*args):
        return subprocess.run([sys.executable, "-m", "lstmlm.presets", *args], cwd=ROOT,
                              capture_output=True, text=True, timeout=120)

    helped = presets_command("--help")
    assert helped.returncode == 0 and "usage:" in helped.stdout
    assert all(name in helped.stdout for name in ("cpu", "seed", "awd", "gpu-fast", "wt103",
                                                  "quick"))
    for args in (("sed",), ("seed", "download.corpus=~/café.txt")):
        failed = presets_command(*args)
        assert failed.returncode == 2 and "usage:" in failed.stderr, failed.stderr
        assert "Traceback" not in failed.stderr
    assert "the presets are: awd, cpu, cpu-15min, cpu-5min, gpu-fast, quick, seed, wt103" in presets_command("sed").stderr
    assert "quoted" in presets_command("seed", "download.corpus=~/café.txt").stderr
    assert yaml.safe_load(presets_command("gpu_fast").stdout)["preset"] == "gpu-fast"
    misspelt = presets_command("cpu", "model.hiden=3")  # a name, not quoting, is the fault
    assert misspelt.returncode == 2 and "quoted" not in misspelt.stderr
    assert "model.hiden: unknown key; did you mean 'model.hidden'" in misspelt.stderr
    printed = presets_command("seed", "model.emb=64", "download.corpus='~/café.txt'")
    assert printed.returncode == 0, printed.stderr
    composed = yaml.safe_load(printed.stdout)
    assert composed["model"]["emb"] == 64 and composed["download"]["corpus"] == "~/café.txt"


def test_awd_preset_is_the_papers_recipe():
    from lstmlm.presets import compose

    awd = compose("awd", conf_dir=ROOT / "conf")
    m, t = awd["model"], awd["train"]
    assert (m["layers"], m["hidden"], m["emb"], m["tie_weights"], m["weight_dropout"]) == (3, 1150, 400, True, 0.5)
    assert (m["output_dropout"], m["layer_dropout"], m["input_dropout"], m["word_dropout"]) == (0.4, 0.3, 0.65, 0.1)
    assert (t["variable_bptt"], t["bptt"], t["batch_size"], t["optimizer"], t["lr"]) == (True, 70, 80, "sgd", 30.0)
    assert (t["averaging"], t["activation_reg"], t["temporal_activation_reg"]) == ("ntasgd", 2.0, 1.0)
    assert (t["weight_decay"], t["clip"], t["epochs"]) == (1.2e-6, 0.25, 750)


def test_dvc_composes_with_hydra():
    config = (ROOT / ".dvc" / "config").read_text()
    assert "[hydra]" in config and "enabled = true" in config
