"""`toelab bench lab`: build and teardown of 10- and 50-node labs, netns next to Mininet."""
from __future__ import annotations

import argparse

from rich.table import Table

from .lab_build import chain_spec, time_build


def bench_lab(args: argparse.Namespace) -> Table:
    table = Table(title="lab build and teardown (median of repeats), netns vs Mininet, same run")
    for column in ("topology", "nodes", "netns build ms", "ms/node", "netns down ms",
                   "mininet build ms", "ms/node", "mininet down ms", "speed-up"):
        table.add_column(column, justify="right")
    for n in (10, 50):
        spec = chain_spec(n)
        ours = time_build(spec, repeats=args.repeats)
        theirs = time_build(spec, repeats=max(1, args.repeats // 2), backend="mininet")
        table.add_row(f"chain n={n}", str(n), f"{ours['build_ms']:.1f}", f"{ours['per_node_ms']:.1f}",
                      f"{ours['down_ms']:.1f}", f"{theirs['build_ms']:.1f}", f"{theirs['per_node_ms']:.1f}",
                      f"{theirs['down_ms']:.1f}", f"{theirs['build_ms'] / ours['build_ms']:.1f}x")
    return table
