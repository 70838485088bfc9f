"""`toelab bench lab`: build and teardown of 10- and 50-node labs, netns next to Mininet."""
from __future__ import annotations

import argparse

from rich.table import Table

from .lab_build import chain_spec, time_build
from .rows import Measured, Row, row


LAB_SIZES = (10, 50)
LAB_FIGURES = (("build", "build_ms", "ms"), ("teardown", "down_ms", "ms"), ("build per node", "per_node_ms", "ms/node"))


def lab_rows(n: int, ours: dict[str, float], mininet: dict[str, float]) -> list[Row]:
    """Rows of `bench lab` for a chain of `n` nodes: netns build/teardown times against Mininet's (lower is better)."""
    return [row("lab", f"{label} of a {n}-node chain, netns (reference: Mininet)", unit, mininet[key], ours[key],
                nodes=n) for label, key, unit in LAB_FIGURES]


def bench_lab(args: argparse.Namespace) -> Measured:
    table = Table(title="lab build and teardown (median of repeats), netns vs Mininet, same run")
    for column in ("topology", "nodes", "netns build ms", "ms/node", "netns down ms",
                   "mininet build ms", "ms/node", "mininet down ms", "speed-up"):
        table.add_column(column, justify="right")
    rows: list[Row] = []
    for n in LAB_SIZES:
        spec = chain_spec(n)
        ours = time_build(spec, repeats=args.repeats)
        theirs = time_build(spec, repeats=max(1, args.repeats // 2), backend="mininet")
        table.add_row(f"chain n={n}", str(n), f"{ours['build_ms']:.1f}", f"{ours['per_node_ms']:.1f}",
                      f"{ours['down_ms']:.1f}", f"{theirs['build_ms']:.1f}", f"{theirs['per_node_ms']:.1f}",
                      f"{theirs['down_ms']:.1f}", f"{theirs['build_ms'] / ours['build_ms']:.1f}x")
        rows += lab_rows(n, ours, theirs)
    return Measured(table, rows)
