"""The resume state of a training run: saved after every epoch, outside DVC's outputs.

If the train stage is interrupted, the next `dvc repro` continues from the last finished
epoch, provided the params and data are unchanged: the file carries a fingerprint of
both, and a state with another fingerprint is ignored (never "resumed" into a run it does
not belong to). Everything in it is plain tensors, numbers and lists (weights_only).

One training run at a time: ``RunLock`` holds an exclusive ``flock`` on a file in the resume
directory. A second run is refused with a message naming the first one's process id. The
kernel drops the lock when its holder dies, however it dies, so a lock is never stale.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Callable

import torch

from lstmlm.core.errors import LstmlmError
from lstmlm.core.files import atomic_path, sha256_file
from lstmlm.train.trainer import Trainer

STATE_FILE = "state.pt"
LOCK_FILE = "lock"


def fingerprint(params: dict, vocab_sha256: str, ids_dir: Path) -> str:
    """Hash of everything that determines the training run."""
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode())
    digest.update(vocab_sha256.encode())
    for split in ("train", "valid"):
        digest.update(sha256_file(Path(ids_dir) / f"{split}.npy").encode())
    return digest.hexdigest()


class ResumeFile:
    """``directory/state.pt``, tied to one run by its fingerprint."""

    def __init__(self, directory: Path, run_id: str, say: Callable[[str], None] = print):
        self.directory, self.path = Path(directory), Path(directory) / STATE_FILE
        self.run_id, self.say = run_id, say

    def restore(self, trainer: Trainer) -> bool:
        """Load the saved state into ``trainer`` if there is one of this run; a damaged or
        foreign state is set aside with a message, never a crash."""
        saved = self._read()
        if saved is None:
            return False
        try:
            trainer.load_state_dict(saved["trainer"])
        except (KeyError, ValueError, TypeError, RuntimeError) as err:
            raise LstmlmError(f"{self.path}: cannot resume from it ({type(err).__name__}: "
                              f"{err}); delete {self.directory} to start afresh") from None
        self.say(f"train: resuming after epoch {trainer.progress.epoch} from {self.path}")
        return True

    def _read(self) -> dict | None:
        if not self.path.exists():
            return None
        try:
            saved = torch.load(self.path, map_location="cpu", weights_only=True)
            if not isinstance(saved, dict) or "trainer" not in saved:
                raise ValueError("not a resume state")
        except Exception as err:  # torch raises many types for damaged files
            self.say(f"train: ignoring {self.path}: unreadable or damaged "
                     f"({type(err).__name__}: {err}); starting afresh")
            return None
        if saved.get("fingerprint") != self.run_id:
            self.say(f"train: ignoring {self.path}: it belongs to other params or data")
            return None
        return saved

    def save(self, trainer: Trainer) -> None:
        with atomic_path(self.path) as tmp:
            torch.save({"fingerprint": self.run_id, "trainer": trainer.state_dict()}, tmp)

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


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
