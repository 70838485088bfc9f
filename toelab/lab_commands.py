"""`toelab topologies|up|down|ls|clean|shell`: build, list, use and remove labs."""
from __future__ import annotations

import argparse

from rich.table import Table

from lab.errors import LabError, require_root

from .output import console


def add_topology_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("topology", help="a template name from `toelab topologies`, or a path to one")
    p.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                   help="a template parameter (repeatable)")
    p.add_argument("--backend", choices=("netns", "mininet"), default="netns", help="how to build the lab")


def build_from_args(args: argparse.Namespace):  # -> Lab
    from lab.lab import Lab
    from lab.render import load_topology, parse_assignments

    spec = load_topology(args.topology, parse_assignments(args.param))
    require_root(f"building topology {spec.name}")
    return Lab.up(spec, backend=args.backend)


def topologies_arguments(p: argparse.ArgumentParser) -> None:
    pass


def topologies(args: argparse.Namespace) -> int:
    from lab.render import list_templates

    table = Table(title="toelab topologies")
    for column in ("name", "description", "parameters"):
        table.add_column(column)
    for t in list_templates():
        params = "\n".join(f"{p.name}={p.default!r}  {p.help}" for p in t.parameters.values())
        table.add_row(t.name, t.description, params)
    console.print(table)
    return 0


def up_arguments(p: argparse.ArgumentParser) -> None:
    add_topology_arguments(p)


def up(args: argparse.Namespace) -> int:
    lab = build_from_args(args)
    lab.detach()
    console.print(f"lab [bold]{lab.id}[/] is up ({lab.spec.name}, {len(lab.spec.nodes)} nodes): "
                  f"`toelab shell {lab.id}`, `toelab exec {lab.id} NODE -- CMD` or `toelab down {lab.id}`")
    return 0


def lab_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("lab", nargs="?", help="lab id (default: the only lab there is)")


def down(args: argparse.Namespace) -> int:
    from lab.cleanup import down_lab
    from lab.state import list_records

    require_root("toelab down")
    lab_id = args.lab
    if lab_id is None:
        records = list_records()
        if len(records) != 1:
            raise LabError(f"there are {len(records)} labs; name one: " + ", ".join(r.lab_id for r in records))
        lab_id = records[0].lab_id
    down_lab(lab_id)
    console.print(f"lab {lab_id} is down")
    return 0


def ls_arguments(p: argparse.ArgumentParser) -> None:
    pass


def ls(args: argparse.Namespace) -> int:
    from lab.state import list_records

    table = Table(title="toelab labs")
    for column in ("lab", "topology", "owner", "nodes", "processes"):
        table.add_column(column)
    for r in list_records():
        table.add_row(r.lab_id, r.topology, r.owner_description(), str(len(r.namespaces)), str(len(r.pids)))
    console.print(table)
    return 0


def clean(args: argparse.Namespace) -> int:
    from lab.cleanup import clean as clean_dead

    require_root("toelab clean")
    removed = clean_dead()
    console.print(f"removed {len(removed)} dead lab(s)" + (": " + ", ".join(removed) if removed else ""))
    return 0


def shell_arguments(p: argparse.ArgumentParser) -> None:
    add_topology_arguments(p)


def shell(args: argparse.Namespace) -> int:
    from .shell import LabShell

    with build_from_args(args) as lab:
        LabShell(lab).cmdloop()
    return 0
