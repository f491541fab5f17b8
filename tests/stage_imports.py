"""Which project files a stage script runs: the code dependencies dvc.yaml must list
(tests/test_stage_deps.py).

Follows ``import`` and ``from ... import`` statements (top level, inside functions, and
under ``if TYPE_CHECKING``) from a stage script through ``lstmlm`` and ``stages``, plus
the data files a module loads beside itself (``*.sha256``).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGES = ("lstmlm", "stages")


def _imported_modules(path: Path, package: str) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from .model import X, from ..core import errors
                parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return found


def module_path(root: Path, name: str) -> Path | None:
    parts = name.split(".")
    if parts[0] not in PACKAGES:
        return None
    for candidate in (root.joinpath(*parts).with_suffix(".py"), root.joinpath(*parts, "__init__.py")):
        if candidate.is_file():
            return candidate
    return None


def stage_files(root: Path, script: Path) -> set[Path]:
    """Project files (relative to ``root``) reached from ``script``."""
    seen: set[Path] = set()
    todo = [script]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        package = ".".join(path.relative_to(root).parent.parts)
        for name in _imported_modules(path, package):
            found = module_path(root, name)
            if found is not None and found not in seen:
                todo.append(found)
        if "resources.files" in path.read_text(encoding="utf-8"):
            seen |= set(path.parent.glob("*.sha256"))
    return {p.relative_to(root) for p in seen}
