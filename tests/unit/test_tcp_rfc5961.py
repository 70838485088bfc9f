"""RFC 5961 blind-attack defences (MAY-12) and the acceptability test around them."""
from __future__ import annotations

from toe_engine.segment import ACK, RST, SYN, FourTuple
from toe_engine.tcp import Reset, State, TcpConfig
from toe_engine.tcp.testing import Harness


def established(limit: int = 1000) -> tuple[Harness, FourTuple, FourTuple]:
    h = Harness(TcpConfig(challenge_ack_limit=limit), TcpConfig(challenge_ack_limit=limit))
    ca, cb = h.establish()
    h.a.send(ca, b"x" * 3000)
    h.run(duration=1)
    return h, ca, cb


def test_rst_at_rcv_nxt_resets() -> None:
    h, ca, cb = established()
    rst = h.forge("a", ca, RST)
    assert h.inject("b", rst) == []
    assert h.b.state(cb) is State.CLOSED and Reset(cb) in h.events_b


def test_rst_in_window_but_not_rcv_nxt_gets_challenge_ack() -> None:
    h, ca, cb = established()
    tcb = h.b.connection(cb)
    assert tcb is not None
    replies = h.inject("b", h.forge("a", ca, RST, seq_delta=1000))
    assert len(replies) == 1
    ack = replies[0]
    assert ack.flags == ACK and ack.seq == tcb.snd_nxt & 0xFFFFFFFF and ack.ack == tcb.rcv_nxt & 0xFFFFFFFF
    assert h.b.state(cb) is State.ESTABLISHED
    assert h.counters_b["challenge_acks"] == 1


def test_rst_out_of_window_is_ignored() -> None:
    h, ca, cb = established()
    assert h.inject("b", h.forge("a", ca, RST, seq_delta=10_000_000)) == []
    assert h.inject("b", h.forge("a", ca, RST, seq_delta=-5)) == []
    assert h.b.state(cb) is State.ESTABLISHED
    assert h.counters_b["challenge_acks"] == 0


def test_syn_in_established_gets_challenge_ack() -> None:
    h, ca, cb = established()
    for delta in (0, 5000):
        replies = h.inject("b", h.forge("a", ca, SYN, seq_delta=delta))
        assert [r.flags for r in replies] == [ACK]
    assert h.b.state(cb) is State.ESTABLISHED
    assert h.counters_b["challenge_acks"] == 2
    h.a.send(ca, b"still fine")
    h.run(duration=1)
    assert h.b.recv(cb).endswith(b"still fine")


def test_ack_outside_acceptable_range_dropped_with_challenge_ack() -> None:
    """RFC 5961 5.2: ACK must lie in [SND.UNA - MAX.SND.WND, SND.NXT]."""
    h, ca, cb = established()
    tcb_a = h.a.connection(ca)
    assert tcb_a is not None
    una_before = tcb_a.snd_una
    forged = h.forge("b", cb, ACK, payload=b"evil")
    forged.ack = (tcb_a.snd_una - tcb_a.max_snd_wnd - 10) & 0xFFFFFFFF
    replies = h.inject("a", forged)
    assert [r.flags for r in replies] == [ACK]
    assert h.a.readable(ca) == 0  # the data of a rejected segment is dropped too
    forged = h.forge("b", cb, ACK, payload=b"evil")
    forged.ack = (tcb_a.snd_nxt + 100) & 0xFFFFFFFF
    assert [r.flags for r in h.inject("a", forged)] == [ACK]
    assert h.a.readable(ca) == 0 and tcb_a.snd_una == una_before
    assert h.counters_a["challenge_acks"] == 2


def test_challenge_acks_are_rate_limited() -> None:
    h, ca, cb = established(limit=2)
    sent = sum(len(h.inject("b", h.forge("a", ca, RST, seq_delta=100 + i))) for i in range(5))
    assert sent == 2 and h.counters_b["challenge_acks"] == 2
    h.now += 1.5
    assert len(h.inject("b", h.forge("a", ca, RST, seq_delta=100))) == 1


def test_rst_processed_with_zero_window() -> None:
    """MUST-66: RST and ACK are processed even when the receive window is zero."""
    h = Harness(TcpConfig(), TcpConfig(rcv_buf=4096, wscale=0))
    ca, cb = h.establish()
    h.a.send(ca, b"y" * 10000)
    h.run(duration=5)  # the last partial window goes out when the persist timer overrides SWS avoidance
    tcb = h.b.connection(cb)
    assert tcb is not None and tcb.rcv_adv == tcb.rcv_nxt
    h.inject("b", h.forge("a", ca, RST, seq_delta=-(h.a.connection(ca).snd_nxt - tcb.rcv_nxt)))  # type: ignore[union-attr]
    assert h.b.state(cb) is State.CLOSED
