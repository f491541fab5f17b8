"""Helpers for the DVC workflow tests: a throw-away git + DVC copy of the project that runs
the real pipeline (dvc.yaml, stages/, lstmlm/) on the tiny corpus with tiny params.

Every command runs with the project's venv first on PATH (so the stages' ``python`` and
``dvc`` are the venv's) and with ``PYTHONPATH=.``: the stages then import ``lstmlm`` from the
repo they run in (the temp copy, or a queued experiment's own copy) rather than from the
editable install, which points at the main checkout. LSTMLM_TEST_REV=HEAD takes the
tracked project files as committed rather than from the working tree.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent

# What a pipeline run needs; copied rather than `git ls-files` so that other people's
# half-written files in the working tree stay out of the temp repos.
PROJECT_FILES = ("dvc.yaml", "params.yaml", ".dvcignore", ".gitignore", ".dvc/config",
                 ".dvc/.gitignore", "Makefile", "requirements.txt", "pyproject.toml")
PROJECT_DIRS = ("stages", "lstmlm", "tools", "conf")
STAGES = ("params", "download", "tokenise", "tensorise", "train", "evaluate", "sample", "publish")


class CommandError(RuntimeError):
    pass


def command_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = "."
    env["DVC_NO_ANALYTICS"] = "1"
    env.pop("WIKITEXT_DIR", None)
    env.pop("DVCLIVE_TEST", None)  # it would send the train stage's dvclive files elsewhere
    env.pop("DVC_STUDIO_TOKEN", None)  # `dvc exp push` and `dvc artifacts get` stay local
    for key in ("GIT_AUTHOR", "GIT_COMMITTER"):
        env[f"{key}_NAME"] = "lstmlm tests"
        env[f"{key}_EMAIL"] = "tests@example.invalid"
    return env


def run(args: list[str] | str, cwd: Path, check: bool = True, timeout: float = 300) -> str:
    """Runs a command; returns stdout and stderr together (DVC logs to both)."""
    if isinstance(args, str):
        args = args.split()
    proc = subprocess.run(args, cwd=cwd, env=command_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise CommandError(f"`{' '.join(map(str, args))}` in {cwd} exited {proc.returncode}:\n"
                           f"{proc.stdout}")
    return proc.stdout


def dvc(cwd: Path, *args: str, check: bool = True, timeout: float = 300) -> str:
    return run(["dvc", *args], cwd, check=check, timeout=timeout)


def git(cwd: Path, *args: str, check: bool = True) -> str:
    return run(["git", *args], cwd, check=check, timeout=60)


def ran_stages(output: str) -> list[str]:
    """Stages whose command ran, in order."""
    return re.findall(r"Running stage '([\w-]+)'", output)


def cached_stages(output: str) -> list[str]:
    """Stages restored from the run-cache instead of running."""
    return re.findall(r"Stage '([\w-]+)' is cached - skipping run", output)


def unchanged_stages(output: str) -> list[str]:
    return re.findall(r"Stage '([\w-]+)' didn't change, skipping", output)


def read_params(repo: Path) -> dict:
    return yaml.safe_load((repo / "params.yaml").read_text(encoding="utf-8"))


def set_params(repo: Path, updates: dict) -> None:
    """Merges ``{section: {key: value}}`` (or ``{section: [list]}``) into the repo's
    params.yaml and into conf/config.yaml, which `dvc exp run -S` composes params.yaml
    from, so that experiments start from the same values."""
    for path in (repo / "params.yaml", repo / "conf" / "config.yaml"):
        params = yaml.safe_load(path.read_text(encoding="utf-8"))
        for section, values in updates.items():
            if isinstance(values, dict):
                params.setdefault(section, {}).update(values)
            else:
                params[section] = values
        path.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")


def copy_project(dest: Path) -> Path:
    dest.mkdir(parents=True)
    for name in PROJECT_FILES:
        if (ROOT / name).exists():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    for name in PROJECT_DIRS:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, dest / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    rev = os.environ.get("LSTMLM_TEST_REV")
    if rev:
        # Tracked files as committed at `rev` (e.g. HEAD) over the working tree's: for when
        # others' half-done edits are in the tree. Untracked files (new ones) stay as they are.
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", rev, "--",
                                  *PROJECT_FILES, *PROJECT_DIRS], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, check=False)
        if archive.returncode != 0:  # a path not in `rev`: take them one by one
            names = subprocess.run(["git", "-C", str(ROOT), "ls-tree", "-r", "--name-only", rev],
                                   stdout=subprocess.PIPE, text=True, check=True).stdout.split()
            wanted = [n for n in names if n in PROJECT_FILES or n.split("/")[0] in PROJECT_DIRS]
            archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", rev,
                                      "--", *wanted], stdout=subprocess.PIPE, check=True)
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            tar.extractall(dest, filter="data")
    with open(dest / ".gitignore", "a", encoding="utf-8") as fh:
        fh.write("\n/out/\n")  # where the tests render plots and reports
    return dest


def build_tiny_repo(dest: Path, tiny_model: dict, tiny_train: dict, write_corpus) -> str:
    """A committed git + DVC repo on branch main whose pipeline has run; returns the
    output of that `dvc repro`."""
    copy_project(dest)
    write_corpus(dest / "corpus")
    set_params(dest, {"download": {"corpus": "corpus"}, "model": tiny_model,
                      "train": tiny_train, "sample": {"words": 10}})
    return commit_and_repro(dest, "tiny project")


def commit_and_repro(dest: Path, message: str) -> str:
    """A project copy made a git + DVC repo on branch main, committed, its pipeline run and
    the results committed; returns the output of that `dvc repro`."""
    git(dest, "-c", "init.defaultBranch=main", "init", "-q")
    if not (dest / ".dvc" / "config").exists():
        dvc(dest, "init", "-q")
    git(dest, "add", "-A")
    git(dest, "commit", "-q", "-m", message)
    output = dvc(dest, "repro")
    git(dest, "add", "-A")
    git(dest, "commit", "-q", "-m", "pipeline results")
    return output


_BUILT: dict[str, tuple[Path, str]] = {}


def built_tiny_repo(tmp_path_factory, tiny_model: dict, tiny_train: dict,
                    write_corpus) -> tuple[Path, str]:
    """(repo, output of its first `dvc repro`): build_tiny_repo once per test session,
    shared by every module that asks (tests copy it with copy_repo)."""
    if "main" not in _BUILT:
        repo = tmp_path_factory.mktemp("dvc") / "built"
        _BUILT["main"] = repo, build_tiny_repo(repo, tiny_model, tiny_train, write_corpus)
    return _BUILT["main"]


def copy_repo(src: Path, dest: Path) -> Path:
    """A copy of a built repo, DVC cache and run-cache included (not .dvc/tmp: locks,
    queue state)."""
    def ignore(directory, names):
        return {"tmp"} if Path(directory) == src / ".dvc" else set()

    shutil.copytree(src, dest, symlinks=True, ignore=ignore)
    return dest


def assert_clean(repo: Path) -> None:
    status = dvc(repo, "status")
    assert "Data and pipelines are up to date." in status, status


def exp_commit(repo: Path, name: str) -> str:
    """The commit of the experiment ``name`` (refs/exps/…/name)."""
    for line in git(repo, "for-each-ref", "--format=%(refname) %(objectname)",
                    "refs/exps").splitlines():
        ref, _, sha = line.partition(" ")
        if ref.rsplit("/", 1)[-1] == name:
            return sha
    raise AssertionError(f"no experiment {name!r} in {repo}")


def locked_outs(repo: Path, rev: str) -> dict[str, str]:
    """path -> md5 of every stage output in dvc.lock at ``rev`` (".dir" ends a folder's)."""
    lock = yaml.safe_load(git(repo, "show", f"{rev}:dvc.lock"))
    return {out["path"]: out["md5"] for stage in lock["stages"].values()
            for out in stage.get("outs", [])}


def file_md5(path: Path) -> str:
    import hashlib

    return hashlib.md5(path.read_bytes()).hexdigest()


def wait_for_queue(repo: Path, names: list[str], timeout: float = 300) -> str:
    """`dvc queue status` once every queued experiment in ``names`` has ended (Success or
    Failed). Not "no Queued or Running left": while a worker takes a task, DVC's listing can
    show it in neither."""
    deadline = time.monotonic() + timeout
    while True:
        status = dvc(repo, "queue", "status")
        ended = {line.split()[1] for line in status.splitlines()
                 if len(line.split()) > 1 and re.search(r"\b(Success|Failed)\b", line)}
        if set(names) <= ended:
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"queue not done after {timeout:.0f}s:\n{status}")
        time.sleep(3)  # each `dvc queue status` costs about a second of CPU
