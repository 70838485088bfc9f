"""One HTTP connection's life on the engine, frame by frame: what goes on the wire and what is freed.

The client's frames are the ones the lab's Linux client sends (SYN, the handshake's ACK, the
GET with `Connection: close`, the RST of its abortive close); the engine must answer with a
SYN-ACK and then one segment carrying the ACK of the GET, the whole response and the FIN,
and forget the connection when the RST comes.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from toe_engine.apps.http import INLINE_BODY
from toe_engine.codec import build_tcp_frame, parse_frame
from toe_engine.endpoint import EndpointConfig, EndpointCore
from toe_engine.fuzz.invariants import DropTally, check
from toe_engine.fuzz.peer import WirePeer
from toe_engine.resources import ResourceConfig
from toe_engine.segment import ACK, FIN, PSH, RST, SYN, Segment, TcpOptions
from toe_engine.tcp.config import TcpConfig
from toe_engine.tcp.connection import State
from toe_engine.tcp.events import Closed
from toe_engine.tcp.testing import IP_A as STACK_A, IP_B as STACK_B, Harness
from toe_engine.testing import IP_A, IP_B, MAC_A, MAC_B
from toelab.benches.http_setup import in_memory_cost
from toelab.benches.loadgen import REQUEST, complete_response

PORT, SPORT, ISN, TSVAL = 80, 40000, 5000, 777


def engine() -> EndpointCore:
    core = EndpointCore(EndpointConfig(MAC_B, (IP_B,), services={PORT: "http"}, resources=ResourceConfig(capacity=8),
                                       secret=b"http"))
    core.neighbors.learn(IP_A, MAC_A)
    return core


def send(core: EndpointCore, seq: int, ack: int, flags: int, payload: bytes = b"",
         opts: TcpOptions | None = None) -> list[Segment]:
    """One client frame in; the segments the engine sent back."""
    frame = build_tcp_frame(MAC_A, MAC_B, IP_A, IP_B, Segment(SPORT, PORT, seq, ack, flags, 83, payload,
                                                             opts or TcpOptions(timestamp=(TSVAL, 0))))
    assert core.from_wire(bytes(frame), 1.0) is True
    return [parse_frame(bytes(tx.frame), verify_csum=False).tcp for tx in core.poll_wire()]


def handshake(core: EndpointCore) -> tuple[int, int]:
    (synack,) = send(core, ISN, 0, SYN, opts=TcpOptions(mss=1460, sack_permitted=True, wscale=9,
                                                        timestamp=(TSVAL, 0)))
    assert synack.flags == SYN | ACK
    seq, ack = ISN + 1, synack.seq + 1
    assert send(core, seq, ack, ACK) == []  # nothing to say yet: the request has not come
    return seq, ack


def test_a_get_with_connection_close_is_answered_in_one_segment_with_its_ack_and_fin() -> None:
    core = engine()
    seq, ack = handshake(core)
    (answer,) = send(core, seq, ack, ACK | PSH, REQUEST)
    assert answer.flags == FIN | PSH | ACK
    assert answer.seq == ack and answer.ack == seq + len(REQUEST)  # the GET's ACK rides on the response
    assert complete_response(bytes(answer.payload))
    assert bytes(answer.payload).endswith(b"\r\n\r\n" + b"x" * 64)


def test_the_rst_of_the_clients_abortive_close_frees_every_trace_of_the_connection() -> None:
    core = engine()
    seq, ack = handshake(core)
    assert core.resources.table.occupancy == 1
    (answer,) = send(core, seq, ack, ACK | PSH, REQUEST)
    assert send(core, seq + len(REQUEST), ack + len(answer.payload) + 1, RST | ACK) == []
    assert len(core.stack) == 0 and core.resources.table.occupancy == 0
    assert core.apps == {} and core.next_hops() == 0 and core.buffer_memory.total == 0
    assert core.counters["conn_closed"] == 1 and core.counters["app_tx_bytes"] == len(answer.payload)


def test_a_body_larger_than_the_inline_limit_still_streams_whole() -> None:
    core = engine()
    seq, ack = handshake(core)
    size = 4 * INLINE_BODY + 3
    request = REQUEST.replace(b"/64", b"/%d" % size)
    answers = send(core, seq, ack, ACK | PSH, request)
    data = b"".join(bytes(seg.payload) for seg in answers)
    assert complete_response(data, body=size)
    assert answers[-1].flags & FIN and all(not seg.flags & FIN for seg in answers[:-1])


def test_corked_sends_leave_as_one_segment_and_carry_the_owed_ack() -> None:
    h = Harness()
    key, server = h.establish(7)
    h.a.send(key, b"request", now=h.now)
    h.run(0.015)  # delivered after the channel's 10 ms; b's delayed ACK (40 ms) is not due yet
    h.flush()
    assert h.b.readable(server) == 7
    before = len(h.trace)
    h.b.cork()
    assert h.b.recv(server, now=h.now) == b"request"
    h.b.send(server, b"head ", now=h.now)
    h.b.send(server, b"body", now=h.now)
    h.flush()
    assert len(h.trace) == before  # nothing leaves while corked
    h.b.uncork(h.now)
    h.flush()
    (sent,) = h.trace[before:]
    assert sent.src == "b" and bytes(sent.seg.payload) == b"head body" and sent.seg.flags & ACK
    assert sent.seg.ack == h.b.connection(server).rcv_nxt & 0xFFFFFFFF


def test_uncork_skips_a_connection_aborted_while_corked() -> None:
    h = Harness()
    _, server = h.establish(7)
    h.flush()
    h.events_b.clear()
    before = len(h.trace)
    h.b.cork()
    h.b.send(server, b"never sent", now=h.now)
    h.b.abort(server, now=h.now)
    h.b.uncork(h.now)
    h.flush()
    assert [type(e) for e in h.events_b].count(Closed) == 1
    assert [sent.seg.flags for sent in h.trace[before:]] == [RST]  # the abort's RST, no data after it


@pytest.mark.parametrize("through_runtime", [False, True], ids=["core", "runtime"])
def test_the_in_memory_bench_sees_two_frames_out_per_connection(through_runtime: bool) -> None:
    cost = in_memory_cost(50, through_runtime=through_runtime)
    assert cost.frames_in == 4 and cost.frames_out == 2
    assert 0 < cost.cpu_us < 100_000
    assert len(cost.phases_us) == 3 and all(us > 0 for us in cost.phases_us)  # SYN, ACK+GET, RST each cost CPU
    assert sum(cost.phases_us) == pytest.approx(cost.cpu_us)



@pytest.mark.parametrize("response, ok", [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 64\r\n\r\n" + b"x" * 64, True),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 64\r\n\r\n" + b"x" * 63, False),
    (b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n", False),
    (b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 64, False),
    (b"", False),
])
def test_the_client_counts_only_whole_responses(response: bytes, ok: bool) -> None:
    assert complete_response(response) is ok


def test_time_wait_gives_its_table_slot_back_and_still_answers() -> None:
    """A client that closes normally leaves the engine (which closed first) in TIME-WAIT for 2*MSL;
    those TCBs must not hold the table, or a 4-slot table would hand every later flow to the host."""
    core = EndpointCore(EndpointConfig(MAC_B, (IP_B,), services={PORT: "http"}, resources=ResourceConfig(capacity=4),
                                       secret=b"http"))
    peer = WirePeer(core, MAC_A, IP_A, MAC_B, IP_B)
    ts = TcpOptions(timestamp=(TSVAL, 0))
    for sport in range(2000, 2012):
        flow = peer.open(PORT, sport, options=TcpOptions(mss=1460, wscale=9, sack_permitted=True, timestamp=(TSVAL, 0)))
        peer.send(flow, ACK | PSH, REQUEST, options=ts)
        assert flow.fin_received and complete_response(bytes(flow.received))
        peer.send(flow, ACK | FIN, options=ts)  # the client's own FIN: the engine enters TIME-WAIT
    assert [core.stack.state(k) for k in core.stack.connections()] == [State.TIME_WAIT] * 12
    assert (core.counters["conn_offloaded"], core.counters["conn_fallback"]) == (12, 0)
    assert core.resources.table.occupancy == 0 and core.counters["time_wait_slots_freed"] == 12
    assert check(core, [peer], DropTally()) == []  # table, buffer memory and next hops agree with the TCBs
    first = peer.flows[(2000, PORT)]
    before = peer.frames_to_us
    peer.send(first, ACK | FIN, seq=first.snd_nxt - 1, options=ts)  # our ACK of its FIN was lost: it retransmits
    assert peer.frames_to_us == before + 1 and peer.wrong_mac == 0  # MUST-13: ACKed again, to the right MAC
    peer.now += TcpConfig().time_wait + 1
    core.on_timer(peer.now)
    assert len(core.stack) == 0 and core.counters["conn_closed"] == 12 and core.apps == {}
    assert core.resources.table.occupancy == 0 and len(core.buffer_memory) == 0


def test_http_only_is_refused_for_any_benchmark_but_engine() -> None:
    done = subprocess.run([sys.executable, "-m", "toelab", "bench", "core", "--http-only"], capture_output=True,
                          text=True, timeout=60, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 2 and "--http-only is an option of the engine benchmark" in done.stderr
    assert "rows written" not in done.stdout  # refused before anything was measured
