"""The commands behind ``python -m lstmlm``; for now ``generate``.

Arguments are parsed and checked before torch is imported, so ``--help`` and bad
values answer at once. Errors the user can fix end with a message on stderr and exit
status 2 (argparse's own, or LstmlmError through errors.run_main), never a traceback.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import Callable, Iterable, Iterator, TextIO

from .errors import LstmlmError

GENERATE_EPILOG = """\
examples:
  python -m lstmlm generate --model data/model.pt "The Beatles are" --words 50 --temperature 0.8
  python -m lstmlm generate "I like" "A cat" --seed 0 --top-p 0.95
  python -m lstmlm generate --stream --words 2000 "Super Mario is"
  python -m lstmlm generate --interactive --top-k 40 < prompts.txt

Each prompt is tokenised with the scheme the model was trained with and primes the
LSTM after an <eos>, as if it began a line; words not in the vocabulary are read as
<unk> (a note on stderr names them). An empty prompt starts from <eos> alone. The
output is the prompt followed by its continuation, detokenised for reading (<eos> as
a line break), or with --raw the generated tokens only, as the model sees them.
Several prompts give one text each, separated by a blank line.
"""


# ---------------------------------------------------------------------- argument types
# argparse turns an ArgumentTypeError into "argument --words: <message>" and exit 2.


def _number(text: str, kind: Callable, what: str, ok: Callable[[float], bool]):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if not ok(value):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    return _number(text, int, "an integer > 0", lambda v: v > 0)


def non_negative_int(text: str) -> int:
    return _number(text, int, "an integer >= 0", lambda v: v >= 0)


def temperature(text: str) -> float:
    return _number(text, float, "a finite number >= 0 (0 means greedy)",
                   lambda v: math.isfinite(v) and v >= 0)


def probability(text: str) -> float:
    return _number(text, float, "a number in (0, 1]", lambda v: 0 < v <= 1)


def generate_parser() -> argparse.ArgumentParser:
    """The ``generate`` command's options (names as in params.yaml's sample section)."""
    parser = argparse.ArgumentParser(
        prog="python -m lstmlm generate",
        description="Generate text after one or more prompts with a trained checkpoint.",
        epilog=GENERATE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("prompts", nargs="*", metavar="PROMPT",
                        help="text to continue; several prompts give one text each "
                             "(none: one empty prompt, unless --interactive)")
    parser.add_argument("--model", type=Path, default=Path("data/model.pt"), metavar="CHECKPOINT",
                        help="checkpoint written by the train stage (default: %(default)s)")
    parser.add_argument("--vocab", type=Path, metavar="PATH",
                        help="vocabulary JSON (default: the one the checkpoint refers to); "
                             "it must be the one the model was trained with")
    parser.add_argument("--words", type=positive_int, default=50,
                        help="tokens to generate per prompt, <eos> included (default: %(default)s)")
    parser.add_argument("--temperature", type=temperature, default=1.0,
                        help="0: greedy; < 1 more conservative, > 1 more random "
                             "(default: %(default)s)")
    parser.add_argument("--top-k", dest="top_k", type=non_negative_int, default=0,
                        help="draw only from the k most likely words; 0 disables (default)")
    parser.add_argument("--top-p", dest="top_p", type=probability, default=1.0,
                        help="draw only from the smallest set of most likely words whose "
                             "probability reaches p; 1 disables (default)")
    parser.add_argument("--seed", type=non_negative_int,
                        help="seed for reproducible output (default: a fresh one each run); "
                             "each prompt starts from this seed")
    parser.add_argument("--allow-unk", dest="allow_unk", action="store_true",
                        help="allow <unk> in the output (by default it is never drawn)")
    parser.add_argument("--stop-at-eos", dest="stop_at_eos", action="store_true",
                        help="stop a text at the first <eos> (end of line)")
    parser.add_argument("--raw", action="store_true",
                        help="print the generated tokens as they are, space-separated, "
                             "without the prompt")
    parser.add_argument("--stream", action="store_true",
                        help="print words as they are generated")
    parser.add_argument("--threads", type=positive_int, default=1,
                        help="CPU threads for torch (default: %(default)s: one stream's "
                             "matrix-vector products gain little from more, and on a busy "
                             "machine a second thread can slow them down many times)")
    parser.add_argument("--interactive", action="store_true",
                        help="after any PROMPT arguments, read prompts from stdin, one per "
                             "line, until end of input")
    return parser


# ---------------------------------------------------------------------- output


def _describe_words(words: list[str], limit: int = 10) -> str:
    """Unknown words for a message: control characters escaped, a long list cut short."""
    shown = [w if w.isprintable() else repr(w) for w in words[:limit]]
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


def _write_generation(out: TextIO, prompt: str, tokens: Iterable[str], raw: bool,
                      stream: bool) -> None:
    """Print one text: the prompt and its continuation (or raw tokens), as it comes if
    ``stream``, else all at once."""
    from .generate import StreamDetokeniser, join_prompt
    from .text import detokenise

    if not stream:
        tokens = list(tokens)
        if raw:
            out.write(" ".join(tokens) + "\n")
        else:
            out.write(prompt + join_prompt(prompt, tokens[0] if tokens else None)
                      + detokenise(tokens) + "\n")
        return
    first = True
    detokeniser = StreamDetokeniser()
    if not raw:
        out.write(prompt)
        out.flush()
    for token in tokens:
        if raw:
            piece = token if first else " " + token
        else:
            piece = (join_prompt(prompt, token) if first else "") + detokeniser.push(token)
        first = False
        if piece:
            out.write(piece)
            out.flush()
    out.write(("" if raw else detokeniser.finish()) + "\n")
    out.flush()


# ---------------------------------------------------------------------- generate


def generate_main(argv: list[str] | None = None) -> int:
    """``python -m lstmlm generate``: see generate_parser()."""
    args = generate_parser().parse_intermixed_args(argv)
    # Never a UnicodeEncodeError: a prompt is echoed as given, and it may hold text the
    # terminal's encoding lacks, or bytes that were not UTF-8 (kept as lone surrogates).
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    if args.interactive and hasattr(sys.stdin, "reconfigure"):
        sys.stdin.reconfigure(errors="replace")  # undecodable input is read as U+FFFD

    # Missing files are reported before the heavy imports (torch), like bad values.
    if not args.model.is_file():
        raise LstmlmError(f"{args.model}: checkpoint not found")
    if args.vocab is not None and not args.vocab.is_file():
        raise LstmlmError(f"{args.vocab}: vocabulary file not found")
    import torch

    from .generate import SamplingOptions, load_generator

    torch.set_num_threads(args.threads)

    options = SamplingOptions(words=args.words, temperature=args.temperature, top_k=args.top_k,
                              top_p=args.top_p, seed=args.seed, allow_unk=args.allow_unk,
                              stop_at_eos=args.stop_at_eos)
    generator, _ = load_generator(args.model, args.vocab)
    out = sys.stdout
    try:
        for number, prompt in enumerate(_prompts(args, sys.stdin)):
            ids, unknown = generator.encode_prompt(prompt)
            if unknown:
                print(f"note: not in the vocabulary, read as <unk> ({len(unknown)}): "
                      f"{_describe_words(unknown)}", file=sys.stderr, flush=True)
            if number:
                out.write("\n")
            _write_generation(out, prompt, generator.stream_ids(ids, options), args.raw,
                              args.stream)
            out.flush()
    except BrokenPipeError:
        # The reader stopped (e.g. `| head`): it has all it wanted. Point stdout at
        # /dev/null so that Python's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
