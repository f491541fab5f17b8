"""Files as a revision holds them, for comparing runs: the workspace, a git revision (a
branch, a commit, a tag) or a DVC experiment by its name (git keeps experiments as refs
under refs/exps), read with git alone. `make plots` draws several revisions' curves with
it (lstmlm.plots); tools/compare.py and tools/pr_report.py read metrics with it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from lstmlm.core.errors import LstmlmError

WORKSPACE = "workspace"  # the files on disk, as `dvc plots diff` names them


def commit_of(rev: str) -> str | None:
    """The commit of a git revision or of a DVC experiment's name; None if neither."""
    proc = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    if proc.returncode == 0:
        return proc.stdout.strip()
    refs = subprocess.run(["git", "for-each-ref", "--format=%(refname) %(objectname)",
                           "refs/exps"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                          text=True).stdout
    for line in refs.splitlines():
        name, _, sha = line.partition(" ")
        if name.rsplit("/", 1)[-1] == rev:
            return sha
    return None


def read_at(rev: str | None, path: str | Path) -> str | None:
    """A file's text at a revision (None or "workspace": on disk, relative to the current
    folder); None where it has no such file. An unknown revision is a LstmlmError."""
    if rev is None or rev == WORKSPACE:
        file = Path(path)
        return file.read_text(encoding="utf-8") if file.is_file() else None
    commit = commit_of(rev)
    if commit is None:
        raise LstmlmError(f"unknown revision {rev!r}: not a git revision nor an experiment "
                          "of this repository (`dvc exp list` names them)")
    proc = subprocess.run(["git", "show", f"{commit}:{Path(path).as_posix()}"],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    return proc.stdout if proc.returncode == 0 else None
