"""The `toelab` command: one explicit table of subcommands, each a handler in some module.

A subcommand is one line in COMMANDS: its name, its help, the module that implements it,
and the names of the handler (`run(args) -> int`) and of the function that adds its
arguments to an argparse parser (or None). Modules are imported only for the subcommand
being run (or all of them for `--help` of a subcommand and for tests), so one command's
imports never slow down or break another.

Every user error (bad template, parameter, argument, missing privilege) is one sentence on
stderr and exit status 2, with nothing left behind; SIGINT exits 130 and SIGTERM 143 once
what the command made is removed.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from dataclasses import dataclass
from typing import Callable

Handler = Callable[[argparse.Namespace], int]


@dataclass(frozen=True)
class Command:
    """A subcommand: `module.run(args)` handles it, `module.arguments(parser)` declares its arguments."""

    name: str
    help: str
    module: str
    run: str = "run"
    arguments: str | None = "add_arguments"

    def handler(self) -> Handler:
        handler: Handler = getattr(importlib.import_module(self.module), self.run)
        return handler

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        if self.arguments is not None:
            getattr(importlib.import_module(self.module), self.arguments)(parser)


LAB = "toelab.lab_commands"
#: Every subcommand, in the order `toelab --help` lists them. Add one with one line here.
COMMANDS: tuple[Command, ...] = (
    Command("topologies", "list topology templates with their parameters", LAB, "topologies", "topologies_arguments"),
    Command("up", "build a topology and leave it running (remove it with `toelab down`)", LAB, "up", "up_arguments"),
    Command("down", "tear down a lab by id (from any process)", LAB, "down", "lab_argument"),
    Command("ls", "list labs on this machine", LAB, "ls", "ls_arguments"),
    Command("clean", "remove the remains of labs whose owning process died", LAB, "clean", None),
    Command("shell", "a shell on a running lab (LAB), or on a new one built from TOPOLOGY and removed on exit",
            LAB, "shell", "shell_arguments"),
    Command("exec", "run one command in a node of a running lab, with the terminal and exit status passed through",
            LAB, "exec_in_node", "exec_arguments"),
    Command("inspect", "a running lab as JSON: nodes, interfaces, addresses, processes and its state record",
            LAB, "inspect", "inspect_arguments"),
    Command("graph", "draw a topology or a running lab: nodes by kind, links with interfaces, addresses and MTUs",
            "toelab.graph"),
    Command("audit", "offload features and counters of every interface and engine, and offloads that did not happen",
            "toelab.audit_command"),
    Command("scenarios", "list scenarios with their purposes and parameters", "scenarios.cli",
            "list_scenarios", "scenarios_arguments"),
    Command("run", "run a scenario (or all) on the kernel, the engine or both, and report", "scenarios.cli",
            "run_scenarios", "run_arguments"),
    Command("bench", "print benchmarks with ratios against references measured in the same run", "toelab.bench"),
    Command("fuzz", "fuzz the engine in memory: frames/s, exceptions by site with reproducers, invariants, memory",
            "toelab.fuzz_command"),
    Command("demo", "the main job: a sanity run on router_path, then every scenario on both targets, with a report",
            "toelab.demo"),
    Command("pkt", "run packetdrill scripts against the kernel or the engine over a real wire", "scenarios.pkt.cli"),
)


def find(name: str) -> Command | None:
    return next((c for c in COMMANDS if c.name == name), None)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole parser; with `only`, just that subcommand's arguments are loaded (the others have none)."""
    parser = argparse.ArgumentParser(prog="toelab", description="A lab for TCP offload engines on namespace networks.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        p = sub.add_parser(command.name, help=command.help, description=command.help)
        if only is None or only == command.name:
            command.add_arguments(p)
        p.set_defaults(command_entry=command)
    return parser


def _chosen(argv: list[str]) -> str | None:
    first = next((a for a in argv if not a.startswith("-")), None)
    return first if first is not None and find(first) is not None else None


def main(argv: list[str] | None = None) -> int:
    """Run one toelab command (for callers in Python, tests among them); its exit status."""
    return _run(argv, program=False)


def entry() -> None:
    """The `toelab` program: run the command, then exit with its status."""
    sys.exit(_run(None, program=True))


def _run(argv: list[str] | None, program: bool) -> int:
    from lab import interrupts
    from lab.errors import LabError

    previous = interrupts.install()
    argv = sys.argv[1:] if argv is None else list(argv)
    chosen = _chosen(argv)
    parser = build_parser(only=chosen or "")
    try:
        args = parser.parse_args(argv)
        return int(args.command_entry.handler()(args))
    except LabError as exc:
        _say(f"toelab: {exc}")
        return exc.exit_code
    except (KeyboardInterrupt, interrupts.Terminated) as exc:
        code = 143 if isinstance(exc, interrupts.Terminated) else 130
        doing = f" while {interrupts.activity()}" if interrupts.activity() else ""
        _say(f"toelab: {'terminated (SIGTERM)' if code == 143 else 'interrupted (SIGINT)'}{doing}; "
             "everything it made is removed.")
        return code
    finally:
        if program:
            interrupts.settle()  # the command is over: a late signal must not turn a finished run into a traceback
        else:
            interrupts.restore(previous)


def _say(message: str) -> None:
    """One sentence on stderr, wrapped by the terminal only."""
    print(message, file=sys.stderr, flush=True)


if __name__ == "__main__":
    entry()
