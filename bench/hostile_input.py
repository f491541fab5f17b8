"""Hostile input (issue 29): what each case does, its time and its peak memory, with the
working tree's code and, with --before, a revision's side by side.

    python bench/hostile_input.py [--before main] [--model data/model.pt] [--line-mb 18]

Every case runs in a child process with the code under test first on PYTHONPATH (for
--before, the revision's lstmlm/, stages/ and conf/ from `git archive`); peak memory is the
child's own high-water mark (VmHWM). The cases:

  * checkpoints, loaded under a limit of --limit-mib more than the child's imports take:
    vocabulary counts claiming 2*10**8 and 10**11 elements on one (a stride of 0); every
    weight of a config with emb = hidden = 100,000, or hidden 2,000, on one element each;
    100 zip records sharing one payload of 10 MB; metadata holding NaN, or a list shared
    with itself 60 levels deep;
  * a YAML alias bomb in params.yaml (nine levels of nine aliases), read by the params
    stage's reading;
  * tokenising (the wikitext scheme) three lines of --line-mb MB each, and the same text
    in short lines;
  * a word and 99,996 dots as a prompt: through `python -m lstmlm generate --interactive`,
    and through the page with a GET /api/info sent 0.2 s after it;
  * the page's /api/info for the NaN metadata, its GET / for the self-shared one (and
    whether Ctrl-C then stops it), and a JSON number of 5,000 digits posted to it.

The prompts use --model (default data/model.pt, from `make pipeline`; without it, a tiny
untrained model). Timings are only meaningful on a quiet machine. Needs the serve extra.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from helpers_hostile import (  # noqa: E402
    LOAD_CHILD,
    billion_laughs,
    forged_checkpoint,
    overlapping_zip,
    self_sharing,
    stride_zero_model,
)

from conftest import build_tiny_checkpoint  # noqa: E402

PROMPT = "word" + "." * 99_996  # 100,000 characters
# A child's script: MEASURE after its imports, its work setting ``result``, then REPORT:
# its result as JSON, with how far its memory peaked above what it held after the imports.
MEASURE = textwrap.dedent("""
    def kib(key):
        return int(next(l.split()[1] for l in open("/proc/self/status") if l.startswith(key)))
    before = kib("VmRSS:")
""")
REPORT = textwrap.dedent("""
    print(json.dumps({**result, "peak_mb": (kib("VmHWM:") - before) / 1024}), flush=True)
""")
YAML_CHILD = textwrap.dedent("""
    import json, sys, time
    from stages.params import read_all
""") + MEASURE + textwrap.dedent("""
    started = time.monotonic()
    try:
        read_all(sys.argv[1])
        result = {"outcome": "read"}
    except BaseException as err:
        result = {"outcome": f"{type(err).__name__}: {str(err)[:90]} ({len(str(err)):,} chars)"}
    result["seconds"] = time.monotonic() - started
""") + REPORT
TOKENISE_CHILD = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    from lstmlm.data import textfile
    from lstmlm.data.tokenise import tokenise_corpus
    textfile.PARALLEL_BYTES = 1 << 40  # in this process, whose peak is measured
""") + MEASURE + textwrap.dedent("""
    raw, out = Path(sys.argv[1]), Path(sys.argv[2])
    started = time.monotonic()
    tokenise_corpus(raw, out / "tokens", out / "vocab.json", scheme="wikitext")
    result = {"outcome": "tokenised", "seconds": time.monotonic() - started}
""") + REPORT


# --------------------------------------------------------------------------- children


def child(code: Path, args: list[str], timeout: float, stdin: str | None = None
          ) -> subprocess.CompletedProcess | None:
    """``python ARGS`` with ``code`` first on PYTHONPATH, in ``code``; None if it ran past
    ``timeout`` (then killed)."""
    env = {**os.environ, "PYTHONPATH": str(code)}
    try:
        return subprocess.run([sys.executable, *args], cwd=code, env=env, input=stdin,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None


def script(code: Path, source: str, args: list[str], timeout: float = 120) -> dict:
    """A child running ``source`` that prints one JSON line: that line, parsed."""
    done = child(code, ["-c", source, *args], timeout)
    if done is None:
        return {"outcome": f"no answer in {timeout:.0f} s (killed)"}
    lines = done.stdout.strip().splitlines()
    if not lines:
        return {"outcome": f"crashed: {(done.stderr.strip().splitlines() or ['?'])[-1][:90]}"}
    return json.loads(lines[-1])


def loaded(code: Path, path: Path, limit_mib: int) -> dict:
    """A checkpoint loaded in LOAD_CHILD: what happened, seconds, peak growth."""
    result = script(code, LOAD_CHILD, [str(limit_mib), "checkpoint", str(path)])
    if "error" in result:
        message = result["message"].replace(f"{path}: ", "").replace(
            "not a readable checkpoint, perhaps truncated or not a checkpoint (", "unreadable (")
        what = "loaded" if result["error"] is None else f"{result['error']}: {message}"
        result = {"outcome": what[:150], "seconds": result["seconds"],
                  "peak_mb": result["growth"] / (1 << 20)}
    return result


# --------------------------------------------------------------------------- the files


def hostile_files(tmp: Path) -> dict[str, Path]:
    """Each hostile checkpoint, forged from a tiny model's."""
    root, model, vocab = build_tiny_checkpoint(tmp / "tiny")
    from lstmlm.core.checkpoint import save_checkpoint

    save_checkpoint(tmp / "nan.pt", model, vocab, {"epoch": 1, "valid_ppl": float("nan")})
    save_checkpoint(tmp / "shared.pt", model, vocab, {"deep": self_sharing(60)})
    return {
        "counts claiming 2*10**8 elements on one": forged_checkpoint(
            root, tmp / "c8.pt", {"counts": (2 * 10**8,)}),
        "counts claiming 10**11 elements on one": forged_checkpoint(
            root, tmp / "c11.pt", {"counts": (10**11,)}),
        "emb = hidden = 100,000, weights on one element": stride_zero_model(
            root, tmp / "h100k.pt", emb=100_000, hidden=100_000),
        "hidden 2,000, weights on one element": stride_zero_model(
            root, tmp / "h2k.pt", hidden=2000),
        "100 zip records sharing a 10 MB payload": overlapping_zip(
            tmp / "overlap.pt", 100, bytes(10 << 20)),
        "metadata holding NaN": tmp / "nan.pt",
        "metadata shared with itself 60 levels deep": tmp / "shared.pt",
    }


def long_lines(raw: Path, line_mb: float, short: bool) -> Path:
    """train/valid/test of three lines of ``line_mb`` MB each (or the same words in lines
    of 20 words)."""
    raw.mkdir(parents=True)
    words = [f"w{i % 5000}" for i in range(int(line_mb * (1 << 20) / 6))]
    lines = [" ".join(words)] * 3 if not short else [
        " ".join(words[k:k + 20]) for k in range(0, len(words), 20)] * 3
    (raw / "train.txt").write_text(" " + " \n ".join(lines) + " \n", encoding="utf-8")
    for split in ("valid", "test"):
        (raw / f"{split}.txt").write_text(" w1 w2 \n", encoding="utf-8")
    return raw


# --------------------------------------------------------------------------- prompts, page

PROMPT_CHILD = textwrap.dedent("""
    import json, sys, time
    from lstmlm.generate.generator import Generator
    from lstmlm.generate.text import Detokeniser
    generator = Generator.load(sys.argv[1])
    prompt = sys.stdin.read()
""") + MEASURE + textwrap.dedent("""
    started = time.monotonic()
    ids, unknown = generator.encode_prompt(prompt)
    Detokeniser.after(prompt, generator.vocab.scheme)
    result = {"outcome": f"{len(ids):,} tokens, twice (ids, detokeniser)",
              "seconds": time.monotonic() - started}
""") + REPORT


def prompt_cases(code: Path, model: Path) -> dict[str, dict]:
    """The prompt read as the command and the page read it, then the whole command."""
    done = child(code, ["-c", PROMPT_CHILD, str(model)], 600, stdin=PROMPT)
    reading = json.loads(done.stdout.strip().splitlines()[-1]) if done and done.stdout.strip() \
        else {"outcome": "no answer in 600 s" if done is None else "crashed"}
    started = time.monotonic()
    done = child(code, ["-m", "lstmlm", "generate", "--model", str(model), "--words", "5",
                        "--interactive"], 600, stdin=PROMPT + "\n")
    command = {"outcome": "no text in 600 s (killed)" if done is None else
               f"exit {done.returncode}, {len(done.stdout):,} characters of text",
               "seconds": time.monotonic() - started}
    return {"prompt: tokenised (encode_prompt, Detokeniser.after)": reading,
            "prompt: `generate --interactive`, start to end": command}


class Server:
    """`python -m lstmlm serve --model MODEL --port 0` with ``code`` first on PYTHONPATH."""

    def __init__(self, code: Path, model: Path, log: Path):
        env = {**os.environ, "PYTHONPATH": str(code)}
        with open(log, "w") as errors:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "lstmlm", "serve", "--model", str(model), "--port", "0"],
                cwd=code, env=env, stdout=subprocess.PIPE, stderr=errors, text=True)
        line = self.process.stdout.readline()  # "serving MODEL on http://127.0.0.1:PORT/ ..."
        self.port = int(line.split("127.0.0.1:")[1].split("/")[0]) if "127.0.0.1:" in line else 0
        self.log = log

    def request(self, method: str, path: str, body: str | None = None,
                timeout: float = 600) -> tuple[str, float]:
        """(the status, or what went wrong; seconds)."""
        started = time.monotonic()
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request(method, path, body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            status = str(response.status)
        except OSError as err:  # TimeoutError included
            status = f"no answer ({type(err).__name__})"
        finally:
            connection.close()
        return status, time.monotonic() - started

    def stop(self) -> str:
        """Ctrl-C; whether it stopped."""
        if self.process.poll() is not None:
            return "it had exited"
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(10)
            return "Ctrl-C stopped it"
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return "still running 10 s after Ctrl-C (killed)"


def page_cases(code: Path, model: Path, files: dict[str, Path], tmp: Path) -> dict[str, dict]:
    """The prompt through the page with a GET /api/info meanwhile, a 5,000-digit number,
    and the two metadata files served."""
    from concurrent.futures import ThreadPoolExecutor

    server = Server(code, model, tmp / "page.log")
    try:
        with ThreadPoolExecutor(1) as pool:
            post = pool.submit(server.request, "POST", "/api/generate",
                               json.dumps({"prompt": PROMPT, "words": 5}))
            time.sleep(0.2)
            info, waited = server.request("GET", "/api/info")
            status, seconds = post.result()
        number = server.request("POST", "/api/generate", '{"words": 1' + "0" * 5000 + "}")[0]
    finally:
        server.stop()
    nan = Server(code, files["metadata holding NaN"], tmp / "nan.log")
    nan_info = nan.request("GET", "/api/info")[0]
    nan.stop()
    return {"page: the prompt, POST /api/generate": {"outcome": status, "seconds": seconds},
            "page: GET /api/info sent 0.2 s after it": {"outcome": info, "seconds": waited},
            "page: a JSON number of 5,000 digits": {"outcome": number},
            "page: /api/info with NaN in the metadata": {"outcome": nan_info},
            "page: /api/info, then GET /, self-shared metadata": self_shared(
                code, files["metadata shared with itself 60 levels deep"], tmp)}


def self_shared(code: Path, path: Path, tmp: Path) -> dict:
    """The page with the self-shared metadata: GET /api/info and then GET / (10 s each at
    most), then Ctrl-C. Its memory is capped at 2 GiB more than it started with, since a
    walk of 2**60 values only ends when the memory does."""
    import psutil

    server = Server(code, path, tmp / "shared.log")
    if not server.port:
        server.process.wait(30)
        lines = server.log.read_text().strip().splitlines() or ["?"]
        return {"outcome": f"not served: {lines[-1][:90]}"}
    process = psutil.Process(server.process.pid)
    process.rlimit(psutil.RLIMIT_AS, (process.memory_info().vms + (2 << 30), psutil.RLIM_INFINITY))
    info, seconds = server.request("GET", "/api/info", timeout=10)
    page = server.request("GET", "/", timeout=10)[0]
    return {"outcome": f"/api/info: {info}, then GET /: {page}; {server.stop()}",
            "seconds": seconds}


# --------------------------------------------------------------------------- the table


def cases(code: Path, files: dict[str, Path], inputs: dict[str, Path], tmp: Path,
          args: argparse.Namespace) -> dict[str, dict]:
    """Every case with ``code``: name -> {outcome, seconds, peak_mb}."""
    results = {f"checkpoint: {name}": loaded(code, path, args.limit_mib)
               for name, path in files.items()}
    results["params.yaml: a YAML alias bomb (9 levels of 9)"] = script(
        code, YAML_CHILD, [str(inputs["bomb"])], timeout=60)
    for lines in ("long", "short"):
        what = "in lines of 20 words" if lines == "short" else f"three lines of {args.line_mb:g} MB"
        results[f"tokenise: the text {what}"] = script(
            code, TOKENISE_CHILD, [str(inputs[lines]), str(tmp / f"{code.name}-{lines}")], 600)
    results.update(prompt_cases(code, args.model))
    results.update(page_cases(code, args.model, files, tmp))
    return results


def cell(result: dict | None) -> str:
    if result is None:
        return "| | |"
    seconds = f"{result['seconds']:.2f}" if "seconds" in result else ""
    peak = f"{result['peak_mb']:,.0f}" if "peak_mb" in result else ""
    return f"{result['outcome']} | {seconds} | {peak}"


def table(columns: dict[str, dict[str, dict]]) -> str:
    heads = " | ".join(f"{name}: what happened | s | MB" for name in columns)
    rows = [f"| case | {heads} |", "|---" * (1 + 3 * len(columns)) + "|"]
    for case in next(iter(columns.values())):
        rows.append(f"| {case} | " + " | ".join(cell(results.get(case))
                                                for results in columns.values()) + " |")
    return "\n".join(rows)


def code_at(rev: str, tmp: Path) -> Path:
    """The revision's lstmlm/, stages/ and conf/ in a folder of their own."""
    dest = tmp / "before"
    dest.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "lstmlm", "stages", "conf"],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", metavar="REV", help="also run a revision's code (main)")
    parser.add_argument("--model", type=Path, default=ROOT / "data" / "model.pt")
    parser.add_argument("--line-mb", type=float, default=18.0)
    parser.add_argument("--limit-mib", type=int, default=3072,
                        help="memory a checkpoint's loading may take (default %(default)s)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="hostile-") as name:
        tmp = Path(name)
        files = hostile_files(tmp)
        if not args.model.is_file():
            print(f"{args.model} not found: the prompts use a tiny untrained model")
            args.model = tmp / "tiny" / "model.pt"
        (tmp / "bomb.yaml").write_text(billion_laughs(), encoding="utf-8")
        inputs = {"bomb": tmp / "bomb.yaml",
                  "long": long_lines(tmp / "long", args.line_mb, short=False),
                  "short": long_lines(tmp / "short", args.line_mb, short=True)}
        columns = {}
        if args.before:
            columns[f"before ({args.before})"] = cases(code_at(args.before, tmp), files,
                                                       inputs, tmp, args)
        columns["after (working tree)"] = cases(ROOT, files, inputs, tmp, args)
    print(f"prompt: a word and {len(PROMPT) - 4:,} dots; model {args.model}. MB: how far the "
          "child's memory peaked above what it held after its imports (VmHWM)")
    print(table(columns))
    return 0


if __name__ == "__main__":
    sys.exit(main())
