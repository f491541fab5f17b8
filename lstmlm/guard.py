"""A training run owns its outputs: one run at a time, and none outliving its caller.

- ``RunLock``: an exclusive ``flock`` on a file in the resume directory. A second run is
  refused with a message naming the first one's process id. The kernel drops the lock
  when its holder dies, however it dies, so a lock is never stale.
- ``stop_with_parents``: DVC runs a stage as its child (often through ``sh -c``). When
  DVC is killed, even with SIGKILL, nothing tells the child, which would train on as an
  orphan, write outputs DVC no longer records and race the next run. A watcher thread
  checks every second that the chain of parents up to the DVC process is still alive;
  when one is gone it sends this process SIGTERM, which ends training the way Ctrl-C
  does, keeping the resume state of the last finished epoch.
"""

from __future__ import annotations

import fcntl
import os
import signal
import threading
import time
from pathlib import Path

from .errors import LstmlmError

LOCK_FILE = "lock"


class RunLock:
    """``with RunLock(directory):`` holds the directory for this process."""

    def __init__(self, directory: Path, what: str = "training run"):
        self.path, self.what = Path(directory) / LOCK_FILE, what
        self.handle = None

    def __enter__(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+", encoding="ascii")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise LstmlmError(f"another {self.what} (process {holder}) is using "
                              f"{self.path.parent}; wait for it to finish or stop it "
                              f"(kill {holder}) first") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self.handle = handle
        return self

    def __exit__(self, *exc) -> None:
        if self.handle is not None:
            self.handle.close()  # closing drops the flock
            self.handle = None


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process from /proc, or None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # the name may hold spaces and ')'
    return fields[0], int(fields[1])


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _runs_dvc(pid: int) -> bool:
    """`dvc ...`, or `python .../bin/dvc ...` as a venv's entry point runs."""
    return any(Path(word).name == "dvc" for word in _cmdline(pid).split()[:2])


def watched_parents() -> list[int]:
    """Parent pids from ours up to the nearest process running DVC; only our parent when
    no DVC is among them (a user's shell that exits must not stop a `nohup dvc repro`)."""
    chain, pid = [], os.getppid()
    while pid > 1 and len(chain) < 32:
        chain.append(pid)
        if _runs_dvc(pid):
            return chain
        stat = _proc_stat(pid)
        if stat is None:
            break
        pid = stat[1]
    return chain[:1]


def _alive(pid: int) -> bool:
    stat = _proc_stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def stop_with_parents(interval: float = 1.0) -> list[int]:
    """Start the watcher (Linux; elsewhere it does nothing); returns the watched pids."""
    if not Path("/proc/self/stat").exists():
        return []
    parents, first_parent = watched_parents(), os.getppid()

    def watch() -> None:
        while all(_alive(p) for p in parents) and os.getppid() == first_parent:
            time.sleep(interval)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="stop-with-parents", daemon=True).start()
    return parents
