"""Stage `params`: check every key of params.yaml before any other stage runs.

Every section of params.yaml is the config class of the component that reads it, in that
component's room of lstmlm/; ``SECTIONS`` below is the one list of them. Each other stage
imports only the classes of the sections it reads (core.params.read_params), so that
editing one component's config reruns only the stages that read it.

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
from typing import Any

from lstmlm.core.errors import shown
from lstmlm.core.files import write_text
from lstmlm.core.params import ParamsError, load_yaml, read_params, unknown
from lstmlm.core.threads import cpu_threads
from lstmlm.data.corpus import DownloadConfig
from lstmlm.data.download import check_corpus
from lstmlm.data.tokenise import TokeniseConfig
from lstmlm.data.wikitext import WIKITEXT2_VOCAB_SIZE
from lstmlm.evaluate.config import EvaluateConfig
from lstmlm.generate.options import SamplingOptions
from lstmlm.model.config import ModelConfig
from lstmlm.train.memory import check_fits
from lstmlm.train.schedule import TrainConfig
from stages.guard import run_stage

SECTIONS: dict[str, type] = {
    "download": DownloadConfig,
    "tokenise": TokeniseConfig,
    "model": ModelConfig,
    "train": TrainConfig,
    "evaluate": EvaluateConfig,
    "sample": SamplingOptions,
    "prompts": list,  # what the sample stage writes about: a list of strings
}
PRESET = "preset"  # the recipe's name, recorded by conf/preset/*.yaml


def read_all(path: str | Path) -> dict[str, Any]:
    """Every section of params.yaml, parsed and checked; unknown sections refused."""
    raw = load_yaml(path)
    for name in raw:
        if name not in SECTIONS and name != PRESET:
            raise unknown(str(name), list(SECTIONS), "params section")
    if not isinstance(raw.get(PRESET, ""), str):
        raise ParamsError(f"{PRESET}: {shown(raw[PRESET])} is not allowed; expected a "
                          "preset name")
    return read_params(path, **SECTIONS)



def check_machine(params: dict, vocab_path: Path) -> None:
    """The checks that depend on this machine and on the data, when it exists."""
    check_corpus(params["download"].corpus)  # a typo would cost data/raw, deleted by DVC
    train, model = params["train"], params["model"]
    cpu_threads(train.threads, train.nproc)  # checked here; the stages that compute set it
    device_type = "cpu"
    if train.device != "cpu":  # only torch knows whether CUDA is here, and importing it is
        from lstmlm.core.machine import pick_device  # most of this stage's time

        device_type = pick_device(train.device).type
    vocab_size = WIKITEXT2_VOCAB_SIZE  # before tokenise has run: assume WikiText-2's
    if vocab_path.is_file():
        from lstmlm.data.vocab import Vocabulary

        vocab_size = len(Vocabulary.load(vocab_path))
    check_fits(model.for_vocab(vocab_size), vocab_size, train, device_type)  # cutoffs fit too


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
              f"{shown(raw.get('preset'))}) at {', '.join(changed[:8])}. The next `dvc exp run "
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
    params = read_all(args.params)
    check_machine(params, args.vocab)
    warn_hand_edits(args.params, args.conf)
    write_text(args.out, "params checked\n")
    print(f"params: {args.params} checked (preset {shown(load_yaml(args.params).get('preset'))})")


if __name__ == "__main__":
    run_stage(main)
