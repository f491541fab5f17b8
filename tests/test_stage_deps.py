"""dvc.yaml lists, as each stage's deps, exactly the project code its script runs: editing
any code a stage runs reruns that stage, and editing code it does not run reruns nothing.

A dep may be a room (a folder of lstmlm/): it stands for every file in it, and is tight
only when the stage runs all of them."""

from pathlib import Path

import pytest
import yaml
from stage_imports import stage_files

ROOT = Path(__file__).resolve().parents[1]


def stage_scripts(dvc: dict | None = None) -> dict[str, tuple[Path, set[str]]]:
    """stage name -> (its script, the deps dvc.yaml lists)."""
    dvc = dvc or yaml.safe_load((ROOT / "dvc.yaml").read_text())
    out = {}
    for name, stage in dvc["stages"].items():
        module = stage["cmd"].split("python -m ", 1)[1].split()[0]
        out[name] = (ROOT / (module.replace(".", "/") + ".py"), set(stage.get("deps", [])))
    return out


def code_files(dep: str) -> set[str]:
    """The code files a dep stands for: itself, or every file in a room."""
    path = ROOT / dep
    if path.is_dir():
        return {str(p.relative_to(ROOT)) for p in path.rglob("*")
                if p.suffix in (".py", ".sha256") and "__pycache__" not in p.parts}
    return {dep}


def untracked(dvc: dict | None = None) -> dict[str, list[str]]:
    """Per stage: code it runs that no dep covers (edits that would not rerun it). A
    room's __init__.py holds its docstring only (test_rooms_init_files_hold_no_code)."""
    found = {}
    for name, (script, deps) in stage_scripts(dvc).items():
        covered = set().union(*(code_files(d) for d in deps))
        missing = sorted(f for f in {str(p) for p in stage_files(ROOT, script)} - covered
                         if not f.endswith("__init__.py"))
        if missing:
            found[name] = missing
    return found


def loose(dvc: dict | None = None) -> dict[str, list[str]]:
    """Per stage: code its deps cover that it never runs (edits that would rerun it for
    nothing). A room's __init__.py, a docstring, does not count."""
    found = {}
    for name, (script, deps) in stage_scripts(dvc).items():
        runs = {str(p) for p in stage_files(ROOT, script)}
        code = set().union(*(code_files(d) for d in deps if d.startswith(("lstmlm", "stages"))))
        extra = sorted(f for f in code - runs if not f.endswith("__init__.py"))
        if extra:
            found[name] = extra
    return found


def test_every_stage_lists_the_project_files_its_script_imports():
    assert untracked() == {}


def test_stages_list_no_code_they_do_not_run():
    """Extra code deps would rerun a stage (training!) for edits that cannot change it."""
    assert loose() == {}


def test_rooms_init_files_hold_no_code():
    """Importing a room runs its __init__.py, which no stage lists: so it is a docstring."""
    import ast

    for init in (ROOT / "lstmlm").glob("*/__init__.py"):
        body = ast.parse(init.read_text()).body
        assert len(body) == 1 and isinstance(body[0].value, ast.Constant), init


def test_the_checks_see_a_dep_dropped_or_a_room_too_many():
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    dvc["stages"]["train"]["deps"].remove("lstmlm/data/vocab.py")
    dvc["stages"]["tokenise"]["deps"].append("lstmlm/generate")
    assert untracked(dvc) == {"train": ["lstmlm/data/vocab.py"]}
    assert "lstmlm/generate/text.py" in loose(dvc)["tokenise"]


def test_the_import_walk_sees_function_level_and_relative_imports(tmp_path):
    (tmp_path / "stages").mkdir()
    (tmp_path / "lstmlm" / "room").mkdir(parents=True)
    (tmp_path / "lstmlm" / "__init__.py").write_text("")
    (tmp_path / "lstmlm" / "room" / "__init__.py").write_text("")
    (tmp_path / "lstmlm" / "room" / "a.py").write_text("from .b import thing\nfrom ..c import x\n")
    (tmp_path / "lstmlm" / "room" / "b.py").write_text("thing = 1\n")
    (tmp_path / "lstmlm" / "c.py").write_text("x = 1\n")
    (tmp_path / "lstmlm" / "d.py").write_text("")
    (tmp_path / "lstmlm" / "unused.py").write_text("")
    (tmp_path / "stages" / "s.py").write_text(
        "import os\nfrom lstmlm.room.a import thing\n\ndef main():\n    from lstmlm import d\n")
    found = {str(p) for p in stage_files(tmp_path, tmp_path / "stages" / "s.py")}
    assert found == {"stages/s.py", "lstmlm/room/a.py", "lstmlm/room/b.py", "lstmlm/c.py",
                     "lstmlm/d.py", "lstmlm/__init__.py"}


# --------------------------------------------------------------------------- in a pipeline


def stages_to_rerun(repo: Path) -> set[str]:
    """The stages `dvc status` reports changed (its unindented "stage:" lines)."""
    from helpers_dvc import dvc

    return {line[:-1] for line in dvc(repo, "status").splitlines()
            if line.endswith(":") and not line.startswith((" ", "\t"))}


@pytest.mark.slow
def test_an_edit_reruns_only_the_stages_that_run_the_edited_code(tmp_path_factory, tmp_path):
    """In a pipeline checkout that has run: the detokeniser (display only) reruns the cheap
    sample stage alone; the HTTP download code reruns download (and the params check),
    and nothing after it, since the bytes it writes are the same; the model reruns
    training and what reads the model."""
    from helpers_dvc import built_tiny_repo, copy_repo, dvc, ran_stages

    from conftest import TINY_MODEL, TINY_TRAIN, write_tiny_corpus

    repo = copy_repo(built_tiny_repo(tmp_path_factory, TINY_MODEL, TINY_TRAIN,
                                     write_tiny_corpus)[0], tmp_path / "repo")
    expected = {"lstmlm/generate/text.py": {"sample"},
                "lstmlm/data/fetch.py": {"params", "download"},
                "lstmlm/model/lstm.py": {"train", "evaluate", "sample"}}
    for module, stages in expected.items():
        original = (repo / module).read_text()
        (repo / module).write_text(original + "\n# an edit\n")
        assert stages_to_rerun(repo) == stages, module
        if module == "lstmlm/data/fetch.py":
            assert ran_stages(dvc(repo, "repro")) == ["params", "download"]
            assert stages_to_rerun(repo) == set()
            (repo / module).write_text(original)
            dvc(repo, "commit", "-f", "params", "download")  # the lock as committed again
        (repo / module).write_text(original)
    assert stages_to_rerun(repo) == set()
