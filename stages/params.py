"""Stage `params`: check every key of params.yaml before any other stage runs.

dvc.yaml runs it first (download depends on its output), on every change of params.yaml
or conf/. It writes a constant marker, so an unrelated param change reruns this check but
nothing downstream. A bad value stops `dvc repro` and `dvc exp run` here, before DVC
deletes the outputs of the stage that would read it.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from lstmlm.corpus import WIKITEXT2_VOCAB_SIZE, TokeniseConfig
from lstmlm.download import DownloadConfig, check_corpus
from lstmlm.evaluation import EvaluateConfig
from lstmlm.files import write_text
from lstmlm.guard import run_stage
from lstmlm.machine import pick_device, set_cpu_threads
from lstmlm.model import ModelConfig
from lstmlm.options import SamplingOptions
from lstmlm.params import load_yaml, read_params
from lstmlm.resources import check_fits
from lstmlm.schedule import TrainConfig

# Every section of params.yaml and the class it is (see lstmlm/params.py).
SECTIONS = dict(download=DownloadConfig, tokenise=TokeniseConfig, model=ModelConfig,
                train=TrainConfig, evaluate=EvaluateConfig, sample=SamplingOptions,
                prompts=list)


def check_machine(params: dict, vocab_path: Path) -> None:
    """The checks that depend on this machine and on the data, when it exists."""
    check_corpus(params["download"].corpus)  # a typo would cost data/raw, deleted by DVC
    train, model = params["train"], params["model"]
    device = pick_device(train.device)
    set_cpu_threads(train.threads, train.nproc)
    vocab_size = WIKITEXT2_VOCAB_SIZE  # before tokenise has run: assume WikiText-2's
    if vocab_path.is_file():
        from lstmlm.vocab import Vocabulary

        vocab_size = len(Vocabulary.load(vocab_path))
    check_fits(model, vocab_size, train, device.type)  # and that the cutoffs fit


def warn_hand_edits(params_path: Path, conf_dir: Path) -> None:
    """params.yaml is composed from conf/ by `dvc exp run -S`; an edit made in params.yaml
    itself is lost at the next composition. Say so now, under `dvc repro` (inside an
    experiment DVC itself composed the file)."""
    if os.environ.get("DVC_EXP_NAME") or not conf_dir.is_dir():
        return
    from lstmlm.presets import compose, differences

    raw = load_yaml(params_path)
    changed = differences(compose(raw.get("preset"), conf_dir=conf_dir), raw)
    if changed:
        print(f"params: warning: params.yaml differs from conf/ (preset "
              f"{raw.get('preset')!r}) at {', '.join(changed[:8])}. The next `dvc exp run "
              "-S ...` recomposes params.yaml from conf/ and drops such edits: make them in "
              "conf/config.yaml or conf/preset/*.yaml, or pass them with -S.", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--conf", type=Path, default=Path("conf"))
    parser.add_argument("--vocab", type=Path, default=Path("data/vocab.json"),
                        help="read for the memory check when it exists (not a dependency)")
    parser.add_argument("--out", type=Path, required=True, help="marker written when all is well")
    args = parser.parse_args()
    params = read_params(args.params, **SECTIONS)
    check_machine(params, args.vocab)
    warn_hand_edits(args.params, args.conf)
    write_text(args.out, "params checked\n")
    print(f"params: {args.params} checked (preset {load_yaml(args.params).get('preset')!r})")


if __name__ == "__main__":
    run_stage(main)
