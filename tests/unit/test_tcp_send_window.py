"""Which segment's window the sender takes (RFC 9293 3.10.7.4 with Linux's tcp_may_update_window).

A retransmission from the peer carries an old sequence number but its newest ACK and window.
Kept to SND.WL1's rule alone, the sender would slide its old window up to the new SND.UNA and
send beyond the peer's right edge, whose next zero window then refuses every ACK sent from there.
"""
from __future__ import annotations

from toe_engine.segment import ACK, PSH, Segment
from toe_engine.tcp.config import TcpConfig
from toe_engine.tcp.testing import Harness

MASK = 0xFFFFFFFF


def test_a_retransmission_with_a_newer_ack_brings_its_window() -> None:
    h = Harness(TcpConfig(), TcpConfig())
    ca, cb = h.establish()
    a = h.a.connection(ca)
    assert a is not None
    mss, shift, base = a.snd_mss, a.snd_wscale, a.snd_nxt
    h.drop_if = lambda src, seg: src == "a"  # a's data never arrives: only forged answers move a
    h.a.send(ca, bytes(4 * mss))
    h.flush()
    assert a.snd_nxt == base + 4 * mss

    def from_b(seq_delta: int, ack_delta: int, field: int, payload: bytes, k: int) -> Segment:
        f = h.forge("b", cb, ACK | PSH if payload else ACK, seq_delta=seq_delta, ack_delta=ack_delta,
                    payload=payload, tsval_delta=k)
        return Segment(f.src_port, f.dst_port, f.seq, f.ack, f.flags, field, f.payload, f.options)

    # b's ACK of one segment from above a hole in b's own data (its SND.NXT is past it) ...
    h.inject("a", from_b(2 * mss, mss, 40, b"", 1))
    assert a.snd_una == base + mss and a.snd_wnd == 40 << shift
    # ... then b's retransmission into that hole, with a newer ACK and a window that ends lower
    field = (base + 4 * mss - (base + 3 * mss)) >> shift
    h.inject("a", from_b(0, 3 * mss, field, b"r" * mss, 2))
    assert a.snd_una == base + 3 * mss
    assert a.snd_wnd == field << shift  # was 40 << shift: the right edge slid 2 MSS past b's
    assert a.snd_una + a.snd_wnd <= base + 4 * mss
    assert (a.snd_wl1 - a.irs - 1) & MASK == 0 and a.snd_wl2 == base + 3 * mss
