"""Files in and out, safely: outputs are never half-written, inputs never hang a reader.

- ``atomic_path``: an output appears whole or not at all, and a full disk is a one-line
  error naming the file (``DiskFull``), not an ``OSError`` traceback.
- ``open_regular``: an input is opened only if it is a regular file of a sane size, so a
  path naming a device (/dev/zero), a FIFO or a huge sparse file is refused at once instead
  of being read forever, blocking, or filling the memory.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Iterator

from lstmlm.core.errors import LstmlmError

# errno values that mean "no room left to write": a full disk, or the user's quota.
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class DiskFull(LstmlmError):
    """An output could not be written: the disk (or the quota) is full."""

    @classmethod
    def of(cls, path: str | Path | None, err: OSError) -> "DiskFull":
        return cls(f"{path or 'an output'}: the disk is full ({err.strerror}); free some "
                   "space and run again")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only on success.

    The rename is atomic on POSIX, so readers (and DVC) see either the old file or
    the complete new one, never a partial write. A full disk while writing raises
    ``DiskFull`` naming ``path``.
    """
    path = Path(path)
    tmp_path = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        # mkstemp creates 0600 files; give the output the usual permissions (0666 less umask).
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        yield tmp_path
        os.replace(tmp_path, path)
    except OSError as err:
        if err.errno in NO_SPACE:
            raise DiskFull.of(path, err) from None
        raise
    finally:
        if tmp_path is not None:
            tmp_path.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> None:
    """Write text atomically (UTF-8)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | Path, obj: Any) -> None:
    """Write JSON atomically, indented and with sorted keys, so diffs stay readable."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def open_regular(path: str | Path, what: str, max_bytes: int,
                 error: type[LstmlmError] = LstmlmError) -> BinaryIO:
    """``path`` opened for binary reading, once it is known to be a regular file of at
    most ``max_bytes``; otherwise ``error`` naming the path and the ``what`` expected.

    Opened without blocking, then checked on the open descriptor: a FIFO would block an
    ordinary open until some writer came, and checking the path before opening it could
    be fooled by a file swapped in between.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise error(f"{path}: {what} not found") from None
    except OSError as err:
        raise error(f"{path}: cannot open the {what} ({err.strerror})") from None
    info = os.fstat(fd)
    problem = None
    if not stat.S_ISREG(info.st_mode):
        problem = f"not a regular file but {_kind(info.st_mode)}"
    elif info.st_size > max_bytes:
        problem = f"{info.st_size:,} bytes, more than a {what} can be here ({max_bytes:,})"
    if problem:
        os.close(fd)
        raise error(f"{path}: {problem}; expected a {what}")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def _kind(mode: int) -> str:
    """What a path that is not a regular file is, in words."""
    for test, kind in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a pipe (FIFO)"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return "a device"


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
