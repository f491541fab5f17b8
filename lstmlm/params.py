"""Typed, validated parameters.

params.yaml is parsed once, section by section, into frozen dataclasses. Every field
declares its type and the values it allows; an unknown key, a wrong type or an
out-of-range value raises :class:`ParamsError` with a message that names the key, the
value and what is allowed, before a stage writes anything.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .errors import LstmlmError


class ParamsError(LstmlmError, ValueError):
    """A parameter is unknown, of the wrong type or out of range."""


def spec(default: Any, *, low: float | None = None, high: float | None = None,
         low_open: bool = False, high_open: bool = False,
         choices: tuple | None = None, doc: str = "") -> Any:
    """A dataclass field with its allowed range or choices attached as metadata."""
    meta = dict(low=low, high=high, low_open=low_open, high_open=high_open,
                choices=choices, doc=doc)
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


# --------------------------------------------------------------------------- sections


@dataclass(frozen=True)
class DownloadParams:
    corpus: str = spec("wikitext-2", doc="'wikitext-2', or a directory holding train/valid/test text files")


@dataclass(frozen=True)
class TokeniseParams:
    scheme: str = spec("wikitext", choices=("wikitext", "basic_english"))
    min_freq: int = spec(1, low=1)
    max_size: int = spec(0, low=0, doc="0 keeps every word")


@dataclass(frozen=True)
class ModelParams:
    emb: int = spec(256, low=1)
    hidden: int = spec(256, low=1)
    layers: int = spec(1, low=1, high=8)
    dropout: float = spec(0.25, low=0.0, high=1.0, high_open=True, doc="locked dropout on the LSTM output")
    dropout_input: float = spec(0.25, low=0.0, high=1.0, high_open=True, doc="locked dropout on embeddings")
    dropout_hidden: float = spec(0.25, low=0.0, high=1.0, high_open=True, doc="locked dropout between layers")
    dropout_embedding: float = spec(0.05, low=0.0, high=1.0, high_open=True, doc="drops whole embedding rows")
    weight_drop: float = spec(0.0, low=0.0, high=1.0, high_open=True, doc="DropConnect on hidden-to-hidden")
    tie_weights: bool = spec(False)
    output: str = spec("adaptive", choices=("adaptive", "full"))
    cutoffs: list = spec([2000, 10000])
    div_value: float = spec(4.0, low=1.0)
    init: str = spec("seed", choices=("seed", "torch"), doc="'seed': Xavier/orthogonal/zero bias")


@dataclass(frozen=True)
class TrainParams:
    epochs: int = spec(8, low=1)
    batch_size: int = spec(32, low=1)
    bptt: int = spec(70, low=1)
    variable_bptt: bool = spec(False)
    stateful: bool = spec(True)
    optimizer: str = spec("adam", choices=("adam", "adamw", "sgd"))
    lr: float = spec(3.0e-3, low=0.0, low_open=True)
    weight_decay: float = spec(0.0, low=0.0)
    clip: float = spec(0.25, low=0.0, doc="max gradient norm; 0 disables clipping")
    schedule: str = spec("cosine", choices=("cosine", "plateau"),
                         doc="cosine: decay per batch over train.epochs; plateau: on valid loss")
    lr_factor: float = spec(0.5, low=0.0, high=1.0, low_open=True, high_open=True)
    lr_patience: int = spec(0, low=0)
    early_stop_patience: int = spec(3, low=1)
    max_minutes: float = spec(0.0, low=0.0, doc="wall-clock budget; 0 means none")
    seed: int = spec(1234, low=0)
    device: str = spec("auto", choices=("auto", "cpu", "cuda"))
    bf16: bool = spec(True, doc="bf16 autocast on CUDA")
    threads: int = spec(0, low=0, doc="CPU threads; 0 uses every core")
    nproc: int = spec(1, low=1, doc="processes under torchrun")


@dataclass(frozen=True)
class EvaluateParams:
    batch_size: int = spec(10, low=1)
    test_batch_size: int = spec(1, low=1)
    bptt: int = spec(70, low=1)


@dataclass(frozen=True)
class SampleParams:
    prompts: list = spec(["I like", "A cat", "She loves you because", "I hope",
                          "The Beatles are", "Super Mario is"])
    words: int = spec(40, low=1)
    temperature: float = spec(0.8, low=0.0)
    top_k: int = spec(0, low=0, doc="0 disables")
    top_p: float = spec(0.95, low=0.0, high=1.0, low_open=True)
    seed: int = spec(0, low=0)
    allow_unk: bool = spec(False)
    stop_at_eos: bool = spec(False)


SECTIONS: dict[str, type] = {
    "download": DownloadParams,
    "tokenise": TokeniseParams,
    "model": ModelParams,
    "train": TrainParams,
    "evaluate": EvaluateParams,
    "sample": SampleParams,
}


# --------------------------------------------------------------------------- parsing


def _describe(meta: Mapping[str, Any], kind: type) -> str:
    """What a field allows, in words, for error messages."""
    if meta.get("choices"):
        return "one of " + ", ".join(repr(c) for c in meta["choices"])
    low, high = meta.get("low"), meta.get("high")
    name = {int: "an integer", float: "a number", bool: "true or false", str: "a string",
            list: "a list"}.get(kind, kind.__name__)
    parts = []
    if low is not None:
        parts.append(f"{'>' if meta['low_open'] else '>='} {low:g}")
    if high is not None:
        parts.append(f"{'<' if meta['high_open'] else '<='} {high:g}")
    return name + (" " + " and ".join(parts) if parts else "")


def _coerce(key: str, value: Any, kind: type, meta: Mapping[str, Any]) -> Any:
    """Check one value's type and range and return it in the field's type."""
    allowed = _describe(meta, kind)
    bad = ParamsError(f"{key}: {value!r} is not allowed; expected {allowed}")
    if kind is bool:
        if not isinstance(value, bool):
            raise bad
    elif kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
    elif kind is float:
        if isinstance(value, str):
            # PyYAML reads 1e-4 (no dot) as a string; accept what float() accepts.
            try:
                value = float(value)
            except ValueError:
                raise bad from None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise bad
        value = float(value)
    elif kind is str:
        if not isinstance(value, str):
            raise bad
    elif kind is list:
        if not isinstance(value, list):
            raise bad
        value = list(value)
    if meta.get("choices") and value not in meta["choices"]:
        raise bad
    if kind in (int, float):
        low, high = meta.get("low"), meta.get("high")
        if low is not None and (value < low or (meta["low_open"] and value == low)):
            raise bad
        if high is not None and (value > high or (meta["high_open"] and value == high)):
            raise bad
    return value


def parse_section(name: str, raw: Mapping[str, Any] | None):
    """Parse one params.yaml section into its dataclass, validating every key."""
    cls = SECTIONS[name]
    raw = {} if raw is None else raw
    if not isinstance(raw, Mapping):
        raise ParamsError(f"{name}: expected a mapping of keys, got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key in raw:
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f"; did you mean '{name}.{close[0]}'?" if close else ""
            raise ParamsError(f"{name}.{key}: unknown key{hint} "
                              f"(known: {', '.join(fields)})")
    values = {k: _coerce(f"{name}.{k}", v, hints[k], fields[k].metadata) for k, v in raw.items()}
    parsed = cls(**values)
    _check_section(name, parsed)
    return parsed


def _check_section(name: str, parsed: Any) -> None:
    """Constraints that involve more than one key or a list's items."""
    if name == "model":
        cutoffs = parsed.cutoffs
        if not cutoffs or not all(isinstance(c, int) and not isinstance(c, bool) and c > 0
                                  for c in cutoffs):
            raise ParamsError(f"model.cutoffs: {cutoffs!r} is not allowed; expected a non-empty "
                              "list of positive integers")
        if any(b <= a for a, b in zip(cutoffs, cutoffs[1:])):
            raise ParamsError(f"model.cutoffs: {cutoffs!r} is not allowed; expected strictly "
                              "increasing integers")
        if parsed.tie_weights and parsed.output != "full":
            raise ParamsError("model.tie_weights: true is not allowed with model.output "
                              f"{parsed.output!r}; weight tying needs model.output: full")
    if name == "sample":
        if not all(isinstance(p, str) for p in parsed.prompts):
            raise ParamsError(f"sample.prompts: {parsed.prompts!r} is not allowed; expected a "
                              "list of strings")


def check_cutoffs(cutoffs: list[int], vocab_size: int) -> None:
    """Adaptive-softmax cutoffs must lie strictly inside the vocabulary."""
    if cutoffs[-1] >= vocab_size:
        raise ParamsError(f"model.cutoffs: {cutoffs!r} is not allowed; the last cutoff must be "
                          f"below the vocabulary size {vocab_size}")


def read_params(path: str | Path, *sections: str) -> dict[str, Any]:
    """Read params.yaml and parse the named sections (only those: each stage reads its own)."""
    import yaml

    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ParamsError(f"{path}: params file not found") from None
    except yaml.YAMLError as err:
        raise ParamsError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(raw, Mapping):
        raise ParamsError(f"{path}: expected a mapping of sections")
    unknown = [s for s in raw if s not in SECTIONS]
    if unknown:
        close = difflib.get_close_matches(str(unknown[0]), SECTIONS, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ParamsError(f"{unknown[0]}: unknown params section{hint} "
                          f"(known: {', '.join(SECTIONS)})")
    return {name: parse_section(name, raw.get(name)) for name in sections}


def as_dict(params: Any) -> dict[str, Any]:
    """A plain dict of a params dataclass (for checkpoints and fingerprints)."""
    return dataclasses.asdict(params)
