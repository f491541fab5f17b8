"""Nothing lost when DVC deletes a stage's outputs before the stage fails: the error is one
line that names `dvc checkout`, and `dvc checkout` brings the outputs back.

DVC deletes a stage's outputs before running it, and `dvc repro -s STAGE` runs no check
stage first, so a bad param or a full disk is found only once the outputs are gone. Real
`dvc repro` runs on the tiny pipeline. The full disk is real too: data/ on a tmpfs that
holds a copy of it and hardly a byte more, mounted in a private mount namespace
(`unshare`), so that the test's own data/ is left as it was.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers_dvc import built_tiny_repo, command_env, copy_repo, dvc, set_params

from conftest import TINY_MODEL, TINY_TRAIN, write_tiny_corpus

slow = pytest.mark.slow
# Room left on the full disk: a page for the training run's lock file, less than any
# output the tested stages write.
SLACK_BYTES = 8192


@pytest.fixture
def repo(tmp_path_factory, tmp_path) -> Path:
    """A copy of the tiny project whose pipeline has run and been committed."""
    built, _ = built_tiny_repo(tmp_path_factory, TINY_MODEL, TINY_TRAIN, write_tiny_corpus)
    return copy_repo(built, tmp_path / "repo")


def error_line(output: str) -> str:
    """The one line the stage printed as its error."""
    lines = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, output
    return lines[0]


@slow
def test_a_bad_param_under_repro_of_one_stage_names_dvc_checkout_which_restores(repo):
    model = repo / "data" / "model.pt"
    trained = model.read_bytes()
    set_params(repo, {"train": {"lr": 0}})
    output = dvc(repo, "repro", "-s", "train", check=False)
    line = error_line(output)
    assert "train.lr: 0 is not allowed" in line, output
    assert "`dvc checkout train` restores" in line, output
    assert "Traceback" not in output
    assert not model.exists()  # DVC deleted it before the stage could check its params
    dvc(repo, "checkout", "train")
    assert model.read_bytes() == trained


def unshare_prefix() -> list[str]:
    """How this user gets a private mount namespace: root directly, others as root of a
    user namespace of their own; skips the test where neither is allowed."""
    prefix = (["unshare", "--mount"] if os.geteuid() == 0
              else ["unshare", "--user", "--map-root-user", "--mount"])
    probe = subprocess.run([*prefix, "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
                           capture_output=True, text=True) if shutil.which("unshare") else None
    if probe is None or probe.returncode != 0:
        reason = "no unshare" if probe is None else probe.stderr.strip()
        if os.environ.get("CI"):
            pytest.fail(f"cannot mount a small tmpfs here ({reason})")
        pytest.skip(f"cannot mount a small tmpfs here ({reason})")
    return prefix


def on_a_full_disk(repo: Path, outputs: list[str], command: str) -> str:
    """Run ``command`` in ``repo`` with data/ on a tmpfs holding a copy of data/ less
    ``outputs`` (which DVC deletes anyway), remounted to what that copy uses plus
    SLACK_BYTES: a write of more there fails with ENOSPC from the kernel."""
    prefix = unshare_prefix()
    saved = repo.parent / "data.saved"
    shutil.copytree(repo / "data", saved, symlinks=True)
    script = f"""set -e
        mount -t tmpfs -o size=64m tmpfs data
        cp -a "{saved}/." data/
        rm -rf {" ".join(outputs)}
        used=$(df --output=used -B1 data | tail -n 1)
        mount -o remount,size=$((used + {SLACK_BYTES})) data
        {command}"""
    proc = subprocess.run([*prefix, "sh", "-c", script], cwd=repo, env=command_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=600)
    assert proc.returncode != 0, proc.stdout
    return proc.stdout


@slow
@pytest.mark.parametrize("stage, outputs, full", [
    ("tokenise", ["data/tokens", "data/vocab.json"], "data/tokens/"),
    ("train", ["data/model.pt"], "data/model.pt"),
])
def test_a_full_disk_is_one_line_naming_the_file_and_dvc_checkout(repo, stage, outputs,
                                                                  full):
    before = {path: (repo / path).exists() for path in outputs}
    output = on_a_full_disk(repo, outputs, f"dvc repro -s {stage} -f")
    line = error_line(output)
    assert ": the disk is full (No space left on device)" in line, output
    assert line.startswith(f"error: {full}"), output
    assert f"`dvc checkout {stage}` restores" in line, output
    assert "Traceback" not in output
    # The namespace kept the full disk to itself: the project's outputs are as they were.
    assert {path: (repo / path).exists() for path in outputs} == before
