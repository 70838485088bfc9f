"""`toelab bench [NAME...]`: measured figures, always next to a reference measured in the same run.

Every benchmark is one line in BENCHES: its name, `module:function` (a function of the
parsed arguments returning a rich Table), and whether it needs root. Modules are imported
only for the benchmarks being run.
"""
from __future__ import annotations

import argparse
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from rich.table import Table

from lab.errors import LabError, require_root

from .output import console

BenchFunction = Callable[[argparse.Namespace], Table]


@dataclass(frozen=True)
class Bench:
    name: str
    function: str  # "module:function"
    needs_root: bool = True

    def load(self) -> BenchFunction:
        module, _, name = self.function.partition(":")
        function: BenchFunction = getattr(importlib.import_module(module), name)
        return function


#: Every benchmark, in the order `toelab bench` runs them. Add one with one line here.
BENCHES: tuple[Bench, ...] = (
    Bench("lab", "toelab.benches.lab:bench_lab"),
    Bench("core", "toelab.benches.engine:bench_core", needs_root=False),
    Bench("engine", "toelab.benches.engine:bench_engine"),
    Bench("middlebox", "toelab.benches.engine:bench_middlebox"),
    Bench("flood", "toelab.benches.flood:bench_flood"),
    Bench("loss", "toelab.benches.loss:bench_loss"),
    Bench("rings", "toelab.benches.queues:bench_rings"),
    Bench("coalescing", "toelab.benches.queues:bench_coalescing"),
    Bench("syn_queues", "toelab.benches.queues:bench_syn_queues"),
)
NAMES = tuple(b.name for b in BENCHES)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("what", nargs="*", default=[], help=f"which benchmarks (default: all): {', '.join(NAMES)}")
    p.add_argument("--repeats", type=int, default=5, help="repeats per measurement (medians are shown)")
    p.add_argument("--seconds", type=float, default=3.0, help="duration of each throughput run")
    p.add_argument("--json", type=Path, metavar="FILE", help="write the rows of benchmarks that keep them (loss) to FILE")


def run(args: argparse.Namespace) -> int:
    chosen = args.what or list(NAMES)
    unknown = [w for w in chosen if w not in NAMES]
    if unknown:
        raise LabError(f"unknown benchmark {unknown[0]!r}; known ones are: {', '.join(NAMES)}")
    for bench in BENCHES:
        if bench.name in chosen and bench.needs_root:
            require_root(f"toelab bench {bench.name}")
    for bench in BENCHES:
        if bench.name in chosen:
            console.print(bench.load()(args))
    return 0
