"""Dynamic evaluation's settings, tried on the start of valid read as one column (as test is).

    python bench/dynamic_grid.py [--checkpoint data/model.pt] [--tokens 40000] \
        segment=40 segment=70,decay=0.01 lr=2e-4 ...

Each argument is one setting: comma-separated overrides of params.yaml's
evaluate.dynamic_* keys, without the prefix (lr, decay, epsilon, segment, stat_tokens).
For each it prints the adapted perplexity over the first --tokens of valid at batch 1 and
the seconds the pass took (the gradient RMS apart). Valid, because settings are never
chosen on test; batch 1, because that is how the evaluate stage reads test, and a rate that
suits valid's 10 columns does not carry over to one (docs/results.md). Time it alone.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lstmlm.core.loading import load
from lstmlm.core.machine import full_precision, set_cpu_threads
from lstmlm.core.params import parse_section
from lstmlm.data.streams import batchify, load_ids
from lstmlm.evaluate.adaptation import dynamic_log_probs, dynamic_rule, stream_loss
from lstmlm.evaluate.config import EvaluateConfig
from lstmlm.evaluate.perplexity import perplexity


def setting(base: EvaluateConfig, text: str) -> EvaluateConfig:
    """'segment=70,decay=0.01' -> the base config with dynamic_segment and dynamic_decay
    replaced, checked like params.yaml."""
    values = dataclasses.asdict(base)
    for pair in filter(None, text.split(",")):
        key, _, value = pair.partition("=")
        values[f"dynamic_{key.strip()}"] = yaml.safe_load(value)
    return parse_section("evaluate", values, EvaluateConfig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=ROOT / "data/model.pt")
    parser.add_argument("--ids", type=Path, default=ROOT / "data/ids")
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument("--tokens", type=int, default=40000, help="valid tokens to read")
    parser.add_argument("settings", nargs="*", default=[""],
                        help="key=value[,key=value...]; none: params.yaml's own")
    args = parser.parse_args()
    if not args.checkpoint.exists():
        sys.exit(f"{args.checkpoint}: no checkpoint; run `make pipeline` first")
    set_cpu_threads(0)
    params = yaml.safe_load(args.params.read_text(encoding="utf-8"))
    base = parse_section("evaluate", params["evaluate"], EvaluateConfig)
    model = load(args.checkpoint).model
    valid = batchify(load_ids(args.ids, "valid")[:args.tokens], 1)
    train = load_ids(args.ids, "train")
    print(f"valid[:{args.tokens:,}], one column, {args.checkpoint}")
    for text in args.settings:
        config = setting(base, text)
        rule = dynamic_rule(model, train, config)
        started = time.perf_counter()
        with full_precision():
            log_probs, _ = dynamic_log_probs(model, valid, rule, config.dynamic_segment)
        seconds = time.perf_counter() - started
        ppl = perplexity(stream_loss(log_probs, config.bptt))
        keys = ", ".join(f"{f.name.removeprefix('dynamic_')} {getattr(config, f.name):g}"
                         for f in dataclasses.fields(config) if f.name.startswith("dynamic_"))
        print(f"  {keys}: ppl {ppl:.2f} ({seconds:.1f} s)", flush=True)


if __name__ == "__main__":
    main()
