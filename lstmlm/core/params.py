"""Reading and checking params.yaml: the machinery every section's config class uses.

Each section of params.yaml *is* the config class of the component that reads it, kept in
that component's room; the params stage (stages/params.py) lists them all and checks every
section, and each other stage reads only its own.

The classes declare their fields with :func:`spec` (default, range, choices; for a list of
numbers, the range of its items); this module only reads the YAML, checks every key
against those declarations and reports. An unknown key, a wrong type or an out-of-range
value raises :class:`ParamsError`, one line naming the key, the value (shortened) and what
is allowed, before a stage writes anything.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import typing
from pathlib import Path
from typing import Any, Mapping

from lstmlm.core.errors import LstmlmError, shorten, shown


class ParamsError(LstmlmError, ValueError):
    """A parameter is unknown, of the wrong type or out of range."""


def spec(default: Any, *, low: float | None = None, high: float | None = None,
         low_open: bool = False, high_open: bool = False,
         choices: tuple | None = None, doc: str = "",
         item_low: float | None = None, item_high: float | None = None,
         item_low_open: bool = False) -> Any:
    """A dataclass field with its allowed range or choices attached as metadata. A list of
    numbers (``list[float]``; ``list[int | float]`` keeps integers as they are) is never
    empty, and bounds its items with ``item_low`` and ``item_high``."""
    meta = dict(low=low, high=high, low_open=low_open, high_open=high_open,
                choices=choices, doc=doc,
                items=dict(low=item_low, high=item_high, low_open=item_low_open,
                           high_open=False))
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


# --------------------------------------------------------------------------- values

_KINDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string",
          list: "a list"}


def _number(x: float) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def _bounds(meta: Mapping[str, Any]) -> str:
    """A range in words: "in [0, 1]", " > 0", " >= 1 and < 8" (or "")."""
    low, high = meta.get("low"), meta.get("high")
    if low is not None and high is not None and not (meta["low_open"] or meta["high_open"]):
        return f" in [{_number(low)}, {_number(high)}]"
    parts = ([f"{'>' if meta['low_open'] else '>='} {_number(low)}"] if low is not None else [])
    parts += [f"{'<' if meta['high_open'] else '<='} {_number(high)}"] if high is not None else []
    return " " + " and ".join(parts) if parts else ""


def _describe(meta: Mapping[str, Any], hint: Any) -> str:
    """What a field allows, in words, for error messages."""
    if meta.get("choices"):
        return "one of " + ", ".join(repr(c) for c in meta["choices"])
    if _item_hint(hint) is not None:
        return "a non-empty list of numbers" + _bounds(meta["items"])
    kind = _base_type(hint)
    return _KINDS.get(kind, getattr(kind, "__name__", str(kind))) + _bounds(meta)


def _is_number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def _of_type(value: Any, kind: type) -> tuple[bool, Any]:
    """(ok, value converted to ``kind``). Integers are never written as 16.0 or 1e0: a
    value that YAML reads as a float is not an integer, even when it is whole."""
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if kind is float:
        if isinstance(value, str):  # PyYAML reads 1e-4 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                return False, value
        return _is_number(value), float(value) if _is_number(value) else value
    if kind in (bool, str, list):
        return isinstance(value, kind), value
    raise TypeError(f"no check for fields of type {kind}")


def _in_range(value: Any, meta: Mapping[str, Any]) -> bool:
    low, high = meta.get("low"), meta.get("high")
    if low is not None and (value < low or (meta["low_open"] and value == low)):
        return False
    return not (high is not None and (value > high or (meta["high_open"] and value == high)))


def check_value(key: str, value: Any, hint: Any, meta: Mapping[str, Any]) -> Any:
    """Check one value's type and range against a field's type hint and spec; return it in
    the field's type. A list of numbers is checked item by item, never empty."""
    ok, converted = _of_type(value, _base_type(hint))
    if ok and meta.get("choices"):
        ok = converted in meta["choices"]
    elif ok and _base_type(hint) in (int, float):
        ok = _in_range(converted, meta)
    elif ok and _item_hint(hint) is not None:
        ok = bool(value) and all(_is_number(v) and _in_range(v, meta["items"]) for v in value)
        converted = [float(v) for v in value] if ok and _item_hint(hint) is float else value
    if not ok:
        raise ParamsError(f"{key}: {shown(value)} is not allowed; expected "
                          f"{_describe(meta, hint)}")
    return list(converted) if isinstance(converted, list) else converted


def _base_type(hint: Any) -> type:
    """``list[int]`` -> list; ``int | None`` -> int."""
    origin = typing.get_origin(hint)
    if origin is None:
        return hint
    if origin in (list, tuple):
        return list
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return _base_type(args[0])


def _item_hint(hint: Any) -> Any:
    """A list of numbers' item type: float, or int | float (kept as written); else None."""
    args = typing.get_args(hint) if typing.get_origin(hint) is list else ()
    if args and (args[0] is float or set(typing.get_args(args[0])) == {int, float}):
        return args[0]
    return None


# --------------------------------------------------------------------------- sections


def unknown(key: str, known, where: str) -> ParamsError:
    """A key that no declaration has, with the closest known one."""
    close = difflib.get_close_matches(str(key).rsplit(".", 1)[-1],
                                      [k.rsplit(".", 1)[-1] for k in known], n=1)
    prefix = key.rsplit(".", 1)[0] + "." if "." in key else ""
    hint = f"; did you mean '{prefix}{close[0]}'?" if close else ""
    return ParamsError(f"{shorten(str(key), 80)}: unknown {where}{hint} "
                       f"(known: {', '.join(known)})")


def parse_section(name: str, raw: Mapping[str, Any] | None, cls: type):
    """Parse one section into its config class, checking every key; the class's own
    ``__post_init__`` then checks constraints between keys."""
    raw = {} if raw is None else raw
    if not isinstance(raw, Mapping):
        raise ParamsError(f"{name}: expected a mapping of keys, got {shown(raw)}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in raw:
        if key not in fields:
            raise unknown(f"{name}.{key}", list(fields), "key")
    hints = typing.get_type_hints(cls)
    values = {k: check_value(f"{name}.{k}", v, hints[k], fields[k].metadata)
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
        check_value(f"{section}.{f.name}", value, hints[f.name], f.metadata)


def parse_prompts(raw: Any) -> list[str]:
    if not isinstance(raw, list) or not raw or not all(isinstance(p, str) and p.strip()
                                                       for p in raw):
        raise ParamsError(f"prompts: {shown(raw)} is not allowed; expected a non-empty list "
                          "of non-empty strings")
    return list(raw)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping, read safely: no tags that build objects, and no aliases (``*name``),
    which can make a file of 2 KB a value of 10**9 items (the "billion laughs")."""
    import yaml

    path = Path(path)
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_loader()) or {}
    except FileNotFoundError:
        raise ParamsError(f"{path}: params file not found") from None
    except (yaml.YAMLError, ValueError, RecursionError) as err:  # ValueError: a 5,000-digit int
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err) or type(err).__name__
        raise ParamsError(f"{path}: not valid YAML{where}: {shorten(problem, 160)}") from None
    if not isinstance(raw, Mapping):
        raise ParamsError(f"{path}: expected a mapping of sections")
    return dict(raw)


@functools.cache
def _loader() -> type:
    """yaml.SafeLoader, refusing aliases where they are met (before any value is built)."""
    import yaml

    class NoAliases(yaml.SafeLoader):
        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                raise yaml.composer.ComposerError(
                    None, None, f"an alias (*{shorten(str(event.anchor), 40)}) is not read "
                    "here; write the value out", event.start_mark)
            return super().compose_node(parent, index)

    return NoAliases


def read_params(path: str | Path, **classes: type) -> dict[str, Any]:
    """Read params.yaml and parse the named sections into the given classes, e.g.
    ``read_params(path, model=ModelConfig, train=TrainConfig)`` (only those: each stage
    reads its own; ``prompts=list`` reads the prompts). The params stage reads every
    section, and refuses unknown ones (stages/params.py)."""
    raw = load_yaml(path)
    return {name: parse_prompts(raw.get(name)) if cls is list
            else parse_section(name, raw.get(name), cls) for name, cls in classes.items()}
