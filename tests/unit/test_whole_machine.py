"""Which scenarios the suite runs alone: those whose verdicts depend on the CPU their target gets."""
from __future__ import annotations

import tomllib
from pathlib import Path

import scenarios

REPO = Path(__file__).resolve().parents[2]


def test_the_flood_and_the_timed_scripts_need_the_whole_machine() -> None:
    alone = {s.name for s in scenarios.all() if s.whole_machine}
    assert alone == {"syn_flood", "pkt"}


def test_the_marker_is_declared() -> None:
    markers = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["markers"]
    assert any(m.startswith("whole_machine:") for m in markers)
