"""Params are parsed once into typed dataclasses; bad ones stop with a message naming the key."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lstmlm.params import ParamsError, check_cutoffs, parse_section, read_params

ROOT = Path(__file__).resolve().parents[1]


def test_project_params_yaml_parses_completely():
    params = read_params(ROOT / "params.yaml", "download", "tokenise", "model", "train",
                         "evaluate", "sample")
    assert params["model"].output in ("adaptive", "full")
    assert isinstance(params["train"].lr, float)


def test_every_dvc_yaml_param_exists_in_params_yaml():
    """A key listed in dvc.yaml but missing from params.yaml would fail the stage."""
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for stage in dvc["stages"].values():
        for key in stage.get("params", []):
            section, name = key.split(".")
            assert name in params[section], key


def test_each_params_section_key_is_listed_by_some_stage():
    """Per-key params in dvc.yaml: a key no stage lists would change nothing when set."""
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    listed = {k for stage in dvc["stages"].values() for k in stage.get("params", [])}
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for section in ("download", "tokenise", "model", "train", "evaluate", "sample"):
        for key in params[section]:
            assert f"{section}.{key}" in listed, f"{section}.{key}"


def test_params_yaml_sets_every_field_so_code_defaults_never_decide_a_run():
    """dvc.yaml tracks params.yaml, not params.py: a key left to its code default could
    change without DVC noticing."""
    import dataclasses

    from lstmlm.params import SECTIONS

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for section, cls in SECTIONS.items():
        assert set(params[section]) == {f.name for f in dataclasses.fields(cls)}, section


def test_yaml_exponent_without_dot_is_accepted_as_a_number():
    # PyYAML reads 1e-4 as the string "1e-4".
    assert parse_section("train", yaml.safe_load("lr: 1e-4")).lr == pytest.approx(1e-4)


BAD = [
    ("model", {"emb": -5}, r"model\.emb: -5 .*>= 1"),
    ("model", {"emb": 0}, r"model\.emb: 0"),
    ("model", {"emb": 1.5}, r"model\.emb: 1\.5 .*integer"),
    ("model", {"emb": "big"}, r"model\.emb: 'big'"),
    ("model", {"emb": True}, r"model\.emb: True"),
    ("model", {"dropout": 1.0}, r"model\.dropout: 1\.0 .*< 1"),
    ("model", {"dropout": -0.1}, r"model\.dropout: -0\.1"),
    ("model", {"dropout_input": 2}, r"model\.dropout_input: 2"),
    ("model", {"layers": 0}, r"model\.layers: 0"),
    ("model", {"output": "softmax"}, r"model\.output: 'softmax' .*'adaptive', 'full'"),
    ("model", {"cutoffs": [10000, 2000]}, r"model\.cutoffs: .*increasing"),
    ("model", {"cutoffs": []}, r"model\.cutoffs"),
    ("model", {"cutoffs": [0, 5]}, r"model\.cutoffs: .*positive"),
    ("model", {"cutoffs": "2000"}, r"model\.cutoffs: '2000' .*list"),
    ("model", {"tie_weights": True, "output": "adaptive"}, r"model\.tie_weights: .*full"),
    ("model", {"tie_weights": "yes"}, r"model\.tie_weights: 'yes' .*true or false"),
    ("model", {"hiden": 512}, r"model\.hiden: unknown key; did you mean 'model\.hidden'"),
    ("model", {"embedding_size": 3}, r"model\.embedding_size: unknown key"),
    ("train", {"bptt": 0}, r"train\.bptt: 0 .*>= 1"),
    ("train", {"optimizer": "adagrad"}, r"train\.optimizer: 'adagrad' .*'adam', 'adamw', 'sgd'"),
    ("train", {"optimiser": "adam"}, r"did you mean 'train\.optimizer'"),
    ("train", {"lr": 0}, r"train\.lr: 0 .*> 0"),
    ("train", {"lr": "fast"}, r"train\.lr: 'fast'"),
    ("train", {"lr": float("nan")}, r"train\.lr: nan"),
    ("train", {"batch_size": -1}, r"train\.batch_size: -1"),
    ("train", {"epochs": 2.5}, r"train\.epochs: 2\.5"),
    ("train", {"device": "tpu"}, r"train\.device: 'tpu'"),
    ("train", {"lr_factor": 1.0}, r"train\.lr_factor: 1\.0"),
    ("train", {"stateful": "no"}, r"train\.stateful: 'no'"),
    ("tokenise", {"scheme": "bpe"}, r"tokenise\.scheme: 'bpe'"),
    ("tokenise", {"min_freq": 0}, r"tokenise\.min_freq: 0"),
    ("sample", {"top_p": 0}, r"sample\.top_p: 0 .*> 0"),
    ("sample", {"top_p": 1.5}, r"sample\.top_p: 1\.5 .*<= 1"),
    ("sample", {"temperature": -1}, r"sample\.temperature: -1"),
    ("sample", {"top_k": -3}, r"sample\.top_k: -3"),
    ("sample", {"words": 0}, r"sample\.words: 0"),
    ("sample", {"prompts": ["ok", 3]}, r"sample\.prompts: .*strings"),
    ("evaluate", {"batch_size": 0}, r"evaluate\.batch_size: 0"),
]


@pytest.mark.parametrize("section, raw, message", BAD, ids=[f"{s}-{list(r)[0]}" for s, r, _ in BAD])
def test_bad_values_name_the_key_the_value_and_what_is_allowed(section, raw, message):
    with pytest.raises(ParamsError, match=message):
        parse_section(section, raw)


def test_cutoffs_beyond_the_vocabulary_are_rejected():
    with pytest.raises(ParamsError, match=r"model\.cutoffs: .*vocabulary size 100"):
        check_cutoffs([20, 100], 100)
    check_cutoffs([20, 99], 100)


def test_unknown_section_and_invalid_yaml(tmp_path):
    (tmp_path / "p.yaml").write_text("modle:\n  emb: 3\n")
    with pytest.raises(ParamsError, match="did you mean 'model'"):
        read_params(tmp_path / "p.yaml", "model")
    (tmp_path / "q.yaml").write_text("model: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        read_params(tmp_path / "q.yaml", "model")


def test_a_stage_with_a_bad_param_exits_2_and_leaves_outputs_untouched(tmp_path, tiny_corpus):
    (tmp_path / "params.yaml").write_text("tokenise:\n  scheme: wikitxt\n")
    vocab = tmp_path / "vocab.json"
    vocab.write_text("previous output")
    result = subprocess.run(
        [sys.executable, str(ROOT / "stages" / "tokenise.py"), "--raw", str(tiny_corpus),
         "--tokens", str(tmp_path / "tokens"), "--vocab", str(vocab)],
        cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 2
    assert "tokenise.scheme: 'wikitxt'" in result.stderr
    assert "Traceback" not in result.stderr
    assert vocab.read_text() == "previous output"
    assert not (tmp_path / "tokens").exists()
