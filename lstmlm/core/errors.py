"""The project's error types, the guard that turns them into a clear exit, and the one
rule for echoing a user's value in a message (``shorten``)."""

from __future__ import annotations

import sys
from typing import Callable


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
