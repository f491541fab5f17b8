"""notebooks/tour.ipynb runs top to bottom on a tiny model, so it never goes stale."""

from __future__ import annotations

import pytest

from conftest import ROOT

nbformat = pytest.importorskip("nbformat", reason="nbformat is not installed (requirements-test.txt)")
nbclient = pytest.importorskip("nbclient", reason="nbclient is not installed (requirements-test.txt)")
pytest.importorskip("ipykernel", reason="ipykernel is not installed (requirements-test.txt)")

NOTEBOOK = ROOT / "notebooks" / "tour.ipynb"


def outputs(cell) -> str:
    return "".join(out.get("text", "") for out in cell.get("outputs", []))


def test_the_tour_notebook_runs_on_a_tiny_model(tiny_checkpoint, monkeypatch, tmp_path):
    from lstmlm.data.tensorise import tensorise_corpus

    pytest.importorskip("vl_convert", reason="vl-convert-python is not installed (plots extra)")
    root, _, vocab = tiny_checkpoint
    for split, values in (("train", "300.0\n1\t200.0"), ("valid", "250.0\n1\t180.0")):
        (tmp_path / split).mkdir()
        (tmp_path / split / "ppl.tsv").write_text(f"step\tppl\n0\t{values}\n")
    monkeypatch.setenv("LSTMLM_CURVES", str(tmp_path))  # two epochs of training curves
    if not (root / "ids" / "valid.npy").is_file():
        tensorise_corpus(root / "tok", vocab, root / "ids")
    monkeypatch.setenv("LSTMLM_DATA", str(root))  # the notebook's data folder
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the kernel imports this checkout's lstmlm
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert not any(cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), (
        "commit the notebook without outputs: they would come from some other model")
    nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    text = "\n".join(outputs(cell) for cell in notebook.cells if cell.cell_type == "code")
    assert "'didn', \"'t\"" in text and "'York', '@-@', 'based'" in text  # tokens
    assert "a g m s" in text  # the (T, B) picture
    # The forward pass on the tiny model: tied (the default), so the features have the
    # embedding width 16, projected down from the LSTM width 24.
    assert "-> features (20, 10, 16)" in text
    assert "perplexity" in text
    assert text.count("temperature ") >= 5 and "A cat" in text
    pictures = [out for out in notebook.cells[-1].get("outputs", [])
                if "image/png" in out.get("data", {})]
    assert len(pictures) == 1  # the training curves, drawn


def test_one_requirements_file_brings_jupyter_and_what_the_last_cell_needs():
    """The last cell draws with the plots extra: requirements-notebook.txt installs it with
    Jupyter (`make notebook`), and the notebook says so where it needs it."""
    wanted = (ROOT / "requirements-notebook.txt").read_text(encoding="utf-8").splitlines()
    assert "-r requirements-plots.txt" in wanted
    assert any(line.startswith("jupyterlab==") for line in wanted)
    plots = (ROOT / "requirements-plots.txt").read_text(encoding="utf-8")
    assert "vl-convert-python==" in plots  # what lstmlm.plots imports
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert "requirements-notebook.txt" in notebook.cells[-2].source
    assert "from lstmlm.plots import" in notebook.cells[-1].source
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "pip install --quiet -r requirements-notebook.txt" in makefile
