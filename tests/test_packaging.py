"""Installing the project: `pip install -e .` (what `make venv` runs) says nothing but
what pip itself says, and the installed package finds its data files."""

from __future__ import annotations

import subprocess
import sys
import venv

from conftest import ROOT


def test_an_editable_install_prints_no_warning_and_imports(tmp_path):
    target = tmp_path / "venv"
    venv.create(target, with_pip=False)
    done = subprocess.run([sys.executable, "-m", "pip", "--python", str(target / "bin" / "python"),
                           "install", "--quiet", "--no-deps", "-e",
                           str(ROOT)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    said = [line for line in (done.stdout + done.stderr).splitlines()
            if line.strip() and not line.startswith("WARNING: Location")]  # this pip's config
    assert said == [], "\n".join(said)
    found = subprocess.run([str(target / "bin" / "python"), "-c",
                            "import importlib.resources as r, lstmlm.data.wikitext as w;"
                            "print(w.__file__);"
                            "print((r.files('lstmlm.serve') / 'static/index.html').is_file())"],
                           capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert found.stdout.splitlines() == [str(ROOT / "lstmlm" / "data" / "wikitext.py"), "True"], \
        found.stderr
