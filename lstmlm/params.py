"""Reading and checking params.yaml.

Each section of params.yaml *is* the config class of the component that uses it (the
`params` stage, stages/params.py, holds the whole mapping):

    download  -> lstmlm.download.DownloadConfig
    tokenise  -> lstmlm.corpus.TokeniseConfig
    model     -> lstmlm.model.ModelConfig          (the vocabulary size is passed apart)
    train     -> lstmlm.schedule.TrainConfig
    evaluate  -> lstmlm.evaluation.EvaluateConfig
    sample    -> lstmlm.options.SamplingOptions
    prompts   -> a list of strings (what the sample stage writes about)

The classes declare their fields with :func:`spec` (default, range, choices); this module
only reads the YAML, checks every key against those declarations and reports. An unknown
key, a wrong type or an out-of-range value raises :class:`ParamsError` naming the key, the
value and what is allowed, before a stage writes anything.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
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
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


# The sections params.yaml may have. Each stage passes the classes of the ones it reads to
# read_params (so it imports only those); the `params` stage checks them all.
SECTIONS = ("download", "tokenise", "model", "train", "evaluate", "sample", "prompts")
PRESET = "preset"  # the recipe's name, recorded by conf/preset/*.yaml


# --------------------------------------------------------------------------- values


def _describe(meta: Mapping[str, Any], kind: type) -> str:
    """What a field allows, in words, for error messages."""
    if meta.get("choices"):
        return "one of " + ", ".join(repr(c) for c in meta["choices"])
    low, high = meta.get("low"), meta.get("high")
    name = {int: "an integer", float: "a number", bool: "true or false", str: "a string",
            list: "a list"}.get(kind, getattr(kind, "__name__", str(kind)))
    parts = []
    if low is not None:
        parts.append(f"{'>' if meta['low_open'] else '>='} {_number(low)}")
    if high is not None:
        parts.append(f"{'<' if meta['high_open'] else '<='} {_number(high)}")
    return name + (" " + " and ".join(parts) if parts else "")


def _number(x: float) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def _of_type(value: Any, kind: type) -> tuple[bool, Any]:
    """(ok, value converted to ``kind``). Integers are never written as 16.0 or 1e0: a
    value that YAML reads as a float is not an integer, even when it is whole."""
    if kind is bool:
        return isinstance(value, bool), value
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if kind is float:
        if isinstance(value, str):  # PyYAML reads 1e-4 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                return False, value
        ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
              and math.isfinite(value))
        return ok, float(value) if ok else value
    if kind is str:
        return isinstance(value, str), value
    if kind is list:
        return isinstance(value, list), list(value) if isinstance(value, list) else value
    raise TypeError(f"no check for fields of type {kind}")


def _in_range(value: Any, meta: Mapping[str, Any]) -> bool:
    low, high = meta.get("low"), meta.get("high")
    if low is not None and (value < low or (meta["low_open"] and value == low)):
        return False
    return not (high is not None and (value > high or (meta["high_open"] and value == high)))


def check_value(key: str, value: Any, kind: type, meta: Mapping[str, Any]) -> Any:
    """Check one value's type and range; return it in the field's type."""
    ok, converted = _of_type(value, kind)
    if ok and meta.get("choices"):
        ok = converted in meta["choices"]
    if ok and kind in (int, float):
        ok = _in_range(converted, meta)
    if not ok:
        raise ParamsError(f"{key}: {value!r} is not allowed; expected {_describe(meta, kind)}")
    return converted


# --------------------------------------------------------------------------- sections


def _unknown(key: str, known, where: str) -> ParamsError:
    close = difflib.get_close_matches(str(key).rsplit(".", 1)[-1],
                                      [k.rsplit(".", 1)[-1] for k in known], n=1)
    prefix = key.rsplit(".", 1)[0] + "." if "." in key else ""
    hint = f"; did you mean '{prefix}{close[0]}'?" if close else ""
    return ParamsError(f"{key}: unknown {where}{hint} (known: {', '.join(known)})")


def parse_section(name: str, raw: Mapping[str, Any] | None, cls: type):
    """Parse one section into its config class, checking every key; the class's own
    ``__post_init__`` then checks constraints between keys."""
    raw = {} if raw is None else raw
    if not isinstance(raw, Mapping):
        raise ParamsError(f"{name}: expected a mapping of keys, got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in raw:
        if key not in fields:
            raise _unknown(f"{name}.{key}", list(fields), "key")
    hints = typing.get_type_hints(cls)
    values = {k: check_value(f"{name}.{k}", v, _base_type(hints[k]), fields[k].metadata)
              for k, v in raw.items()}
    try:
        return cls(**values)
    except ParamsError:
        raise
    except (TypeError, ValueError) as err:  # a config class's own check, in its words
        message = str(err)
        if not message.startswith(f"{name}."):
            message = f"{name}: {message}"
        raise ParamsError(message) from None


def check_fields(config: Any, section: str) -> None:
    """Check every field of a config built in code (not read from params.yaml) by the
    same rules; a field typed ``X | None`` may be None."""
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if value is None and type(None) in typing.get_args(hints[f.name]):
            continue
        check_value(f"{section}.{f.name}", value, _base_type(hints[f.name]), f.metadata)


def _base_type(hint: Any) -> type:
    """``list[int]`` -> list; ``int | None`` -> int."""
    origin = typing.get_origin(hint)
    if origin is None:
        return hint
    if origin in (list, tuple):
        return list
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return _base_type(args[0])


def parse_prompts(raw: Any) -> list[str]:
    if not isinstance(raw, list) or not raw or not all(isinstance(p, str) and p.strip()
                                                       for p in raw):
        raise ParamsError(f"prompts: {raw!r} is not allowed; expected a non-empty list of "
                          "non-empty strings")
    return list(raw)


def load_yaml(path: str | Path) -> dict[str, Any]:
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
    return dict(raw)


def read_params(path: str | Path, **classes: type) -> dict[str, Any]:
    """Read params.yaml and parse the named sections into the given classes, e.g.
    ``read_params(path, model=ModelConfig, train=TrainConfig)`` (only those: each stage
    reads its own; ``prompts=list`` reads the prompts). Unknown section names are reported
    whichever sections are asked for."""
    raw = load_yaml(path)
    for name in raw:
        if name not in SECTIONS and name != PRESET:
            raise _unknown(str(name), list(SECTIONS), "params section")
    if not isinstance(raw.get(PRESET, ""), str):
        raise ParamsError(f"{PRESET}: {raw[PRESET]!r} is not allowed; expected a preset name")
    return {name: parse_prompts(raw.get(name)) if cls is list
            else parse_section(name, raw.get(name), cls) for name, cls in classes.items()}
