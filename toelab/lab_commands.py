"""`toelab topologies|up|down|ls|clean|shell|exec|inspect`: build, list, use and remove labs.

A LAB argument is a lab id from `toelab ls`; a TOPOLOGY argument a template name from
`toelab topologies` or a path to one. `shell` and `graph` take either.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TYPE_CHECKING, Any

from rich.markup import escape
from rich.table import Table

from lab.errors import LabError, require_root

from .output import console

if TYPE_CHECKING:
    from lab.lab import Lab
    from lab.spec import TopologySpec


def add_topology_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("topology", help="a template name from `toelab topologies`, or a path to one")
    add_parameter_arguments(p)


def add_parameter_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                   help="a template parameter (repeatable)")
    p.add_argument("--backend", choices=("netns", "mininet"), default="netns", help="how to build the lab")


def load_spec(topology: str, params: list[str]) -> TopologySpec:
    from lab.render import load_topology, parse_assignments

    return load_topology(topology, parse_assignments(params))


def build(topology: str, params: list[str], backend: str) -> Lab:
    """Validate, check privileges and tools (Lab.up), then build; a failure leaves nothing behind."""
    from lab.interrupts import note
    from lab.lab import Lab

    spec = load_spec(topology, params)
    require_root(f"building topology {spec.name}")
    note(f"building topology {spec.name}")
    return Lab.up(spec, backend=backend)


def is_lab_id(name: str) -> bool:
    """A running lab's id, or a name shaped like one (so a typo gets "no such lab", not "no such topology")."""
    import re

    from lab.render import TOPOLOGY_DIR, SUFFIX
    from lab.state import LAB_ID_PREFIX, read_record

    if "/" in name or (TOPOLOGY_DIR / f"{name}{SUFFIX}").is_file():
        return False
    return read_record(name) is not None or re.fullmatch(f"{LAB_ID_PREFIX}[0-9a-f]{{4}}", name) is not None


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


# --- topologies, up, down, ls, clean -------------------------------------------------------
def topologies_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the templates as JSON")


def topologies(args: argparse.Namespace) -> int:
    """Every template, with its parameters; a template whose header is broken is listed with its error."""
    from lab.render import list_templates

    templates = list_templates()
    if args.json:
        print_json([{"name": t.name, "path": str(t.path), "description": t.description, "error": t.error,
                     "parameters": {p.name: {"default": p.default, "help": p.help} for p in t.parameters.values()}}
                    for t in templates])
        return 0
    table = Table(title="toelab topologies")
    for column in ("name", "description", "parameters"):
        table.add_column(column)
    for t in templates:
        params = "\n".join(f"{p.name}={p.default!r}  {p.help}" for p in t.parameters.values())
        table.add_row(t.name, escape(t.description) if t.error is None else f"[red]unusable: {escape(t.error)}[/]",
                      escape(params))
    console.print(table)
    return 0


def up_arguments(p: argparse.ArgumentParser) -> None:
    add_topology_arguments(p)


def up(args: argparse.Namespace) -> int:
    if args.backend == "mininet":
        raise LabError("the mininet backend cannot leave a lab running after toelab exits (Mininet's nodes live "
                       f"in its own process); use `toelab shell {args.topology} --backend mininet`")
    lab = build(args.topology, args.param, args.backend)
    lab.detach()
    console.print(f"lab [bold]{lab.id}[/] is up ({lab.spec.name}, {len(lab.spec.nodes)} nodes): "
                  f"`toelab shell {lab.id}`, `toelab exec {lab.id} NODE -- CMD` or `toelab down {lab.id}`",
                  highlight=False)
    return 0


def lab_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("lab", nargs="?", help="lab id (default: the only lab there is)")


def down(args: argparse.Namespace) -> int:
    from lab.cleanup import remove_lab
    from lab.state import pick_record

    require_root("toelab down")
    record = pick_record(args.lab)
    remove_lab(record)
    console.print(f"lab {record.lab_id} is down")
    return 0


def ls_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the labs as JSON")


def ls(args: argparse.Namespace) -> int:
    from lab.state import list_records

    records = list_records()
    if args.json:
        print_json([{"lab": r.lab_id, "topology": r.topology, "backend": r.backend, "status": r.status,
                     "owner": r.owner_description(), "detached": r.detached, "nodes": len(r.namespaces),
                     "processes": len(r.processes), "created": r.created} for r in records])
        return 0
    table = Table(title="toelab labs")
    for column in ("lab", "topology", "status", "owner", "nodes", "processes"):
        table.add_column(column)
    for r in records:
        table.add_row(r.lab_id, r.topology, r.status, r.owner_description(), str(len(r.namespaces)), str(len(r.pids)))
    console.print(table)
    return 0


def clean(args: argparse.Namespace) -> int:
    from lab.cleanup import clean as clean_dead

    require_root("toelab clean")
    removed = clean_dead()
    console.print(f"removed {len(removed)} dead lab(s)" + (": " + ", ".join(removed) if removed else ""))
    return 0


# --- shell, exec, inspect -------------------------------------------------------------------
def shell_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", metavar="LAB|TOPOLOGY",
                   help="a running lab's id (exit leaves it up), or a topology to build (exit removes it)")
    add_parameter_arguments(p)
    p.add_argument("-c", "--command", dest="lines", action="append", default=[], metavar="LINE",
                   help="run these shell lines instead of reading from the terminal (repeatable)")


def shell(args: argparse.Namespace) -> int:
    from lab.lab import Lab

    from .shell import LabShell

    if is_lab_id(args.target):
        if args.param:
            raise LabError(f"{args.target} is a running lab; -p parameters apply only when building a topology")
        require_root(f"toelab shell {args.target}")
        with Lab.attach(args.target) as lab:
            return LabShell(lab).run(args.lines)
    with build(args.target, args.param, args.backend) as lab:
        return LabShell(lab).run(args.lines)


def exec_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("lab", help="a running lab's id")
    p.add_argument("node", help="a node of that lab")
    p.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD ...", help="the command and its arguments")


def exec_in_node(args: argparse.Namespace) -> int:
    """Become the command inside the node: stdin, stdout and stderr are this process's, so is the exit status."""
    from lab.lab import Lab

    argv = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not argv:
        raise LabError("toelab exec needs a command after the node: toelab exec LAB NODE -- CMD ...")
    require_root("toelab exec")
    node = Lab.attach(args.lab).node(args.node)
    sys.stdout.flush()
    with node.inside():
        try:
            os.execvp(argv[0], argv)
        except FileNotFoundError:
            print(f"toelab: node {args.node} has no command {argv[0]!r}", file=sys.stderr)
            return 127
    return 126  # not reached: execvp either replaces this process or raises


def inspect_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("lab", nargs="?", help="lab id (default: the only lab there is)")


def inspect(args: argparse.Namespace) -> int:
    """The lab as JSON: nodes, their interfaces and addresses as the kernel has them, processes, the record."""
    from lab.inspect import describe_lab
    from lab.state import pick_record

    require_root("toelab inspect")
    print_json(describe_lab(pick_record(args.lab)))
    return 0
