"""`toelab fuzz --frames N --policy P --seed S`: the engine's own fuzzer, run long.

Prints frames/s (CPU time), exceptions by the place they were raised with the reproducer
saved for each, invariant violations, the engine's counters, peak RSS and RSS growth per
million frames after the first million. Exit 1 if anything escaped or an invariant broke.
No root needed: the engine runs in memory.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.table import Table

from lab.errors import LabError
from toe_engine.fuzz.runner import POLICIES, FuzzConfig, FuzzReport, fuzz

from .output import console


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--frames", type=int, default=1_000_000, help="frames to feed the engine (default 1000000)")
    p.add_argument("--policy", default="fallback",
                   help=f"exhaustion policy: {', '.join(POLICIES)}, or 'all' for each in turn (default fallback)")
    p.add_argument("--seed", type=int, default=0, help="seed of the frame generator (a run is exact for a seed)")
    p.add_argument("--out", type=Path, default=Path("fuzz-reproducers"),
                   help="directory for reproducer files (default ./fuzz-reproducers)")
    p.add_argument("--json", type=Path, help="also write the reports as JSON to this file")
    p.add_argument("--all-counters", action="store_true", help="print zero counters too")
    p.add_argument("--transfers", type=int, metavar="N",
                   help="instead: N echo transfers engine to engine through wires that mutate live frames")
    p.add_argument("--guided", action="store_true",
                   help="coverage-guided instead (atheris/libFuzzer): --frames is its number of inputs, crashes go to --out")


def run(args: argparse.Namespace) -> int:
    if args.frames < 1:
        raise LabError(f"--frames must be at least 1, got {args.frames}")
    policies = POLICIES if args.policy == "all" else (args.policy,)
    if args.guided:
        return _guided(args, policies)
    if args.transfers is not None:
        return _transfers(args)
    reports = []
    for policy in policies:
        try:
            config = FuzzConfig(frames=args.frames, policy=policy, seed=args.seed, reproducer_dir=args.out)
        except ValueError as exc:
            raise LabError(f"--policy: {exc}") from None
        report = fuzz(config, progress=_progress)
        _print(report, args.all_counters)
        reports.append(report)
    if args.json:
        args.json.write_text(json.dumps([r.as_dict() for r in reports], indent=1))
    return 1 if any(r.exceptions or r.violations for r in reports) else 0


def _guided(args: argparse.Namespace, policies: tuple[str, ...]) -> int:
    from toe_engine.fuzz import guided

    if not guided.available():
        raise LabError("--guided needs atheris, which is not installed (scripts/setup.sh installs it where it builds)")
    if len(policies) != 1:
        raise LabError("--guided runs one policy at a time: give --policy fallback, deny:drop, deny:rst or syncookie")
    try:
        FuzzConfig(frames=args.frames, policy=policies[0])
    except ValueError as exc:
        raise LabError(f"--policy: {exc}") from None
    args.out.mkdir(parents=True, exist_ok=True)
    guided.main([f"-runs={args.frames}", f"-seed={args.seed or 1}", f"-artifact_prefix={args.out}/"], policies[0])
    return 0  # libFuzzer exits the process itself; this is reached only if it returns


def _transfers(args: argparse.Namespace) -> int:
    from collections import Counter

    from toe_engine.fuzz.mutation import mutated_echo

    if args.transfers < 1:
        raise LabError(f"--transfers must be at least 1, got {args.transfers}")
    outcomes: Counter[str] = Counter()
    exceptions: Counter[str] = Counter()
    leftovers: list[str] = []
    for seed in range(args.seed, args.seed + args.transfers):
        result = mutated_echo(seed, size=200_000, rate=0.05)
        outcomes["whole" if result.intact else "a prefix" if result.prefix else "CORRUPT"] += 1
        exceptions.update(result.exceptions)
        leftovers += [f"seed {seed}: {line}" for line in result.leftovers]
    console.print(f"[bold]{args.transfers} mutated echo transfers[/bold] (200 kB, 5% of frames mutated), seeds "
                  f"{args.seed}..{args.seed + args.transfers - 1}: came back " +
                  ", ".join(f"{name} {n}" for name, n in outcomes.most_common()))
    console.print(f"exceptions: {dict(exceptions) or 'none'}")
    console.print(f"leftovers: {leftovers[:10] or 'none'}")
    return 1 if exceptions or leftovers or outcomes["CORRUPT"] else 0


def _progress(report: FuzzReport) -> None:
    rss = report.rss_samples[-1][1] // 1024 if report.rss_samples else 0
    print(f"  {report.config.policy}: {report.frames:,} frames, {report.frames_per_s:,.0f} frames/s, "
          f"{sum(report.exceptions.values())} exceptions, {report.violations} violations, RSS {rss} MiB",
          file=sys.stderr, flush=True)


def _print(report: FuzzReport, all_counters: bool) -> None:
    growth = report.rss_growth_per_million_kib
    console.print(f"[bold]fuzz {report.config.policy}[/bold] seed {report.config.seed}: {report.frames:,} frames "
                  f"in {report.cpu_seconds:.1f} s CPU ({report.frames_per_s:,.0f} frames/s), "
                  f"{report.flows_opened:,} flows opened; peak RSS {report.peak_rss_kib / 1024:.1f} MiB, growth "
                  + ("n/a (under 2M frames)" if growth is None else f"{growth:+.0f} KiB per million frames"))
    exceptions = Table(title="exceptions by site")
    for column in ("site", "count", "reproducer"):
        exceptions.add_column(column)
    for site, count in report.exceptions.most_common():
        exceptions.add_row(site, str(count), report.reproducers.get(site, ""))
    console.print(exceptions if report.exceptions else "exceptions: none")
    console.print(f"invariant violations: {report.violations}")
    for line in report.violation_samples:
        console.print(f"  {line}")
    counters = Table(title="engine counters")
    counters.add_column("counter")
    counters.add_column("value", justify="right")
    for name, value in sorted(report.counters.items()):
        if value or all_counters:
            counters.add_row(name, f"{value:,}")
    console.print(counters)
