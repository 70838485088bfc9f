"""`toelab bench flood`: how fast the SYN flood generator sends, against Scapy in the same lab.

Pre-built frames on a raw AF_PACKET socket (one and two processes, unpaced) next to
Scapy sending the same kind of frames on an open L2 socket, which is what a Scapy-only tool
would manage (`sendp`, which opens a socket per call, is slower still).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap

from rich.table import Table

from lab.lab import Lab
from lab.render import load_topology

from scenarios import flood

from .rows import Measured, Row, row

SPOOF = "10.99.0.0/16"
UNPACED = 5_000_000


def _mac(lab: Lab, node: str) -> str:
    return json.loads(lab.node(node).run(["ip", "-j", "link", "show", "dev", "eth0"], check=True).stdout)[0]["address"]


def _sendp_rate(lab: Lab, seconds: float) -> float:
    """Frames per second Scapy manages from the attacker on an open L2 socket (faster than sendp)."""
    script = textwrap.dedent(f"""
        import time, random
        from scapy.all import Ether, IP, TCP, conf
        conf.verb = 0
        sock = conf.L2socket(iface="eth0")
        frames = [Ether(dst="{_mac(lab, 'server')}")/IP(src="10.99.0.{{}}".format(i % 250 + 1), dst="{lab.address('server')}")
                  /TCP(sport=1024 + i, dport=7, flags="S", seq=random.getrandbits(32)) for i in range(256)]
        sent, start = 0, time.monotonic()
        while time.monotonic() - start < {seconds}:
            sock.send(frames[sent % 256])
            sent += 1
        print(sent / (time.monotonic() - start))
    """)
    done = lab.node("attacker").run([sys.executable, "-c", script], timeout=seconds + 60, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def flood_rows(scapy_rate: float, rates: list[tuple[int, float]]) -> list[Row]:
    """Rows of `bench flood`: SYN/s of the generator with each count of worker processes, against Scapy's."""
    return [row("flood", f"SYN/s sent unpaced, toelab flood with {workers} process{'es' if workers > 1 else ''} "
                "(reference: scapy L2socket.send)", "SYN/s", round(scapy_rate), round(rate), workers=workers)
            for workers, rate in rates]


def bench_flood(args: argparse.Namespace) -> Measured:
    rates = []
    with Lab.up(load_topology("syn_flood")) as lab:
        reference = _sendp_rate(lab, min(args.seconds, 2.0))
        for workers in (1, 2):
            argv = flood.argv(iface="eth0", src_mac=_mac(lab, "attacker"), dst_mac=_mac(lab, "server"),
                              dst=lab.address("server"), dport=7, spoof=SPOOF, rate=UNPACED,
                              duration_s=args.seconds, max_count=UNPACED * 10, workers=workers)
            proc = lab.node("attacker").popen(argv, stdout=subprocess.PIPE, text=True)
            out, _ = proc.communicate(timeout=args.seconds + 30)
            rates.append((workers, flood.parse_result(out).rate))
    table = Table(title="SYN flood generator (unpaced) vs Scapy on an open L2 socket, same lab, same run")
    for column in ("sender", "SYN/s sent", "ratio to Scapy"):
        table.add_column(column, justify="right")
    for workers, rate in rates:
        table.add_row(f"toelab flood, {workers} process{'es' if workers > 1 else ''}", f"{rate:,.0f}",
                      f"{rate / reference:.0f}x")
    table.add_row("scapy L2socket.send", f"{reference:,.0f}", "1x")
    return Measured(table, flood_rows(reference, rates))
