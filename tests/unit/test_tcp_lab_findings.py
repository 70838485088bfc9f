"""Engine behaviours the scenario suite found wrong against RFC 9293 and RFC 6298, kept fixed here.

Each test drives two sans-IO stacks through the in-memory harness on a fake clock and asserts
on segments, counters or the RTT estimator.
"""
from __future__ import annotations

import pytest

from toe_engine.segment import ACK
from toe_engine.tcp import TcpConfig
from toe_engine.tcp.testing import IP_A, IP_B, Harness


def test_handshake_ack_of_a_retransmitted_syn_ack_is_no_rtt_sample() -> None:
    """Karn's rule for the handshake: the client's ACK may echo the first SYN-ACK's timestamp."""
    h = Harness(TcpConfig(rto_min=0.2), TcpConfig(rto_min=0.2))
    h.b.listen(None, 80)
    h.a.connect(IP_A, IP_B, 80, 0.0)
    acks_from_a = [0]

    def lose_first_two_handshake_acks(src: str, seg: object) -> bool:
        if src == "a" and seg.flags == ACK and not seg.payload and acks_from_a[0] < 2:  # type: ignore[attr-defined]
            acks_from_a[0] += 1
            return True
        return False

    h.drop_if = lose_first_two_handshake_acks
    h.run(until=lambda: bool(h.b.connections()) and h.b.state(h.b.connections()[0]).name == "ESTABLISHED",
          max_time=10)
    (cb,) = h.b.connections()
    tcb = h.b.connection(cb)
    assert tcb is not None and tcb.syn_retransmitted
    assert h.counters_b["retransmits"] == 2  # the SYN-ACK went three times, two ACKs were lost
    assert tcb.rtt.samples == 0  # a sample here would measure the 3 s of retransmission waits
    assert tcb.rtt.srtt is None


def test_answers_to_zero_window_probes_are_not_duplicate_acks() -> None:
    """A probe byte in flight is answered with the same ACK and window each time; no fast retransmit."""
    h = Harness(TcpConfig(rto_min=0.2, rto_initial=0.2), TcpConfig(rcv_buf=4096, wscale=None))
    ca, cb = h.establish()
    h.a.send(ca, b"x" * 20000)  # b's application never reads: its 4 KiB window closes
    h.run(duration=30)
    assert h.counters_a["zero_window_probes"] >= 5
    assert h.counters_a["fast_retransmits"] == 0
    probes = [sent for sent in h.trace if sent.src == "a" and len(sent.seg.payload) == 1]
    gaps = [b.time - a.time for a, b in zip(probes, probes[1:])]
    assert gaps and all(g > 0.1 for g in gaps)  # every probe waited for the persist timer


def test_nagle_holds_a_tso_frames_short_tail_while_data_is_in_flight() -> None:
    """With tso_segments > 1 a send of 2.5 MSS behind unacknowledged data leaves as 2 MSS; the tail waits."""
    h = Harness(TcpConfig(mss=1000, tso_segments=8), TcpConfig(mss=1000))
    ca, cb = h.establish()
    smss = h.a.connection(ca).snd_mss
    h.a.send(ca, b"a" * 100)  # small and alone: Nagle lets it go
    h.a.send(ca, b"b" * (2 * smss + 500))
    h.flush()
    sizes = [len(s.payload) for s in h.segments("a") if s.payload]
    assert sizes == [100, 2 * smss]
    h.run(duration=1)
    assert h.b.recv(cb) == b"a" * 100 + b"b" * (2 * smss + 500)


def test_reading_does_not_force_a_window_update_the_field_cannot_carry() -> None:
    """Without window scaling a 4 MiB buffer still advertises at most 65535: reading one segment
    opens the window by less than two segments, so its ACK stays delayed (SHLD-18)."""
    h = Harness(TcpConfig(wscale=None, rcv_buf=65535), TcpConfig(rcv_buf=4 << 20, wscale=8, delayed_ack=0.04))
    ca, cb = h.establish()
    segment = b"z" * h.a.connection(ca).snd_mss
    h.a.send(ca, segment)
    h.step(h.now + 1.0)  # the segment reaches b
    sent_by_b = len(h.segments("b"))
    assert h.b.recv(cb) == segment
    h.flush()
    assert len(h.segments("b")) == sent_by_b  # no ACK at once for the read
    arrived = h.now
    h.run(until=lambda: len(h.segments("b")) > sent_by_b, max_time=1)
    assert h.now - arrived == pytest.approx(0.04)
