"""Only `explorer/ui` may import streamlit (ARCHITECTURE.md: layers point down only)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "explorer"


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_only_explorer_ui_imports_streamlit() -> None:
    offenders = [
        str(path.relative_to(PACKAGE))
        for path in sorted(PACKAGE.rglob("*.py"))
        if "ui" not in path.relative_to(PACKAGE).parts[:1]
        and "streamlit" in imported_modules(path)
    ]
    assert offenders == []


def test_explorer_ui_does_import_streamlit() -> None:
    """The check above would pass vacuously if the scan found nothing."""
    assert "streamlit" in imported_modules(PACKAGE / "ui" / "sidebar.py")
