"""`toelab scenarios` and `toelab run`: list scenarios, run them on targets, write the report.

`toelab run` shows progress (one line per scenario and target as it finishes), then a
summary per scenario and target and every failed check (`-v`: every check). It exits 1
when a check fails or a scenario errs, 2 on bad input (unknown scenario, target or
parameter, a missing tool), 0 otherwise; skipped checks do not fail a run. A scenario whose
lab fails to build is an error of that scenario, and the run goes on; whatever happens,
even Ctrl-C, the report and JSON hold every scenario that finished. Each scenario's pcaps
are cut to headers and the first payload bytes and gzipped (x.pcap.gz, which Wireshark
opens) once it has finished, unless `--full-pcaps`.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from lab.errors import LabError, require_root, require_tools
from lab.interrupts import note

console = Console(width=None if sys.stdout.isatty() else 160)

VERDICT_STYLE = {"pass": "green", "fail": "bold red", "skip": "dim"}
#: What a scenario run needs on this machine, and why.
RUN_TOOLS = {"tcpdump": "toelab run captures every scenario's packets", "nft": "toelab run filters and counts with nftables",
             "ip": "toelab run configures nodes"}


def scenarios_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the scenarios as JSON")


def list_scenarios(args: argparse.Namespace) -> int:
    import scenarios

    found = scenarios.all()
    if args.json:
        print(json.dumps([{"name": s.name, "purpose": s.purpose, "topology": s.topology, "targets": list(s.targets),
                           "covers": list(s.covers),
                           "parameters": [{"name": p.name, "type": p.type, "default": p.default,
                                           "description": p.description} for p in s.parameters()]}
                          for s in found], indent=2, default=str))
        return 0
    table = Table(title="toelab scenarios")
    for column in ("name", "purpose", "parameters (default)", "topology", "targets"):
        table.add_column(column)
    for s in found:
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
    p.add_argument("-v", "--verbose", action="store_true", help="print every check, not only the failed ones")
    p.add_argument("--long", action="store_true",
                   help="with `all`, also the long scenarios, which wait out an RFC timer of minutes (syn_r2: R2 for a "
                        "SYN, about 3 minutes); a long scenario's targets always run side by side, each in its own lab")
    p.add_argument("--full-pcaps", action="store_true",
                   help="keep whole packets in the report's pcaps (default: headers and the first payload bytes)")


def plan(args: argparse.Namespace) -> list[tuple[Any, Any]]:
    """(scenario, validated parameters) pairs; any mistake is a ScenarioError before anything runs."""
    import scenarios
    from lab.render import parse_assignments

    from .framework import ScenarioError

    chosen = ([s for s in scenarios.all() if getattr(args, "long", False) or not s.long] if args.scenario == "all"
              else [scenarios.get(args.scenario)])
    assignments = parse_assignments(args.param)
    plans = []
    for s in chosen:
        known = {k: v for k, v in assignments.items() if k in s.params.model_fields}
        plans.append((s, s.parse_params(known if args.scenario == "all" else assignments)))
    if args.scenario == "all":
        unused = set(assignments) - {k for s in chosen for k in s.params.model_fields}
        if unused:
            raise ScenarioError(f"no scenario has parameter(s) {', '.join(sorted(unused))}")
    return plans


def run_scenarios(args: argparse.Namespace) -> int:
    from .framework import ScenarioResult
    from .pcap_trim import relink, trim_pcaps
    from .runner import run_scenario
    from .side_by_side import run_side_by_side

    plans = plan(args)
    targets = ["kernel", "toe"] if args.target == "both" else [args.target]
    require_root("toelab run")
    require_tools(RUN_TOOLS)
    root = args.report or Path(tempfile.gettempdir()) / "toelab" / "runs" / time.strftime("%Y%m%d-%H%M%S")
    results: list[ScenarioResult] = []
    total = len(plans) * len(targets)

    def unbuilt(s: Any, target: str, params: Any, exc: BaseException, started: float) -> ScenarioResult:
        """Its lab did not build: an error of this scenario; the run goes on."""
        what = str(exc) if isinstance(exc, LabError) else f"{type(exc).__name__}: {exc}"
        return ScenarioResult(scenario=s.name, purpose=s.purpose, target=target, seed=args.seed,
                              params=params.model_dump(mode="json"), outdir=str(root / s.name / target),
                              error=f"the lab did not build: {what}", duration_s=round(time.monotonic() - started, 3))

    def finish(result: ScenarioResult, label: str) -> None:
        results.append(result)
        if not args.full_pcaps:  # as each finishes, so an interrupted run's report is small too
            relink(result.checks, trim_pcaps(root / result.scenario / result.target))
        console.print(f"{label}: {outcome(result)}", highlight=False)

    try:
        for s, params in plans:
            if s.long and len(targets) > 1:  # minutes of waiting: the targets wait at the same time
                label = f"[{len(results) + 1}-{len(results) + len(targets)}/{total}] {s.name} on {', '.join(targets)}"
                note(f"running {s.name} on {', '.join(targets)} side by side")
                started = time.monotonic()
                with console.status(f"{label}, side by side") as status:
                    outcomes = run_side_by_side(s, targets, params=params, seed=args.seed,
                                                outdir=lambda target, s=s: root / s.name / target,
                                                progress=lambda target, message, label=label, status=status:
                                                status.update(f"{label}: {target}: {escape(message)}"))
                for target, done in zip(targets, outcomes):
                    finish(done if isinstance(done, ScenarioResult) else unbuilt(s, target, params, done, started),
                           f"{label.split(' on ')[0]} on {target}")
                continue
            for target in targets:
                label = f"[{len(results) + 1}/{total}] {s.name} on {target}"
                note(f"running {s.name} on {target}")
                started = time.monotonic()
                with console.status(label) as status:
                    def progress(message: str, label: str = label, status: Any = status) -> None:
                        note(f"running {label.split('] ', 1)[1]}: {message}")
                        status.update(f"{label}: {escape(message)}")
                    try:
                        result = run_scenario(s, target, params=params, seed=args.seed, outdir=root / s.name / target,
                                              progress=progress)
                    except Exception as exc:
                        result = unbuilt(s, target, params, exc, started)
                finish(result, label)
    except BaseException:  # interrupted or broken: still the report of what finished
        _write_outputs(results, args, root)
        raise
    _print_summary(results, verbose=args.verbose)
    _write_outputs(results, args, root)
    return 1 if any(r.failed for r in results) else 0


def _write_outputs(results: list, args: argparse.Namespace, root: Path) -> None:
    """Report and JSON of what finished."""
    if not results or not (args.report or args.json):
        return
    from .report import write_json, write_report

    if args.report:
        console.print(f"report: {write_report(results, args.report)}", highlight=False)
    if args.json:
        console.print(f"json: {write_json(results, args.json, root)}", highlight=False)


def _counts(checks: list) -> dict[str, int]:
    return {v: sum(c.verdict.value == v for c in checks) for v in ("pass", "fail", "skip")}


def outcome(result: Any) -> str:
    """A scenario run in one line: its counts, time, and its error or skip reason."""
    counts = _counts(result.checks)
    text = f"{counts['pass']} passed, {counts['fail']} failed, {counts['skip']} skipped in {result.duration_s:.1f} s"
    if result.error:
        text += f"; error: {result.error}"
    elif result.skipped:
        text += f"; skipped: {result.skipped}"
    return text


def _print_summary(results: list, verbose: bool = False) -> None:
    """A row per scenario and target, then the failed checks (every check with `verbose`), then totals."""
    summary = Table(title="toelab run: summary")
    for column in ("scenario", "target", "passed", "failed", "skipped", "seconds", "note"):
        summary.add_column(column)
    for r in results:
        counts = _counts(r.checks)
        failed = f"[bold red]{counts['fail']}[/]" if counts["fail"] else "0"
        summary.add_row(r.scenario, r.target, str(counts["pass"]), failed, str(counts["skip"]), f"{r.duration_s:.1f}",
                        f"[bold red]error: {escape(r.error)}[/]" if r.error else escape(r.skipped or ""))
    console.print(summary)
    shown = [(r, c) for r in results for c in r.checks if verbose or c.verdict.value == "fail"]
    if shown:
        table = Table(title="every check" if verbose else "failed checks")
        for column in ("scenario", "target", "check", "requirement", "verdict", "what was seen"):
            table.add_column(column)
        for r, c in shown:
            judged = r.target if c.target == r.target else f"{c.target} (in the {r.target} run)"
            table.add_row(r.scenario, judged, escape(c.id), c.requirement,
                          f"[{VERDICT_STYLE[c.verdict.value]}]{c.verdict.value}[/]", escape(c.sentence))
        console.print(table)
    for target in sorted({r.target for r in results}):
        counts = _counts([c for r in results if r.target == target for c in r.checks])
        errors = sum(r.error is not None for r in results if r.target == target)
        console.print(f"{target}: {counts['pass']} passed, {counts['fail']} failed, {counts['skip']} skipped"
                      + (f", {errors} scenario error(s)" if errors else ""), highlight=False)
