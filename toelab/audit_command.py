"""`toelab audit [LAB] [--json]`: ethtool -k / -S of every interface and engine; exit 1 when something is flagged."""
from __future__ import annotations

import argparse
import json

from rich.table import Table

from lab.audit import audit_engine, audit_interfaces, engine_connections, engine_sockets
from lab.errors import require_root
from lab.state import pick_record

from .output import console

FEATURES = ("tso", "gso", "gro", "lro", "rx_csum", "tx_csum")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("lab", nargs="?", help="lab id (default: the only lab there is)")
    p.add_argument("--all-counters", action="store_true", help="show zero counters too")
    p.add_argument("--json", action="store_true", help="print the audit as JSON instead of tables")


def run(args: argparse.Namespace) -> int:
    require_root("toelab audit")
    record = pick_record(args.lab)
    interfaces = audit_interfaces(record)
    sockets = engine_sockets(record)
    engines = {node: audit_engine(node, path) for node, path in sockets.items()}
    tables = {node: engine_connections(path) for node, path in sockets.items()}
    flagged = any(a.findings for a in interfaces) or any(findings for _, findings in engines.values())
    if args.json:
        print(json.dumps({
            "lab": record.lab_id, "topology": record.topology, "flagged": flagged,
            "interfaces": [{"node": a.node, "iface": a.iface, "mtu": a.mtu, "features": a.features,
                            "stats": a.stats, "findings": a.findings} for a in interfaces],
            "engines": {node: {"counters": counters, "findings": findings, "connections": tables[node]}
                        for node, (counters, findings) in engines.items()},
        }, indent=2))
        return 1 if flagged else 0
    table = Table(title=f"lab {record.lab_id} ({record.topology}): interfaces (ethtool -k / -S)")
    for column in ("node", "iface", "mtu", *FEATURES, "tx pkts", "tx bytes", "rx pkts", "rx bytes", "drops", "finding"):
        table.add_column(column)
    for a in interfaces:
        table.add_row(a.node, a.iface, str(a.mtu), *("on" if a.features.get(k) else "off" for k in FEATURES),
                      str(a.stats["tx_packets"]), str(a.stats["tx_bytes"]), str(a.stats["rx_packets"]),
                      str(a.stats["rx_bytes"]), str(a.stats["rx_dropped"] + a.stats["tx_dropped"]),
                      "; ".join(a.findings) or "ok", style="red" if a.findings else None)
    console.print(table)
    for node, (counters, findings) in engines.items():
        engine_table = Table(title=f"engine on {node} (ethtool -S style)")
        engine_table.add_column("counter")
        engine_table.add_column("value", justify="right")
        for name, value in sorted(counters.items()):
            if value or args.all_counters:
                engine_table.add_row(name, str(value))
        console.print(engine_table)
        if tables[node]:
            conns = Table(title=f"connections of the engine on {node} (ss does not list the offloaded ones)")
            for column in ("local", "remote", "state", "offloaded", "app"):
                conns.add_column(column)
            for row in tables[node] or ():
                conns.add_row(str(row.get("local")), str(row.get("remote")), str(row.get("state")),
                              "yes" if row.get("offloaded") else "no (host)", str(row.get("app", "")))
            console.print(conns)
        for finding in findings:
            console.print(f"[red]{node}: {finding}[/]")
    return 1 if flagged else 0
