"""The runner's timeline against a stand-in wire and agent (no root): timing, blocking calls,
relative sequence numbers end to end, and failures named by their line."""
from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from scenarios.pkt.agent import Agent
from scenarios.pkt.parse import parse
from scenarios.pkt.timeline import Failed, Timeline
from scenarios.pkt.syscalls import Endpoints

ISN = 777_000_000
PORT, PEER = 8080, 30000
WHERE = Endpoints(PORT, "10.0.0.1", PEER)


class StandInWire:
    """A target that answers a SYN with a SYN-ACK after `delay` and every data segment with an ACK."""

    def __init__(self, delay: float = 0.0, answer: bool = True) -> None:
        self.target_port, self.peer_ports, self.delay, self.answer = PORT, [PEER], delay, answer
        self.queue: list[tuple[float, Ether]] = []
        self.sent: list[TCP] = []
        self.bursts: list[int] = []
        self.ready = threading.Condition()

    def _reply(self, flags: str, seq: int, ack: int) -> None:
        frame = Ether(bytes(Ether() / IP(src="10.0.0.2", dst="10.0.0.1") /
                            TCP(sport=PORT, dport=PEER, flags=flags, seq=seq, ack=ack, window=1000)))
        with self.ready:
            self.queue.append((time.time() + self.delay, frame))
            self.ready.notify_all()

    def send_tcp(self, tcp: TCP) -> float:
        self.sent.append(tcp)
        if self.answer and tcp.flags.S:
            self._reply("SA", ISN, tcp.seq + 1)
        elif self.answer and len(tcp.payload):
            self._reply("A", ISN + 1, tcp.seq + len(tcp.payload))
        return time.time()

    def send_burst(self, segments: list[TCP]) -> float:
        self.bursts.append(len(segments))
        for tcp in segments:
            self.send_tcp(tcp)
        return time.time()

    def receive(self, deadline: float) -> tuple[float, Ether] | None:
        while True:
            with self.ready:
                if self.queue and self.queue[0][0] <= time.time():
                    return self.queue.pop(0)
                wake = min([deadline] + [at for at, _ in self.queue[:1]])
                if time.time() >= deadline:
                    return None
                self.ready.wait(max(0.0, wake - time.time()))


class StandInAgent(Agent):
    """Answers every call at once with 0 (socket: handle 3), except `read`, which blocks for `read_takes`."""

    def __init__(self, read_takes: float = 0.0) -> None:
        self.read_takes = read_takes
        self.calls: list[dict[str, Any]] = []

    def request(self, request: dict[str, Any], blocked: threading.Event | None = None) -> dict[str, Any]:
        self.calls.append(request)
        if request["op"] == "read" and self.read_takes:
            if blocked is not None:
                blocked.set()
            time.sleep(self.read_takes)
            return {"ret": 10}
        return {"ret": 3 if request["op"] == "socket" else 0}


def run(text: str, wire: StandInWire | None = None, agent: StandInAgent | None = None) -> StandInWire:
    wire = wire or StandInWire()
    Timeline(parse(text, "t.pkt"), wire, agent or StandInAgent(), WHERE, lambda command: None).run()  # type: ignore[arg-type]
    return wire


HANDSHAKE = """0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3
+0 listen(3, 1) = 0
+0 < S 0:0(0) win 65535 <mss 1460>
+0 > S. 0:0(0) ack 1
+0 < P. 1:11(10) ack 1 win 65535
"""


def test_a_handshake_and_data_with_the_isn_mapped() -> None:
    wire = run(HANDSHAKE + "+0 > . 1:1(0) ack 11\n")
    assert [t.ack for t in wire.sent] == [0, ISN + 1]  # the script's ack 1 went out as the live ISN + 1


def test_a_wrong_segment_fails_at_its_line_saying_what_came() -> None:
    with pytest.raises(Failed) as failure:
        run(HANDSHAKE + "+0 > . 1:1(0) ack 12\n")
    assert failure.value.line == 6 and "ack 11 where the script has 12" in str(failure.value)


def test_nothing_coming_fails_at_its_line() -> None:
    with pytest.raises(Failed) as failure:
        run(HANDSHAKE.replace("+0 < P.", "// +0 < P.") + "--tolerance_usecs=20000\n+0 > . 1:1(0) ack 11\n")
    assert failure.value.line == 7 and "nothing came by" in str(failure.value)


def test_too_early_is_a_timing_error_and_a_range_accepts_a_late_answer() -> None:
    with pytest.raises(Failed, match="timing error"):
        run(HANDSHAKE.replace("+0 > S.", "+0.3 > S."))
    run(HANDSHAKE.replace("+0 > S.", "+0~+0.3 > S."), StandInWire(delay=0.2))


def test_relative_time_counts_from_when_the_segment_came() -> None:
    wire = StandInWire(delay=0.1)
    started = time.time()
    run(HANDSHAKE.replace("+0 > S.", "+0~+0.2 > S."), wire)
    assert time.time() - started >= 0.1  # the data went out after the SYN-ACK, not at +0 from the SYN


def test_a_blocking_call_lets_the_timeline_go_on_and_is_judged_when_it_returns() -> None:
    agent = StandInAgent(read_takes=0.1)
    run(HANDSHAKE + "+0 read(3, ..., 100) = 10\n+0 < P. 11:21(10) ack 1 win 65535\n", agent=agent)
    with pytest.raises(Failed) as failure:
        run(HANDSHAKE + "+0...+0.3 read(3, ..., 100) = 10\n", agent=StandInAgent(read_takes=0.05))
    assert failure.value.line == 6 and "expected at" in str(failure.value)


def test_a_call_on_a_file_descriptor_never_opened_fails_at_its_line() -> None:
    with pytest.raises(Failed) as failure:
        run("0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n+0 close(5) = 0\n")
    assert failure.value.line == 2 and "never opened" in str(failure.value)


def test_segments_at_one_moment_leave_as_one_burst() -> None:
    wire = run(HANDSHAKE + "+0 < P. 11:21(10) ack 1 win 65535\n+0 < P. 21:31(10) ack 1 win 65535\n"
               "+0.01 < P. 31:41(10) ack 1 win 65535\n")
    assert wire.bursts == [3]  # the 1:11 data and the two at +0 after it; the one 10 ms later goes alone
    assert [len(t.payload) for t in wire.sent] == [0, 10, 10, 10, 10]
