"""Results that travel between machines, against real servers on 127.0.0.1 (OpenSSH's sshd;
moto's S3 server): the GPU box trains and pushes, a laptop pulls and reuses, nobody trains
twice (docs/remote.md).

The box is a copy of the tiny pipeline (helpers_dvc) with a bare git repository as
`origin` and the server as its default DVC remote. It pushes main's results (`dvc push`),
runs two experiments and sends them with the one command docs/remote.md names,
`dvc exp push origin --run-cache`, then registers the model (`gto register lstmlm`). Each
laptop is a fresh `git clone` of origin, with the credentials in its .dvc/config.local.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from helpers_dvc import (
    ROOT,
    assert_clean,
    built_tiny_repo,
    cached_stages,
    copy_repo,
    dvc,
    exp_commit,
    file_md5,
    git,
    locked_outs,
    ran_stages,
    read_params,
    run,
)
from helpers_servers import Remote, s3_remote, ssh_remote, start_moto, start_sshd, stop

from conftest import TINY_MODEL, TINY_TRAIN, write_tiny_corpus

slow = pytest.mark.slow  # every test that starts servers and runs the pipeline
KINDS = ["ssh", "s3"]
COSTLY = {"train", "evaluate", "sample"}  # stages that load or train a model
EMBS = (18, 20)  # the box's experiments: model.emb (main has 16)


@dataclass
class Box:
    repo: Path
    origin: Path  # the bare git repository both machines share
    remote: Remote
    exps: dict[int, str]  # model.emb -> experiment name


# --------------------------------------------------------------------------- the servers


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """kind -> Remote, each server started on first use and stopped with the module."""
    started, procs = {}, []

    def get(kind: str) -> Remote:
        if kind not in started:
            if kind == "ssh":
                directory = tmp_path_factory.mktemp("sshd")
                proc, port = start_sshd(directory)
                procs.append(proc)
                started[kind] = ssh_remote(directory, port)
            else:
                proc, endpoint = start_moto(tmp_path_factory.mktemp("moto"))
                procs.append(proc)
                started[kind] = s3_remote(endpoint)
        return started[kind]

    yield get
    for proc in procs:
        stop(proc)


def machine_settings(remote: Remote) -> dict[str, str]:
    """What each machine keeps in .dvc/config.local (never committed): the credentials; for
    S3 also the URL and endpoint, since the committed remote is the SSH one (the same
    project with its remote moved to S3 on these machines)."""
    if remote.kind == "ssh":
        return remote.credentials
    return {"url": remote.url, **remote.config, **remote.credentials}


def configure(repo: Path, remote: Remote) -> None:
    for key, value in machine_settings(remote).items():
        dvc(repo, "remote", "modify", "--local", "box", key, value)


def remote_config_args(remote: Remote) -> list[str]:
    """The remote's settings for a command that clones the repo (no config.local there)."""
    return ["--remote-config", *(f"{k}={v}" for k, v in machine_settings(remote).items())]


# --------------------------------------------------------------------------- the box


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return built_tiny_repo(tmp_path_factory, TINY_MODEL, TINY_TRAIN, write_tiny_corpus)[0]


@pytest.fixture(scope="module")
def ssh_box(built, servers, tmp_path_factory) -> Box:
    """The box as docs/remote.md has it, its remote on the sshd."""
    remote, tmp = servers("ssh"), tmp_path_factory.mktemp("ssh")
    repo, origin = copy_repo(built, tmp / "box"), tmp / "origin.git"
    git(tmp, "-c", "init.defaultBranch=main", "init", "-q", "--bare", str(origin))
    git(repo, "remote", "add", "origin", str(origin))
    dvc(repo, "remote", "add", "-d", "box", remote.url)
    git(repo, "commit", "-q", "-m", "DVC remote: the box", "--", ".dvc/config")
    configure(repo, remote)
    git(repo, "push", "-q", "origin", "main")
    dvc(repo, "push")  # main's results
    exps = {}
    for emb in EMBS:
        exps[emb] = f"emb{emb}"
        dvc(repo, "exp", "run", "-n", exps[emb], "-S", f"model.emb={emb}")
    dvc(repo, "exp", "push", "origin", "--run-cache")  # every experiment of HEAD
    run(["gto", "register", "lstmlm"], repo)  # the tag lstmlm@v0.0.1 on main
    git(repo, "push", "-q", "origin", "lstmlm@v0.0.1")
    return Box(repo, origin, remote, exps)


@pytest.fixture(scope="module")
def boxes(ssh_box, servers, tmp_path_factory):
    """kind -> Box. The S3 box is a copy of the SSH box (same commits, experiments and
    caches; no second training) whose remote is moved to moto's S3 by --local settings;
    it pushes the same way, main's results included (`--all-branches`)."""
    made = {"ssh": ssh_box}

    def get(kind: str) -> Box:
        if kind not in made:
            remote, tmp = servers(kind), tmp_path_factory.mktemp(kind)
            repo = copy_repo(ssh_box.repo, tmp / "box")
            origin = shutil.copytree(ssh_box.origin, tmp / "origin.git")
            git(repo, "remote", "set-url", "origin", str(origin))
            (repo / ".dvc" / "config.local").unlink()  # the SSH box's key settings
            configure(repo, remote)
            dvc(repo, "push", "--all-branches")
            dvc(repo, "exp", "push", "origin", "--run-cache")
            made[kind] = Box(repo, origin, remote, ssh_box.exps)
        return made[kind]

    return get


def laptop(box: Box, where: Path) -> Path:
    """A fresh clone of origin: no DVC cache, only this machine's settings added."""
    git(where.parent, "clone", "-q", str(box.origin), str(where))
    configure(where, box.remote)
    return where


def at_exp(box: Box, emb: int, path: str) -> str:
    """A git-tracked file as the box's experiment with ``model.emb`` left it."""
    return git(box.repo, "show", f"{exp_commit(box.repo, box.exps[emb])}:{path}")


def main_outs(box: Box) -> dict[str, str]:
    return locked_outs(box.repo, "main")


# --------------------------------------------------------------------------- the box's push


def stored_md5s(remote: Remote, files: set[str], md5: str) -> set[str]:
    """An object and, for a folder (".dir"), its files: those missing from the remote."""
    path = f"files/md5/{md5[:2]}/{md5[2:]}"
    if path not in files:
        return {path}
    if not md5.endswith(".dir"):
        return set()
    entries = json.loads(remote.read(path))
    return {p for e in entries for p in [f"files/md5/{e['md5'][:2]}/{e['md5'][2:]}"]
            if p not in files}


@slow
@pytest.mark.parametrize("kind", KINDS)
def test_the_box_push_stores_every_output_and_run_cache_entry(kind, boxes):
    """What `dvc push` (main) and `dvc exp push origin --run-cache` (both experiments) put
    in the remote: every output object of main and of each experiment, and run-cache
    entries for every train, evaluate and sample run, whose outputs are all stored."""
    box = boxes(kind)
    files = box.remote.files()
    commits = {"main": "main", **{n: exp_commit(box.repo, n) for n in box.exps.values()}}
    models = {}
    for name, rev in commits.items():
        outs = locked_outs(box.repo, rev)
        data_outs = {p: m for p, m in outs.items() if p.startswith("data/")}
        assert {"data/model.pt", "data/train-log", "data/eval.json"} <= set(data_outs)
        missing = set().union(*(stored_md5s(box.remote, files, m) for m in data_outs.values()))
        assert not missing, f"{name}: not in the remote: {sorted(missing)}"
        models[name] = outs["data/model.pt"]
    assert len(set(models.values())) == 3  # three different models

    entries = [yaml.safe_load(box.remote.read(p)) for p in files if p.startswith("runs/")]
    by_stage: dict[str, list[dict]] = {}
    for entry in entries:
        stage = entry["cmd"].split("python -m stages.", 1)[1].split()[0]
        by_stage.setdefault(stage, []).append({o["path"]: o["md5"] for o in entry["outs"]})
    assert {o["data/model.pt"] for o in by_stage["train"]} == set(models.values())
    for stage in COSTLY:  # a run-cache entry is restorable only when all its outputs are
        for outs in by_stage[stage]:
            assert not set().union(*(stored_md5s(box.remote, files, m) for m in outs.values()))


# --------------------------------------------------------------------------- a laptop


@slow
def test_a_fresh_clone_pulls_and_repro_runs_nothing(ssh_box, tmp_path):
    box = ssh_box
    clone = laptop(box, tmp_path / "laptop")
    assert not (clone / "data").exists()
    dvc(clone, "pull")
    output = dvc(clone, "repro")
    assert ran_stages(output) == [] and cached_stages(output) == [], output
    assert file_md5(clone / "data/model.pt") == main_outs(box)["data/model.pt"]
    assert_clean(clone)


@slow
@pytest.mark.parametrize("kind", KINDS)
def test_exp_run_on_a_fresh_clone_with_the_box_params_trains_nothing(kind, boxes, tmp_path):
    """`dvc exp run --pull` with params the box ran: the run-cache entries and their outputs
    come from the remote; train, evaluate and sample are restored, not run."""
    box = boxes(kind)
    clone = laptop(box, tmp_path / "laptop")
    output = dvc(clone, "exp", "run", "--pull", "-S", f"model.emb={EMBS[0]}")
    assert "Stage 'train' is cached - skipping run, checking out outputs" in output, output
    assert COSTLY <= set(cached_stages(output)), output
    assert not COSTLY & set(ran_stages(output)), output
    assert file_md5(clone / "data/model.pt") == \
        locked_outs(box.repo, exp_commit(box.repo, box.exps[EMBS[0]]))["data/model.pt"]
    for path in ("metrics/eval.json", "metrics/train/metrics.json", "metrics/samples.md"):
        assert (clone / path).read_text(encoding="utf-8") == at_exp(box, EMBS[0], path), path


def generate_from(model: Path, where: Path) -> str:
    """`python -m lstmlm generate --model MODEL` run in ``where``, away from any repo."""
    where.mkdir(parents=True, exist_ok=True)
    return run(["python", "-m", "lstmlm", "generate", "--model", str(model), "--words", "6",
                "--seed", "1", "the cat"], where, timeout=120)


@slow
def test_experiments_travel_through_a_bare_git_repository_and_back_to_main(ssh_box, tmp_path):
    """`dvc exp pull` brings an experiment's params, metrics and model; `dvc exp apply`
    puts them in the workspace with nothing to run; its model.pt alone, copied anywhere,
    generates; `make restore` brings main's results back through `dvc pull` (the clone's
    cache holds only the experiment's)."""
    box = ssh_box
    clone = laptop(box, tmp_path / "laptop")
    name = box.exps[EMBS[1]]
    dvc(clone, "exp", "pull", "origin", name)
    shown = {rev["name"]: rev["data"] for row in json.loads(dvc(clone, "exp", "show", "--json"))
             for exp in row.get("experiments") or [] for rev in exp["revs"]}
    assert shown[name]["params"]["params.yaml"]["data"]["model"]["emb"] == EMBS[1]
    assert shown[name]["metrics"]["metrics/eval.json"]["data"] == \
        json.loads(at_exp(box, EMBS[1], "metrics/eval.json"))

    dvc(clone, "exp", "apply", name)
    assert read_params(clone)["model"]["emb"] == EMBS[1]
    assert (clone / "metrics/eval.json").read_text() == at_exp(box, EMBS[1], "metrics/eval.json")
    assert file_md5(clone / "data/model.pt") == \
        locked_outs(box.repo, exp_commit(box.repo, name))["data/model.pt"]
    assert_clean(clone)  # results and params agree: nothing to rerun

    lone = tmp_path / "elsewhere" / "model.pt"
    lone.parent.mkdir()
    shutil.copy(clone / "data/model.pt", lone)
    assert generate_from(lone, tmp_path / "cwd").startswith("the cat")

    output = run(["make", "restore"], clone)
    assert "Running stage" not in output
    assert read_params(clone)["model"]["emb"] == TINY_MODEL["emb"]
    assert file_md5(clone / "data/model.pt") == main_outs(box)["data/model.pt"]
    assert (clone / "metrics/eval.json").read_text() == git(clone, "show", "main:metrics/eval.json")
    assert_clean(clone)
    assert git(clone, "status", "--porcelain") == ""


@slow
def test_restore_after_two_exp_runs_from_the_local_cache(ssh_box, tmp_path):
    """The box ran two experiments; `make restore` brings main's params, model and metrics
    back from its own cache (the remote made unreachable), training nothing."""
    box = ssh_box
    repo = copy_repo(box.repo, tmp_path / "box")
    assert read_params(repo)["model"]["emb"] == EMBS[-1]  # the last experiment's results
    assert file_md5(repo / "data/model.pt") != main_outs(box)["data/model.pt"]
    dvc(repo, "remote", "modify", "--local", "box", "url", "ssh://127.0.0.1:1/nowhere")
    output = run(["make", "restore"], repo)
    assert "Running stage" not in output
    assert file_md5(repo / "data/model.pt") == main_outs(box)["data/model.pt"]
    for path in ("params.yaml", "dvc.lock", "metrics/eval.json", "metrics/train/metrics.json"):
        assert (repo / path).read_text(encoding="utf-8") == git(repo, "show", f"main:{path}")
    assert_clean(repo)
    assert git(repo, "status", "--porcelain") == ""


# --------------------------------------------------------------------------- the registry


@slow
@pytest.mark.parametrize("kind", KINDS)
def test_the_registered_model_downloads_into_an_empty_directory_and_generates(
        kind, boxes, tmp_path):
    """`dvc artifacts get ORIGIN lstmlm` (dvc.yaml's artifacts: section, version tagged by
    gto) clones the repo and downloads the model through its DVC remote."""
    box = boxes(kind)
    dest = tmp_path / "project"
    dest.mkdir()
    run(["dvc", "artifacts", "get", str(box.origin), "lstmlm", "-o", "model.pt",
         *remote_config_args(box.remote)], dest)
    assert sorted(p.name for p in dest.iterdir()) == ["model.pt"]
    assert file_md5(dest / "model.pt") == main_outs(box)["data/model.pt"]
    assert generate_from(dest / "model.pt", dest).startswith("the cat")


def test_docs_show_the_commands_these_tests_run():
    docs = (ROOT / "docs/remote.md").read_text(encoding="utf-8")
    for command in ("dvc remote add -d box ssh://", "dvc remote modify --local box keyfile",
                    "dvc push", "dvc exp push origin --run-cache", "dvc pull",
                    "dvc exp pull origin", "dvc exp show", "dvc exp apply",
                    "dvc exp run --pull -S", "make restore", "gto register lstmlm",
                    "dvc artifacts get", "python -m lstmlm generate --model model.pt"):
        assert command in docs, command
