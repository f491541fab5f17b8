"""Reading text files for the data stages: UTF-8 checked, in blocks of whole lines, and
large files in parts done by worker processes.

A file is read as UTF-8; a byte-order mark at its start is dropped, never a word, and a
NUL character is refused (UTF-16 text without its mark decodes as UTF-8 full of them). The
check (:func:`check_utf8`) is the one every source uses before a file is accepted.

The stages stream: files are read in blocks of about ``CHUNK_BYTES`` cut at line ends
(:func:`iter_text_blocks`), so memory follows the block size, never the corpus nor its
longest line: a line longer than a block comes in pieces cut after a space. A file
larger than ``PARALLEL_BYTES`` is cut at line starts into one part per CPU (``WORKERS``),
done by worker processes and joined in order (:func:`in_parts`), so the outputs are the
same whatever the number of parts. Workers start from a fork server, so a script that
calls these functions on such a file must guard its entry point with
``if __name__ == "__main__":``.
"""

from __future__ import annotations

import codecs
import io
import multiprocessing
import os
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator

from lstmlm.core.errors import CorpusError, LstmlmError

# 8 MiB per block: large enough that per-block costs vanish, small enough that a
# block's tokens (some 200 MB of Python strings at most) fit any machine.
CHUNK_BYTES = 1 << 23
# Files up to this size are done in the stage's own process (WikiText-2's train split
# is 11 MB): starting workers would cost more than it saves.
PARALLEL_BYTES = 32 << 20
# Worker processes for a larger file; None: one per CPU this process may use, at most
# MAX_WORKERS (each holds its own word counts or vocabulary index, and a block).
WORKERS: int | None = None
MAX_WORKERS = 4
# A line may run this many characters without a space or tab (where a long line is cut)
# before it is refused: no word is that long.
MAX_RUN_CHARS = 1 << 24


def _not_utf8(what: str, byte: int, err: UnicodeDecodeError,
              error: type[LstmlmError]) -> LstmlmError:
    return error(f"{what}: not UTF-8 text (near byte {byte}: {err.reason})")


def _nul(what: str, byte: int, error: type[LstmlmError]) -> LstmlmError:
    return error(f"{what}: not UTF-8 text (a NUL character near byte {byte}, as UTF-16 text "
                 "has between its letters); save it as UTF-8")


def check_utf8(path: Path, what: str, error: type[LstmlmError] = CorpusError) -> None:
    """Raise ``error`` unless ``path`` is non-empty UTF-8 text without NUL (read in chunks)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    size = 0
    try:
        with open(path, "rb") as handle:
            while block := handle.read(1 << 20):
                size += len(block)
                decoder.decode(block)
                if (nul := block.find(0)) >= 0:
                    raise _nul(what, size - len(block) + nul, error)
            decoder.decode(b"", final=True)
    except UnicodeDecodeError as err:
        raise _not_utf8(what, size - len(block) + err.start, err, error) from None
    if size == 0:
        raise error(f"{what}: the file is empty")


def decode_utf8(data: bytes, what: str, error: type[LstmlmError] = CorpusError) -> str:
    """UTF-8 bytes as text, a byte-order mark at the start dropped; ``error`` if not, or if
    they hold a NUL."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise _not_utf8(what, err.start, err, error) from None
    if (nul := data.find(0)) >= 0:
        raise _nul(what, nul, error)
    return text


class Piece(str):
    """A block that is part of a line longer than a block, cut after a space or a tab:
    the line goes on in the next block."""


def iter_text_blocks(path: Path, chunk_bytes: int | None = None,
                     span: tuple[int, int] | None = None) -> Iterator[str]:
    """A UTF-8 text file, or its bytes ``span = (start, end)`` cut at line starts, in
    blocks of whole lines, each ending in a newline (the last one only if the text does).

    Read ``chunk_bytes`` at a time (default: ``CHUNK_BYTES``, looked up per call) and
    decoded like ``Path.read_text`` (universal newlines: "\\r\\n" and "\\r" read as
    "\\n"), so the lines are those of the whole text; a byte-order mark at the start of
    the file is dropped. A line longer than a chunk comes as :class:`Piece` blocks, each
    cut after a space or tab and the last followed by more of the line, so that memory
    follows the chunk, not the longest line.
    """
    pending: list[str] = []  # pieces of a line that has not ended yet
    held = 0  # their characters
    for text in _decoded(path, chunk_bytes or CHUNK_BYTES, span or (0, None)):
        # A chunk without a line end is in a line longer than a chunk: it is cut after a
        # space, so that a block never holds much more than a chunk.
        cut = text.rfind("\n") + 1 or _cut_after_space(text)
        if cut:
            block = "".join(pending) + text[:cut]
            yield block if text[cut - 1] == "\n" else Piece(block)
            pending, held = [text[cut:]], len(text) - cut
        else:
            pending.append(text)
            held += len(text)
            if held > MAX_RUN_CHARS:
                raise CorpusError(f"{path}: a line runs more than {MAX_RUN_CHARS:,} "
                                  "characters without a space: not text")
    if rest := "".join(pending):
        yield rest


def _decoded(path: Path, chunk: int, span: tuple[int, int | None]) -> Iterator[str]:
    """The bytes ``span`` of ``path`` (end None: to the end), read ``chunk`` at a time and
    decoded as UTF-8 with universal newlines, the last piece empty; CorpusError if they
    are not UTF-8 or hold a NUL."""
    start, end = span
    # utf-8-sig drops a BOM at the start of what it decodes: only a span from byte 0 has one.
    codec = "utf-8-sig" if start == 0 else "utf-8"
    decoder = io.IncrementalNewlineDecoder(codecs.getincrementaldecoder(codec)(), True)
    try:
        with open(path, "rb") as handle:
            handle.seek(start)
            left = end - start if end is not None else -1
            while True:
                raw = handle.read(chunk if left < 0 else min(chunk, left))
                left -= len(raw) if left >= 0 else 0
                text = decoder.decode(raw, final=not raw)
                if "\x00" in text:
                    raise _nul(str(path), handle.tell() - len(raw) + raw.find(0), CorpusError)
                yield text
                if not raw:
                    return
    except FileNotFoundError:
        raise CorpusError(f"{path}: file not found") from None
    except UnicodeDecodeError as err:  # err.start counts from the block, not the file
        raise CorpusError(f"{path}: not UTF-8 text ({err.reason})") from None


def _cut_after_space(text: str) -> int:
    """Where a long line may be cut in ``text``, after its last space or tab that is not
    its last character (so the line goes on after the cut), nor the space in basic_english's
    "<br />" (which reads as one mark); 0 if nowhere."""
    cut = max(text.rfind(" ", 0, len(text) - 1), text.rfind("\t", 0, len(text) - 1))
    while cut >= 3 and text.endswith("<br", 0, cut):
        cut = max(text.rfind(" ", 0, cut), text.rfind("\t", 0, cut))
    return cut + 1 if cut >= 3 else 0


def _spans(path: Path) -> list[tuple[int, int]]:
    """Byte ranges that cut ``path`` at line starts into one part per worker (a single
    part when the file is small); each boundary follows a b"\\n", so no UTF-8 character
    and no "\\r\\n" is split."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise CorpusError(f"{path}: file not found") from None
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    parts = WORKERS or min(cpus or 1, MAX_WORKERS)
    if size <= PARALLEL_BYTES or parts < 2:
        return [(0, size)]
    cuts = [0]
    with open(path, "rb") as handle:
        for k in range(1, parts):
            handle.seek(max(size * k // parts, cuts[-1]))
            handle.readline()  # on to the start of the next line
            cuts.append(handle.tell())
    cuts.append(size)
    return [(a, b) for a, b in zip(cuts, cuts[1:]) if b > a] or [(0, size)]


def _worker_context(preload: str) -> multiprocessing.context.BaseContext:
    """How worker processes start: from a fork server, which starts once with the task's
    module imported. Not by plain fork: numpy's and torch's threads make every caller
    multi-threaded, and a child forked from a threaded process can deadlock. As with any
    such start, the caller's ``__main__`` must guard its entry point (the stages do)."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([preload])
    return context


def in_parts(task: Callable[..., Any], src: Path, out: Path, *args: Any) -> list[Any]:
    """``task(src, span, dest, *args)`` for each part of ``src`` (see the module
    docstring), results in order; ``out`` receives what the parts write, in order.

    One part: done in this process, straight into ``out``. Several: done by worker
    processes, each into a file of its own beside ``out``, appended to it in order.
    """
    spans = _spans(src)
    if len(spans) == 1:
        return [task(src, spans[0], out, *args)]
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.parts-", dir=out.parent) as tmp:
        parts = [Path(tmp) / str(i) for i in range(len(spans))]
        with ProcessPoolExecutor(len(spans), mp_context=_worker_context(task.__module__)) as pool:
            futures = [pool.submit(task, src, span, part, *args)
                       for span, part in zip(spans, parts)]
            results = [future.result() for future in futures]
        with open(out, "ab") as joined:
            for part in parts:
                with open(part, "rb") as handle:
                    shutil.copyfileobj(handle, joined, 1 << 20)
    return results
