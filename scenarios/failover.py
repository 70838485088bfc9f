"""`failover`: a port of a two-port node fails mid-transfer; do its connections move to the other port?

Topology `two_port_bridge`: the client h1 and node t1 on one bridge, t1 with two ports (eth0
and eth1) and its address on eth0. On `toe` the scenario puts the engine on t1 with eth1 as a
standby port (toe_engine.runtime.failover: active-backup, carrier read every `miimon_ms`,
gratuitous ARP from the new port). The client echoes `transfer_mib` through t1's echo
service; once `fail_at` of it has come back, the bridge's port to t1's eth0 goes down (a
cable pulled at the switch), while a second, longer echo connection is in flight. The engine
must move both connections to eth1: both complete byte-exact, and the main transfer's time
without progress is reported.

The fair kernel comparison is a bond in active-backup mode over the same two ports; this
kernel has no bonding driver, so on `kernel` that check is a skip with the reason, and the
same transfer is run with the address on eth0 alone to say what the kernel does without one.
The framework's own target runs on h2 and takes no part (the node under test needs two ports).
"""
from __future__ import annotations

import hashlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from pydantic import Field

from lab.endpoint_nodes import start_endpoint

from .framework import Check, RunContext, ScenarioParams, scenario
from .targets import make

NODE, SWITCH, FAILED_PORT, FAILED_SWITCH_PORT = "t1", "s1", "eth0", "p3"
ECHO_PORT = 7
CHUNK = 1 << 16


class FailoverParams(ScenarioParams):
    transfer_mib: int = Field(16, ge=1, le=1024, description="MiB echoed through the node")
    fail_at: float = Field(0.3, gt=0, lt=1, description="fraction of the transfer back when the port fails")
    miimon_ms: int = Field(10, ge=1, le=1000, description="how often the engine reads the active port's carrier")
    limit_s: float = Field(20, gt=0, le=300, description="time limit of the transfer")
    kernel_limit_s: float = Field(3, gt=0, le=60, description="time the kernel's transfer is given after the failure")


@dataclass(frozen=True)
class Transfer:
    """An echo transfer with a port failure in it: bytes, integrity, and the longest wait after the failure."""

    size: int
    received: int
    exact: bool
    failed_at_s: float | None
    failed_at: float | None  # time.monotonic() of the failure
    stall_s: float
    seconds: float
    error: str


def longest_gap(samples: list[float], since: float, until: float) -> float:
    """The longest time without a received byte from `since` to `until`, given the times bytes arrived."""
    times = [since] + [t for t in samples if since <= t <= until] + [until]
    return max(b - a for a, b in zip(times, times[1:]))


@scenario("failover", purpose="A two-port node loses the port its connection uses mid-transfer: the engine moves the "
          "connection to its standby port, byte-exact, and the time without progress is measured; the kernel side.",
          topology="two_port_bridge", params=FailoverParams, covers=("RFC9293 3.8.3", "RFC9293 3.10.7.4"),
          claims=("TOE-18",))
def run(ctx: RunContext) -> Iterator[Check]:
    p = ctx.params
    node = ctx.lab.node(NODE)
    if ctx.target.name == "toe":
        engine = start_endpoint(ctx.lab, node, {"wire": FAILED_PORT, "standby": ["eth1"], "miimon_ms": p.miimon_ms})
        second = _Echo(ctx, 2 * p.transfer_mib << 20, p.limit_s)  # a second, longer connection across the failure
        transfer = _transfer(ctx, p.limit_s)
        second.join(p.limit_s)
        counters = engine.stats()["counters"]
        carrier_lost = _carrier_lost(ctx)
        numbers = {"bytes": transfer.received, "size": transfer.size, "stall_ms": round(transfer.stall_s * 1000, 1),
                   "seconds": round(transfer.seconds, 3), "failovers": counters.get("failovers", 0),
                   "garp_sent": counters.get("garp_sent", 0), "retransmits": counters.get("retransmits", 0),
                   "standby_rx_dropped": counters.get("standby_rx_dropped", 0), "second_bytes": second.received,
                   "second_exact": second.exact}
        second_at_failure = second.received_by(transfer.failed_at)
        mid = transfer.failed_at is not None and carrier_lost and second_at_failure < second.size
        ok = (mid and transfer.exact and second.exact and counters.get("failovers", 0) == 1
              and counters.get("garp_sent", 0) >= 1)
        yield ctx.check("port-failover", "RFC9293 3.8.3", ok,
                        f"{NODE}'s port {FAILED_PORT} lost carrier with {int(p.fail_at * 100)} % of the echo back; "
                        f"the engine failed over {counters.get('failovers', 0)} time(s), sent "
                        f"{counters.get('garp_sent', 0)} gratuitous ARP, and {transfer.received} of {transfer.size} "
                        f"bytes came back {'identical (SHA-256)' if transfer.exact else 'short or different'} with "
                        f"{transfer.stall_s * 1000:.0f} ms without progress; a second connection, "
                        f"{second_at_failure} bytes in at the failure, brought back {second.received} "
                        f"{'identical' if second.exact else 'short or different'}"
                        + ("" if mid else "; precondition failed: the port did not fail mid-transfer")
                        + (f"; {transfer.error}" if transfer.error else ""),
                        numbers=numbers, integrity=True)
        return
    kernel = make("kernel")
    kernel.start(ctx.lab, NODE)
    try:
        transfer = _transfer(ctx, p.kernel_limit_s, after_failure=True)
    finally:
        kernel.stop()
    numbers = {"bytes": transfer.received, "size": transfer.size, "stall_ms": round(transfer.stall_s * 1000, 1),
               "carrier_lost": _carrier_lost(ctx)}
    yield ctx.skip("port-failover", "RFC9293 3.8.3",
                   "the fair comparison, an active-backup bond over the same two ports, cannot be built: this kernel "
                   "is built without bonding and teaming (/proc/config.gz: CONFIG_BONDING and CONFIG_NET_TEAM not "
                   "set; ip link add type bond: Unknown device type) and without loadable modules (CONFIG_MODULES "
                   "not set); with its address on "
                   f"{FAILED_PORT} alone the kernel's connection stayed on the failed port: {transfer.received} of "
                   f"{transfer.size} bytes within {p.kernel_limit_s:g} s of the failure", numbers=numbers)


class _Echo:
    """A second echo connection through t1, running beside the main transfer in its own thread."""

    def __init__(self, ctx: RunContext, size: int, limit_s: float) -> None:
        self.size, self.received, self.exact = size, 0, False
        self.arrivals: list[tuple[float, int]] = []  # (time.monotonic(), bytes back so far)
        self._data = ctx.rng.randbytes(size)
        with ctx.lab.node(ctx.client).inside():
            self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.settimeout(limit_s)
        self._sock.connect((ctx.address(NODE), ECHO_PORT))
        self._thread = threading.Thread(target=self._run, name="second-echo", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        digest = hashlib.sha256()
        threading.Thread(target=_send, args=(self._sock, self._data), daemon=True).start()
        try:
            while self.received < self.size:
                chunk = self._sock.recv(CHUNK)
                if not chunk:
                    break
                digest.update(chunk)
                self.received += len(chunk)
                self.arrivals.append((time.monotonic(), self.received))
        except OSError:
            pass
        self.exact = self.received == self.size and digest.digest() == hashlib.sha256(self._data).digest()

    def join(self, limit_s: float) -> None:
        self._thread.join(limit_s)
        self._sock.close()

    def received_by(self, when: float | None) -> int:
        """Bytes back by time `when` (time.monotonic()); all of them if there was no such time."""
        if when is None:
            return self.received
        return max((n for t, n in self.arrivals if t <= when), default=0)


def _carrier_lost(ctx: RunContext) -> bool:
    out = ctx.lab.node(NODE).run(["ip", "-o", "link", "show", FAILED_PORT]).stdout
    return "NO-CARRIER" in out or "LOWERLAYERDOWN" in out


def _transfer(ctx: RunContext, limit_s: float, after_failure: bool = False) -> Transfer:
    """Echo seeded bytes through t1; fail the switch port once `fail_at` has come back.

    With `after_failure` the limit counts from the failure (the kernel: how far it gets without
    a bond), else from the start.
    """
    p = ctx.params
    size = p.transfer_mib << 20
    data = ctx.rng.randbytes(size)
    with ctx.lab.node(ctx.client).inside():
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    digest, got, arrivals = hashlib.sha256(), 0, []
    failed_at = None
    error = ""
    start = time.monotonic()
    deadline = start + limit_s
    with sock:
        sock.settimeout(limit_s)
        try:
            sock.connect((ctx.address(NODE), ECHO_PORT))
            threading.Thread(target=_send, args=(sock, data), daemon=True).start()
            while got < size:
                sock.settimeout(max(0.01, deadline - time.monotonic()))
                chunk = sock.recv(CHUNK)
                if not chunk:
                    error = "the connection closed early"
                    break
                now = time.monotonic()
                digest.update(chunk)
                got += len(chunk)
                arrivals.append(now)
                if failed_at is None and got >= p.fail_at * size:
                    ctx.lab.node(SWITCH).run(["ip", "link", "set", FAILED_SWITCH_PORT, "down"], check=True)
                    failed_at = time.monotonic()
                    if after_failure:
                        deadline = failed_at + limit_s
        except OSError as exc:
            error = f"{type(exc).__name__}: {exc}"
    end = time.monotonic()
    stall = longest_gap(arrivals, failed_at, arrivals[-1] if got >= size else end) if failed_at else 0.0
    return Transfer(size, got, got == size and digest.digest() == hashlib.sha256(data).digest(),
                    None if failed_at is None else failed_at - start, failed_at, stall, end - start, error)


def _send(sock: socket.socket, data: bytes) -> None:
    try:
        sock.sendall(data)
    except OSError:
        pass  # the receiving side reports what came back
