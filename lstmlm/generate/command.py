"""``python -m lstmlm generate``, and the options it shares with ``serve``.

Arguments are parsed and checked before numpy is imported, so ``--help`` and bad values
answer at once: the sampling options by lstmlm.generate.options.SamplingOptions, the one
place that holds their defaults and limits. Errors the user can fix end with a message on
stderr and exit status 2 (argparse's own, or LstmlmError through core.errors.run_main),
never a traceback. No torch: generation runs on numpy (lstmlm.generate.engine).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path
from typing import Callable, Iterable, Iterator, TextIO

from lstmlm.core.errors import LstmlmError, shorten, shown
from lstmlm.core.params import ParamsError
from lstmlm.generate.options import FRESH, SamplingOptions, seeded

GENERATE_EPILOG = """\
examples:
  python -m lstmlm generate --model data/model.pt "The Beatles are" --words 50 --temperature 0.8
  python -m lstmlm generate "I like" "A cat" --seed 7 --top-p 0.95
  python -m lstmlm generate -- "-ish words are"
  python -m lstmlm generate --stream --words 2000 "Super Mario is"
  python -m lstmlm generate --interactive --top-k 40 < prompts.txt

Each prompt is tokenised with the scheme the model was trained with (wikitext: as
WikiText writes text, so "Hello, world." is Hello , world . and "don't" is don 't)
and primes the LSTM after an <eos>, as if it began a line; words not in the vocabulary are read as
<unk> (a note on stderr names them). An empty prompt starts from <eos> alone. The
output is the prompt followed by its continuation, detokenised for reading (<eos> as
a line break), or with --raw the generated tokens only, as the model sees them.
Several prompts give one text each, separated by a blank line. Without --seed each
run draws fresh texts, and a note on stderr gives the seed that draws them again.
"""


# ---------------------------------------------------------------------- options


def at_least(low: int, high: int | None = None,
             expected: str | None = None) -> Callable[[str], int]:
    """argparse type of an integer from ``low`` (to ``high``): "argument --threads:
    expected an integer >= 0, got '-1'", exit 2; ``expected`` words the range otherwise."""
    expected = expected or f"an integer >= {low}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {shown(text)}")
        return value
    return parse


non_negative_int = at_least(0)


def seed_value(text: str) -> int | None:
    """--seed: an integer, or "none" for a fresh seed each run."""
    if text.lower() in ("none", "random"):
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or 'none', got {shown(text)}") from None


def add_sampling_options(parser: argparse.ArgumentParser) -> None:
    """The sampling options, named and defaulted as lstmlm.generate.options.FRESH (the
    params' sample section, with a fresh seed); their values are checked there (see
    sampling_options)."""
    d = FRESH
    add = parser.add_argument
    add("--words", type=int, default=d.words,
        help="tokens to generate per prompt, <eos> included (default: %(default)s)")
    add("--temperature", type=float, default=d.temperature,
        help="0: greedy; < 1 more conservative, > 1 more random (default: %(default)s)")
    add("--top-k", dest="top_k", type=int, default=d.top_k,
        help="draw only from the k most likely words; 0 disables (default: %(default)s)")
    add("--top-p", dest="top_p", type=float, default=d.top_p,
        help="draw only from the smallest set of most likely words whose probability "
             "reaches p; 1 disables (default: %(default)s)")
    add("--seed", type=seed_value, default=d.seed,
        help="seed for reproducible output (default: a fresh one each run, printed on "
             "stderr); each prompt starts from this seed")
    add("--allow-unk", dest="allow_unk", action=argparse.BooleanOptionalAction,
        default=d.allow_unk, help="allow <unk> in the output (default: never drawn)")
    add("--stop-at-eos", dest="stop_at_eos", action=argparse.BooleanOptionalAction,
        default=d.stop_at_eos, help="stop a text at the first <eos> (end of line)")


def sampling_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> SamplingOptions:
    """SamplingOptions from the parsed options; a value it refuses ends the command as
    argparse does (usage, "argument --top-p: ...", exit 2)."""
    names = [f.name for f in dataclasses.fields(SamplingOptions)]
    try:
        return SamplingOptions(**{name: getattr(args, name) for name in names})
    except ParamsError as err:
        key, _, why = str(err).partition(": ")
        parser.error(f"argument --{key.rsplit('.', 1)[-1].replace('_', '-')}: {why}")


def add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, default=Path("data/model.pt"), metavar="CHECKPOINT",
                        help="checkpoint written by the train stage (default: %(default)s)")
    parser.add_argument("--vocab", type=Path, metavar="PATH",
                        help="vocabulary JSON (default: the one the checkpoint refers to); "
                             "it must be the one the model was trained with")
    parser.add_argument("--threads", type=non_negative_int, default=1,
                        help="CPU threads for the matrix products; 0: all cores (default: "
                             "%(default)s: one stream's matrix-vector products gain little from "
                             "more, and on a busy machine a second thread can slow them down "
                             "many times)")


def generate_parser() -> argparse.ArgumentParser:
    """The ``generate`` command's options (names as in params.yaml's sample section)."""
    parser = argparse.ArgumentParser(
        prog="python -m lstmlm generate",
        description="Generate text after one or more prompts with a trained checkpoint.",
        epilog=GENERATE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("prompts", nargs="*", metavar="PROMPT",
                        help="text to continue; several prompts give one text each "
                             "(none: one empty prompt, unless --interactive); after --, "
                             "every argument is a prompt, even one that starts with -")
    add_model_options(parser)
    add_sampling_options(parser)
    parser.add_argument("--raw", action="store_true",
                        help="print the generated tokens as they are, space-separated, "
                             "without the prompt")
    parser.add_argument("--stream", action="store_true",
                        help="print words as they are generated")
    parser.add_argument("--headings", action=argparse.BooleanOptionalAction, default=True,
                        help="write WikiText's heading lines as '== History ==' (default), "
                             "or leave them out")
    parser.add_argument("--interactive", action="store_true",
                        help="after any PROMPT arguments, read prompts from stdin, one per "
                             "line, until end of input")
    return parser


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Options and prompts in any order; ``--`` ends the options (parse_intermixed_args
    alone would read a prompt such as '-hello' after it as an option)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    rest: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, rest = argv[:cut], argv[cut + 1:]
    args = parser.parse_intermixed_args(argv)
    args.prompts = list(args.prompts) + rest
    return args


def load_generator(args: argparse.Namespace):
    """The checks that come before loading (missing files, before numpy is imported;
    --threads), then the Generator for --model and --vocab (which never imports torch).
    A path that is there but no file (/dev/zero, a directory) is named as what it is when
    it is opened (core.files.open_regular)."""
    if not args.model.exists():
        raise LstmlmError(f"{args.model}: checkpoint not found")
    if args.vocab is not None and not args.vocab.exists():
        raise LstmlmError(f"{args.vocab}: vocabulary file not found")
    from lstmlm.core.threads import cpu_threads, set_process_threads

    threads = cpu_threads(args.threads, key="--threads")  # refuses absurd counts
    from lstmlm.generate.generator import Generator

    generator = Generator.load(args.model, args.vocab, threads=threads)
    # The page draws from worker threads, which cannot set the BLAS's count themselves.
    set_process_threads(threads)
    return generator


# ---------------------------------------------------------------------- output


def _describe_words(words: list[str], limit: int = 10) -> str:
    """Unknown words for a message: control characters escaped, a long word (a line of
    3 MB read with --interactive) and a long list cut short."""
    shown = [shorten(w if w.isprintable() else repr(w), 40) for w in words[:limit]]
    more = f" and {len(words) - limit} more" if len(words) > limit else ""
    return ", ".join(shown) + more


def _prompts(args: argparse.Namespace, stdin: TextIO | None) -> Iterator[str]:
    yield from args.prompts
    if not args.interactive:
        if not args.prompts:
            yield ""
        return
    if stdin is None:
        return
    tty = stdin.isatty()
    while True:
        if tty:
            print("> ", end="", file=sys.stderr, flush=True)
        line = stdin.readline()
        if not line:
            return
        yield line.rstrip("\r\n")


def _pieces(prompt: str, tokens: Iterable[str], raw: bool, scheme: str,
            headings: bool = True) -> Iterator[str]:
    """What to print for one text, piece by piece: the prompt and its continuation
    detokenised, or with ``raw`` the tokens alone."""
    if raw:
        for number, token in enumerate(tokens):
            yield token if number == 0 else " " + token
        return
    from lstmlm.generate.text import with_prompt

    yield from with_prompt(prompt, tokens, scheme, headings)


def _write_generation(out: TextIO, pieces: Iterable[str], stream: bool) -> None:
    """Print one text, as it comes if ``stream``, else all at once."""
    if not stream:
        pieces = ["".join(pieces)]
    for piece in pieces:
        if piece:
            out.write(piece)
            if stream:
                out.flush()
    out.write("\n")
    out.flush()


# ---------------------------------------------------------------------- generate


def _reconfigure_streams(interactive: bool) -> None:
    """Standard streams fit for the command, or a clear error before any work.

    Closed ones (``>&-``) are None in sys: with no stdout there is nowhere to write the
    text; a closed stderr becomes /dev/null, since print(file=None) would write the notes
    into the text on stdout. Never a UnicodeEncodeError: a prompt is echoed as given, and
    it may hold text the terminal's encoding lacks, or bytes that were not UTF-8 (kept as
    lone surrogates)."""
    if sys.stderr is None:
        sys.stderr = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 (for the process)
    if sys.stdout is None:
        raise LstmlmError("standard output is closed, so the text cannot be written; "
                          "redirect it to a file (or /dev/null) instead")
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    if interactive and hasattr(sys.stdin, "reconfigure"):
        sys.stdin.reconfigure(errors="replace")  # undecodable input is read as U+FFFD


def main(argv: list[str] | None = None) -> int:
    """``python -m lstmlm generate``: see generate_parser()."""
    parser = generate_parser()
    args = parse_args(parser, argv)
    options = seeded(sampling_options(parser, args))
    _reconfigure_streams(args.interactive)
    generator = load_generator(args)
    out = sys.stdout
    try:
        for number, prompt in enumerate(_prompts(args, sys.stdin)):
            ids, unknown = generator.encode_prompt(prompt)
            if unknown:
                print(f"note: not in the vocabulary, read as <unk> ({len(unknown)}): "
                      f"{_describe_words(unknown)}", file=sys.stderr, flush=True)
            if number:
                out.write("\n")
            tokens = generator.stream_ids(ids, options)
            pieces = _pieces(prompt, tokens, args.raw, generator.vocab.scheme, args.headings)
            _write_generation(out, pieces, args.stream)
        if args.seed is None:  # after the text: how to draw it again
            print(f"note: seed {options.seed} (--seed {options.seed} draws the same text "
                  "again)", file=sys.stderr, flush=True)
    except BrokenPipeError:
        # The reader stopped (e.g. `| head`): it has all it wanted.
        _discard_stdout()
    except OSError as err:  # a full disk (> /dev/full), a lost terminal
        _discard_stdout()
        raise LstmlmError(f"cannot write the text to standard output: "
                          f"{err.strerror or err}") from None
    return 0


def _discard_stdout() -> None:
    """Point stdout at /dev/null, so that Python's final flush of what could not be
    written does not raise again (a traceback and exit status 120)."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
