"""Defects found by crafted segments against the TCP core, each kept fixed here.

Each test puts a connection in the state the defect needs, hands it one crafted segment (or
one application call) and asserts on the state, the TCB fields or the exact replies.
"""
from __future__ import annotations

from toe_engine.segment import ACK, RST, SYN, Segment, TcpOptions
from toe_engine.tcp import State, TcpConfig, TcpStack
from toe_engine.tcp.isn import IsnGenerator
from toe_engine.tcp.seqnum import MASK
from toe_engine.tcp.testing import IP_A, IP_B, Harness

PEER_PORT, PORT = 40000, 80


def passive_syn_received(cfg: TcpConfig | None = None) -> tuple[TcpStack, Segment]:
    """A stack at IP_B that answered a SYN (ISN 1000, TSval 500) and sits in SYN-RECEIVED."""
    stack = TcpStack(cfg or TcpConfig(), isn=IsnGenerator(b"s" * 16))
    stack.listen(None, PORT)
    syn = Segment(PEER_PORT, PORT, 1000, 0, SYN, 65535, b"",
                  TcpOptions(mss=1460, wscale=7, sack_permitted=True, timestamp=(500, 0)))
    stack.on_segment(IP_B, IP_A, syn, 0.0)
    (synack,) = [seg for _, _, seg in stack.poll_output()]
    assert synack.flags == SYN | ACK
    return stack, synack


def test_simultaneous_open_does_not_scale_the_syn_acks_window() -> None:
    """RFC 7323 2.2: the window of a SYN (and a SYN-ACK) is never scaled, even after a
    simultaneous open has settled the shift."""
    h = Harness(TcpConfig(), TcpConfig())
    ca = h.a.connect(IP_A, IP_B, 5000, 0.0, local_port=6000)
    cb = h.b.connect(IP_B, IP_A, 6000, 0.0, local_port=5000)
    h.run(until=lambda: h.a.state(ca) is State.ESTABLISHED and h.b.state(cb) is State.ESTABLISHED, max_time=5)
    for stack, conn in ((h.a, ca), (h.b, cb)):
        tcb = stack.connection(conn)
        assert tcb is not None and tcb.snd_wscale == 7
        assert tcb.snd_wnd <= 0xFFFF and tcb.max_snd_wnd <= 0xFFFF  # a SYN-ACK carries 65535 at most


def test_data_after_close_is_answered_with_a_reset() -> None:
    """RFC 9293 3.10.7.4 / RFC 1122 4.2.2.13: new data for an application that closed is
    answered with RST, and the connection is gone; it is not ACKed and silently dropped."""
    h = Harness()
    ca, cb = h.establish()
    h.b.close(cb)
    h.run(duration=1)
    assert h.b.state(cb) is State.FIN_WAIT_2
    replies = h.inject("b", h.forge("a", ca, ACK, payload=b"late data"))
    assert [r.flags & RST for r in replies] == [RST]
    assert h.b.state(cb) is State.CLOSED
    assert h.counters_b["rst_sent"] == 1


def test_data_after_a_half_close_is_still_received() -> None:
    """shutdown() closes only our direction (MAY-1): the peer's data is taken, not reset."""
    h = Harness()
    ca, cb = h.establish()
    h.b.shutdown(cb)
    h.run(duration=1)
    replies = h.inject("b", h.forge("a", ca, ACK, payload=b"more"))
    assert replies == [] or not any(r.flags & RST for r in replies)
    assert h.b.recv(cb) == b"more"


def test_a_challenged_syn_does_not_update_ts_recent() -> None:
    """RFC 7323 4.3 / RFC 9293 order: TS.Recent is updated only by a segment that passed the RST
    and SYN checks; a SYN at RCV.NXT with TSval far ahead must not poison PAWS."""
    h = Harness()
    ca, cb = h.establish()
    tcb = h.b.connection(cb)
    assert tcb is not None
    before = tcb.ts_recent
    replies = h.inject("b", h.forge("a", ca, SYN, tsval_delta=1 << 30))
    assert [r.flags for r in replies] == [ACK]  # the challenge ACK (RFC 5961 4.2)
    assert tcb.ts_recent == before
    h.a.send(ca, b"good data")
    h.run(duration=1)
    assert h.b.recv(cb) == b"good data"
    assert h.counters_b["paws_rejected"] == 0


def test_rcv_mss_is_capped_at_the_advertised_mss_with_super_frames() -> None:
    """A 64 KiB super-frame (GRO/LRO) does not grow the receiver's MSS estimate past the MSS it
    advertised (as Linux caps rcv_mss at advmss), so the every-second-segment ACK rule holds."""
    h = Harness(TcpConfig(), TcpConfig(delayed_ack=0.2))
    ca, cb = h.establish()
    tcb = h.b.connection(cb)
    assert tcb is not None
    replies = h.inject("b", h.forge("a", ca, ACK, payload=bytes(40000)))
    assert tcb.rcv_mss <= TcpConfig().mss
    assert [r.flags for r in replies] == [ACK]  # 27 segments' worth: ACKed at once, not delayed


def test_reading_after_a_data_ack_does_not_send_a_second_ack() -> None:
    """The application reading what just arrived opens a window that is still wide open: no
    window update ACK right behind the data ACK (Linux sends one only if the window doubles)."""
    h = Harness(TcpConfig(), TcpConfig(rcv_buf=4 << 20, wscale=8, delayed_ack=0.04))
    ca, cb = h.establish()
    tcb = h.b.connection(cb)
    assert tcb is not None
    mss, tsval = tcb.rcv_mss, 10_000
    acks, segments = 0, 200
    for _ in range(segments):
        tsval += 1
        seg = Segment(tcb.remote_port, tcb.local_port, tcb.rcv_nxt & MASK,
                      tcb.snd_nxt & MASK, ACK, 0xFFFF, bytes(1448), TcpOptions(timestamp=(tsval, tcb.ts_recent)))
        acks += len(h.inject("b", seg))
        assert len(h.b.recv(cb)) == 1448
        acks += len(h.b.poll_output())
    assert mss <= 1460
    assert acks <= segments // 2 + 2


def test_passive_syn_received_rejects_a_syn_ack_at_irs() -> None:
    """Only an active opener can be in a simultaneous open: in a passive SYN-RECEIVED a SYN-ACK
    with seq = IRS is not the peer's answer to our SYN and must not complete the handshake."""
    stack, synack = passive_syn_received()
    forged = Segment(PEER_PORT, PORT, 1000, (synack.seq + 1) & MASK, SYN | ACK, 65535, b"",
                     TcpOptions(timestamp=(501, synack.options.timestamp[0])))  # type: ignore[index]
    stack.on_segment(IP_B, IP_A, forged, 0.1)
    (conn,) = stack.connections()
    assert stack.state(conn) is State.SYN_RECEIVED
    replies = [seg for _, _, seg in stack.poll_output()]
    assert all(not seg.flags & SYN or seg == synack for seg in replies)
    assert not any(type(e).__name__ == "Accepted" for e in stack.poll_events())
