"""The README's code map names every module of billing/ and workers/, and nothing that is gone."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAP_HEADING = "## How the code is laid out"


def mapped_paths(readme: str) -> set[str]:
    """The file paths the map's tree names: each indented entry under the folders above it."""
    section = readme.split(MAP_HEADING, 1)[1]
    block = section.split("```", 2)[1]
    folders: list[str] = []
    paths: set[str] = set()
    for line in block.splitlines()[1:]:
        if not line.strip():
            continue
        depth = (len(line) - len(line.lstrip(" "))) // 2
        name = line.split()[0]
        del folders[depth:]
        if name.endswith("/"):
            folders.append(name.rstrip("/"))
        else:
            paths.add("/".join([*folders, name]))
    return paths


def modules_in_tree() -> set[str]:
    return {
        str(path.relative_to(ROOT))
        for package in ("billing", "workers")
        for path in (ROOT / package).rglob("*.py")
        if path.name != "__init__.py"
    }


def test_the_code_map_names_every_module_and_no_missing_one() -> None:
    named = {
        path for path in mapped_paths((ROOT / "README.md").read_text()) if path.endswith(".py")
    }
    in_tree = modules_in_tree()
    assert sorted(in_tree - named) == [], "modules the README's code map leaves out"
    assert sorted(named - in_tree) == [], "modules the README's code map names but are gone"


def test_every_folder_says_what_lives_there() -> None:
    for init in [*(ROOT / "billing").rglob("__init__.py"), ROOT / "workers/__init__.py"]:
        text = init.read_text().lstrip()
        assert text.startswith('"""'), f"{init.relative_to(ROOT)} has no docstring"
        first_line = text[3:].split("\n", 1)[0]
        assert first_line.endswith('"""'), f"{init.relative_to(ROOT)}: docstring is not one line"


def test_the_map_parser_reads_nesting() -> None:
    readme = (
        f"{MAP_HEADING}\n\n```\nbilling/   x\n  a.py     y\n  db/      z\n    b.py   w\nc.py\n```\n"
    )
    assert mapped_paths(readme) == {"billing/a.py", "billing/db/b.py", "c.py"}


IO_MODULES = {"sqlalchemy", "sqlmodel", "httpx", "smtplib", "socket", "subprocess", "os", "shutil"}


def test_root_modules_other_than_config_do_no_io() -> None:
    """The package root holds the pure core and shared vocabulary: no database, network or files."""
    for path in sorted((ROOT / "billing").glob("*.py")):
        if path.name in ("__init__.py", "config.py"):
            continue
        tree = ast.parse(path.read_text())
        imported = {
            alias.name.split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
        } | {
            node.module.split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module
        }
        calls = {
            node.func.id
            for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
        }
        assert not imported & IO_MODULES, f"{path.name} imports {sorted(imported & IO_MODULES)}"
        assert "open" not in calls, f"{path.name} opens files"
        project = {name for name in imported if name in ("billing", "workers")}
        assert project <= {"billing"}, f"{path.name} imports workers"
