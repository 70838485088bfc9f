"""`toelab scenarios` and `toelab run`: list scenarios, run them on targets, write the report.

`toelab run` exits 1 when a check fails or a scenario errs, 2 on bad input (unknown
scenario, target or parameter), 0 otherwise; skipped checks do not fail a run.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from lab.errors import require_root

console = Console(width=None if sys.stdout.isatty() else 160)

VERDICT_STYLE = {"pass": "green", "fail": "bold red", "skip": "dim"}


def scenarios_arguments(p: argparse.ArgumentParser) -> None:
    pass


def list_scenarios(args: argparse.Namespace) -> int:
    import scenarios
    table = Table(title="toelab scenarios")
    for column in ("name", "purpose", "parameters (default)", "topology", "targets"):
        table.add_column(column)
    for s in scenarios.all():
        params = "\n".join(f"{p.name}: {p.type} = {p.default!r}  {p.description}" for p in s.parameters())
        table.add_row(s.name, escape(s.purpose), escape(params) or "-", s.topology, ", ".join(s.targets))
    console.print(table)
    return 0


def run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("scenario", help="a scenario name from `toelab scenarios`, or `all`")
    p.add_argument("--target", choices=("kernel", "toe", "both"), default="kernel", help="what to test")
    p.add_argument("--seed", type=int, default=1, help="seed for crafted values (ports, ISNs, payloads)")
    p.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                   help="a scenario parameter (repeatable; with `all`, given to every scenario that has it)")
    p.add_argument("--report", type=Path, metavar="DIR", help="write DIR/index.html and DIR/results.json")
    p.add_argument("--json", type=Path, metavar="FILE", help="write the results as JSON to FILE")


def run_scenarios(args: argparse.Namespace) -> int:
    import scenarios
    from lab.render import parse_assignments

    from .framework import ScenarioError
    from .report import write_json, write_report
    from .runner import run_scenario

    chosen = scenarios.all() if args.scenario == "all" else [scenarios.get(args.scenario)]
    assignments = parse_assignments(args.param)
    plans = []
    for s in chosen:
        known = {k: v for k, v in assignments.items() if k in s.params.model_fields}
        plans.append((s, s.parse_params(known if args.scenario == "all" else assignments)))
    if args.scenario == "all":
        unused = set(assignments) - {k for s in chosen for k in s.params.model_fields}
        if unused:
            raise ScenarioError(f"no scenario has parameter(s) {', '.join(sorted(unused))}")
    targets = ["kernel", "toe"] if args.target == "both" else [args.target]
    require_root("toelab run")
    root = args.report or Path(tempfile.gettempdir()) / "toelab" / "runs" / time.strftime("%Y%m%d-%H%M%S")
    results = []
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[status]}"),
                  TimeElapsedColumn(), console=console, transient=True) as progress:
        task = progress.add_task("scenarios", total=len(plans) * len(targets), status="")
        for s, params in plans:
            for target in targets:
                label = f"{s.name} on {target}"
                progress.update(task, description=label, status="")
                result = run_scenario(s, target, params=params, seed=args.seed, outdir=root / s.name / target,
                                      progress=lambda m, label=label: progress.update(task, status=m),
                                      on_check=lambda c: progress.update(task, status=f"{c.verdict.value}: {c.id}"))
                results.append(result)
                progress.advance(task)
    _print_results(results)
    if args.report:
        console.print(f"report: {write_report(results, args.report)}")
    if args.json:
        console.print(f"json: {write_json(results, args.json, root)}")
    return 1 if any(r.failed for r in results) else 0


def _print_results(results: list) -> None:
    table = Table(title="toelab run")
    for column in ("scenario", "target", "check", "requirement", "verdict", "what was seen"):
        table.add_column(column)
    for r in results:
        if r.error:
            table.add_row(r.scenario, r.target, "(error)", "", "[bold red]error[/]", escape(r.error))
        for c in r.checks:
            table.add_row(r.scenario, r.target, escape(c.id), c.requirement,
                          f"[{VERDICT_STYLE[c.verdict.value]}]{c.verdict.value}[/]", escape(c.sentence))
    console.print(table)
    for target in sorted({r.target for r in results}):
        checks = [c for r in results if r.target == target for c in r.checks]
        counts = {v: sum(c.verdict.value == v for c in checks) for v in ("pass", "fail", "skip")}
        errors = sum(r.error is not None for r in results if r.target == target)
        console.print(f"{target}: {counts['pass']} passed, {counts['fail']} failed, {counts['skip']} skipped"
                      + (f", {errors} scenario error(s)" if errors else ""))
