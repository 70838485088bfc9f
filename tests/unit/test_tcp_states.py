"""RFC 9293 state machine: opens, closes, resets, timeouts, RST to closed ports."""
from __future__ import annotations

from toe_engine.segment import ACK, FIN, RST, SYN, Segment, TcpOptions
from toe_engine.tcp import Accepted, Admission, Closed, Connected, Error, PeerClosed, Reset, State, TcpConfig, TcpStack
from toe_engine.tcp.testing import IP_A, IP_B, Harness, Impairment


def quick(time_wait: float = 2.0) -> TcpConfig:
    return TcpConfig(time_wait=time_wait)


def test_three_way_handshake_states_and_segments() -> None:
    h = Harness(quick(), quick())
    h.b.listen(None, 80)
    ca = h.a.connect(IP_A, IP_B, 80, 0.0)
    assert h.a.state(ca) is State.SYN_SENT
    h.flush()
    syn = h.trace[0].seg
    assert syn.flags == SYN and syn.options.mss == 1460 and syn.options.sack_permitted
    h.step(1.0)  # SYN reaches b
    (cb,) = h.b.connections()
    assert h.b.state(cb) is State.SYN_RECEIVED
    synack = h.trace[1].seg
    assert synack.flags == SYN | ACK and synack.ack == (syn.seq + 1) & 0xFFFFFFFF
    h.step(1.0)  # SYN-ACK reaches a
    assert h.a.state(ca) is State.ESTABLISHED
    h.step(1.0)  # ACK reaches b
    assert h.b.state(cb) is State.ESTABLISHED
    assert any(isinstance(e, Accepted) for e in h.events_b)
    assert Connected(ca) in h.events_a and Connected(cb) in h.events_b
    assert h.counters_a["conn_established"] == 1 and h.counters_b["conn_established"] == 1


def test_simultaneous_open() -> None:
    """MUST-10: both sides send SYN; both pass SYN-RECEIVED and reach ESTABLISHED."""
    h = Harness(quick(), quick())
    ca = h.a.connect(IP_A, IP_B, 5000, 0.0, local_port=6000)
    cb = h.b.connect(IP_B, IP_A, 6000, 0.0, local_port=5000)
    h.flush()
    h.step(1.0)
    h.step(1.0)
    assert h.a.state(ca) is State.SYN_RECEIVED and h.b.state(cb) is State.SYN_RECEIVED
    h.run(until=lambda: h.a.state(ca) is State.ESTABLISHED and h.b.state(cb) is State.ESTABLISHED, max_time=5)
    assert h.a.state(ca) is State.ESTABLISHED and h.b.state(cb) is State.ESTABLISHED
    assert sum(1 for s in h.trace if s.seg.flags == SYN | ACK) == 2
    assert h.counters_a["rto_expired"] == 0
    h.a.send(ca, b"ping")
    h.run(duration=1)
    assert h.b.recv(cb) == b"ping"


def test_active_and_passive_close_through_time_wait() -> None:
    """MUST-13: the active closer stays in TIME-WAIT for 2*MSL, then the TCB is gone."""
    h = Harness(quick(), quick())
    ca, cb = h.establish()
    h.a.close(ca)
    assert h.a.state(ca) is State.FIN_WAIT_1
    h.run(duration=0.5)
    assert h.a.state(ca) is State.FIN_WAIT_2
    assert h.b.state(cb) is State.CLOSE_WAIT
    assert PeerClosed(cb) in h.events_b
    h.b.close(cb)
    assert h.b.state(cb) is State.LAST_ACK
    h.run(duration=0.5)
    assert h.b.state(cb) is State.CLOSED and Closed(cb) in h.events_b
    assert h.a.state(ca) is State.TIME_WAIT
    entered = h.now
    h.run(duration=1.5)
    assert h.a.state(ca) is State.TIME_WAIT
    h.run(duration=1.0)
    assert h.a.state(ca) is State.CLOSED and h.now >= entered + 2.0
    assert Closed(ca) in h.events_a
    assert h.counters_a["conn_closed"] == 1


def test_simultaneous_close_goes_through_closing() -> None:
    h = Harness(quick(), quick())
    ca, cb = h.establish()
    h.a.shutdown(ca)
    h.b.shutdown(cb)
    h.flush()
    h.step(1.0)
    h.step(1.0)
    assert h.a.state(ca) is State.CLOSING and h.b.state(cb) is State.CLOSING
    h.run(duration=0.5)
    assert h.a.state(ca) is State.TIME_WAIT and h.b.state(cb) is State.TIME_WAIT
    h.run(duration=3)
    assert h.a.state(ca) is State.CLOSED and h.b.state(cb) is State.CLOSED


def test_half_close_keeps_receiving() -> None:
    """MAY-1: after shutdown() the other direction still carries data."""
    h = Harness(quick(), quick())
    ca, cb = h.establish()
    h.a.shutdown(ca)
    h.run(duration=0.5)
    h.b.send(cb, b"still talking")
    h.run(duration=0.5)
    assert h.a.state(ca) is State.FIN_WAIT_2
    assert h.a.recv(ca) == b"still talking"


def test_fin_retransmitted_in_time_wait_is_acked_and_restarts_timer() -> None:
    h = Harness(quick(), quick())
    ca, cb = h.establish()
    h.a.close(ca)
    h.run(duration=0.5)
    h.b.close(cb)
    h.run(duration=0.5)
    assert h.a.state(ca) is State.TIME_WAIT
    tcb = h.a.connection(ca)
    assert tcb is not None
    old_deadline = tcb.t_close
    h.run(duration=1.0)
    fin = Segment(80, ca.local_port, (tcb.rcv_nxt - 1) & 0xFFFFFFFF, tcb.snd_nxt, FIN | ACK, 1000,
                  options=TcpOptions(timestamp=(h.b.ts_clock(h.now), tcb.ts_recent)))
    replies = h.inject("a", fin)
    assert [r.flags for r in replies] == [ACK]
    assert tcb.t_close > old_deadline


def test_rst_to_closed_port() -> None:
    """RFC 9293 3.10.7.1: RST,ACK for a segment without ACK; RST with SEQ=SEG.ACK otherwise."""
    stack = TcpStack()
    stack.on_segment(IP_B, IP_A, Segment(1234, 9, 1000, 0, SYN, 100), 0.0)
    (rst,) = [o[2] for o in stack.poll_output()]
    assert rst.flags == RST | ACK and rst.seq == 0 and rst.ack == 1001
    stack.on_segment(IP_B, IP_A, Segment(1234, 9, 1000, 5555, ACK, 100, b"abc"), 0.0)
    (rst,) = [o[2] for o in stack.poll_output()]
    assert rst.flags == RST and rst.seq == 5555
    stack.on_segment(IP_B, IP_A, Segment(1234, 9, 1000, 5555, RST, 100), 0.0)
    assert stack.poll_output() == []


def test_listener_ignores_rst_and_resets_ack() -> None:
    stack = TcpStack()
    stack.listen(None, 80)
    stack.on_segment(IP_B, IP_A, Segment(1234, 80, 1, 0, RST, 100), 0.0)
    assert stack.poll_output() == [] and len(stack) == 0
    stack.on_segment(IP_B, IP_A, Segment(1234, 80, 1, 777, ACK, 100), 0.0)
    (rst,) = [o[2] for o in stack.poll_output()]
    assert rst.flags == RST and rst.seq == 777


def test_syn_retries_then_timeout() -> None:
    """MUST-22/MUST-23: SYNs back off and the open fails after syn_retries."""
    h = Harness(TcpConfig(syn_retries=3))
    h.drop_if = lambda src, seg: True
    ca = h.a.connect(IP_A, IP_B, 80, 0.0)
    h.run(duration=100)
    syn_times = [s.time for s in h.trace if s.src == "a"]
    assert [round(b - a, 3) for a, b in zip(syn_times, syn_times[1:])] == [1.0, 2.0, 4.0]
    assert h.a.state(ca) is State.CLOSED
    assert Error(ca, "connection timed out", fatal=True) in h.events_a and Closed(ca) in h.events_a


class Recorder:
    def __init__(self, decision: Admission = Admission.ACCEPT) -> None:
        self.decision = decision
        self.admitted: list[object] = []
        self.released: list[object] = []

    def admit(self, four_tuple: object, syn: Segment, now: float) -> Admission:
        self.admitted.append(four_tuple)
        return self.decision

    def release(self, four_tuple: object) -> None:
        self.released.append(four_tuple)


def test_embryonic_entry_times_out_and_is_released() -> None:
    hook = Recorder()
    stack = TcpStack(TcpConfig(synack_retries=2), admission=hook)
    stack.listen(None, 80)
    stack.on_segment(IP_B, IP_A, Segment(4000, 80, 100, 0, SYN, 1000), 0.0)
    assert len(stack) == 1
    now = 0.0
    while (t := stack.next_timer()) is not None and t < 100:
        now = t
        stack.on_timer(now)
    synacks = [o[2] for o in stack.poll_output() if o[2].flags == SYN | ACK]
    assert len(synacks) == 3  # the first and two retransmissions
    assert len(stack) == 0 and hook.released == hook.admitted
    assert not any(isinstance(e, Closed) for e in stack.poll_events())  # never visible to the application


def test_rst_in_syn_received_returns_to_listen() -> None:
    stack = TcpStack()
    stack.listen(None, 80)
    stack.on_segment(IP_B, IP_A, Segment(4000, 80, 100, 0, SYN, 1000), 0.0)
    stack.on_segment(IP_B, IP_A, Segment(4000, 80, 101, 0, RST, 0), 0.1)
    assert len(stack) == 0
    stack.on_segment(IP_B, IP_A, Segment(4000, 80, 500, 0, SYN, 1000), 0.2)
    assert len(stack) == 1


def test_connection_refused_in_syn_sent() -> None:
    """MUST-12: the application learns of the reset."""
    h = Harness(quick(), quick())
    ca = h.a.connect(IP_A, IP_B, 81, 0.0)  # nobody listens on b:81
    h.run(duration=1)
    assert Reset(ca) in h.events_a and h.a.state(ca) is State.CLOSED


def test_abort_resets_peer() -> None:
    h = Harness(quick(), quick())
    ca, cb = h.establish()
    h.a.abort(ca)
    assert h.a.state(ca) is State.CLOSED
    h.run(duration=1)
    assert Reset(cb) in h.events_b and h.b.state(cb) is State.CLOSED
    assert h.counters_a["rst_sent"] == 1


def test_close_with_unread_data_sends_rst() -> None:
    """SHLD-3: closing with received data unread tells the peer data was lost."""
    h = Harness(quick(), quick())
    ca, cb = h.establish()
    h.a.send(ca, b"unread")
    h.run(duration=1)
    h.b.close(cb)
    h.run(duration=1)
    assert Reset(ca) in h.events_a


def test_time_wait_accepts_newer_syn() -> None:
    """MAY-2: a SYN with a higher timestamp reopens a connection in TIME-WAIT."""
    h = Harness(quick(time_wait=60.0), quick(time_wait=60.0))
    h.b.listen(None, 80)
    ca = h.a.connect(IP_A, IP_B, 80, 0.0, local_port=40000)
    h.run(duration=1)
    cb = h.b.connections()[0]
    h.b.close(cb)  # b closes first, so b ends in TIME-WAIT
    h.run(duration=0.5)
    h.a.close(ca)
    h.run(duration=0.5)
    assert h.b.state(cb) is State.TIME_WAIT and h.a.state(ca) is State.CLOSED
    assert h.counters_b["time_wait_reused"] == 0
    h.run(duration=1)
    ca2 = h.a.connect(IP_A, IP_B, 80, h.now, local_port=40000)
    h.run(duration=1)
    assert ca2 == ca and h.a.state(ca2) is State.ESTABLISHED and h.b.state(cb) is State.ESTABLISHED
    assert h.counters_b["time_wait_reused"] == 1  # one TCB replaced: the stack holds one fewer than it saw


def test_events_for_peer_close_and_data() -> None:
    h = Harness(quick(), quick(), a_to_b=Impairment(delay=0.001), b_to_a=Impairment(delay=0.001))
    ca, cb = h.establish()
    h.a.send(ca, b"hello")
    h.a.shutdown(ca)
    h.run(duration=1)
    assert h.b.recv(cb) == b"hello"
    assert h.b.at_eof(cb)
    kinds = [type(e).__name__ for e in h.events_b]
    assert kinds.index("DataReceived") < kinds.index("PeerClosed")
