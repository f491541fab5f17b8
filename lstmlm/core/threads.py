"""CPU threads: how many a setting means, and numpy's BLAS held to a count while a
generator works (docs/generation.md, "Threads").

A Generator draws on its own count (default 1: on a busy machine a second thread can make
a stream many times slower), set around each piece of work and given back before control
returns to the caller. The libraries threadpoolctl finds are set directly, and only when
the count differs (its ``threadpool_limits`` costs a twentieth of a word). OpenBLAS lets
one Python thread control its pool, so a program that draws from worker threads (a
server) sets the process's count once, from its main thread (:func:`set_process_threads`).
"""

from __future__ import annotations

import os
import threading
from typing import Any

from lstmlm.core.errors import LstmlmError


def cpu_threads(threads: int, processes: int = 1, key: str = "train.threads") -> int:
    """The thread count ``threads`` means: itself, or 0 for this process's share of the
    cores when ``processes`` share the machine. Absurd counts are refused (oneDNN, behind
    torch, crashes with SIGSEGV on them)."""
    cores = os.cpu_count() or 1
    if threads > 4 * cores:
        raise LstmlmError(f"{key}: {threads} is not allowed on this machine of {cores} "
                          f"cores; use 0 (all cores) or at most {4 * cores}")
    return threads or max(1, cores // max(1, processes))


def set_process_threads(n: int) -> None:
    """numpy's BLAS on ``n`` threads for the rest of the process, whichever thread calls
    it afterwards (see the module docstring); call it from the main thread."""
    import numpy  # noqa: F401 (loads its BLAS, for threadpoolctl to find)
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=n, user_api="blas")  # not undone: for the whole process


class BlasThreads:
    """numpy's BLAS thread count, set for the work inside ``with BLAS_THREADS.use(n)``
    and restored when the last user leaves: the count is process-wide, and a server
    draws several streams at once from worker threads, so a count of users, under a
    lock, makes the last one out restore what the caller had."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._saved: list[int] = []
        self._libraries: list[Any] | None = None

    def libraries(self) -> list[Any]:
        """threadpoolctl's controllers of the BLAS libraries loaded, numpy's among them
        (found once)."""
        if self._libraries is None:
            import numpy  # noqa: F401 (loads its BLAS, for threadpoolctl to find)
            from threadpoolctl import ThreadpoolController

            self._libraries = ThreadpoolController().select(user_api="blas").lib_controllers
        return self._libraries

    def use(self, n: int | None) -> "_InUse":
        return _InUse(self, n)

    def count(self) -> list[int]:
        """Each BLAS library's thread count now."""
        return [library.get_num_threads() for library in self.libraries()]

    def enter(self, n: int) -> None:
        with self._lock:
            libraries = self.libraries()
            if self._users == 0:
                self._saved = self.count()
            self._users += 1
            for library in libraries:
                if library.get_num_threads() != n:
                    library.set_num_threads(n)

    def leave(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0:
                for library, saved in zip(self.libraries(), self._saved):
                    if library.get_num_threads() != saved:
                        library.set_num_threads(saved)


class _InUse:
    """One ``with`` of BlasThreads.use (a class, not a contextlib generator: it is
    entered once per word); n None leaves the setting alone."""

    __slots__ = ("threads", "n")

    def __init__(self, threads: BlasThreads, n: int | None):
        self.threads, self.n = threads, n

    def __enter__(self) -> None:
        if self.n is not None:
            self.threads.enter(self.n)

    def __exit__(self, *exc: object) -> None:
        if self.n is not None:
            self.threads.leave()


BLAS_THREADS = BlasThreads()
