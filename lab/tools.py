"""Common measurements run inside lab nodes: ping, iperf3 and a byte-exact echo, parsed into numbers."""
from __future__ import annotations

import json
import os
import re
import select
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import LabError

if TYPE_CHECKING:
    from .lab import Lab

_PING_SUMMARY = re.compile(r"(\d+) packets transmitted, (\d+) received")
_PING_RTT = re.compile(r"= [\d.]+/([\d.]+)/")


@dataclass(frozen=True)
class PingResult:
    src: str
    dst: str
    sent: int
    received: int
    avg_rtt_ms: float | None
    output: str

    @property
    def ok(self) -> bool:
        return self.sent > 0 and self.received == self.sent


def ping(lab: "Lab", src: str, dst_addr: str, count: int = 1, size: int | None = None,
         dont_fragment: bool = False, timeout_s: float = 2.0) -> PingResult:
    """Ping from node `src` to an address; `dont_fragment` sets DF (`-M do`)."""
    cmd = ["ping", "-n", "-c", str(count), "-i", "0.05", "-W", str(timeout_s)]
    if size is not None:
        cmd += ["-s", str(size)]
    if dont_fragment:
        cmd += ["-M", "do"]
    result = lab.node(src).run(cmd + [dst_addr], timeout=timeout_s * count + 5)
    text = result.stdout + result.stderr
    summary = _PING_SUMMARY.search(text)
    rtt = _PING_RTT.search(text)
    sent, received = (int(summary.group(1)), int(summary.group(2))) if summary else (count, 0)
    return PingResult(src, dst_addr, sent, received, float(rtt.group(1)) if rtt else None, text)


@dataclass(frozen=True)
class IperfResult:
    client: str
    server: str
    gbit_per_s: float
    retransmits: int
    bytes: int
    #: CPU seconds of the client and the server process over the test, as iperf3 reports it (their
    #: getrusage: with no separate IRQ time accounting, softirq work run in their context counts).
    cpu_s: float = 0.0


#: Sends random bytes to an echo service and reads them back at once; prints whether they came back exactly.
_ECHO_CLIENT = r"""
import json, os, socket, sys, threading
data = os.urandom(int(sys.argv[3]))
sock = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=60)
got = bytearray()
def read():
    while chunk := sock.recv(1 << 16):
        got.extend(chunk)
reader = threading.Thread(target=read)
reader.start()
sock.sendall(data)
sock.shutdown(socket.SHUT_WR)
reader.join()
print(json.dumps({"exact": bytes(got) == data, "received": len(got)}))
"""


def echo_exact(lab: "Lab", client: str, addr: str, port: int, size: int) -> dict[str, object]:
    """`size` random bytes from `client` to the echo service at addr:port: {"exact": came back unchanged,
    "received": bytes read back}. RuntimeError if the client failed (no connection, say)."""
    done = lab.node(client).run([sys.executable, "-c", _ECHO_CLIENT, addr, str(port), str(size)], timeout=120)
    if not done.ok:
        raise RuntimeError(f"echo client on {client} to {addr}:{port} failed: {done.stderr[-800:]}")
    result: dict[str, object] = json.loads(done.stdout)
    return result


def iperf(lab: "Lab", client: str, server: str, seconds: float = 2.0, version: int = 4,
          extra: list[str] | None = None) -> IperfResult:
    """Run iperf3 from `client` to `server` (both lab nodes) and parse its JSON.

    iperf3 takes whole seconds (`-t 0.5` would mean "forever"), so `seconds` is rounded up to 1.
    """
    addr = lab.address(server, version)
    srv = lab.node(server).popen(["iperf3", "-s", "-1", "--forceflush", "-B", addr], stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT)
    try:
        wait_for_line(srv, "Server listening", what=f"iperf3 server on {server}")
        result = lab.node(client).run(
            ["iperf3", "-J", "-c", addr, "-t", str(max(1, round(seconds)))] + (extra or []), timeout=seconds + 20)
        if result.returncode != 0:
            raise RuntimeError(f"iperf3 from {client} to {server} failed: {result.stdout[-300:]}{result.stderr[-300:]}")
        end = json.loads(result.stdout)["end"]
        sent = end["sum_sent"]
        received = end.get("sum_received", sent)
        cpu = end.get("cpu_utilization_percent", {})
        cpu_s = (cpu.get("host_total", 0.0) + cpu.get("remote_total", 0.0)) / 100 * sent.get("seconds", 0.0)
        return IperfResult(client, server, received["bits_per_second"] / 1e9,
                           int(sent.get("retransmits", 0)), int(received["bytes"]), cpu_s)
    finally:
        srv.terminate()
        srv.wait(timeout=5)


def wait_for_line(proc: subprocess.Popen, marker: str, what: str, timeout_s: float = 10.0) -> str:
    """Read a child's output until it holds `marker`: the event that says it is ready.

    Reads the raw pipe (not a buffered reader) so select() never misses buffered lines.
    """
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + timeout_s
    seen = b""
    while marker.encode() not in seen:
        remaining = deadline - time.monotonic()
        ready, _, _ = select.select([fd], [], [], max(0.0, remaining))
        chunk = os.read(fd, 4096) if ready else b""
        if not chunk:
            raise RuntimeError(f"{what} did not become ready: {seen.decode(errors='replace')[-300:] or 'no output'}")
        seen += chunk
    return seen.decode(errors="replace")


def set_link_state(lab: "Lab", a: str, b: str, up: bool) -> list[str]:
    """Set both ends of every link between nodes `a` and `b` up or down (any backend); the ends changed."""
    lab.node(a), lab.node(b)
    ends = [end for link in lab.spec.links if {link.split(0)[0], link.split(1)[0]} == {a, b} for end in link.endpoints]
    if not ends:
        raise LabError(f"lab {lab.id} has no link between {a!r} and {b!r}")
    for end in ends:
        node, iface = end.split(":")
        lab.node(node).run(["ip", "link", "set", "dev", iface, "up" if up else "down"], check=True)
    return ends
