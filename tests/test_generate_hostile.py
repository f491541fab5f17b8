"""Odd and hostile input to generation (issue 23): temperatures that overflow, prompts
that are not text, closed or full standard streams (real subprocesses), a 3 MB unknown
word, and model output that would be HTML or Markdown in metrics/samples.md."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from types import SimpleNamespace

import pytest
from markdown_it import MarkdownIt
from test_generate import assert_clean_error, run_cli

from lstmlm.core.errors import LstmlmError
from lstmlm.core.params import ParamsError
from lstmlm.generate.command import main as generate_main
from lstmlm.generate.generator import Generator
from lstmlm.generate.options import SamplingOptions

# ---------------------------------------------------------------------- numbers out of range


@pytest.mark.parametrize("temperature", [1e-40, 1e-4, 1e39, 1001.0])
def test_temperatures_beyond_float32_are_refused_with_the_range(temperature):
    with pytest.raises(ParamsError, match="sample.temperature.*0 .greedy. or a number from "
                                          "0.001 to 1000"):
        SamplingOptions(temperature=temperature)


def test_the_range_ends_are_allowed_and_the_api_and_command_refuse_beyond(tiny_checkpoint):
    root, model, vocab = tiny_checkpoint
    generator = Generator(model, vocab)
    for temperature in (0.001, 1000.0, 0):  # the ends draw words (were overflow errors)
        assert len(generator.generate("the cat", words=5, temperature=temperature).tokens) == 5
    for temperature in (1e-40, 1e39):
        with pytest.raises(LstmlmError, match="0.001 to 1000"):
            generator.generate("the cat", temperature=temperature)
    result = run_cli("generate", "--model", str(root / "model.pt"), "--temperature", "1e-40",
                     "hi")
    assert_clean_error(result, "--temperature", "0.001 to 1000")


# ---------------------------------------------------------------------- the Python API


@pytest.mark.parametrize("prompt", [None, 5, b"the cat", ["the", "cat"]])
def test_a_prompt_that_is_not_text_is_named(tiny_checkpoint, prompt):
    _, model, vocab = tiny_checkpoint
    generator = Generator(model, vocab)
    for call in (generator.generate, generator.stream, generator.encode_prompt):
        with pytest.raises(TypeError, match="prompt: expected a str, got "
                                            + type(prompt).__name__):
            call(prompt)


def test_options_that_are_not_options_are_named(tiny_checkpoint):
    _, model, vocab = tiny_checkpoint
    generator = Generator(model, vocab)
    with pytest.raises(TypeError, match="options: expected a SamplingOptions, got dict"):
        generator.generate("the cat", {"words": 5})


# ---------------------------------------------------------------------- standard streams


def start_generate(root, *args: str, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lstmlm", "generate", "--model",
                             str(root / "model.pt"), "--words", "50", *args], text=True,
                            stderr=subprocess.PIPE, **popen)


def test_closed_or_full_stdout_is_one_clear_error(tiny_checkpoint, tmp_path):
    """`generate >&-` and `generate > /dev/full` ended in tracebacks."""
    root, _, _ = tiny_checkpoint
    with open("/dev/full", "w") as full:
        runs = {"closed": start_generate(root, "the cat", stdout=subprocess.DEVNULL,
                                         preexec_fn=lambda: os.close(1)),
                "full": start_generate(root, "the cat", stdout=full),
                "full, streamed": start_generate(root, "--stream", "the cat", stdout=full)}
        results = {name: process.communicate(timeout=120)[1] for name, process in runs.items()}
    for name, process in runs.items():
        stderr = results[name]
        assert process.returncode == 2, (name, stderr)
        assert "Traceback" not in stderr and len(stderr.splitlines()) == 1, (name, stderr)
    assert "standard output is closed" in results["closed"]
    for name in ("full", "full, streamed"):
        assert "cannot write the text to standard output: No space left" in results[name]


def test_a_model_path_that_is_a_device_or_a_directory_says_so(tmp_path):
    """`--model /dev/zero` and `--model /tmp` said "checkpoint not found"."""
    for path, kind in (("/dev/zero", "a device"), (str(tmp_path), "a directory")):
        result = subprocess.run([sys.executable, "-m", "lstmlm", "generate", "--model", path,
                                 "the cat"], capture_output=True, text=True, timeout=120)
        assert result.returncode == 2 and result.stderr == (
            f"error: {path}: not a regular file but {kind}; expected a checkpoint\n"), result.stderr


def test_with_stderr_closed_notes_stay_out_of_the_text(tiny_checkpoint):
    root, _, _ = tiny_checkpoint
    process = start_generate(root, "--raw", "--seed", "0", "Zorblax the cat",
                             stdout=subprocess.PIPE, preexec_fn=lambda: os.close(2))
    stdout, _ = process.communicate(timeout=120)
    assert process.returncode == 0
    assert "note" not in stdout and "Zorblax" not in stdout, stdout
    assert len(stdout.split()) == 50  # the text alone, as --raw prints it


def test_interactive_names_a_huge_unknown_word_cut_short(tiny_checkpoint, monkeypatch, capsys):
    root, _, _ = tiny_checkpoint
    monkeypatch.setattr(sys, "stdin", io.StringIO("x" * 3_000_000 + "\nthe cat\n"))
    assert generate_main(["--model", str(root / "model.pt"), "--interactive", "--raw",
                          "--words", "3"]) == 0
    out, err = capsys.readouterr()
    assert len(err) < 400 and "3,000,000 characters" in err, err[:400]
    assert len(out.split("\n\n")) == 2


# ---------------------------------------------------------------------- metrics/samples.md

HOSTILE = ("<iframe src=javascript:alert(1)></iframe> [click](javascript:alert(2)) "
           "![pixel](http://tracker.example/p.png) <!-- hidden --> **bold** `code` a | b "
           "~~gone~~ $x$ &lt;b&gt; <http://auto.example> \\*")
HOSTILE_LINES = "\n# Heading\n- item\n+ item\n1. item\n2) item\n> quote\n===\n    indented"


def render_samples(prompt: str, text: str) -> str:
    """stages/sample.py's Markdown for one generation whose text is ``text``."""
    from stages.sample import render

    generation = SimpleNamespace(prompt=prompt, text=text, unknown_words=["<b>unk</b>", "_x_"])
    return render([generation], SamplingOptions(), {"epoch": "<script>", "valid_ppl": 99.5})


def test_samples_markdown_shows_hostile_text_as_written():
    """A model trained on HTML-bearing text wrote `<iframe src=javascript:...>` into
    metrics/samples.md, which tools/pr_report.py pastes into pull-request comments."""
    markdown = render_samples("A <b>prompt</b> [x](y)", HOSTILE + HOSTILE_LINES)
    page = (MarkdownIt("commonmark").enable(["table", "strikethrough"]).render(markdown))
    tags = set(re.findall(r"</?([a-zA-Z][a-zA-Z0-9]*)", page))
    # The page's own structure only: the headings, the paragraphs, the prompt in bold, the
    # line breaks of <eos>, the unknown-words line in italics and <unk> as code.
    assert tags <= {"h1", "h2", "p", "strong", "br", "em", "code"}, tags
    assert page.count("<strong>") == 1 and page.count("<code>") == 1 and page.count("<em>") == 1
    for shown in ("&lt;iframe src=javascript:alert(1)&gt;", "[click](javascript:alert(2))",
                  "**bold**", "`code`", "~~gone~~", "&amp;lt;b&amp;gt;", "# Heading",
                  "- item", "1. item", "&gt; quote", "===", "&lt;script&gt;",
                  "&lt;b&gt;unk&lt;/b&gt;, _x_", "A &lt;b&gt;prompt&lt;/b&gt; [x](y)"):
        assert shown in page, shown


def test_samples_markdown_keeps_ordinary_text_readable():
    markdown = render_samples("The Beatles are", "a band from Liverpool, formed in 1960.\n"
                              "== History ==\nThey played 1,000 shows (or more).")
    assert "**The Beatles are** a band from Liverpool, formed in 1960.  \n" in markdown
    assert "They played 1,000 shows (or more)." in markdown
