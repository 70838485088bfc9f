"""`toelab bench middlebox`: the engine middlebox's forwarding rate next to a kernel router, same run.

h1 - mb - h2 (`middlebox_chain`), iperf3 from h1 to h2 through a kernel router (GRO off, the
reference) and through the engine middlebox in router mode, bridge mode and router mode with
GRO. All four labs are up at once and their runs interleave, `--repeats` rounds of one run
each, so a neighbour's burst of load falls on every node alike; each figure is the median of
its runs, all of which the row keeps. The engine rows also give the middlebox process's CPU
(scheduler run time) per GB it forwarded, which a busy machine disturbs far less than the rate.
"""
from __future__ import annotations

import argparse
import statistics
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from rich.table import Table

from .rows import Measured, Row, row

if TYPE_CHECKING:
    from lab.lab import Lab

KERNEL = "kernel router (GRO off)"
#: (label, middlebox_chain parameters): the reference first, then each engine mode.
FORWARDERS = ((KERNEL, {"mb_kind": "router"}),
              ("engine, router mode", {"mode": "router"}),
              ("engine, bridge mode", {"mode": "bridge"}),
              ("engine, router mode, GRO", {"mode": "router", "coalesce": "gro"}))


@dataclass
class Forwarding:
    """One forwarding node's runs: Gbit/s of each, GB carried, and its forwarding process's CPU seconds."""

    label: str
    gbit: list[float] = field(default_factory=list)
    gbytes: float = 0.0
    cpu_s: float = 0.0

    @property
    def median_gbit(self) -> float:
        return statistics.median(self.gbit)


def middlebox_rows(kernel: Forwarding, engines: list[Forwarding]) -> list[Row]:
    """Rows of `bench middlebox`: each engine mode's median rate against the kernel router's, and its CPU per GB."""
    rows: list[Row] = []
    for engine in engines:
        rows.append(row("middlebox", f"forwarding h1 -> mb -> h2 (iperf3), {engine.label} (reference: kernel router, "
                        "GRO off)", "Gbit/s", round(kernel.median_gbit, 3), round(engine.median_gbit, 3),
                        kernel_runs=[round(g, 3) for g in kernel.gbit], engine_runs=[round(g, 3) for g in engine.gbit]))
        rows.append(row("middlebox", f"middlebox CPU per GB forwarded, {engine.label}", "core·s/GB", None,
                        round(engine.cpu_s / max(engine.gbytes, 1e-9), 4), gbytes=round(engine.gbytes, 3)))
    return rows


def _middlebox_pid(lab: Lab) -> int | None:
    for proc in lab.record.processes:
        if proc.node == "mb" and "middlebox_main" in proc.argv:
            return proc.pid
    return None


def _run(lab: Lab, forwarding: Forwarding, seconds: float) -> None:
    from lab.tools import iperf
    from scenarios.cpu_cost import process_runtime

    pid = _middlebox_pid(lab)
    before = process_runtime(pid) if pid is not None else 0.0
    result = iperf(lab, "h1", "h2", seconds=seconds)
    if pid is not None:
        forwarding.cpu_s += process_runtime(pid) - before
    forwarding.gbit.append(result.gbit_per_s)
    forwarding.gbytes += result.bytes / 1e9


def bench_middlebox(args: argparse.Namespace) -> Measured:
    """Forwarding throughput of the engine middlebox next to a kernel router, interleaved in one run."""
    from lab.lab import Lab
    from lab.render import load_topology

    repeats = max(1, args.repeats)
    measured = [Forwarding(label) for label, _ in FORWARDERS]
    with ExitStack() as stack:
        labs = [stack.enter_context(Lab.up(load_topology("middlebox_chain", params))) for _, params in FORWARDERS]
        for _ in range(repeats):
            for lab, forwarding in zip(labs, measured):
                _run(lab, forwarding, args.seconds)
    kernel, engines = measured[0], measured[1:]
    table = Table(title=f"forwarding h1 -> mb -> h2 (iperf3), engine middlebox vs kernel router, same run, "
                        f"median of {repeats} interleaved runs")
    for column in ("forwarding node", "Gbit/s", "ratio to kernel", "runs (Gbit/s)", "middlebox core·s/GB"):
        table.add_column(column, justify="right")
    table.add_row(KERNEL, f"{kernel.median_gbit:.2f}", "1.00", " ".join(f"{g:.1f}" for g in kernel.gbit), "")
    for engine in engines:
        table.add_row(engine.label, f"{engine.median_gbit:.2f}", f"{engine.median_gbit / kernel.median_gbit:.2f}",
                      " ".join(f"{g:.1f}" for g in engine.gbit), f"{engine.cpu_s / max(engine.gbytes, 1e-9):.3f}")
    return Measured(table, middlebox_rows(kernel, engines))
