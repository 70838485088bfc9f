"""`toelab demo`: the README's main job on the default topology, with a summary at the end."""
from __future__ import annotations

import argparse
from pathlib import Path

from rich.table import Table

from lab.errors import require_root, require_tools
from scenarios.cli import RUN_TOOLS

from .output import console


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seconds", type=float, default=2.0, help="iperf3 duration per run")
    p.add_argument("--report", type=Path, default=Path("reports/demo"), help="where the HTML/JSON report goes")
    p.add_argument("--target", choices=("kernel", "toe", "both"), default="both", help="which stacks the scenarios test")
    p.add_argument("--seed", type=int, default=1, help="seed of every scenario's randomness")
    p.add_argument("-v", "--verbose", action="store_true", help="print every check, not only the failed ones")
    p.add_argument("--full-pcaps", action="store_true", help="keep whole packets in the report's pcaps")


def run(args: argparse.Namespace) -> int:
    """Sanity first (a lab that cannot ping makes every later verdict meaningless), then the suite."""
    require_root("toelab demo")
    require_tools({**RUN_TOOLS, "iperf3": "toelab demo measures router_path with iperf3",
                   "ping": "toelab demo pings across router_path"})
    status = sanity(args)
    from scenarios.cli import run_scenarios

    run_args = argparse.Namespace(scenario="all", target=args.target, seed=args.seed, param=[],
                                  report=args.report, json=None, verbose=args.verbose, full_pcaps=args.full_pcaps)
    return max(status, run_scenarios(run_args))


def sanity(args: argparse.Namespace) -> int:
    from lab.lab import Lab
    from lab.render import load_topology
    from lab.tools import iperf, ping

    require_root("toelab demo")
    spec = load_topology("router_path")
    table = Table(title="toelab demo: router_path (h1 - r1 - h2)")
    for column in ("check", "result", "detail"):
        table.add_column(column)
    failures = 0
    with Lab.up(spec) as lab:
        for version in (4, 6):
            result = ping(lab, "h1", lab.address("h2", version), count=3)
            failures += 0 if result.ok else 1
            table.add_row(f"ping h1 -> h2 (IPv{version})", "ok" if result.ok else "FAIL",
                          f"{result.received}/{result.sent} replies, avg {result.avg_rtt_ms} ms")
        for client, server in (("h1", "h2"), ("h2", "h1")):
            result = iperf(lab, client, server, seconds=args.seconds)
            table.add_row(f"iperf3 {client} -> {server}", "ok" if result.gbit_per_s > 0 else "FAIL",
                          f"{result.gbit_per_s:.2f} Gbit/s, {result.retransmits} retransmits")
            failures += 0 if result.gbit_per_s > 0 else 1
    console.print(table)
    return 1 if failures else 0
