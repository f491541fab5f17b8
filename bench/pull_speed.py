"""Results that travel: how long a fresh clone takes to get the trained pipeline from the
remote, against the 16-25 minutes of training it replaces.

    python bench/pull_speed.py [--repo .] [--remote NAME]

The repository must have run the pipeline and pushed it (`dvc push --run-cache`) to its
default DVC remote (or --remote). The benchmark clones it with git into a temporary
folder, gives the clone the same remote (its URL and this repository's local settings,
as a colleague would with `dvc remote modify --local`), then times, in the clone:

  * `dvc pull`  : every output of the committed dvc.lock, from the remote;
  * `dvc repro` : which must find nothing to run (the stages it ran are printed).

Time it alone: anything else on the machine slows both.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(args: list[str], cwd: Path) -> tuple[float, str]:
    """Seconds a command took, and its output (stdout and stderr together)."""
    started = time.perf_counter()
    done = subprocess.run(args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)
    seconds = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"`{' '.join(args)}` failed in {cwd}:\n{done.stdout}")
    return seconds, done.stdout


def remote_settings(repo: Path, name: str | None) -> tuple[str, list[tuple[str, str]]]:
    """The remote's name and its settings (url and the rest, local ones included)."""
    _, listing = run(["dvc", "config", "--list", "--show-origin"], repo)
    found = re.search(r"core\.remote=(\S+)", listing)
    default = name or (found.group(1) if found else None)
    pattern = rf"remote\.{re.escape(default or '')}\.(\S+?)=(.*)"
    settings = re.findall(pattern, listing) if default else []
    if not settings:
        raise SystemExit(f"pull_speed: no DVC remote {default or '(no default)'} in {repo}: "
                         "add one and push the pipeline's results first (docs/remote.md)")
    return default, settings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", type=Path, default=Path("."))
    parser.add_argument("--remote", help="default: the repository's default remote")
    args = parser.parse_args()
    repo = args.repo.resolve()
    name, settings = remote_settings(repo, args.remote)
    with tempfile.TemporaryDirectory(prefix="pull-speed-") as tmp:
        clone = Path(tmp) / "clone"
        run(["git", "clone", "-q", str(repo), str(clone)], Path(tmp))
        run(["dvc", "remote", "add", "--local", "--force", "-d", name,
             dict(settings)["url"]], clone)
        for key, value in settings:
            if key != "url":
                run(["dvc", "remote", "modify", "--local", name, key, value], clone)
        pull, pulled = run(["dvc", "pull"], clone)
        repro, output = run(["dvc", "repro"], clone)
        ran = re.findall(r"Running stage '([\w-]+)'", output)
        size = sum(p.stat().st_size for p in (clone / "data").rglob("*") if p.is_file())
    print(f"fresh clone of {repo}, remote {name} ({dict(settings)['url']}):")
    print(f"  dvc pull : {pull:6.1f} s  ({size / 2**20:,.1f} MiB of data/; "
          f"{pulled.strip().splitlines()[-1] if pulled.strip() else ''})")
    print(f"  dvc repro: {repro:6.1f} s  (stages run: {', '.join(ran) or 'none'})")
    print(f"  together : {pull + repro:6.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
