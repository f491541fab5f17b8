"""Benchmark: how fast `dvc repro` answers on the real pipeline.

    python bench/repro_speed.py

Run it in the project after a full `dvc repro` (make pipeline). It prints
  1. `dvc repro` with nothing changed (target <= 2 s);
  2. `dvc repro` after a change to a `sample.*` param, end to end (target <= 10 s): only
     the sample stage runs.
params.yaml and metrics/samples.md are restored afterwards (the sample stage reruns once
more to put the original samples back).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def dvc_repro() -> tuple[float, str]:
    """Run `dvc repro` in the project; return seconds and output."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    started = time.perf_counter()
    result = subprocess.run(["dvc", "repro"], cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode:
        sys.exit(f"dvc repro failed:\n{result.stdout}\n{result.stderr}")
    return seconds, result.stdout


def stages_run(output: str) -> list[str]:
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")]


def main() -> None:
    if not (ROOT / "dvc.lock").exists():
        sys.exit("run the pipeline first (make pipeline)")
    seconds, output = dvc_repro()  # settle: whatever is out of date runs now, not timed
    if stages_run(output):
        print(f"(brought the pipeline up to date first: {', '.join(stages_run(output))})")
    noop = min(dvc_repro()[0] for _ in range(3))
    print(f"dvc repro, nothing changed:  {noop:.2f} s (best of 3; target <= 2 s)")

    params_path = ROOT / "params.yaml"
    original = params_path.read_text()
    params = yaml.safe_load(original)
    try:
        params["sample"]["seed"] = params["sample"]["seed"] + 1
        params_path.write_text(yaml.safe_dump(params, sort_keys=False))
        seconds, output = dvc_repro()
        print(f"dvc repro after sample.seed changed: {seconds:.2f} s, ran "
              f"{', '.join(stages_run(output)) or 'nothing'} (target <= 10 s)")
    finally:
        params_path.write_text(original)
        dvc_repro()


if __name__ == "__main__":
    main()
