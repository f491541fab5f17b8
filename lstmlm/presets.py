"""Recipes by name: conf/ composed into params.yaml, as `dvc exp run` does it.

conf/config.yaml holds every key with the default (`cpu`) values; conf/preset/<name>.yaml
is a whole recipe: it states every training choice it means (the tokenise, model and train
sections), so a change of the defaults never changes it, and records its own name in the
top-level key ``preset``. With DVC's Hydra composition enabled (.dvc/config:
hydra.enabled), `dvc exp run -S preset=seed` composes conf/ with that preset and writes the
result to params.yaml. This module does the same composition with Hydra's compose API, for
the tests, for the check that warns about hand edits of params.yaml, and for

    python -m lstmlm.presets NAME [KEY=VALUE ...]   # print that recipe's params.yaml
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from lstmlm.core.errors import shown
from lstmlm.core.params import ParamsError, load_yaml

CONF_DIR = "conf"
# Hydra's override grammar (which `dvc exp run -S` uses too) stops at `~`, characters
# outside ASCII and other special characters unless the value is quoted inside the override.
QUOTING_HINT = ("Hydra's override grammar needs a value holding ~, non-ASCII letters or other "
                "special characters quoted inside the override: -S \"download.corpus='~/café.txt'\"")
HEADER = ("# Composed from conf/ (preset {preset}). Edit conf/config.yaml or "
          "conf/preset/*.yaml, not this\n# file: `dvc exp run -S ...` rewrites it from conf/. "
          "See the README, 'Experiments and presets'.\n")


def presets(conf_dir: str | Path = CONF_DIR) -> list[str]:
    return sorted(p.stem for p in (Path(conf_dir) / "preset").glob("*.yaml"))


def preset_named(name: str, names: list[str]) -> str | None:
    """The preset a typed name means: ``gpu_fast`` and ``GPU-Fast`` are ``gpu-fast``."""
    wanted = name.lower().replace("_", "-")
    return next((n for n in names if n.lower().replace("_", "-") == wanted), None)


def check_override_keys(overrides: list[str], params: dict[str, Any]) -> None:
    """Refuse an override of a key that conf/ lacks, naming the closest one. (`dvc exp run
    -S` refuses it too, but suggests ``+key=value``, which adds a key no stage reads.)"""
    from lstmlm.core.params import unknown

    for override in overrides:
        key = override.partition("=")[0]
        if key.startswith(("+", "~")) or "=" not in override:
            continue
        node: Any = params
        parts = key.split(".")
        for depth, part in enumerate(parts):
            if not isinstance(node, dict) or part not in node:
                prefix = ".".join(parts[:depth])
                known = [f"{prefix}.{k}" if prefix else k for k in node] \
                    if isinstance(node, dict) else []
                raise unknown(".".join(parts[:depth + 1]), known, "key")
            node = node[part]


def compose(preset: str | None = None, overrides: list[str] | tuple = (),
            conf_dir: str | Path = CONF_DIR) -> dict[str, Any]:
    """conf/ composed with ``preset`` (None: the default in config.yaml) and Hydra
    ``overrides`` such as ``model.emb=800``, as a plain dict. A preset that conf/ lacks,
    or a file there with a YAML alias (which Hydra would expand, copy by copy), is a
    ParamsError in one line."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    names = presets(conf_dir)
    if preset is not None and preset not in names:
        raise ParamsError(f"preset: {shown(preset)} is not a preset of {conf_dir}; the "
                          f"presets are: {', '.join(names)}")
    for path in sorted(Path(conf_dir).rglob("*.yaml")):
        load_yaml(path)  # refuses aliases
    overrides = [*([f"preset={preset}"] if preset else []), *overrides]
    with initialize_config_dir(str(Path(conf_dir).resolve()), version_base=None):
        cfg = hydra_compose(config_name="config", overrides=overrides)
    return OmegaConf.to_container(cfg, resolve=True)


def differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested dicts."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in list(a) + [k for k in b if k not in a]:
            out += differences(a.get(key), b.get(key), f"{prefix}{key}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


def dump(params: dict[str, Any]) -> str:
    import yaml

    return HEADER.format(preset=params.get("preset", "?")) + yaml.safe_dump(
        params, sort_keys=False, default_flow_style=False, width=100, allow_unicode=True)


def main(argv: list[str] | None = None, conf_dir: str | Path = CONF_DIR) -> int:
    """Print a recipe's params.yaml: what `dvc exp run -S preset=NAME` would write."""
    names = presets(conf_dir)
    parser = argparse.ArgumentParser(
        prog="python -m lstmlm.presets",
        description="Print the params.yaml that `dvc exp run -S preset=NAME [-S KEY=VALUE]` "
                    "composes from conf/, without running anything.",
        epilog="presets: " + ", ".join(names))
    parser.add_argument("name", nargs="?", default=None, metavar="NAME",
                        help="a preset (default: the one conf/config.yaml names)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="single keys, as dvc exp run -S takes them (model.emb=800)")
    args = parser.parse_args(argv)
    name = args.name if args.name is None else preset_named(args.name, names)
    if args.name is not None and name is None:
        parser.error(f"unknown preset {shown(args.name)}; the presets are: {', '.join(names)}")
    from hydra.errors import HydraException, OverrideParseException
    from omegaconf.errors import OmegaConfBaseException

    from lstmlm.core.params import ParamsError

    try:
        check_override_keys(args.overrides, compose(name, (), conf_dir))
        params = compose(name, args.overrides, conf_dir)
    except ParamsError as err:
        parser.error(f"{err}\n`dvc exp run -S` refuses it too, suggesting +KEY=VALUE: that "
                     "adds a key that no stage reads, and the params stage refuses it")
    except (HydraException, OmegaConfBaseException) as err:
        hint = f"\n{QUOTING_HINT}" if isinstance(err, OverrideParseException) else ""
        parser.error(f"Hydra could not apply {' '.join(args.overrides)}: "
                     f"{str(err).splitlines()[0]}{hint}")
    sys.stdout.write(dump(params))
    return 0


if __name__ == "__main__":
    sys.exit(main())
