"""YAML read so that validation errors name file, line and field (lines found only when asked)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import ValidationError

from billing.errors import ConfigError

Location = tuple[str | int, ...]
T = TypeVar("T")
ItemSink = Callable[[int, Any], None]

# libyaml's parser when PyYAML was built with it: several times faster, and far less garbage
# for a directory of thousands of orgs.
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _list_loader() -> Any:
    """A safe loader whose nodes can be composed one at a time: libyaml's events under PyYAML's
    own composer (CSafeLoader composes a whole document in C, out of reach)."""
    try:
        from yaml._yaml import CParser
    except ImportError:
        return yaml.SafeLoader

    class CListLoader(
        CParser, yaml.composer.Composer, yaml.constructor.SafeConstructor, yaml.resolver.Resolver
    ):
        def __init__(self, stream: str) -> None:
            CParser.__init__(self, stream)
            yaml.composer.Composer.__init__(self)
            yaml.constructor.SafeConstructor.__init__(self)
            yaml.resolver.Resolver.__init__(self)

    return CListLoader


_LIST_LOADER = _list_loader()
_STR_TAG = "tag:yaml.org,2002:str"


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


def file_problems(read: Callable[[Path], tuple[T | None, list[str]]], path: Path) -> list[str]:
    """Every problem `read` finds in a file (a missing or unreadable file is one), each as
    `file:line: field a.b: message`."""
    try:
        return read(path)[1]
    except ConfigError as error:
        return [str(error)]


def loaded(found: T | None, problems: list[str]) -> T:
    """What a file holds, or one ConfigError with its first problem and how many more there
    are (all of them: `billing ratecards check`)."""
    if found is None or problems:
        more = f" (and {len(problems) - 1} more; run billing ratecards check)"
        raise ConfigError(problems[0] + (more if len(problems) > 1 else ""))
    return found


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


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot read ({error.strerror})") from None


def _not_valid_yaml(path: Path, error: yaml.YAMLError) -> ConfigError:
    mark = getattr(error, "problem_mark", None)
    where = f":{mark.line + 1}" if mark is not None else ""
    problem = getattr(error, "problem", None) or str(error)
    return ConfigError(f"{path}{where}: not valid YAML ({problem})")


def read_yaml(path: Path) -> YamlSource:
    """Parse a YAML file; a missing file or a syntax error is a ConfigError naming file and line."""
    text = _read_text(path)
    try:
        data = yaml.load(text, Loader=_LOADER)  # noqa: S506 - a safe loader
    except yaml.YAMLError as error:
        raise _not_valid_yaml(path, error) from None
    return YamlSource(path, data, text)


def stream_yaml_list(path: Path, list_key: str, each: ItemSink) -> YamlSource:
    """Parse a YAML file like read_yaml, but hand each item of the top-level `list_key:` list to
    `each(index, item)` as soon as it is parsed; the source's data then holds `list_key: []`.

    Only one item's nodes and data are alive at a time, instead of the whole file's (anchored
    nodes stay, as aliases further on may need them)."""
    text = _read_text(path)
    loader = _LIST_LOADER(text)
    try:
        data = _ListWalk(loader, path, list_key, each).stream()
    except yaml.YAMLError as error:
        raise _not_valid_yaml(path, error) from None
    finally:
        loader.dispose()
    return YamlSource(path, data, text)


class _ListWalk:
    """One pass over the events of a single-document stream, composing the top-level mapping
    pair by pair and the items of its `list_key` list one at a time."""

    def __init__(self, loader: Any, path: Path, list_key: str, each: ItemSink) -> None:
        self.loader = loader
        self.path = path
        self.list_key = list_key
        self.each = each
        self.list_key_line: int | None = None

    def stream(self) -> Any:
        self.loader.get_event()  # StreamStart
        if self.loader.check_event(yaml.StreamEndEvent):
            return None
        self.loader.get_event()  # DocumentStart
        if _plain_start(self.loader.peek_event(), yaml.MappingStartEvent):
            root = self.root_mapping()
        else:
            root = self.loader.compose_node(None, None)
        data = self.loader.construct_document(root)
        self.loader.get_event()  # DocumentEnd
        self.expect_stream_end(root)
        return data

    def root_mapping(self) -> yaml.MappingNode:
        """The top-level mapping as nodes, its `list_key` list streamed and left empty."""
        start = self.loader.get_event()
        pairs: list[tuple[yaml.Node, yaml.Node]] = []
        while not self.loader.check_event(yaml.MappingEndEvent):
            key = self.loader.compose_node(None, None)
            if self.is_list_key(key):
                pairs.append((key, self.list_value()))
            else:
                pairs.append((key, self.loader.compose_node(None, None)))
        end = self.loader.get_event()
        tag = self.loader.resolve(yaml.MappingNode, None, start.implicit)
        return yaml.MappingNode(tag, pairs, start.start_mark, end.end_mark, start.flow_style)

    def is_list_key(self, key: yaml.Node) -> bool:
        # Compared as a node: some keys (a merge key `<<`) cannot be constructed on their own.
        if not (isinstance(key, yaml.ScalarNode) and key.tag == _STR_TAG):
            return False
        if key.value != self.list_key:
            return False
        line = key.start_mark.line + 1
        if self.list_key_line is not None:
            # YAML would keep the last one silently; a directory listed twice is a mistake.
            raise ConfigError(
                f"{self.path}:{line}: key {self.list_key!r} appears twice "
                f"(first on line {self.list_key_line})"
            )
        self.list_key_line = line
        return True

    def list_value(self) -> yaml.Node:
        """Hand each item over as it is parsed; an empty list node stands in for them all."""
        # An anchored list may be aliased elsewhere and a tagged one needs its own constructor,
        # so they are composed whole, as is anything not a list (validation names the problem).
        if not _plain_start(self.loader.peek_event(), yaml.SequenceStartEvent):
            whole: yaml.Node = self.loader.compose_node(None, None)
            return whole
        start = self.loader.get_event()
        index = 0
        while not self.loader.check_event(yaml.SequenceEndEvent):
            item = self.loader.compose_node(None, None)
            self.each(index, self.loader.construct_document(item))
            index += 1
        end = self.loader.get_event()
        tag = self.loader.resolve(yaml.SequenceNode, None, start.implicit)
        return yaml.SequenceNode(tag, [], start.start_mark, end.end_mark, start.flow_style)

    def expect_stream_end(self, root: yaml.Node) -> None:
        """The error yaml.load gives when a second document follows."""
        if not self.loader.check_event(yaml.StreamEndEvent):
            event = self.loader.get_event()
            raise yaml.composer.ComposerError(
                "expected a single document in the stream",
                root.start_mark,
                "but found another document",
                event.start_mark,
            )


def _plain_start(event: yaml.Event, kind: type[yaml.CollectionStartEvent]) -> bool:
    """A collection start with neither an anchor (so nothing can alias it) nor an explicit tag
    (so the usual constructor builds it): it can be read piece by piece."""
    return isinstance(event, kind) and event.anchor is None and event.tag is None
