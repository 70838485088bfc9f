"""One script's timeline against a target: injected segments, expected segments, system calls
(through the target's agent) and shell commands, in the script's own time.

Time is the script's own: an inbound line waits for its moment, an outbound line waits for the
target's segment until its time plus the tolerance, never for a fixed pause. As in packetdrill,
`+t` counts from the previous line (from when an expected segment actually came, or a blocking
call actually returned), the first failure ends the script, and the failure says the line, what
was expected and what came or that nothing came in time.

A system call the agent says blocks (scenarios.pkt.agent) lets the timeline go on; it is judged
when it returns (before the next call, or at the end), and `t1...t2` says when it must return.
`<` lines at one moment (`+0` after the first) leave back to back, built before the first goes.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from scapy.layers.inet import ICMP, TCP

from .agent import Agent, AgentError
from .model import Event, Icmp, Packet, Script, Shell, Syscall, When
from .segments import MappingError, SeqMap, describe, inbound, mismatch
from .syscalls import CallError, Endpoints, FdMap, judge, request_for

if TYPE_CHECKING:
    from .wire import Wire

#: packetdrill's default is 4 ms against a TUN device; a real wire seen from Python on a busy
#: 2-core machine needs more. Scripts may set --tolerance_usecs / --tolerance_percent.
DEFAULT_TOLERANCE_S = 0.030
#: Lateness is mostly the machine's (a Python engine or agent not scheduled for a while on a busy
#: host), earliness is the stack's: without a script tolerance, a segment may come this late.
DEFAULT_LATE_S = 0.150
#: How long `*` waits for an expected segment, and how long a blocking call may outlive the script.
ANY_TIME_LIMIT_S = 5.0
PENDING_LIMIT_S = 5.0
#: How long a call may take to return or to say it blocks (the agent answers in about a millisecond).
CALL_START_LIMIT_S = 5.0
SAME_MOMENT = When(0.0, relative=True)  # `+0`
ICMP_TYPES = {"unreachable": 3, "time_exceeded": 11, "parameter_problem": 12, "source_quench": 4}
ICMP_CODES = {"net_unreachable": 0, "host_unreachable": 1, "protocol_unreachable": 2, "port_unreachable": 3,
              "frag_needed": 4, "source_route_failed": 5, "net_prohibited": 9, "host_prohibited": 10,
              "admin_prohibited": 13, "ttl_exceeded": 0, "frag_reassembly": 1}


@dataclass
class _Conn:
    peer_port: int
    target_port: int
    seqmap: SeqMap


class Failed(Exception):
    """The script failed at `line`; the message says what was expected and what came."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line


class Timeline:
    """One script's run: its events in time order against a wire and an agent (either may be a stand-in)."""

    def __init__(self, script: Script, wire: Wire, agent: Agent, where: Endpoints,
                 shell: Callable[[str], str | None]) -> None:
        self.script, self.wire, self.agent, self.where, self.run_shell = script, wire, agent, where, shell
        #: per connection of the script: its peer port, the target's port (learnt on an active open), its offsets
        self.conns = {n + 1: _Conn(port, wire.target_port, SeqMap()) for n, port in enumerate(wire.peer_ports)}
        self.fds = FdMap()
        options = script.options
        self.tolerance = float(options.get("tolerance_usecs", DEFAULT_TOLERANCE_S * 1e6)) / 1e6
        self.tolerance_percent = float(options.get("tolerance_percent", 0))
        self.late = self.tolerance if "tolerance_usecs" in options else max(self.tolerance, DEFAULT_LATE_S)
        self.pool = ThreadPoolExecutor(1)
        #: a blocking call still out: its event, its future, when it must return (script time) if said
        self.pending: tuple[Event, Future[dict[str, Any]], float | None] | None = None
        self.t0 = 0.0
        self.prev = 0.0

    def run(self) -> None:
        self.t0 = time.time()
        try:
            events = self.script.events
            i = 0
            while i < len(events):
                burst = _burst(events, i)
                if len(burst) > 1:
                    self.inject_burst(burst)
                else:
                    self.step(events[i])
                i += len(burst) or 1
            self.settle_pending(self.t0 + self.prev + PENDING_LIMIT_S)
        finally:
            self.pool.shutdown(wait=False, cancel_futures=True)

    # --- time ---------------------------------------------------------------------------------
    def times(self, when: When) -> tuple[float, float, float]:
        """(start, end, tolerance) of an event in script seconds."""
        start = self.prev + when.start if when.relative else when.start
        end = start
        if when.end is not None:
            end = self.prev + when.end if when.end_relative else when.end
        tolerance = self.tolerance + self.tolerance_percent / 100 * max(0.0, end - self.prev)
        return start, end, tolerance

    def wait_until(self, script_time: float) -> None:
        delay = self.t0 + script_time - time.time()
        if delay > 0:
            time.sleep(delay)  # the script's own timeline: this line happens at this time

    # --- events ----------------------------------------------------------------------------------
    def step(self, event: Event) -> None:
        action = event.action
        try:
            if isinstance(action, Packet) and action.direction == ">":
                self.expect(event, action)
            elif isinstance(action, Packet):
                self.inject(event, action)
            elif isinstance(action, Icmp):
                self.icmp(event, action)
            elif isinstance(action, Syscall):
                self.syscall(event, action)
            elif isinstance(action, Shell):
                self.shell(event, action)
        except (MappingError, CallError, AgentError) as exc:
            raise Failed(event.line, str(exc)) from None

    def inject(self, event: Event, packet: Packet) -> None:
        start, _, _ = self.times(event.when)
        if not event.when.any_time:
            self.wait_until(start)
            self.prev = start
        conn = self.conns[packet.conn]
        self.wire.send_tcp(inbound(packet, conn.seqmap, sport=conn.peer_port, dport=conn.target_port))

    def inject_burst(self, events: list[Event]) -> None:
        """Segments at the same moment leave back to back, built first, so the target finds them queued together."""
        start, _, _ = self.times(events[0].when)
        segments = []
        for event in events:
            packet = event.action
            assert isinstance(packet, Packet)
            conn = self.conns[packet.conn]
            try:
                segments.append(inbound(packet, conn.seqmap, sport=conn.peer_port, dport=conn.target_port))
            except MappingError as exc:
                raise Failed(event.line, str(exc)) from None
        self.wait_until(start)
        self.prev = start
        self.wire.send_burst(segments)

    def icmp(self, event: Event, icmp: Icmp) -> None:
        if icmp.direction == ">":
            raise Failed(event.line, "expecting an ICMP message from the target is not supported")
        if icmp.kind not in ICMP_TYPES or not (icmp.code in ICMP_CODES or icmp.code.isdigit()):
            raise Failed(event.line, f"ICMP {icmp.kind} {icmp.code} is not supported")
        start, _, _ = self.times(event.when)
        self.wait_until(start)
        self.prev = start
        conn = self.conns[1]
        quoted = TCP(sport=conn.target_port, dport=conn.peer_port, flags="A",
                     seq=conn.seqmap.local(icmp.quoted_seq or 0, "quoted seq"))
        code = int(icmp.code) if icmp.code.isdigit() else ICMP_CODES[icmp.code]
        self.wire.send_icmp(ICMP_TYPES[icmp.kind], code, icmp.mtu, quoted)

    def expect(self, event: Event, packet: Packet) -> None:
        start, end, tolerance = self.times(event.when)
        if event.when.any_time:
            deadline = time.time() + ANY_TIME_LIMIT_S
        else:
            deadline = self.t0 + end + max(tolerance, self.late)
        got = self.wire.receive(deadline)
        expected = f"{packet.direction} {event.text.split(packet.direction, 1)[1].strip()}"
        if got is None:
            when = "at any time" if event.when.any_time else f"by {deadline - self.t0:.3f} s"
            raise Failed(event.line, f"expected outbound packet `{expected}` but nothing came {when}")
        stamp, frame = got
        at = stamp - self.t0
        if frame.haslayer(ICMP) or not frame.haslayer(TCP):
            raise Failed(event.line, f"expected `{expected}` but the target sent {frame.summary()} at {at:.3f} s")
        tcp = frame[TCP]
        conn = self.conns[packet.conn]
        if tcp.dport == conn.peer_port and tcp.sport != conn.target_port and "S" in packet.flags:
            conn.target_port = tcp.sport  # an active open: the target chose its port
        if (tcp.dport, tcp.sport) != (conn.peer_port, conn.target_port):
            others = [n for n, c in self.conns.items() if c.peer_port == tcp.dport]
            problem = f"a segment of connection {others[0] if others else '?'} where the script has one of {packet.conn}"
        else:
            problem = mismatch(packet, frame, conn.seqmap)
        if problem:
            raise Failed(event.line, f"bad outbound TCP packet: {problem} (got `> {describe(frame, conn.seqmap)}` "
                                      f"at {at:.3f} s)")
        if not event.when.any_time and at < start - tolerance:
            raise Failed(event.line, f"timing error: expected `{expected}` at {start:.3f} s"
                                      f"{f'~{end:.3f}' if end != start else ''} but it came at {at:.3f} s")
        self.prev = at

    def syscall(self, event: Event, call: Syscall) -> None:
        start, _, _ = self.times(event.when)
        self.wait_until(start)
        self.settle_pending(time.time() + PENDING_LIMIT_S)
        self.prev = start
        request = request_for(call, self.fds, self.where)
        settled = threading.Event()  # the call returned, or the agent said it blocks
        future = self.pool.submit(self.agent.call, request, settled)
        future.add_done_callback(_stamp_done)
        future.add_done_callback(lambda _: settled.set())
        if not settled.wait(CALL_START_LIMIT_S):
            raise Failed(event.line, f"{call.name}() neither returned nor blocked within {CALL_START_LIMIT_S} s")
        returns_at = None
        if event.when.blocking_end is not None:
            returns_at = start + event.when.blocking_end if event.when.blocking_end_relative else event.when.blocking_end
        if not future.done():
            self.pending = (event, future, returns_at)  # a blocking call: the timeline goes on from its start
            return
        self.finish(event, call, future.result(), future_done_at(future), returns_at)

    def settle_pending(self, deadline: float) -> None:
        if self.pending is None:
            return
        event, future, returns_at = self.pending
        self.pending = None
        try:
            answer = future.result(timeout=max(0.0, deadline - time.time()))
        except FutureTimeout:
            raise Failed(event.line, f"{event.action.name}() had not returned by "  # type: ignore[union-attr]
                                      f"{deadline - self.t0:.3f} s") from None
        except AgentError as exc:
            raise Failed(event.line, str(exc)) from None
        assert isinstance(event.action, Syscall)
        self.finish(event, event.action, answer, future_done_at(future), returns_at)

    def finish(self, event: Event, call: Syscall, answer: dict[str, Any], returned: float,
               returns_at: float | None) -> None:
        problem = judge(call, answer, self.fds)
        if problem:
            raise Failed(event.line, f"{call.name}(): {problem}")
        if returns_at is not None:
            at = returned - self.t0
            if not -self.tolerance <= at - returns_at <= self.late:
                raise Failed(event.line, f"{call.name}() returned at {at:.3f} s, expected at {returns_at:.3f} s")

    def shell(self, event: Event, shell: Shell) -> None:
        start, _, _ = self.times(event.when)
        self.wait_until(start)
        self.prev = start
        problem = self.run_shell(shell.command)
        if problem is not None:
            raise Failed(event.line, f"shell command `{shell.command}` failed: {problem}")


def _stamp_done(future: Future[Any]) -> None:
    future.done_at = time.time()  # type: ignore[attr-defined]



def future_done_at(future: Future[Any]) -> float:
    """When a call's answer came (not when the timeline got round to looking)."""
    return float(getattr(future, "done_at", time.time()))



def _burst(events: list[Event], i: int) -> list[Event]:
    """The `<` lines from i on that happen at one moment (each after the first at `+0`)."""
    first = events[i]
    if not (isinstance(first.action, Packet) and first.action.direction == "<" and not first.when.any_time):
        return []
    burst = [first]
    for event in events[i + 1:]:
        if not (isinstance(event.action, Packet) and event.action.direction == "<" and event.when == SAME_MOMENT):
            break
        burst.append(event)
    return burst
