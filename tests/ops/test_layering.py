"""The operations layer sits below every face: nothing in `cairn/ops/` imports the CLI, the
appliance or the web console (they call it, never the other way round)."""

from __future__ import annotations

import ast
from pathlib import Path

import cairn.ops

FACES = ("cairn.cli", "cairn.appliance", "cairn.web")


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_ops_imports_no_face() -> None:
    folder = Path(cairn.ops.__file__).parent
    upward = {f"{path.name}: {name}" for path in sorted(folder.glob("*.py"))
              for name in imported(path) if name.startswith(FACES)}
    assert not upward
