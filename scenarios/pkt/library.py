"""toelab's own scripts (scenarios/pkt/scripts) and reading any set of scripts for a run."""
from __future__ import annotations

from pathlib import Path

from .model import Script
from .parse import parse_file

SCRIPTS = Path(__file__).parent / "scripts"


def own_scripts(pattern: str = "**/*.pkt") -> list[Path]:
    """toelab's scripts matching `pattern` (relative to scenarios/pkt/scripts), in a stable order."""
    return sorted(SCRIPTS.glob(pattern))


def label(path: Path) -> str:
    """A script's name in reports: its path under scenarios/pkt/scripts, or its file name, without .pkt."""
    try:
        return str(path.resolve().relative_to(SCRIPTS.resolve()).with_suffix(""))
    except ValueError:
        return path.stem


def load(paths: list[Path]) -> list[Script]:
    return [parse_file(path) for path in paths]


def requirements_of(paths: list[Path]) -> list[str]:
    """Every requirement the scripts name, once each, in first-seen order."""
    seen: dict[str, None] = {}
    for script in load(paths):
        for requirement in script.requirements:
            seen.setdefault(requirement, None)
    return list(seen)
