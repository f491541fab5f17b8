"""Print the longest functions and methods of the project, longest first.

    python tools/longest_functions.py [N] [paths...]     (default: 10, lstmlm stages)

Length counts the lines from the `def` (decorators excluded) to the function's last line,
docstring and comments included.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path


def functions(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    stack = [(node, "") for node in tree.body]
    while stack:
        node, prefix = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            name = f"{prefix}{node.name}"
            yield node.end_lineno - node.lineno + 1, f"{path}:{node.lineno}", name
            stack += [(child, f"{name}.") for child in node.body]
        elif isinstance(node, ast.ClassDef):
            stack += [(child, f"{prefix}{node.name}.") for child in node.body]


def main(argv: list[str]) -> None:
    count = int(argv[0]) if argv and argv[0].isdigit() else 10
    roots = [Path(a) for a in argv[1 if argv and argv[0].isdigit() else 0:]] or [Path("lstmlm"), Path("stages")]
    found = [f for root in roots for path in sorted(root.rglob("*.py")) for f in functions(path)]
    for length, where, name in sorted(found, reverse=True)[:count]:
        print(f"{length:4d}  {name:<40} {where}")


if __name__ == "__main__":
    main(sys.argv[1:])
