"""`toelab pkt run SCRIPT... [--target kernel|toe|both] [--json FILE]`: packetdrill scripts over a real wire.

Builds one two-host lab per target, starts the target on h2 and runs the scripts from h1, one
after another. Prints each verdict as packetdrill would (file:line, what was expected, what
came); exit 1 if a script fails or errs, 2 for a script that cannot be read; a script with
constructs the runner does not support is listed with them and does not fail the run.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from lab.errors import LabError, require_root

from .library import label
from .parse import ScriptError, parse_file
from .session import ScriptResult


def add_arguments(parser: argparse.ArgumentParser) -> None:
    verbs = parser.add_subparsers(dest="verb", required=True)
    run = verbs.add_parser("run", help="run packetdrill scripts against a target over a real wire")
    run.add_argument("scripts", nargs="+", type=Path, metavar="SCRIPT", help="packetdrill .pkt files")
    run.add_argument("--target", choices=("kernel", "toe", "both"), default="kernel", help="what to test")
    run.add_argument("--json", type=Path, metavar="FILE", help="write every verdict as JSON to FILE")
    run.add_argument("--out", type=Path, metavar="DIR", help="where pcaps go (default: a new temporary directory)")


def run(args: argparse.Namespace) -> int:
    try:
        scripts = [parse_file(path) for path in args.scripts]
    except ScriptError as exc:
        raise LabError(str(exc)) from None
    require_root("toelab pkt run")
    out = args.out or Path(tempfile.gettempdir()) / "toelab" / "pkt" / time.strftime("%Y%m%d-%H%M%S")
    targets = ["kernel", "toe"] if args.target == "both" else [args.target]
    results: list[ScriptResult] = []
    for target in targets:
        results += run_on(target, scripts, out / target)
    for result in results:
        print(result.summary())
    for target in targets:
        mine = [r for r in results if r.target == target]
        counts = {v: sum(r.verdict == v for r in mine) for v in ("pass", "fail", "error", "unsupported")}
        print(f"{target}: {counts['pass']} passed, {counts['fail']} failed, {counts['error']} errors, "
              f"{counts['unsupported']} not run (unsupported constructs); pcaps in {out / target}")
    if args.json:
        args.json.write_text(json.dumps([r.to_json() for r in results], indent=1))
        print(f"json: {args.json}")
    return 1 if any(r.verdict in ("fail", "error") for r in results) else 0


def run_on(target_name: str, scripts: list, out: Path) -> list[ScriptResult]:
    """Every script on one target, in one lab."""
    from lab.lab import Lab
    from lab.render import load_topology
    from scenarios.targets import TargetUnavailable, make

    from .agent import agent_for
    from .session import Session

    target = make(target_name)
    reason = target.unavailable_reason()
    if reason is not None:
        return [ScriptResult(label(Path(s.path)), target_name, "unsupported", s.requirements, message=reason)
                for s in scripts]
    with Lab.up(load_topology("two_hosts", {"tso": "false"})) as lab:
        try:
            target.start(lab, "h2")
            results = []
            with Session(lab, target_name, "h2", "h1", agent_for(target, lab, "h2"), out) as session:
                for script in scripts:
                    result = session.run(script)
                    results.append(result)
                    print(f"  {result.verdict}: {result.script} on {target_name}", file=sys.stderr)
            return results
        except TargetUnavailable as exc:
            return [ScriptResult(label(Path(s.path)), target_name, "unsupported", s.requirements, message=str(exc))
                    for s in scripts]
        finally:
            target.stop()
