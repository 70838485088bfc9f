"""HTTP connection set-ups (connect, GET, close): what one connection costs the engine, and the
rate one client gets from the engine and from the kernel.

In memory, the engine core is fed the frames the lab's kernel client sends for one connection
(SYN, the handshake's ACK, the GET, the RST of its abortive close) and only the engine's CPU
is timed. In a lab, the same sequential client (toelab.benches.loadgen) runs against the
kernel (lab.services on a plain host), against the engine endpoint and against two bare
user-space responders on the engine's wire (toelab.benches.bare_responder, in Python and in C:
AF_PACKET, no TCP state) in alternating rounds, so a neighbour's load weighs on every side
alike; each side reports its segments per connection and the client's and the server's CPU per
connection (and the server's part of it in the kernel), which say where the time goes: client
and server take turns on one core, so the rate is about one over their CPU per connection added
up. The bare
responders do two turns per connection, each an epoll wake-up, a read and a write, and nothing
else: the Python one is the least a Python endpoint does, its C twin the ceiling of any user-space
endpoint on this wire.
"""
from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from rich.table import Table

from toe_engine.codec import build_tcp_frame, parse_frame
from toe_engine.endpoint import EndpointConfig, EndpointCore, TxFrame
from toe_engine.io.vnet import VNET_HDR_LEN
from toe_engine.resources import ResourceConfig
from toe_engine.segment import ACK, FIN, PSH, RST, SYN, Segment, TcpOptions
from toe_engine.testing import IP_A, IP_B, MAC_A, MAC_B

from .engine import BUSY_POLL_US, VNET_DATA_VALID, _engine_pid
from .loadgen import REQUEST, complete_response
from .rows import Row, row

if TYPE_CHECKING:
    from lab.lab import Lab

HTTP_PORT = 80
CLIENT_MSS, CLIENT_WSCALE = 1460, 9  # what the lab's Linux client puts in its SYN (tcpdump of a bench run)
CLIENT_WINDOW = 83  # 42,340 bytes at window scale 9, its first ACK's window field
MASK = 0xFFFFFFFF


#: The three exchanges of one connection, in order: what `MemoryCost.phases_us` splits its CPU by.
PHASES = ("syn", "request", "reset")


@dataclass(frozen=True)
class MemoryCost:
    """One connection's life in the engine core: CPU and frames each way, per connection, and the
    CPU of each exchange (PHASES: the SYN, the handshake's ACK with the GET, the RST), so a change
    shows where it saved."""

    cpu_us: float
    frames_in: float
    frames_out: float
    phases_us: tuple[float, ...] = ()


def _segments(frames: list[bytes]) -> list[Segment]:
    """The TCP segments of frames the engine sent (parsed outside the timing)."""
    return [seg for seg in (parse_frame(frame, verify_csum=False).tcp for frame in frames) if seg is not None]


class _CorePath:
    """Client frames straight into EndpointCore.from_wire, its answers from poll_wire."""

    def __init__(self, core: EndpointCore) -> None:
        self.core = core
        self.queued: list[bytearray] = []
        self.out: list[TxFrame] = []

    def put(self, frames: list[bytearray]) -> None:
        self.queued = frames

    def run(self, now: float) -> None:
        core = self.core
        for frame in self.queued:
            core.from_wire(frame, now, csum_ok=True)
            self.out += core.poll_wire()

    def take(self) -> list[bytes]:
        out, self.out = self.out, []
        return [bytes(tx.frame) for tx in out]


class _RuntimePath:
    """Client frames through the endpoint runtime (receive batch, GRO, dispatch, transmit) on
    in-memory drivers: what the live engine does for them but the system calls."""

    def __init__(self, core: EndpointCore) -> None:
        from toe_engine.io.memory import MemoryDriver
        from toe_engine.runtime.endpoint import EndpointRuntime, EndpointSettings

        self.wire = MemoryDriver("wire", keep_sent=True)
        self.runtime = EndpointRuntime(core, self.wire, MemoryDriver("host"),
                                       EndpointSettings.model_validate({"addresses": [str(ipaddress.ip_address(IP_B))]}))
        self.now = 0.0
        self.runtime.clock = lambda: self.now

    def put(self, frames: list[bytearray]) -> None:
        self.wire.put(VNET_DATA_VALID + bytes(frame) for frame in frames)

    def run(self, now: float) -> None:
        self.now = now
        self.runtime.pump_wire(now)

    def take(self) -> list[bytes]:
        sent, self.wire.sent = self.wire.sent, []
        return [frame[VNET_HDR_LEN:] for frame in sent]


def in_memory_cost(connections: int = 5000, through_runtime: bool = False) -> MemoryCost:
    """CPU time the engine spends per HTTP connection, client frames built outside the timing:
    in the engine core alone, or (`through_runtime`) through the endpoint runtime as well.

    Raises RuntimeError if a connection is not answered with one SYN-ACK and then the whole
    response with its FIN, or if the table is not empty at the end: a figure for a
    connection life that went wrong would mean nothing.
    """
    core = EndpointCore(EndpointConfig(MAC_B, (IP_B,), services={HTTP_PORT: "http"},
                                       resources=ResourceConfig(capacity=65536), secret=b"bench"))
    core.neighbors.learn(IP_A, MAC_A)
    path: _CorePath | _RuntimePath = _RuntimePath(core) if through_runtime else _CorePath(core)
    clock = time.process_time
    cpu = [0.0] * len(PHASES)
    frames_out = 0
    now = 1.0

    def exchange(phase: int, frames: list[bytearray]) -> list[Segment]:
        nonlocal frames_out
        path.put(frames)
        start = clock()
        path.run(now)
        core.next_deadline()  # as the event loop asks after every wake-up (which also drops stale timers)
        cpu[phase] += clock() - start
        sent = path.take()
        frames_out += len(sent)
        return _segments(sent)

    for i in range(connections):
        port, isn, tsval = 1024 + i % 60000, (i * 7919) & MASK, 1000 + i

        def frame(seq: int, ack: int, flags: int, payload: bytes = b"", window: int = CLIENT_WINDOW,
                  opts: TcpOptions | None = None) -> bytearray:
            return build_tcp_frame(MAC_A, MAC_B, IP_A, IP_B, Segment(
                port, HTTP_PORT, seq & MASK, ack & MASK, flags, window, payload, opts or TcpOptions(timestamp=(tsval, 0))))

        replies = exchange(0, [frame(isn, 0, SYN, window=42340, opts=TcpOptions(
            mss=CLIENT_MSS, wscale=CLIENT_WSCALE, sack_permitted=True, timestamp=(tsval, 0)))])
        if [seg.flags for seg in replies] != [SYN | ACK]:
            raise RuntimeError(f"connection {i}: the SYN was not answered with one SYN-ACK")
        seq, ack = isn + 1, replies[0].seq + 1
        replies = exchange(1, [frame(seq, ack, ACK), frame(seq, ack, ACK | PSH, REQUEST)])
        response = b"".join(bytes(seg.payload) for seg in replies)
        if not complete_response(response) or not replies or not replies[-1].flags & FIN:
            raise RuntimeError(f"connection {i}: the GET was not answered with the whole response and a FIN")
        exchange(2, [frame(seq + len(REQUEST), ack + len(response) + 1, RST | ACK)])
        now += 0.0001
    core.on_timer(now + 1.0)  # nothing may be left for a timer to finish either
    if len(core.stack) or core.resources.table.occupancy:
        raise RuntimeError(f"{len(core.stack)} connections left in the engine after every client reset its own")
    return MemoryCost(sum(cpu) / connections * 1e6, 4.0, frames_out / connections,
                      tuple(phase / connections * 1e6 for phase in cpu))


# --- in a lab ----------------------------------------------------------------------------------------

@dataclass
class SideTotals:
    """One target's figures summed over the rounds."""

    connections: int = 0
    failures: int = 0
    bad_responses: int = 0
    seconds: float = 0.0
    client_cpu: float = 0.0
    server_cpu: float = 0.0  # the engine process (kernel side: the Python services process)
    segments_in: int = 0  # TCP segments the server side received / sent
    segments_out: int = 0
    rates: list[float] = field(default_factory=list)
    server_sys: float = 0.0  # the part of server_cpu spent in the kernel (system calls, wake-ups, the wire)
    server_sleeps: int = 0  # times the server's threads slept waiting (voluntary context switches)

    def add(self, result: dict[str, float], server_cpu: float, segments: tuple[int, int],
            server_sys: float = 0.0, server_sleeps: int = 0) -> None:
        self.connections += int(result["connections"])
        self.failures += int(result["failures"])
        self.bad_responses += int(result.get("bad_responses", 0))
        self.seconds += result["seconds"]
        self.client_cpu += result.get("cpu_seconds", 0.0)
        self.server_cpu += server_cpu
        self.server_sys += server_sys
        self.server_sleeps += server_sleeps
        self.segments_in += segments[0]
        self.segments_out += segments[1]
        self.rates.append(result["connections"] / result["seconds"])

    @property
    def rate(self) -> float:
        return self.connections / self.seconds if self.seconds else 0.0

    def per_connection(self, amount: float) -> float:
        return amount / self.connections if self.connections else 0.0


def _kernel_segments(lab: "Lab", node: str) -> tuple[int, int]:
    """The node's kernel TCP InSegs and OutSegs (/proc/net/snmp inside its namespace)."""
    lines = [line.split() for line in lab.node(node).run(["cat", "/proc/net/snmp"], check=True).stdout.splitlines()
             if line.startswith("Tcp:")]
    names, values = lines[0], lines[1]
    return int(values[names.index("InSegs")]), int(values[names.index("OutSegs")])


def _engine_segments(lab: "Lab", node: str) -> tuple[int, int]:
    counters = lab.engine(node).stats()["counters"]
    return int(counters.get("rx_segments", 0)), int(counters.get("tx_segments", 0))


def _port_frames(lab: "Lab", node: str, iface: str = "eth0") -> tuple[int, int]:
    """Frames received and sent on the node's port (/proc/net/dev inside its namespace): what a
    server outside the kernel's TCP exchanged there."""
    for line in lab.node(node).run(["cat", "/proc/net/dev"], check=True).stdout.splitlines():
        name, sep, counts = line.partition(":")
        if sep and name.strip() == iface:
            fields = counts.split()
            return int(fields[1]), int(fields[9])
    raise RuntimeError(f"node {node} has no interface {iface} in /proc/net/dev")


def _client_round(lab: "Lab", addr: str, seconds: float) -> dict[str, float]:
    done = lab.node("h1").run([sys.executable, "-m", "toelab.benches.loadgen", "http", addr, str(HTTP_PORT),
                               str(seconds)], timeout=seconds + 60, check=True)
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _cpu_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process, all its threads, from /proc."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def _sleeps(pid: int) -> int:
    """Voluntary context switches of all of a process's threads: how often it slept waiting for a turn
    (a Python server that shares the client's core is mostly preempted by the client it woke instead)."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/status") as status:
            total += sum(int(line.split()[1]) for line in status if line.startswith("voluntary_ctxt_switches"))
    return total


def _measured_round(lab: "Lab", node: str, pid: int, seconds: float, segments: Callable[["Lab", str], tuple[int, int]],
                    totals: SideTotals) -> None:
    seg0, (user0, sys0), sleeps0 = segments(lab, node), _cpu_times(pid), _sleeps(pid)
    result = _client_round(lab, lab.address(node), seconds)
    (user1, sys1), sleeps1, seg1 = _cpu_times(pid), _sleeps(pid), segments(lab, node)
    totals.add(result, user1 - user0 + sys1 - sys0, (seg1[0] - seg0[0], seg1[1] - seg0[1]), sys1 - sys0,
               sleeps1 - sleeps0)


class Sides(NamedTuple):
    """The servers of `lab_setups`, the same client against each; `bare_c` None without a C compiler,
    `engine_polling` (the engine busy-polling) None when not measured."""

    kernel: SideTotals
    engine: SideTotals
    bare_python: SideTotals
    bare_c: SideTotals | None
    engine_polling: SideTotals | None = None


def lab_setups(seconds: float, rounds: int = 3, busy_poll: int = BUSY_POLL_US) -> Sides:
    """HTTP set-ups with the same client against the kernel, the engine (sleeping, and with `busy_poll`
    µs the same engine busy-polling), the bare Python responder
    and the bare C responder (toelab.benches.bare_responder), `rounds` alternating runs of
    `seconds / rounds` each, the labs up side by side. The bare responders' labs are toe_pair with
    t1 a plain host, so their client and wire are the engine's; RuntimeError if one answered fewer
    requests than the client counted whole responses.

    Nothing is pinned on any side (client, kernel server, engine: its `pin` stays off): on a
    shared 2-core machine a pinned pair waits for whatever else runs on its core, and a client and
    server pinned to different cores pay a cross-core wake-up per turn (measured: several times
    slower for both targets, the split the slowest). Unpinned, the scheduler decides: on a quiet
    machine it spreads client and server over both cores (each turn a cross-core wake-up: about
    40 µs of a user-space server's CPU per connection in the kernel, 23 of the kernel server's), on a
    busy one they often share a core (about 10 and 8), and every rate roughly doubles; the rows'
    `*_sys_us_per_conn` and `*_sleeps_per_conn` say which it was."""
    from lab.lab import Lab
    from lab.render import load_topology
    from lab.tools import wait_for_line

    from . import bare_responder

    sides = Sides(SideTotals(), SideTotals(), SideTotals(), None, SideTotals() if busy_poll else None)
    each = seconds / rounds
    with tempfile.TemporaryDirectory(prefix="toelab-bare-") as build, ExitStack() as labs:
        program = bare_responder.build_c_responder(Path(build))
        if program is not None:
            sides = sides._replace(bare_c=SideTotals())
        klab = labs.enter_context(Lab.up(load_topology("two_hosts")))
        elab = labs.enter_context(Lab.up(load_topology("toe_pair", {"capacity": "65536"})))
        server = klab.node("h2").popen([sys.executable, "-m", "lab.services", f"http={HTTP_PORT}"],
                                       stdout=subprocess.PIPE)
        wait_for_line(server, "ready", "kernel-side HTTP service")
        engine_pid, engine = _engine_pid(elab, "t1"), elab.engine("t1")
        # each turn: lab, node, server PID, its segment counter, its totals, the engine's busy_poll (None: no engine)
        turns: list[tuple["Lab", str, int, Callable[["Lab", str], tuple[int, int]], SideTotals, int | None]] = [
            (klab, "h2", server.pid, _kernel_segments, sides.kernel, None),
            (elab, "t1", engine_pid, _engine_segments, sides.engine, 0)]
        if sides.engine_polling is not None:
            turns.append((elab, "t1", engine_pid, _engine_segments, sides.engine_polling, busy_poll))
        responders = []
        for totals, binary in ((sides.bare_python, None), (sides.bare_c, program)):
            if totals is not None:
                blab = labs.enter_context(Lab.up(load_topology("toe_pair", {"t1_kind": "host"})))
                responder = bare_responder.start_in_lab(blab, "t1", program=binary)
                responders.append((responder, totals))
                turns.append((blab, "t1", responder.pid, _port_frames, totals, None))
        for _ in range(rounds):
            for lab, node, pid, segments, totals, polls in turns:
                if polls is not None:
                    engine.set(busy_poll=polls)
                _measured_round(lab, node, pid, each, segments, totals)
        for responder, totals in responders:
            answered = bare_responder.stop(responder).responses
            if answered < totals.connections:
                raise RuntimeError(f"a bare responder answered {answered} requests but the client counted "
                                   f"{totals.connections} whole responses")
    return sides


BARE_PYTHON_MEASUREMENT = ("HTTP set-ups, bare Python responder (AF_PACKET, stateless, the engine's codec: "
                           "the least a Python endpoint does)")
BARE_C_MEASUREMENT = "HTTP set-ups, bare C responder (AF_PACKET, stateless: the ceiling of any user-space endpoint)"


HTTP_MEASUREMENT = "HTTP connection setups (connect, GET, close)"
POLLING_MEASUREMENT = f"HTTP connection setups, the engine busy-polling {BUSY_POLL_US} µs"


def _engine_row(measurement: str, kernel: SideTotals, engine: SideTotals) -> Row:
    """An engine's set-ups against the kernel's, with both sides' CPU, sleeps and segments per connection."""
    return row("engine", measurement, "1/s", round(kernel.rate), round(engine.rate),
               failures=engine.failures + engine.bad_responses,
               kernel_failures=kernel.failures + kernel.bad_responses,
               engine_cpu_us_per_conn=round(engine.per_connection(engine.server_cpu) * 1e6, 1),
               engine_sys_us_per_conn=round(engine.per_connection(engine.server_sys) * 1e6, 1),
               kernel_server_cpu_us_per_conn=round(kernel.per_connection(kernel.server_cpu) * 1e6, 1),
               engine_sleeps_per_conn=round(engine.per_connection(engine.server_sleeps), 2),
               kernel_server_sleeps_per_conn=round(kernel.per_connection(kernel.server_sleeps), 2),
               client_cpu_us_per_conn=round(engine.per_connection(engine.client_cpu) * 1e6, 1),
               kernel_client_cpu_us_per_conn=round(kernel.per_connection(kernel.client_cpu) * 1e6, 1),
               engine_segments_per_conn=round(engine.per_connection(engine.segments_in + engine.segments_out), 2),
               kernel_segments_per_conn=round(kernel.per_connection(kernel.segments_in + kernel.segments_out), 2),
               rounds=len(engine.rates),
               round_ratios=[round(e / k, 3) if k else None for k, e in zip(kernel.rates, engine.rates)])


def http_rows(kernel: SideTotals, engine: SideTotals, bare_python: SideTotals | None = None,
              bare_c: SideTotals | None = None, engine_polling: SideTotals | None = None,
              memory: MemoryCost | None = None, runtime: MemoryCost | None = None) -> list[Row]:
    """The HTTP set-up row (engine against kernel, same client, same run; and the engine busy-polling,
    when measured), the bare responders' (against the kernel, with the engine's rate over theirs) and,
    when measured, the in-memory per-connection cost in the core and through the runtime (against the core's)."""
    rows = [_engine_row(HTTP_MEASUREMENT, kernel, engine)]
    if engine_polling is not None:
        rows.append(_engine_row(POLLING_MEASUREMENT, kernel, engine_polling))
    for measurement, bare in ((BARE_PYTHON_MEASUREMENT, bare_python), (BARE_C_MEASUREMENT, bare_c)):
        if bare is not None:
            rows.append(row("engine", measurement, "1/s", round(kernel.rate), round(bare.rate),
                            failures=bare.failures + bare.bad_responses,
                            responder_cpu_us_per_conn=round(bare.per_connection(bare.server_cpu) * 1e6, 1),
                            responder_sys_us_per_conn=round(bare.per_connection(bare.server_sys) * 1e6, 1),
                            responder_sleeps_per_conn=round(bare.per_connection(bare.server_sleeps), 2),
                            client_cpu_us_per_conn=round(bare.per_connection(bare.client_cpu) * 1e6, 1),
                            frames_per_conn=round(bare.per_connection(bare.segments_in + bare.segments_out), 2),
                            engine_over_bare=round(engine.rate / bare.rate, 3) if bare.rate else None,
                            rounds=len(bare.rates),
                            round_ratios=[round(b / k, 3) if k else None for k, b in zip(kernel.rates, bare.rates)]))
    if memory is not None:
        rows.append(row("engine", "HTTP connection in memory (SYN, ACK, GET, RST), engine CPU", "µs/conn", None,
                        round(memory.cpu_us, 1), frames_in=memory.frames_in, frames_out=round(memory.frames_out, 2),
                        **_phase_fields(memory)))
    if memory is not None and runtime is not None:
        rows.append(row("engine", "HTTP connection in memory through the endpoint runtime, no system calls "
                        "(reference: the core alone)", "µs/conn", round(memory.cpu_us, 1), round(runtime.cpu_us, 1),
                        frames_in=runtime.frames_in, frames_out=round(runtime.frames_out, 2), **_phase_fields(runtime)))
    return rows


def _phase_fields(cost: MemoryCost) -> dict[str, float]:
    """`syn_us`, `request_us`, `reset_us`: the CPU of each exchange, where a measurement has them."""
    return {f"{name}_us": round(us, 1) for name, us in zip(PHASES, cost.phases_us)}


def setups_cells(r: Row) -> tuple[str, str, str, str]:
    """One row of `http_rows` as the cells (measurement, kernel, engine, engine / kernel) of a table."""
    if "responder_cpu_us_per_conn" in r:
        bare = (f"{r['engine']:,}/s ({r['failures']} failed; {r['responder_cpu_us_per_conn']:.0f} µs responder CPU "
                f"({r['responder_sys_us_per_conn']:.0f} in the kernel, {r['responder_sleeps_per_conn']:.1f} sleeps), "
                f"{r['client_cpu_us_per_conn']:.0f} µs client CPU, {r['frames_per_conn']:.1f} frames per connection"
                + (f"; engine / bare {r['engine_over_bare']:.2f})" if r["engine_over_bare"] is not None else ")"))
        return r["measurement"], f"{r['reference']:,}/s", bare, f"{r['ratio']:.2f}" if r["ratio"] is not None else ""
    if r["unit"] == "1/s":
        engine = (f"{r['engine']:,}/s ({r['failures']} failed; {r['engine_cpu_us_per_conn']:.0f} µs engine CPU "
                  f"({r['engine_sys_us_per_conn']:.0f} in the kernel, {r['engine_sleeps_per_conn']:.1f} sleeps), "
                  f"{r['client_cpu_us_per_conn']:.0f} µs client CPU, "
                  f"{r['engine_segments_per_conn']:.1f} segments per connection)")
        kernel = (f"{r['reference']:,}/s ({r['kernel_server_cpu_us_per_conn']:.0f} µs server CPU, "
                  f"{r['kernel_client_cpu_us_per_conn']:.0f} µs client CPU, {r['kernel_segments_per_conn']:.1f} segments)")
        return r["measurement"], kernel, engine, f"{r['ratio']:.2f}" if r["ratio"] is not None else ""
    core = f"{r['reference']:.1f} µs in the core alone" if r["reference"] is not None else ""
    phases = " / ".join(f"{r[f'{name}_us']:.1f}" for name in PHASES if f"{name}_us" in r)
    return (r["measurement"], core, f"{r['engine']:.1f} µs per connection"
            + (f" (SYN / ACK+GET / RST: {phases})" if phases else "")
            + f", {r['frames_out']:.1f} frames out for {r['frames_in']:.0f} in",
            f"{r['ratio']:.2f}" if r["ratio"] is not None else "")


def setups_table(rows: list[Row]) -> Table:
    table = Table(title="HTTP connection set-ups: same client (Python, sequential), kernel, engine and bare responder in alternating rounds")
    for column in ("measurement", "kernel", "engine", "engine / kernel"):
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(*setups_cells(r))
    return table
