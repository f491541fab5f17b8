"""Stage `sample`: generate text for each prompt in params and write it as Markdown.

Reads params: sample.* (the sampling options), prompts, and download.corpus: on a corpus
other than WikiText the default prompts give way to openings of its valid split
(lstmlm.generate.prompts). The publish stage copies the
Markdown into metrics/, tracked by git, so a pull request shows the texts next to the
metrics, and tools/pr_report.py pastes it into pull-request comments: the prompts and the
model's text are escaped, so that they show as written and never as HTML, links or
Markdown structure (a model trained on HTML-bearing text writes ``<iframe src=...>``).
"""

from __future__ import annotations

import argparse
import html
import re
from pathlib import Path

from lstmlm.core.errors import shorten
from lstmlm.core.files import write_text
from lstmlm.core.params import read_params
from lstmlm.data.corpus import DownloadConfig
from lstmlm.data.layout import split_path
from lstmlm.data.wikitext import WIKITEXT, WIKITEXT103
from lstmlm.generate.generator import Generator
from lstmlm.generate.options import SamplingOptions, seeded
from lstmlm.generate.prompts import stage_prompts
from stages.guard import run_stage

# Inline Markdown anywhere in a line: escapes, code, emphasis, links and images ([ ... ]),
# tables, strikethrough, math.
_INLINE = re.compile(r"([\\`*_\[\]|~$])")
# Blocks that a line can start, even inside a paragraph: headings, list items, setext
# underlines ("=" or "-"), numbered items ("1." or "1)").
_BLOCK_MARK = re.compile(r"^(\s*)([#+=-])")
_NUMBERED = re.compile(r"^(\s*\d+)([.)])")


def markdown_text(text: str) -> str:
    """Text shown as written in Markdown, line breaks kept: HTML's &, < and > as entities
    (no tag, comment or autolink; no blockquote), and a backslash before what would start
    Markdown syntax (CommonMark lets any ASCII punctuation be escaped so)."""
    lines = []
    for line in html.escape(text, quote=False).split("\n"):
        line = _INLINE.sub(r"\\\1", line)
        line = _NUMBERED.sub(r"\1\\\2", _BLOCK_MARK.sub(r"\1\\\2", line))
        lines.append(line)
    return "\n".join(lines)


def render(generations, options: SamplingOptions, info: dict) -> str:
    """Markdown: one section per prompt, the settings on top. Text from the prompts, the
    model and the checkpoint's metadata is escaped (markdown_text)."""
    ppl = info.get("valid_ppl")
    ppl = f"{ppl:.1f}" if isinstance(ppl, (int, float)) else "?"
    lines = ["# Samples", "",
             f"Model from epoch {markdown_text(str(info.get('epoch', '?')))} (valid ppl "
             f"{ppl}); {options.words} words, temperature "
             f"{options.temperature:g}, top-k {options.top_k}, top-p {options.top_p:g}, "
             f"seed {options.seed}.", ""]
    for gen in generations:
        lines += [f"## {markdown_text(shorten(gen.prompt, 80))}", ""]
        prompt = markdown_text(" ".join(gen.prompt.split()))  # bold stops at a line break
        text = markdown_text(gen.text).replace("\n", "  \n")  # Markdown line breaks for <eos>
        lines += [f"**{prompt}** {text}", ""]
        if gen.unknown_words:
            unknown = markdown_text(", ".join(gen.unknown_words))
            lines += [f"_Unknown words, read as `<unk>`: {unknown}_", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--vocab", type=Path, required=True)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--raw", type=Path, default=Path("data/raw"),
                        help="the raw splits: on own text, the default prompts give way to "
                        "openings of its valid split (default: %(default)s)")
    parser.add_argument("--out", type=Path, required=True, help="output Markdown file")
    args = parser.parse_args()
    params = read_params(args.params, sample=SamplingOptions, prompts=list,
                         download=DownloadConfig)
    options = seeded(params["sample"])  # params.yaml's seed: 0, the same texts every run
    own = params["download"].corpus not in (WIKITEXT, WIKITEXT103)
    prompts = stage_prompts(params["prompts"], own, split_path(args.raw, "valid"), options.seed)

    generator = Generator.load(args.checkpoint, args.vocab)
    generations = [generator.generate(prompt, options) for prompt in prompts]
    write_text(args.out, render(generations, options, generator.info))
    for gen in generations:  # a long prompt is cut short: one line each
        print(f"{shorten(gen.prompt)} … {shorten(gen.text, 70)}")


if __name__ == "__main__":
    run_stage(main)
