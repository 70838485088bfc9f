"""`toelab bench [NAME...]`: measured figures, always next to a reference measured in the same run.

Every benchmark is one line in BENCHES: its name, `module:function` (a function of the
parsed arguments returning `Measured(table, rows)`, toelab.benches.rows), and whether it needs
root. Modules are imported only for the benchmarks being run. The tables go to the terminal;
with `--json FILE` the rows of every benchmark run go to FILE as one list (also the rows of
those that finished when a later one fails or is interrupted), each with `load_before`, the
machine's 1-minute load average when its benchmark began.
"""
from __future__ import annotations

import argparse
import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from lab.errors import LabError, require_root
from toe_engine import native
from toe_engine.tcp import congestion

from .benches.rows import Measured, Row, check_row, write_rows
from .output import console

BenchFunction = Callable[[argparse.Namespace], Measured]


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
    Bench("middlebox", "toelab.benches.middlebox:bench_middlebox"),
    Bench("flood", "toelab.benches.flood:bench_flood"),
    Bench("loss", "toelab.benches.loss:bench_loss"),
    Bench("rings", "toelab.benches.queues:bench_rings"),
    Bench("coalescing", "toelab.benches.queues:bench_coalescing"),
    Bench("syn_queues", "toelab.benches.queues:bench_syn_queues"),
    Bench("syn_path", "toelab.benches.syn_path:bench_syn_path", needs_root=False),
)
NAMES = tuple(b.name for b in BENCHES)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("what", nargs="*", default=[], help=f"which benchmarks (default: all): {', '.join(NAMES)}")
    p.add_argument("--repeats", type=int, default=5, help="repeats per measurement (medians are shown)")
    p.add_argument("--seconds", type=float, default=3.0, help="duration of each throughput run")
    p.add_argument("--json", type=Path, metavar="FILE", help="write every row measured to FILE (a JSON list)")
    p.add_argument("--core-mib", type=float, default=16.0, help="MiB echoed per in-memory bulk transfer (core)")
    p.add_argument("--core-connections", type=_counts, default=(1, 1000, 64000), metavar="N,N,...",
                   help="connections open for the per-frame cost (core)")
    p.add_argument("--core-frames", type=int, default=20000, help="data frames timed per connection count (core)")
    p.add_argument("--http-only", action="store_true",
                   help="engine: only the HTTP connection set-ups (kernel and engine in alternating rounds, and in memory)")
    p.add_argument("--bulk-only", action="store_true",
                   help="engine: only the bulk rows to discard (offloads on and off), no HTTP set-ups or queue scaling")
    p.add_argument("--engine-cc", choices=sorted(congestion.ALGORITHMS), default=None,
                   help="the engine endpoint's congestion control (loss; default: the engine's own, newreno)")


def _counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of whole numbers") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: every connection count must be at least 1")
    return counts


def _check_output(path: Path | None) -> None:
    """Refuse a --json FILE that cannot be written before anything is measured."""
    if path is None:
        return
    if path.is_dir():
        raise LabError(f"--json {path}: is a directory; give a file name")
    parent = next((p for p in path.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise LabError(f"--json {path}: {parent} is not a directory")


def run(args: argparse.Namespace) -> int:
    chosen = args.what or list(NAMES)
    unknown = [w for w in chosen if w not in NAMES]
    if unknown:
        raise LabError(f"unknown benchmark {unknown[0]!r}; known ones are: {', '.join(NAMES)}")
    if getattr(args, "bulk_only", False) and "engine" not in args.what:
        raise LabError("--bulk-only is an option of the engine benchmark: run `toelab bench engine --bulk-only`")
    if getattr(args, "bulk_only", False) and getattr(args, "http_only", False):
        raise LabError("--bulk-only and --http-only each leave the other's rows out: give one of them")
    for bench in BENCHES:
        if bench.name in chosen and bench.needs_root:
            require_root(f"toelab bench {bench.name}")
    if args.core_mib <= 0 or args.core_frames < 1:
        raise LabError("--core-mib and --core-frames must be positive")
    if getattr(args, "http_only", False) and "engine" not in args.what:
        raise LabError("--http-only is an option of the engine benchmark: run `toelab bench engine --http-only`")
    path: Path | None = getattr(args, "json", None)
    _check_output(path)
    rows: list[Row] = []
    build = native.activate()
    console.print(f"engine build: {build.build} ({build.reason})")  # every row says it too (`build`)
    try:
        for bench in BENCHES:
            if bench.name in chosen:
                load_before = round(os.getloadavg()[0], 2)  # a busy machine's figures are noisier: say how busy
                measured = bench.load()(args)
                console.print(measured.table)
                rows += [check_row(r, bench.name) | {"load_before": load_before} for r in measured.rows]
    finally:
        if path is not None:
            write_rows(path, rows)
            console.print(f"{len(rows)} rows written to {path}")
    return 0
