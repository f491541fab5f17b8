"""The project's error type and the guard that turns it into a clear exit for stages."""

from __future__ import annotations

import sys
from typing import Callable


class LstmlmError(Exception):
    """An error the user can fix (bad params, missing or mismatched inputs).

    Stages and commands print its message, without a traceback, and exit with status 2.
    """


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
