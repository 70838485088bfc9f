"""`toelab bench`: measured figures, always next to a reference measured in the same run.

`toelab bench lab` times building and tearing down 10- and 50-node topologies with the
netns backend next to Mininet. Other parts of toelab add their own benchmarks to BENCHES.
"""
from __future__ import annotations

import argparse
from typing import Callable

from rich.table import Table

from .cli import command, console, need_root

Bench = Callable[[argparse.Namespace], Table]
#: name -> (needs root, function returning a rich table); extended by the engine's modules.
BENCHES: dict[str, tuple[bool, Bench]] = {}


def bench_lab(args: argparse.Namespace) -> Table:
    from .bench_build import chain_spec, time_build

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


BENCHES["lab"] = (True, bench_lab)


def _bench_args(p: argparse.ArgumentParser) -> None:
    _load_engine_benches()
    p.add_argument("what", nargs="*", default=[], help=f"which benchmarks (default: all): {', '.join(BENCHES)}")
    p.add_argument("--repeats", type=int, default=5, help="repeats per measurement (medians are shown)")
    p.add_argument("--seconds", type=float, default=3.0, help="duration of each throughput run")


def _load_engine_benches() -> None:
    import importlib
    for module in ("toe_engine.bench", "scenarios.bench"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise


@command("bench", "print benchmarks with ratios against references measured in the same run")(_bench_args)
def cmd_bench(args: argparse.Namespace) -> int:
    from .errors import LabError

    chosen = args.what or list(BENCHES)
    unknown = [w for w in chosen if w not in BENCHES]
    if unknown:
        raise LabError(f"unknown benchmark {unknown[0]!r}; known ones are: {', '.join(BENCHES)}")
    for name in chosen:
        needs_root, run = BENCHES[name]
        if needs_root:
            need_root(f"toelab bench {name}")
        console.print(run(args))
    return 0
