"""Stage `sample`: generate text for each prompt in params and write it as Markdown.

Reads params: sample.* (the sampling options) and prompts. The Markdown file is tracked
by git, so a pull request shows the texts
next to the metrics.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lstmlm.files import write_text
from lstmlm.generate import Generator
from lstmlm.guard import run_stage
from lstmlm.options import SamplingOptions
from lstmlm.params import read_params
from lstmlm.text import shorten


def render(generations, options: SamplingOptions, info: dict) -> str:
    """Markdown: one section per prompt, the settings on top."""
    lines = ["# Samples", "",
             f"Model from epoch {info.get('epoch', '?')} (valid ppl "
             f"{info.get('valid_ppl', float('nan')):.1f}); {options.words} words, temperature "
             f"{options.temperature:g}, top-k {options.top_k}, top-p {options.top_p:g}, "
             f"seed {options.seed}.", ""]
    for gen in generations:
        lines += [f"## {shorten(gen.prompt, 80)}", ""]
        text = gen.text.replace("\n", "  \n")  # Markdown line breaks for <eos>
        lines += [f"**{gen.prompt}** {text}", ""]
        if gen.unknown_words:
            lines += [f"_Unknown words, read as `<unk>`: {', '.join(gen.unknown_words)}_", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--vocab", type=Path, required=True)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="output Markdown file")
    args = parser.parse_args()
    params = read_params(args.params, sample=SamplingOptions, prompts=list)
    options = params["sample"]

    generator = Generator.load(args.checkpoint, args.vocab)
    generations = [generator.generate(prompt, options) for prompt in params["prompts"]]
    write_text(args.out, render(generations, options, generator.info))
    for gen in generations:  # a long prompt is cut short: one line each
        print(f"{shorten(gen.prompt)} … {shorten(gen.text, 70)}")


if __name__ == "__main__":
    run_stage(main)
