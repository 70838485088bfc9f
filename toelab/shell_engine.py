"""The lab shell's `toe` command: engine counters, connection tables and run-time settings.

    toe stats [NODE]              counters of every engine node, or of one
    toe conns [NODE]              connection tables (a middlebox keeps none)
    toe set NODE key=value ...    e.g. `toe set mb loss=5 direction=a_to_b`, `toe set mb gemodel.p=2`
    toe rss NODE                  an engine node's RSS table and key, as `ethtool -x` shows a NIC's

Tables are drawn with rich into the shell's own output, so `onecmd` captures them.
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from toe_engine.impair import ImpairmentSpec

from lab.engine_nodes import EngineHandle

from .shell_rss import toe_rss

if TYPE_CHECKING:
    from .shell import LabShell

IMPAIRMENT_DEFAULTS = ImpairmentSpec().model_dump(mode="json")
USAGE = "usage: toe stats [NODE] | toe conns [NODE] | toe set NODE key=value ... | toe rss NODE"


def parse_value(text: str) -> Any:
    """A command-line value as JSON when it is one (5, 2.5, true, null), else the string itself."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _print(shell: LabShell, table: Table) -> None:
    Console(file=shell.stdout, width=120, color_system=None, highlight=False).print(table)


def _selected(shell: LabShell, args: list[str]) -> dict[str, EngineHandle]:
    if args:
        return {args[0]: shell.lab.engine(args[0])}
    found = shell.lab.engines()
    if not found:
        raise ValueError(f"lab {shell.lab.id} has no engine nodes")
    return found


def stats_table(handle: EngineHandle, stats: dict[str, Any]) -> Table:
    """Counters as rows; a middlebox gets a column per direction and a total."""
    directions: dict[str, dict[str, int]] = stats.get("directions", {})
    build = f", {stats['build']} engine" if "build" in stats else ""  # compiled or pure (toe_engine/native.py)
    table = Table(title=f"{handle.node} ({handle.kind}{', ' + stats['mode'] if 'mode' in stats else ''}){build}")
    table.add_column("counter")
    for direction in directions:
        table.add_column(direction, justify="right")
    table.add_column("total", justify="right")
    for name, total in stats.get("counters", {}).items():
        table.add_row(name, *(str(values.get(name, 0)) for values in directions.values()), str(total))
    for ifname, counters in stats.get("drivers", {}).items():
        for name, value in counters.items():
            table.add_row(f"{ifname}.{name}", *("" for _ in directions), str(value))
    for name, value in stats.get("gauges", {}).items():  # an endpoint's table: occupancy, capacity, SRAM
        table.add_row(f"gauge.{name}", *("" for _ in directions), str(value))
    return table


def toe_stats(shell: LabShell, args: list[str]) -> None:
    for handle in _selected(shell, args).values():
        _print(shell, stats_table(handle, handle.stats()))


def toe_conns(shell: LabShell, args: list[str]) -> None:
    for name, handle in _selected(shell, args).items():
        if handle.kind == "middlebox":
            shell.say(f"{name}: a middlebox forwards frames and keeps no connection table")
            continue
        rows: list[dict[str, Any]] = handle.request({"cmd": "conns"}).get("connections", [])
        table = Table(title=f"{name} ({handle.kind}): {len(rows)} connections")
        columns = list(rows[0]) if rows else ["connection"]
        for column in columns:
            table.add_column(column)
        for row in rows:
            table.add_row(*(str(row.get(column, "")) for column in columns))
        _print(shell, table)


def toe_set(shell: LabShell, args: list[str]) -> None:
    if len(args) < 2:
        raise ValueError(USAGE)
    changes: dict[str, Any] = {}
    for item in args[1:]:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{item!r} is not key=value ({USAGE})")
        changes[key] = parse_value(value)
    config = shell.lab.engine(args[0]).set(**changes)
    for direction in ("a_to_b", "b_to_a"):
        if isinstance(config.get(direction), dict):
            settings = config[direction]
            impairments = {k: v for k, v in settings.get("impairments", {}).items() if IMPAIRMENT_DEFAULTS.get(k) != v}
            shell.say(f"{args[0]} {direction}: coalesce={settings.get('coalesce')} tso={settings.get('tso')} "
                      f"seed={settings.get('seed')} impairments={json.dumps(impairments)}")
    if not any(direction in config for direction in ("a_to_b", "b_to_a")):
        shell.say(f"{args[0]}: {json.dumps(config)}")


SUBCOMMANDS = {"stats": toe_stats, "conns": toe_conns, "set": toe_set, "rss": toe_rss}


def toe(shell: LabShell, args: list[str]) -> None:
    """toe stats [NODE] | toe conns [NODE] | toe set NODE key=value ...: engine counters and settings"""
    if not args or args[0] not in SUBCOMMANDS:
        raise ValueError(USAGE)
    SUBCOMMANDS[args[0]](shell, args[1:])

