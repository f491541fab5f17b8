"""dvc.yaml lists, as each stage's deps, every project file its script imports: editing
any code a stage runs must rerun that stage (and nothing it does not run)."""

import subprocess
import sys
from pathlib import Path

import yaml

from lstmlm.imports import stage_files

ROOT = Path(__file__).resolve().parents[1]


def stage_scripts() -> dict[str, tuple[Path, set[str]]]:
    """stage name -> (its script, the file deps dvc.yaml lists)."""
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    out = {}
    for name, stage in dvc["stages"].items():
        module = stage["cmd"].split("python -m ", 1)[1].split()[0]
        out[name] = (ROOT / (module.replace(".", "/") + ".py"), set(stage.get("deps", [])))
    return out


def missing_deps() -> dict[str, list[str]]:
    found = {}
    for name, (script, deps) in stage_scripts().items():
        needed = {str(p) for p in stage_files(ROOT, script)}
        missing = sorted(needed - deps)
        if missing:
            found[name] = missing
    return found


def test_every_stage_lists_the_project_files_its_script_imports():
    assert missing_deps() == {}


def test_stages_list_no_code_they_do_not_run():
    """Extra code deps would rerun a stage (training!) for edits that cannot change it."""
    for name, (script, deps) in stage_scripts().items():
        code = {d for d in deps if d.startswith(("lstmlm/", "stages/"))}
        assert code <= {str(p) for p in stage_files(ROOT, script)}, name


def test_the_import_walk_sees_function_level_and_relative_imports(tmp_path):
    (tmp_path / "stages").mkdir()
    (tmp_path / "lstmlm").mkdir()
    (tmp_path / "lstmlm" / "__init__.py").write_text("")
    (tmp_path / "lstmlm" / "a.py").write_text("from .b import thing\n")
    (tmp_path / "lstmlm" / "b.py").write_text("thing = 1\n")
    (tmp_path / "lstmlm" / "c.py").write_text("")
    (tmp_path / "lstmlm" / "unused.py").write_text("")
    (tmp_path / "stages" / "s.py").write_text(
        "import os\nfrom lstmlm.a import thing\n\ndef main():\n    from lstmlm import c\n")
    found = {str(p) for p in stage_files(tmp_path, tmp_path / "stages" / "s.py")}
    assert found == {"stages/s.py", "lstmlm/a.py", "lstmlm/b.py", "lstmlm/c.py",
                     "lstmlm/__init__.py"}


def test_removing_a_dep_from_dvc_yaml_is_caught(tmp_path, monkeypatch):
    """The check fails when one dep is dropped (here lstmlm/vocab.py from train)."""
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    dvc["stages"]["train"]["deps"].remove("lstmlm/vocab.py")
    original = yaml.safe_load
    monkeypatch.setattr(yaml, "safe_load", lambda text: dvc if "stages:" in str(text) else original(text))
    assert missing_deps() == {"train": ["lstmlm/vocab.py"]}
