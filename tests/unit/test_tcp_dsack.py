"""D-SACK (RFC 2883): the first SACK block reports a duplicate segment the receiver got.

As sender, a D-SACK (a first block starting below the cumulative ACK, or inside the second
block) is no news of delivery: it never enters the scoreboard, moves neither the pipe nor
RACK, is no duplicate ACK, and counts as `dsacks_received`; RACK widens its reordering window
on it (RFC 8985 6.2 step 4). As receiver, a segment the stack already had draws an ACK whose
first block is that duplicate, once, when SACK is permitted, counted as `dsacks_sent`.
"""
from __future__ import annotations

from toe_engine.segment import ACK, Segment
from toe_engine.tcp.config import TcpConfig
from toe_engine.tcp.testing import Harness

MASK = 0xFFFFFFFF


def in_flight(cfg: TcpConfig, segments: int) -> tuple[Harness, object, object, object, int, int]:
    """`segments` full segments from a in flight and lost on the way, so only forged ACKs answer."""
    h = Harness(cfg, TcpConfig())
    ca, cb = h.establish()
    tcb = h.a.connection(ca)
    assert tcb is not None and tcb.sack_ok
    h.a.send(ca, bytes(4 * tcb.snd_mss))  # a first round trip: data ACKed, RACK has an RTT
    h.run(duration=1)
    base, mss = tcb.snd_nxt, tcb.snd_mss
    h.drop_if = lambda src, seg: src == "a"
    h.a.send(ca, bytes(segments * mss))
    h.flush()
    assert tcb.snd_nxt - tcb.snd_una == segments * mss
    return h, ca, cb, tcb, base, mss


def ack_from_b(h: Harness, cb: object, ack: int, blocks: tuple[tuple[int, int], ...], k: int) -> Segment:
    seg = h.forge("b", cb, ACK, tsval_delta=k)
    seg.options.sack_blocks = tuple((s & MASK, e & MASK) for s, e in blocks)
    return Segment(seg.src_port, seg.dst_port, seg.seq, ack & MASK, ACK, seg.window, b"", seg.options)


def test_a_dsack_below_snd_una_is_no_duplicate_ack_and_leaves_the_scoreboard() -> None:
    """Three D-SACKs for data below SND.UNA: DupThresh duplicate ACKs under RFC 5681 counting,
    which must not start a fast retransmit: nothing was lost."""
    h, ca, cb, tcb, base, mss = in_flight(TcpConfig(loss_detection="dupack"), 6)
    pipe = tcb._pipe()
    for k in (1, 2, 3):
        h.inject("a", ack_from_b(h, cb, base, ((base - 2 * mss, base - mss),), k))
    assert h.counters_a["dsacks_received"] == 3
    assert tcb.dupacks == 0 and h.counters_a["fast_retransmits"] == 0 and not tcb.recovery
    assert tcb.rtxq.sacked == 0 and tcb._pipe() == pipe == 6 * mss
    assert h.counters_a["retransmits"] == 0


def test_a_dsack_inside_the_second_block_counts_once_and_sacks_only_the_second() -> None:
    h, ca, cb, tcb, base, mss = in_flight(TcpConfig(), 6)
    blocks = ((base + 2 * mss, base + 3 * mss), (base + mss, base + 4 * mss))
    h.inject("a", ack_from_b(h, cb, base, blocks, 1))  # news in the second block: a duplicate ACK (RFC 6675)
    assert tcb.rtxq.sacked_ranges() == [(base + mss, base + 4 * mss)] and tcb.rtxq.sacked == 3 * mss
    assert tcb.dupacks == 1 and h.counters_a["dsacks_received"] == 1
    h.inject("a", ack_from_b(h, cb, base, blocks, 2))  # the same again: only the D-SACK, no loss signal
    assert tcb.dupacks == 1 and h.counters_a["dsacks_received"] == 2
    assert tcb.rtxq.sacked == 3 * mss


def test_a_block_straddling_the_cumulative_ack_is_a_dsack_and_sacks_nothing() -> None:
    """Linux's tcp_check_dsack: a first block that starts below the ACK is a D-SACK, even if it ends above."""
    h, ca, cb, tcb, base, mss = in_flight(TcpConfig(), 6)
    h.inject("a", ack_from_b(h, cb, base, ((base - mss, base + mss),), 1))
    assert h.counters_a["dsacks_received"] == 1 and tcb.rtxq.sacked == 0 and tcb.dupacks == 0


def test_an_ordinary_first_block_is_no_dsack() -> None:
    h, ca, cb, tcb, base, mss = in_flight(TcpConfig(), 6)
    h.inject("a", ack_from_b(h, cb, base, ((base + 2 * mss, base + 3 * mss), (base + 4 * mss, base + 5 * mss)), 1))
    assert h.counters_a["dsacks_received"] == 0 and tcb.rtxq.sacked == 2 * mss and tcb.dupacks == 1


# ------------------------------------------------------------------ as receiver

def received(receiver: TcpConfig) -> tuple[Harness, object, object, object, int]:
    """a sent b 3000 bytes, all delivered and ACKed; b's connection and its RCV.NXT (32-bit)."""
    h = Harness(TcpConfig(), receiver)
    ca, cb = h.establish()
    h.a.send(ca, b"x" * 3000)
    h.run(duration=1)
    tcb = h.b.connection(cb)
    assert tcb is not None and not tcb.ooo.bytes_held
    return h, ca, cb, tcb, tcb.rcv_nxt & MASK


def test_a_duplicate_below_rcv_nxt_draws_its_dsack_once() -> None:
    h, ca, cb, tcb, rcv_nxt = received(TcpConfig())
    assert tcb.sack_ok
    replies = h.inject("b", h.forge("a", ca, ACK, seq_delta=-1000, payload=b"x" * 500))
    assert len(replies) == 1 and replies[0].ack == rcv_nxt
    assert replies[0].options.sack_blocks == (((rcv_nxt - 1000) & MASK, (rcv_nxt - 500) & MASK),)
    assert h.counters_b["out_of_window"] == 1 and h.counters_b["dsacks_sent"] == 1
    assert h.counters_b["dup_acks_sent"] == 0  # no hole: as before, no duplicate ACK of a hole
    h.b.send(cb, b"answer")  # the next segment b sends reports nothing
    h.flush()
    later = [s.seg for s in h.trace if s.src == "b" and s.seg.payload == b"answer"]
    assert later and not later[0].options.sack_blocks and h.counters_b["dsacks_sent"] == 1


def test_a_segment_overlapping_rcv_nxt_reports_its_old_head() -> None:
    h, ca, cb, tcb, rcv_nxt = received(TcpConfig(delayed_ack=0))
    replies = h.inject("b", h.forge("a", ca, ACK, seq_delta=-500, payload=b"x" * 1000))
    assert tcb.rcv_nxt & MASK == (rcv_nxt + 500) & MASK
    assert len(replies) == 1 and replies[0].ack == (rcv_nxt + 500) & MASK
    assert replies[0].options.sack_blocks == (((rcv_nxt - 500) & MASK, rcv_nxt),)


def test_a_duplicate_of_held_out_of_order_data_comes_first_then_its_block() -> None:
    h, ca, cb, tcb, rcv_nxt = received(TcpConfig())
    above = h.forge("a", ca, ACK, seq_delta=1000, payload=b"y" * 500)
    block = ((rcv_nxt + 1000) & MASK, (rcv_nxt + 1500) & MASK)
    (first,) = h.inject("b", above)
    assert first.options.sack_blocks == (block,) and h.counters_b["dsacks_sent"] == 0
    (again,) = h.inject("b", above)
    assert again.ack == rcv_nxt and again.options.sack_blocks == (block, block)  # RFC 2883 4.1.2
    assert h.counters_b["dsacks_sent"] == 1 and tcb.ooo.bytes_held == 500


def test_without_sack_permitted_a_duplicate_draws_a_plain_ack() -> None:
    h, ca, cb, tcb, rcv_nxt = received(TcpConfig(sack=False))
    assert not tcb.sack_ok
    replies = h.inject("b", h.forge("a", ca, ACK, seq_delta=-1000, payload=b"x" * 500))
    assert len(replies) == 1 and replies[0].ack == rcv_nxt and replies[0].options.sack_blocks == ()
    assert h.counters_b["dsacks_sent"] == 0 and tcb.dsack_pending is None


def test_a_spurious_tail_probe_is_answered_by_a_dsack_that_widens_racks_window() -> None:
    """The ACKs of a flight are lost; the tail loss probe resends its last segment, which b had:
    b's D-SACK tells a the probe was spurious (RFC 8985 7.4: no cwnd reduction) and RACK's
    reordering window grows (6.2 step 4)."""
    h = Harness(TcpConfig(nodelay=True), TcpConfig())
    ca, cb = h.establish()
    h.a.send(ca, bytes(4000))
    h.run(duration=1)
    tcb = h.a.connection(ca)
    assert tcb is not None and tcb.rack and tcb.reo_wnd_mult == 1
    mss = tcb.snd_mss
    start = h.now
    until = start + 0.055  # b's ACKs of the flight (the last one delayed 40 ms) are lost, the probe's answer is not
    h.drop_if = lambda src, seg: src == "b" and h.now < until
    h.a.send(ca, bytes(3 * mss))
    h.run(duration=1)
    probes = [s.time for s in h.trace if s.src == "a" and s.time > start and s.seg.payload]
    assert len(probes) == 1 and probes[0] < until <= probes[0] + 0.01  # b's answer to it is the first to pass
    assert h.b.recv(cb)[-3 * mss:] == bytes(3 * mss)
    assert h.counters_a["tlp_probes"] == 1 and h.counters_b["dsacks_sent"] == 1
    assert h.counters_a["dsacks_received"] == 1 and h.counters_a["tlp_recoveries"] == 0
    assert tcb.reo_wnd_mult == 2 and tcb.snd_una == tcb.snd_nxt


def test_a_dsack_with_no_room_beside_full_segments_waits_for_the_next_that_has_room() -> None:
    h, ca, cb, tcb, rcv_nxt = received(TcpConfig(nodelay=True))
    mss = tcb.snd_mss
    duplicate = ((rcv_nxt - 1000) & MASK, (rcv_nxt - 500) & MASK)
    tcb.dsack_pending = (tcb.rcv_nxt - 1000, tcb.rcv_nxt - 500)  # as the duplicate left it, its ACK not yet sent
    h.b.send(cb, bytes(2 * mss))
    h.flush()
    full = [s.seg for s in h.trace if s.src == "b" and len(s.seg.payload) == mss]
    assert len(full) == 2 and all(not s.options.sack_blocks for s in full)
    assert h.counters_b["dsacks_sent"] == 0 and tcb.dsack_pending is not None
    h.b.send(cb, b"z" * 100)
    h.flush()
    (small,) = [s.seg for s in h.trace if s.src == "b" and s.seg.payload == b"z" * 100]
    assert small.options.sack_blocks == (duplicate,) and h.counters_b["dsacks_sent"] == 1
    assert tcb.dsack_pending is None


def test_a_hole_filler_overlapping_held_data_reports_the_overlap() -> None:
    """Linux's tcp_ofo_queue: held bytes that arrive again in order are a duplicate too."""
    h, ca, cb, tcb, rcv_nxt = received(TcpConfig())
    h.inject("b", h.forge("a", ca, ACK, seq_delta=1000, payload=b"y" * 500))
    (reply,) = h.inject("b", h.forge("a", ca, ACK, payload=b"y" * 1200))  # [0, 1200) over held [1000, 1500)
    assert reply.ack == (rcv_nxt + 1500) & MASK and tcb.ooo.bytes_held == 0
    assert reply.options.sack_blocks == (((rcv_nxt + 1000) & MASK, (rcv_nxt + 1200) & MASK),)
    assert h.counters_b["dsacks_sent"] == 1
