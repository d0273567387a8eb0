"""YAML read so that validation errors name file, line and field (lines found only when asked)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from billing.errors import ConfigError

Location = tuple[str | int, ...]

# libyaml's parser when PyYAML was built with it: several times faster, and far less garbage
# for a directory of thousands of orgs.
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True)
class YamlSource:
    """A parsed YAML document and the text it came from, to find where keys start."""

    path: Path
    data: Any
    text: str

    @cached_property
    def lines(self) -> dict[Location, int]:
        """The line (1-based) where each key or item starts, composed from the text on first
        use: only an error needs it, and the node tree of a big file is large."""
        lines: dict[Location, int] = {}
        node = yaml.compose(self.text, Loader=_LOADER)
        if node is not None:
            _record_lines(node, (), lines)
        return lines

    def line_of(self, location: Location) -> int:
        """The line of the deepest known part of a location (the document start at worst)."""
        for end in range(len(location), -1, -1):
            line = self.lines.get(tuple(location[:end]))
            if line is not None:
                return line
        return 1

    def where(self, location: Location) -> str:
        return f"{self.path}:{self.line_of(location)}"

    def problems(self, error: ValidationError, prefix: Location = ()) -> list[str]:
        """Every pydantic error as "file:line: field a.b.c: message"."""
        messages = []
        for problem in error.errors():
            location = (*prefix, *problem["loc"])
            field = ".".join(str(part) for part in location) or "(top level)"
            message = problem["msg"].removeprefix("Value error, ")
            messages.append(f"{self.where(location)}: field {field}: {message}")
        return messages


def _record_lines(node: yaml.Node, location: Location, lines: dict[Location, int]) -> None:
    lines.setdefault(location, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = (*location, key_node.value) if isinstance(key_node, yaml.ScalarNode) else None
            if key is None:
                continue
            lines[key] = key_node.start_mark.line + 1
            _record_lines(value_node, key, lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _record_lines(item, (*location, index), lines)


def read_yaml(path: Path) -> YamlSource:
    """Parse a YAML file; a missing file or a syntax error is a ConfigError naming file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot read ({error.strerror})") from None
    try:
        data = yaml.load(text, Loader=_LOADER)  # noqa: S506 - a safe loader
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error)
        raise ConfigError(f"{path}{where}: not valid YAML ({problem})") from None
    return YamlSource(path, data, text)
