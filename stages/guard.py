"""How every stage script runs under DVC: none outlives its caller, and an error says how
to get back what DVC deleted. (The library knows nothing of DVC; this is the glue.)

- ``run_stage``: how every stage script runs. DVC runs a stage as its child, often
  through a shell (``$SHELL -c``; dash forks the command, bash execs it). When DVC is
  killed, even with SIGKILL, nothing tells the stage, which would run on as an orphan and
  write outputs DVC no longer records. So a watcher thread checks every second that the
  processes from the stage's parent up to DVC are alive; when one is gone it sends the
  stage SIGTERM, which ends it the way Ctrl-C does (atomic outputs are never half-written;
  training keeps the resume state of its last finished epoch). And since DVC deletes a
  stage's outputs before running it, an error under DVC names ``dvc checkout``, which
  restores the outputs of the last successful run from DVC's cache.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Callable

import psutil

from lstmlm.core.errors import LstmlmError, run_main
from lstmlm.core.files import NO_SPACE, DiskFull

# --------------------------------------------------------------------------- stages


def run_stage(main: Callable[[], object]) -> None:
    """Run a stage's ``main()`` (and exit): stopped with its caller, SIGTERM taken as
    Ctrl-C, and errors as one line that, under DVC, names the restoring command."""
    stop_with_caller()
    run_main(lambda: _with_restore_hint(main))


def _with_restore_hint(main: Callable[[], object]) -> object:
    try:
        return main()
    except LstmlmError as err:
        raise LstmlmError(f"{err}{restore_hint()}") from None
    except OSError as err:  # a write outside atomic_path (dvclive's logs, say)
        if err.errno not in NO_SPACE:
            raise
        raise LstmlmError(f"{DiskFull.of(err.filename, err)}{restore_hint()}") from None


def restore_hint() -> str:
    """Under DVC (which sets DVC_STAGE for a stage's command), how to get back the outputs
    it deleted before running the stage; elsewhere nothing."""
    stage = os.environ.get("DVC_STAGE")
    if not stage:
        return ""
    return (f"; DVC deleted the outputs of stage {stage} before running it: `dvc checkout "
            f"{stage}` restores the ones dvc.lock records (its last successful run)")


def stop_with_caller(interval: float = 1.0) -> list[int]:
    """Start the watcher; SIGTERM then raises KeyboardInterrupt in the main thread.
    Returns the watched pids: from the parent up to the nearest process running DVC, or
    only the parent when no DVC is among them (a user's shell that exits must not stop
    a `nohup dvc repro`)."""
    callers = _callers()
    main_thread = threading.main_thread().ident
    signal.signal(signal.SIGTERM, _interrupt)

    def watch() -> None:
        while all(_alive(p) for p in callers):
            time.sleep(interval)
        # To the main thread itself, so that a blocking call there is interrupted too.
        signal.pthread_kill(main_thread, signal.SIGTERM)

    threading.Thread(target=watch, name="stop-with-caller", daemon=True).start()
    return [p.pid for p in callers]


def _callers() -> list[psutil.Process]:
    chain = []
    for parent in psutil.Process().parents():
        chain.append(parent)
        if _runs_dvc(parent):
            return chain
    return chain[:1]


def _runs_dvc(process: psutil.Process) -> bool:
    """`dvc ...`, `python .../bin/dvc ...` (a venv's entry point) or `python -m dvc ...`."""
    try:
        words = process.cmdline()[:3]
    except psutil.Error:
        return False
    return any(Path(w).name == "dvc" for w in words[:2]) or words[1:3] == ["-m", "dvc"]


def _alive(process: psutil.Process) -> bool:
    """Running and not a zombie (a killed DVC stays one until its own parent reaps it);
    psutil also tells a new process that reused the pid from the one watched."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _interrupt(signum, frame):
    """SIGTERM ends a stage the way Ctrl-C does."""
    raise KeyboardInterrupt
