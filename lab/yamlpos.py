"""YAML loading that remembers the line of every field, so errors can say where."""
from __future__ import annotations

from typing import Any

import yaml

Path = tuple[str | int, ...]


def load_with_lines(text: str, source: str) -> tuple[Any, dict[Path, int]]:
    """Parse YAML; return the data and a map from field path to 1-based line number.

    Raises yaml.YAMLError on syntax errors and DuplicateKey on a key given twice in one
    mapping (the caller turns either into a SpecError).
    """
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    lines: dict[Path, int] = {}
    if root is not None:
        _walk(root, (), lines)
    data = yaml.safe_load(text)
    return data, lines


class DuplicateKey(yaml.YAMLError):
    """A mapping names the same key twice (YAML forbids it; PyYAML would keep the later one silently)."""

    def __init__(self, path: Path, first_line: int, second_line: int) -> None:
        self.path, self.first_line, self.second_line = path, first_line, second_line
        super().__init__(f"duplicate key {path[-1]!r}: on line {first_line} and again on line {second_line}")


def _walk(node: yaml.Node, path: Path, lines: dict[Path, int]) -> None:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value
            line = key_node.start_mark.line + 1
            if key in seen and key != "<<":
                raise DuplicateKey(path + (key,), seen[key], line)
            seen[key] = line
            _walk(value_node, path + (key,), lines)
            lines[path + (key,)] = line
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, path + (index,), lines)


def line_of(lines: dict[Path, int], path: Path) -> int | None:
    """The line of `path`, or of its nearest ancestor that has one."""
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return lines.get(())
