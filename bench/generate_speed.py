"""Generation speed: words per second, and the time to the first word of the command.

    python bench/generate_speed.py [--model data/model.pt] [--words 2000] [--threads 1]
                                   [--api-words 400] [--load 2] [--no-api]

Measures, on one prompt, one stream:
  * words/s with the sample stage's default settings (temperature 0.8, top-p 0.95);
  * words/s at temperature 1 with no filters;
  * words/s when greedy (temperature 0);
  * the memory floor: the time of the matrix-vector products every word needs (W_hh,
    the projection, the softmax head) on the model's own weights, alone: the most words
    per second this machine allows one stream;
  * the time from starting `python -m lstmlm generate --stream` to its first generated
    word on stdout (interpreter start, imports and checkpoint load included);
  * the Python API (lstmlm.load(...).generate, in a fresh process, as a user calls it) beside
    the command, quiet and then with --load busy processes on the machine (each a
    Python busy loop, killed when the measurement ends and ending by itself after
    BUSY_SECONDS at the latest). The API is measured with its default (one thread) and
    with the BLAS library's own thread count (threads=None: all cores, as torch's default
    was before issue 21).
Exits with status 1 if there is no checkpoint.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lstmlm.generate.command import at_least

# words/s targets per path (issue 24), one thread, one stream
TARGETS = {"sample defaults": 3000, "temperature 1": 4000, "greedy": 4000}
TARGET_FIRST_WORD_S = 0.8
BUSY_SECONDS = 300  # a busy process ends by itself after this, whatever happens to the bench

# In a fresh process: words/s of the Python API, as a user would call it.
API_SCRIPT = """
import sys, time
import lstmlm
model, vocab, words, prompt, threads = sys.argv[1:6]
generator = lstmlm.load(model, vocab or None)
generator.threads = None if threads == "all" else int(threads)
generator.generate(prompt, words=20, seed=0)  # warm up
start = time.perf_counter()
count = len(generator.generate(prompt, words=int(words), seed=0).tokens)
print(count / (time.perf_counter() - start))
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path("data/model.pt"))
    parser.add_argument("--vocab", type=Path, help="default: the one the checkpoint refers to")
    parser.add_argument("--words", type=at_least(1), default=2000,
                        help="words per path (default: %(default)s)")
    parser.add_argument("--prompt", default="The Beatles are")
    parser.add_argument("--threads", type=at_least(1), default=1,
                        help="as the command's --threads (default: %(default)s)")
    parser.add_argument("--api-words", dest="api_words", type=at_least(1), default=400,
                        help="words per API and command run (default: %(default)s)")
    parser.add_argument("--load", type=at_least(0), default=2,
                        help="busy processes beside the API and the command in their second "
                             "round (default: %(default)s; 0: quiet only)")
    parser.add_argument("--no-api", dest="api", action="store_false",
                        help="leave out the API-and-command section")
    return parser.parse_args(argv)


# ---------------------------------------------------------------------- in-process paths


def measure_paths(args: argparse.Namespace) -> dict[str, float]:
    """words/s of each path in this process, on --threads threads; printed."""
    import numpy

    from lstmlm.generate.generator import Generator
    from lstmlm.generate.options import SamplingOptions

    start = time.perf_counter()
    generator = Generator.load(args.model, args.vocab, threads=args.threads)
    load_s = time.perf_counter() - start
    config = generator.config
    print(f"model {args.model}: vocabulary {len(generator.vocab)}, emb {config.emb}, hidden "
          f"{config.hidden}, {config.layers} layer(s), {config.output} softmax"
          + (f" (cutoffs {list(config.cutoffs)})" if config.output == "adaptive" else "")
          + f"; numpy {numpy.__version__}, {args.threads} thread(s); loaded in {load_s:.2f} s")
    settings = {
        "sample defaults": SamplingOptions(words=args.words, temperature=0.8, top_p=0.95, seed=0),
        "temperature 1": SamplingOptions(words=args.words, temperature=1.0, top_p=1.0, seed=0),
        "greedy": SamplingOptions(words=args.words, temperature=0.0),
    }
    ids, _ = generator.encode_prompt(args.prompt)
    for _ in generator.stream_ids(ids, SamplingOptions(words=20, seed=0)):  # warm up
        pass
    results = {}
    print(f"{'':50} {'words/s':>8} {'per CPU s':>10}")
    for label, options in settings.items():
        start, cpu = time.perf_counter(), time.process_time()
        count = sum(1 for _ in generator.stream_ids(ids, options))
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        results[label] = count / seconds
        # Words per CPU second as well: on a shared machine the wall clock also counts
        # the time other processes held the cores.
        name = label + (f" (temperature {options.temperature:g}, top-p {options.top_p:g})"
                        if options.temperature else " (temperature 0)")
        print(f"{name:50} {count / seconds:8.0f} {count / cpu:10.0f}  "
              f"({count} words in {seconds:.2f} s)")
    floor = memory_floor(generator, args.words)
    print(f"{'memory floor (W_hh, projection, head products)':50} {1 / floor:8.0f} "
          f"{'':10}  ({floor * 1e6:.0f} us a word)")
    return results


def memory_floor(generator, repeats: int) -> float:
    """Seconds a word's matrix-vector products take alone, on the loaded weights: the
    first LSTM's W_hh, the projection (if any) and an adaptive softmax's head (or a full
    softmax's weight); more layers and tail clusters only add to a word's time."""
    import numpy as np

    from lstmlm.core.threads import BLAS_THREADS
    from lstmlm.generate.engine import AdaptiveOutput

    engine = generator.engine()
    _, hh_t, _ = engine.step.layers[0]
    out_t = (engine.output.head_t if isinstance(engine.output, AdaptiveOutput)
             else engine.output.weight_t)
    products = [hh_t] + ([engine.step.projection_t] if engine.step.projection_t is not None
                         else []) + [out_t]
    vectors = [np.ones(m.shape[0], np.float32) for m in products]
    with BLAS_THREADS.use(generator.threads):
        for _ in range(20):  # warm up
            for vector, matrix in zip(vectors, products):
                vector @ matrix
        start = time.perf_counter()
        for _ in range(repeats):
            for vector, matrix in zip(vectors, products):
                vector @ matrix
    return (time.perf_counter() - start) / repeats


# ---------------------------------------------------------------------- the command


def command_line(args: argparse.Namespace, words: int, prompt: str) -> list[str]:
    command = [sys.executable, "-m", "lstmlm", "generate", "--model", str(args.model),
               "--stream", "--words", str(words), "--seed", "0", "--threads",
               str(args.threads), prompt]
    return command + (["--vocab", str(args.vocab)] if args.vocab is not None else [])


def run_command(args: argparse.Namespace, words: int) -> tuple[float, float]:
    """(seconds to the first generated word, words/s after it) of the command, from the
    bytes it streams: the prompt is echoed before the first word is drawn."""
    echo = len(args.prompt.encode("utf-8"))
    start = time.perf_counter()
    process = subprocess.Popen(command_line(args, words, args.prompt), cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    received, first, last = b"", None, None
    try:
        while True:
            chunk = os.read(process.stdout.fileno(), 65536)  # returns as soon as bytes arrive
            if not chunk:  # end of file: after the interpreter's shutdown, not counted
                break
            received += chunk
            last = time.perf_counter()
            if first is None and len(received) > echo:
                first = last
        if first is None or process.wait(timeout=60) != 0:
            raise SystemExit(f"the command failed: {process.stderr.read().decode()}")
        return first - start, (words - 1) / max(last - first, 1e-9)
    finally:
        process.kill()
        process.wait()
        process.stdout.close()
        process.stderr.close()


def time_to_first_word(args: argparse.Namespace) -> float:
    return run_command(args, 5)[0]


# ---------------------------------------------------------------------- API beside command


def run_api(args: argparse.Namespace, threads: str) -> float:
    """words/s of lstmlm.load(...).generate in a fresh process (``threads``: a count, or
    "all" for the BLAS library's own setting)."""
    result = subprocess.run(
        [sys.executable, "-c", API_SCRIPT, str(args.model), str(args.vocab or ""),
         str(args.api_words), args.prompt, threads],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    if result.returncode != 0:
        raise SystemExit(f"the API run failed: {result.stderr}")
    return float(result.stdout.split()[-1])


@contextlib.contextmanager
def busy_processes(count: int) -> Iterator[None]:
    """``count`` CPU-bound processes for the duration, always killed at the end."""
    loop = f"import time\nend = time.time() + {BUSY_SECONDS}\nwhile time.time() < end: pass\n"
    processes = []
    try:
        for _ in range(count):
            processes.append(subprocess.Popen([sys.executable, "-c", loop]))
        time.sleep(0.5 if count else 0)  # let them take the cores
        yield
    finally:
        for process in processes:
            process.kill()
        for process in processes:
            process.wait()


def api_beside_command(args: argparse.Namespace) -> None:
    rounds = [0] + ([args.load] if args.load else [])
    print(f"\nAPI and command, {args.api_words} words at the sample defaults (words/s)")
    print(f"{'':12} {'API (1 thread)':>15} {'API (all threads)':>20} {'command':>10}")
    for load in rounds:
        with busy_processes(load):
            api = run_api(args, "1")
            api_all = run_api(args, "all")
            command = run_command(args, args.api_words)[1]
        label = "quiet" if load == 0 else f"{load} busy"
        print(f"{label:12} {api:15.0f} {api_all:20.0f} {command:10.0f}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.model.is_file():
        print(f"no checkpoint at {args.model}: train one first (dvc repro train) or pass "
              "--model PATH", file=sys.stderr)
        return 1
    # The command and the API run in the checkout's root: paths as given here, absolute.
    args.model = args.model.resolve()
    args.vocab = args.vocab.resolve() if args.vocab is not None else None
    results = measure_paths(args)
    first = time_to_first_word(args)
    print(f"{'time to first word (python -m lstmlm generate --stream)':50} {first:8.2f} s")
    missed = [f"{label} ({rate:.0f} < {TARGETS[label]})" for label, rate in results.items()
              if rate < TARGETS[label]]
    if first > TARGET_FIRST_WORD_S:
        missed.append(f"first word ({first:.2f} s > {TARGET_FIRST_WORD_S} s)")
    print("targets (" + ", ".join(f"{k} {v}" for k, v in TARGETS.items())
          + f" words/s; first word {TARGET_FIRST_WORD_S} s): "
          + ("met" if not missed else "not met by " + "; ".join(missed)))
    if args.api:
        api_beside_command(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
