"""The lab shell's `scenario NAME`: run one scenario on the shell's own lab and print its checks.

    scenario handshake                      on the kernel, in a `toelab shell two_hosts`
    scenario handshake --target toe -p seed_port=4000

The lab must be the one the scenario would build: its topology, rendered with the topology
parameters the scenario asks for (handshake's wants tso=false: with TSO on, the captures
show 64 KiB super-segments and its MSS checks fail for the lab, not the target). `--as-is`
runs on a lab that differs anyway, saying so, and the verdicts then judge that lab. The lab
stays up afterwards, as the shell's lab does for every command. Each check is printed as it is
made (verdict, ID, requirement, what was seen), then one line of totals; the scenario's
captures and files stay in a directory named on that line.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lab.errors import require_tools
from lab.render import parse_assignments

if TYPE_CHECKING:
    from lab.lab import Lab
    from scenarios.framework import Check, Scenario

    from .shell import LabShell

USAGE = "scenario NAME [--target kernel|toe] [--seed N] [-p KEY=VALUE ...] [--as-is]"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise ValueError(f"{message}; usage: {USAGE}")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="scenario", add_help=False)
    p.add_argument("name")
    p.add_argument("--target", choices=("kernel", "toe"), default="kernel")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("-p", "--param", action="append", default=[])
    p.add_argument("--as-is", action="store_true")
    return p


def lab_mismatch(chosen: Scenario, params: Any, lab: Lab) -> str | None:
    """How `lab` differs from the lab `chosen` builds with `params` (a clause), or None when it does not."""
    from lab.render import load_topology

    wanted = {k: str(v) for k, v in chosen.topology_params(params).items()}
    if lab.spec.name == chosen.topology and lab.spec == load_topology(chosen.topology, wanted):
        return None
    return (f"scenario {chosen.name} runs on topology {chosen.topology} "
            + (f"with {', '.join(f'{k}={v}' for k, v in wanted.items())}" if wanted else "with its default parameters")
            + f", and this lab is {lab.spec.name}" + (" built otherwise" if lab.spec.name == chosen.topology else ""))


def shell_for(chosen: Scenario, params: Any) -> str:
    """The `toelab shell` command line that builds the lab `chosen` runs on with `params`."""
    given = "".join(f" -p {k}={v}" for k, v in chosen.topology_params(params).items())
    return f"toelab shell {chosen.topology}{given}"


def check_line(check: Check) -> str:
    """One check on one line: verdict, ID, requirement, and the sentence saying what was seen."""
    return f"{check.verdict.value:>4}  {check.id}  [{check.requirement}]  {check.sentence}"


def scenario(shell: LabShell, argv: list[str]) -> None:
    """scenario NAME [--target kernel|toe] [--seed N] [-p KEY=VALUE ...] [--as-is]: run a scenario on this lab."""
    import scenarios
    from scenarios.cli import RUN_TOOLS, outcome
    from scenarios.runner import run_scenario

    args = _parser().parse_args(argv)
    chosen = scenarios.get(args.name)
    params = chosen.parse_params(parse_assignments(args.param))
    lab = shell.lab
    mismatch = lab_mismatch(chosen, params, lab)
    if mismatch and not (args.as_is and lab.spec.name == chosen.topology):
        raise ValueError(f"{mismatch}: open `{shell_for(chosen, params)}` for it"
                         + (", or add --as-is to judge this lab" if lab.spec.name == chosen.topology else ""))
    if args.target not in chosen.targets:
        raise ValueError(f"scenario {chosen.name} runs on target(s) {', '.join(chosen.targets)}, not {args.target}")
    require_tools(RUN_TOOLS)
    outdir = Path(tempfile.gettempdir()) / "toelab" / "shell" / lab.id / f"{chosen.name}-{args.target}-" \
        f"{time.strftime('%H%M%S')}"
    shell.say(f"*** {chosen.name} on {args.target} ({lab.spec.nodes[chosen.server].kind} {chosen.server} serves, "
              f"{chosen.client} is the client)")
    if mismatch:
        shell.say(f"*** as is: {mismatch}; the verdicts judge this lab")
    result = run_scenario(chosen, args.target, params=params, seed=args.seed, outdir=outdir, lab=lab,
                          on_check=lambda check: shell.say(check_line(check)))
    shell.say(f"*** {chosen.name} on {args.target}: {outcome(result)}; files in {outdir}")


def scenario_names() -> list[str]:
    """Every scenario's name, for completion after `scenario `."""
    import scenarios

    return [s.name for s in scenarios.all()]
