"""`make restore`: back to the committed results, never dropping what it cannot bring back.

    python tools/restore.py [--rev REV]     # REV: default HEAD; run from the repository root

1. Uncommitted changes to params.yaml, dvc.lock and metrics/ (a hand edit, an experiment's
   results) go to `git stash`, and it says so: `git stash pop` brings them back.
2. params.yaml, dvc.lock and metrics/ as committed at REV.
3. The outputs dvc.lock names, from DVC's cache, else from the remote (`dvc fetch`). Which
   ones are there is checked before any output is touched: `dvc checkout --force` deletes
   an output whose committed version it cannot find, the user's own model included.
4. Outputs found nowhere (another machine's run: bf16 differs in the last bits between
   CPUs, so the same params give other bytes): this machine's own run of the same params
   comes from the run-cache, as `dvc repro` would restore it once their stages leave
   dvc.lock (it does not look there while dvc.lock names outputs it lacks), but running
   nothing: where there is no such run, the outputs are left as they were (`dvc repro`
   would delete them first, then train), and it says which.

Run with `dvc` on PATH (the Makefile puts the venv first). Exits 1 when the outputs could
not be restored.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import yaml

TRACKED = ["params.yaml", "dvc.lock", "metrics"]


def run(*args: str) -> subprocess.CompletedProcess:
    """A command, its output captured (stdout and stderr together)."""
    return subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def say(message: str) -> None:
    print(f"make restore: {message}", flush=True)


# --------------------------------------------------------------------------- 1. kept aside


def keep_aside(rev: str) -> None:
    """Stash uncommitted changes to TRACKED (new files in metrics/ too), and say where."""
    tracked = [path for path in TRACKED if Path(path).exists()]
    if not tracked or not run("git", "status", "--porcelain", "--", *tracked).stdout.strip():
        return
    # A stash is a commit: where git knows no identity, give it one rather than fail.
    who = [] if run("git", "var", "GIT_COMMITTER_IDENT").returncode == 0 else [
        "-c", "user.name=make restore", "-c", "user.email=make-restore@localhost"]
    done = run("git", *who, "stash", "push", "--include-untracked", "-m",
               f"make restore (to {rev}): params.yaml, dvc.lock and metrics/ as they were",
               "--", *tracked)
    if done.returncode != 0:
        sys.exit(f"make restore: nothing changed; git could not keep your uncommitted "
                 f"params.yaml, dvc.lock and metrics/ aside: {done.stdout.strip()}")
    say("your uncommitted params.yaml, dvc.lock and metrics/ are kept in `git stash` "
        "(stash@{0}); `git stash pop` brings them back")


# --------------------------------------------------------------------------- 3. outputs


def uncached_stages(dvc_yaml: dict) -> tuple[set[str], list[str]]:
    """(the outputs DVC keeps in git, not its cache; the stages it never caches): from
    dvc.yaml's `cache: false` (a plain output so marked turns the run-cache off)."""
    paths, stages = set(), []
    for name, stage in dvc_yaml["stages"].items():
        for kind in ("outs", "metrics", "plots"):
            for out in stage.get(kind, []):
                path, options = next(iter(out.items())) if isinstance(out, dict) else (out, {})
                if not (options or {}).get("cache", True):
                    paths.add(path)
                    stages += [name] if kind == "outs" and name not in stages else []
    return paths, stages


def in_cache(md5: str, cache: Path) -> bool:
    """Whether DVC's cache holds the object (for a folder, its listing and every file)."""
    path = cache / "files" / "md5" / md5[:2] / md5[2:]
    if not path.is_file():
        return False
    if not md5.endswith(".dir"):
        return True
    return all(in_cache(entry["md5"], cache) for entry in json.loads(path.read_text()))


def missing_stages(lock: dict, uncached: set[str], cache: Path) -> list[str]:
    """The stages of ``lock`` with an output that DVC's cache lacks."""
    return [name for name, stage in lock.get("stages", {}).items()
            if any(out["path"] not in uncached and not in_cache(out.get("md5", ""), cache)
                   for out in stage.get("outs", []))]


# --------------------------------------------------------------------------- 4. run-cache


def own_runs(names: list[str]) -> list[str]:
    """Check out from the run-cache this machine's own run of each stage of ``names`` (in
    pipeline order), for the deps there are now; the stages restored, up to the first that
    has no such run. An output is replaced only by a run found: `dvc repro` would delete it
    first, then run the stage (train, for hours) when none is found."""
    from dvc.repo import Repo, lock_repo
    from dvc.stage.cache import RunCacheNotFoundError

    restored: list[str] = []
    with Repo() as repo, lock_repo(repo):
        stages = {stage.addressing: stage for stage in repo.index.stages}
        for name in names:
            try:
                repo.stage_cache.restore(stages[name])
            except RunCacheNotFoundError:
                break
            restored.append(name)
    return restored


def from_run_cache(lock: dict, missing: list[str], copies: list[str], rev: str) -> bool:
    """The outputs of ``missing`` stages from this machine's own runs, the other stages'
    from the cache: True if all came back. dvc.lock then names them (`dvc commit`), and
    the ``copies`` (stages that DVC never caches: publish) are run again, so that metrics/
    describes them. Otherwise what is not restored is left as it was, its stages out of
    dvc.lock, so that `dvc repro` restores or runs them."""
    lock["stages"] = {k: v for k, v in lock["stages"].items() if k not in missing}
    Path("dvc.lock").write_text(yaml.safe_dump(lock, sort_keys=False), encoding="utf-8")
    print(run("dvc", "checkout", "--force", *lock["stages"]).stdout, end="")  # all cached
    restored = own_runs(missing)
    if restored:
        print(run("dvc", "commit", "--force", *restored).stdout, end="")
    if restored != missing:
        say(f"{', '.join(missing[len(restored):])}: this machine has no run of the params of "
            f"{rev} either; their outputs are left as they were, and dvc.lock no longer names "
            "them: `dvc repro` runs them"
            + (f" (restored: {', '.join(restored)})" if restored else ""))
        return False
    for stage in copies:
        print(run("dvc", "repro", "--single-item", stage).stdout, end="")
    say(f"restored this machine's own run of the params of {rev} from the run-cache "
        f"({', '.join(missing)}); dvc.lock and metrics/ now describe it: commit them, or "
        "keep them uncommitted")
    return True


def bring_outputs(rev: str) -> bool:
    """The outputs of dvc.lock as committed at ``rev``, else this machine's own run of the
    same params: True if every one came back."""
    lock = yaml.safe_load(Path("dvc.lock").read_text(encoding="utf-8")) or {}
    uncached, copies = uncached_stages(yaml.safe_load(Path("dvc.yaml").read_text()))
    cache = Path(run("dvc", "cache", "dir").stdout.strip().splitlines()[-1])
    if missing_stages(lock, uncached, cache):
        run("dvc", "fetch")  # from the remote, if there is one; touches no output
    missing = missing_stages(lock, uncached, cache)
    if not missing:
        done = run("dvc", "checkout", "--force")
        print(done.stdout, end="")
        say(f"the outputs of {rev} are back, from DVC's cache")
        return done.returncode == 0
    say(f"the outputs of {', '.join(missing)} at {rev} are in neither DVC's cache nor the "
        "remote (another machine's run?); looking for this machine's own run of the same "
        "params in the run-cache")
    return from_run_cache(lock, missing, copies, rev)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", default="HEAD", help="the commit to go back to (default HEAD)")
    args = parser.parse_args(argv)
    if run("git", "rev-parse", "--verify", "--quiet", f"{args.rev}^{{commit}}").returncode:
        sys.exit(f"make restore: {args.rev!r} is not a commit here; nothing changed")
    keep_aside(args.rev)
    committed = [path for path in TRACKED
                 if run("git", "cat-file", "-e", f"{args.rev}:{path}").returncode == 0]
    done = run("git", "restore", f"--source={args.rev}", "--staged", "--worktree", "--",
               *committed)
    if done.returncode != 0:
        sys.exit(f"make restore: git restore failed: {done.stdout.strip()}")
    return 0 if bring_outputs(args.rev) else 1


if __name__ == "__main__":
    sys.exit(main())
