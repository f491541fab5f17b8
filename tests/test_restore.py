"""`make restore` (tools/restore.py) in a real tiny DVC repository: it never drops what it
cannot bring back. Uncommitted params.yaml and metrics/ go to `git stash`; a committed
dvc.lock naming outputs this machine never had (another CPU's run) brings this machine's
own run of the same params back from the run-cache, or, when there is none, leaves the
outputs as they were. The restores from the cache and the remote: test_remote.py."""

from __future__ import annotations

import subprocess

import pytest
from helpers_dvc import assert_clean, built_tiny_repo, command_env, copy_repo, file_md5, git

from conftest import TINY_MODEL, TINY_TRAIN, write_tiny_corpus

pytestmark = pytest.mark.slow  # each test restores in a copy of the tiny pipeline
OUTPUTS = ("data/model.pt", "data/eval.json", "data/samples.md")


@pytest.fixture
def repo(tmp_path_factory, tmp_path):
    built, _ = built_tiny_repo(tmp_path_factory, TINY_MODEL, TINY_TRAIN, write_tiny_corpus)
    return copy_repo(built, tmp_path / "repo")


def restore(repo) -> tuple[bool, str]:
    """`make restore` in ``repo``: (whether it failed, its output)."""
    done = subprocess.run(["make", "restore"], cwd=repo, env=command_env(), text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
    return done.returncode != 0, done.stdout


def another_machines_lock(repo, **params) -> None:
    """Commit a dvc.lock whose train, evaluate and sample outputs are other bytes (as
    another CPU's bf16 run writes them), with ``params`` ({section: {key: value}}) set."""
    import yaml

    lock = (repo / "dvc.lock").read_text()
    stages = yaml.safe_load(lock)["stages"]
    for stage in ("train", "evaluate", "sample"):
        for out in stages[stage]["outs"]:
            lock = lock.replace(out["md5"], out["md5"][::-1].replace("rid.", "") +
                                (".dir" if out["md5"].endswith(".dir") else ""))
    (repo / "dvc.lock").write_text(lock)
    text = yaml.safe_load((repo / "params.yaml").read_text())
    for section, values in params.items():
        text[section].update(values)
    (repo / "params.yaml").write_text(yaml.safe_dump(text, sort_keys=False))
    git(repo, "commit", "-q", "-am", "another machine's results")


def test_edits_are_stashed_and_another_machines_outputs_give_this_machines_own_run(repo):
    """It reverted a hand edit of params.yaml and metrics/ without a word; and where the
    committed outputs are in no cache here (another CPU's run), it deleted the user's own
    model and failed ("failed to pull data/model.pt"), so `dvc repro` trained again."""
    own = {path: file_md5(repo / path) for path in OUTPUTS}
    another_machines_lock(repo)
    params = (repo / "params.yaml").read_text()
    (repo / "params.yaml").write_text(params.replace("words: 10", "words: 12"))
    (repo / "metrics" / "notes.md").write_text("my notes\n")
    failed, output = restore(repo)
    assert not failed and "kept in `git stash` (stash@{0}); `git stash pop` brings them back" \
        in output, output
    assert "restored this machine's own run of the params of HEAD from the run-cache" in output
    assert "Running stage 'train'" not in output
    assert {path: file_md5(repo / path) for path in OUTPUTS} == own
    assert (repo / "params.yaml").read_text() == params and not (repo / "metrics/notes.md").exists()
    assert_clean(repo)  # dvc.lock names the outputs there are (uncommitted)
    git(repo, "stash", "pop", "-q")
    assert "words: 12" in (repo / "params.yaml").read_text()
    assert (repo / "metrics" / "notes.md").read_text() == "my notes\n"


def test_without_a_run_of_those_params_the_outputs_are_left_as_they_were(repo):
    """No run of the committed params here either: nothing is deleted, nothing trained."""
    import yaml

    own = {path: file_md5(repo / path) for path in OUTPUTS}
    another_machines_lock(repo, model={"emb": 18})  # never trained here
    failed, output = restore(repo)
    assert failed and "train, evaluate, sample: this machine has no run of the params of " \
        "HEAD either; their outputs are left as they were" in output, output
    assert "Running stage" not in output
    assert {path: file_md5(repo / path) for path in OUTPUTS} == own
    assert set(yaml.safe_load((repo / "dvc.lock").read_text())["stages"]) == {
        "params", "download", "tokenise", "tensorise", "publish"}  # `dvc repro` trains
