"""Recipes by name: conf/ composed into params.yaml, as `dvc exp run` does it.

conf/config.yaml holds every key with the default (`cpu`) values; conf/preset/<name>.yaml
overrides some of them and records its own name in the top-level key ``preset``. With
DVC's Hydra composition enabled (.dvc/config: hydra.enabled), `dvc exp run -S preset=seed`
composes conf/ with that preset and writes the result to params.yaml. This module does
the same composition with Hydra's compose API, for the tests, for `python -m lstmlm
params` and for the check that warns about hand edits of params.yaml.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

CONF_DIR = "conf"
HEADER = ("# Composed from conf/ (preset {preset}). Edit conf/config.yaml or "
          "conf/preset/*.yaml, not this\n# file: `dvc exp run -S ...` rewrites it from conf/. "
          "See the README, 'Where to edit'.\n")


def presets(conf_dir: str | Path = CONF_DIR) -> list[str]:
    return sorted(p.stem for p in (Path(conf_dir) / "preset").glob("*.yaml"))


def compose(preset: str | None = None, overrides: list[str] | tuple = (),
            conf_dir: str | Path = CONF_DIR) -> dict[str, Any]:
    """conf/ composed with ``preset`` (None: the default in config.yaml) and Hydra
    ``overrides`` such as ``model.emb=800``, as a plain dict."""
    from hydra import compose as hydra_compose, initialize_config_dir
    from omegaconf import OmegaConf

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
        params, sort_keys=False, default_flow_style=False, width=100)


if __name__ == "__main__":  # python -m lstmlm.presets NAME: print that recipe's params.yaml
    import sys

    print(dump(compose(sys.argv[1] if len(sys.argv) > 1 else None)), end="")
