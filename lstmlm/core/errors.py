"""The project's error types, the guard that turns them into a clear exit, and the one
rule for echoing a user's value in a message (``shorten`` for text, ``shown`` for any
value)."""

from __future__ import annotations

import reprlib
import sys
from typing import Any, Callable

# Lists and mappings are echoed as reprlib writes them: a few items of a few levels,
# however large or deep the value, or shared with itself (as YAML aliases make it).
_BOUNDED = reprlib.Repr()
_BOUNDED.maxlevel, _BOUNDED.maxlist, _BOUNDED.maxtuple, _BOUNDED.maxdict = 3, 4, 4, 4


class LstmlmError(Exception):
    """An error the user can fix (bad params, missing or mismatched inputs).

    Stages and commands print its message, without a traceback, and exit with status 2.
    """


class CorpusError(LstmlmError, ValueError):
    """A corpus split is missing, empty, not UTF-8 text, or does not fit its vocabulary."""


def shorten(text: str, width: int = 60) -> str:
    """One line of at most ``width`` characters, for echoing user text in messages."""
    flat = " ".join(text.split())
    if len(flat) <= width:
        return flat
    return flat[:width - 1].rstrip() + f"… ({len(text):,} characters)"


def shown(value: Any) -> str:
    """A value as an error message echoes it: its repr, on one line, cut short."""
    bounded = isinstance(value, (list, tuple, dict, set, frozenset))
    return shorten(_BOUNDED.repr(value) if bounded else repr(value), 80)


def run_main(main: Callable[[], object]) -> None:
    """Run a command's ``main()``; a LstmlmError or Ctrl-C ends it with a message, not a traceback."""
    try:
        status = main()
    except LstmlmError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(status if isinstance(status, int) else 0)
