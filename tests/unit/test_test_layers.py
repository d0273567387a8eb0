"""The test suite's own layout (issue 15): three layers by folder, helpers only in tests/support."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
LAYERS = ("unit", "integration", "e2e")


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            names.add("." * node.level + (node.module or ""))
    return names


def test_no_test_module_or_helper_imports_a_test_module() -> None:
    """Shared code lives in tests/support; a test module is never imported by anything."""
    python_files = sorted(TESTS.rglob("*.py"))
    assert len(python_files) > 30
    offenders = {
        f"{path.relative_to(TESTS)} imports {name}"
        for path in python_files
        for name in imported_modules(path)
        if name.startswith(".")
        or any(name.startswith(f"tests.{layer}") for layer in LAYERS)
        or name.split(".")[-1].startswith(("test_", "conftest"))
    }
    assert sorted(offenders) == []


def test_every_test_module_lives_in_a_layer() -> None:
    modules = sorted(TESTS.rglob("test_*.py"))
    layers = {path.relative_to(TESTS).parts[0] for path in modules}
    assert layers == set(LAYERS)
    for layer in LAYERS:
        assert (TESTS / layer / "__init__.py").is_file(), layer
