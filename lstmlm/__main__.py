"""``python -m lstmlm COMMAND ...``: dispatch a subcommand to its module's ``main``.

Only argparse is imported here, so ``--help`` and usage errors answer at once; torch is
loaded by the command that needs it.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from lstmlm import __version__
from lstmlm.core.errors import run_main

# command -> (the module whose main() runs it, one-line description)
COMMANDS = {
    "generate": ("lstmlm.generate.command", "generate text from a trained checkpoint"),
    "serve": ("lstmlm.serve.command", "a local web page to write with a trained checkpoint"),
}


def main(argv: list[str] | None = None) -> int | None:
    """Parse the command name, then hand the remaining arguments to that command."""
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(
        prog="python -m lstmlm", description="LSTM word-level language models.",
        epilog="commands:\n"
        + "".join(f"  {name:10} {doc}\n" for name, (_, doc) in COMMANDS.items())
        + "\n'python -m lstmlm COMMAND --help' describes a command.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"lstmlm {__version__}")
    parser.add_argument("command", choices=list(COMMANDS), metavar="COMMAND",
                        help=", ".join(COMMANDS))
    # Only the first argument is the command's name: its own options (and --help) follow.
    split = next((i for i, arg in enumerate(argv) if not arg.startswith("-")), len(argv))
    args = parser.parse_args(argv[:split + 1])
    command = importlib.import_module(COMMANDS[args.command][0])
    return command.main(argv[split + 1:])


if __name__ == "__main__":
    run_main(main)
