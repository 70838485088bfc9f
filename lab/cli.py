"""The `toelab` command: build, use, inspect and remove labs; run scenarios and benchmarks.

Every user error (bad template, parameter, argument, missing privilege) is one sentence on
stderr and exit status 2, with nothing left behind.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

from rich.console import Console
from rich.table import Table

from .errors import LabError

console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True)
Handler = Callable[[argparse.Namespace], int]
#: Subcommands contributed by other modules: name -> (help, add_arguments, handler).
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Handler]] = {}


def command(name: str, help: str) -> Callable[[Callable[[argparse.ArgumentParser], None]], Callable[[Handler], Handler]]:
    """Register a subcommand: `@command(name, help)(add_args)(handler)` style, see below."""
    def with_args(add_args: Callable[[argparse.ArgumentParser], None]) -> Callable[[Handler], Handler]:
        def with_handler(handler: Handler) -> Handler:
            COMMANDS[name] = (help, add_args, handler)
            return handler
        return with_handler
    return with_args


def need_root(what: str) -> None:
    if os.geteuid() != 0:
        raise LabError(f"{what} needs root (it builds network namespaces): run it with sudo.")


def add_topology_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("topology", help="a template name from `toelab topologies`, or a path to one")
    p.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                   help="a template parameter (repeatable)")
    p.add_argument("--backend", choices=("netns", "mininet"), default="netns", help="how to build the lab")


def load_from_args(args: argparse.Namespace):  # -> TopologySpec
    from .render import load_topology, parse_assignments
    return load_topology(args.topology, parse_assignments(args.param))


def build_from_args(args: argparse.Namespace):  # -> Lab
    spec = load_from_args(args)
    need_root(f"building topology {spec.name}")
    from .lab import Lab
    return Lab.up(spec, backend=args.backend)


# --- subcommands -------------------------------------------------------------------------
@command("topologies", "list topology templates with their parameters")(lambda p: None)
def cmd_topologies(args: argparse.Namespace) -> int:
    from .render import list_templates
    table = Table(title="toelab topologies")
    for column in ("name", "description", "parameters"):
        table.add_column(column)
    for t in list_templates():
        params = "\n".join(f"{p.name}={p.default!r}  {p.help}" for p in t.parameters.values())
        table.add_row(t.name, t.description, params)
    console.print(table)
    return 0


@command("up", "build a topology and leave it running (remove it with `toelab down`)")(add_topology_args)
def cmd_up(args: argparse.Namespace) -> int:
    lab = build_from_args(args)
    lab.detach()
    console.print(f"lab [bold]{lab.id}[/] is up ({lab.spec.name}, {len(lab.spec.nodes)} nodes): "
                  f"`ip netns exec {lab.id}-<node> ...` or `toelab down {lab.id}`")
    return 0


def _down_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("lab", nargs="?", help="lab id (default: the only lab there is)")


@command("down", "tear down a lab by id (from any process)")(_down_args)
def cmd_down(args: argparse.Namespace) -> int:
    from .cleanup import down_lab
    from .state import list_records
    need_root("toelab down")
    lab_id = args.lab
    if lab_id is None:
        records = list_records()
        if len(records) != 1:
            raise LabError(f"there are {len(records)} labs; name one: " + ", ".join(r.lab_id for r in records))
        lab_id = records[0].lab_id
    down_lab(lab_id)
    console.print(f"lab {lab_id} is down")
    return 0


@command("ls", "list labs on this machine")(lambda p: None)
def cmd_ls(args: argparse.Namespace) -> int:
    from .state import list_records
    table = Table(title="toelab labs")
    for column in ("lab", "topology", "owner", "nodes", "processes"):
        table.add_column(column)
    for r in list_records():
        table.add_row(r.lab_id, r.topology, r.owner_description(), str(len(r.namespaces)), str(len(r.pids)))
    console.print(table)
    return 0


@command("clean", "remove the remains of labs whose owning process died")(lambda p: None)
def cmd_clean(args: argparse.Namespace) -> int:
    from .cleanup import clean
    need_root("toelab clean")
    removed = clean()
    console.print(f"removed {len(removed)} dead lab(s)" + (": " + ", ".join(removed) if removed else ""))
    return 0


@command("shell", "build a topology and open the lab shell on it; exit tears it down")(add_topology_args)
def cmd_shell(args: argparse.Namespace) -> int:
    from .shell import LabShell
    with build_from_args(args) as lab:
        LabShell(lab).cmdloop()
    return 0


# --- entry point -------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    _load_contributed_commands()
    parser = argparse.ArgumentParser(prog="toelab", description="A lab for TCP offload engines on namespace networks.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, add_args, handler) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_args(p)
        p.set_defaults(handler=handler)
    return parser


def _load_contributed_commands() -> None:
    """Import the modules that register more subcommands (scenarios, engine, bench, demo)."""
    import importlib
    for module in ("lab.demo", "lab.bench", "lab.audit", "scenarios.cli"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except LabError as exc:
        err_console.print(f"[red]toelab: {exc}[/]", highlight=False, soft_wrap=True)
        return exc.exit_code
    except KeyboardInterrupt:
        err_console.print("toelab: interrupted; the lab was torn down.")
        return 130


if __name__ == "__main__":
    # Run as `python -m lab.cli`: use the imported module, where subcommands register.
    from lab.cli import main as registered_main
    sys.exit(registered_main())
