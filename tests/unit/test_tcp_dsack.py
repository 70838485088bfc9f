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
