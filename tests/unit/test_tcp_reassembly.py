"""Out-of-order reassembly, SACK block order, the retransmission queue's SACK marks, sequence arithmetic, ISNs."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from toe_engine.segment import FourTuple
from toe_engine.tcp.isn import IsnGenerator
from toe_engine.tcp.reassembly import ReassemblyQueue
from toe_engine.tcp.rtx_queue import RetransmitQueue
from toe_engine.tcp.seqnum import seq_ge, seq_gt, seq_in_window, seq_le, seq_lt, unwrap


def drain(q: ReassemblyQueue, base: int) -> bytes:
    out = bytearray()
    while (chunk := q.pop_ready(base + len(out))) is not None:
        out += chunk
    return bytes(out)


def test_hole_fill_merges_and_pops() -> None:
    q = ReassemblyQueue()
    assert q.insert(110, b"klmno")
    assert q.insert(105, b"fghij")
    assert q.pop_ready(100) is None
    assert q.insert(100, b"abcde")
    assert q.pop_ready(100) == bytearray(b"abcdefghijklmno")
    assert not q and q.bytes_held == 0


def test_overlap_keeps_first_bytes_and_trims_below_rcv_nxt() -> None:
    q = ReassemblyQueue()
    q.insert(10, b"AAAA")
    assert q.insert(8, b"zzBBBBcc")  # new bytes both sides of the held block
    assert q.pop_ready(9) == bytearray(b"zAAAAcc")
    assert not q.insert(20, b"") and not q


def test_duplicate_is_not_new() -> None:
    q = ReassemblyQueue()
    q.insert(50, b"hello")
    assert not q.insert(51, b"ell")
    assert q.bytes_held == 5


def test_sack_blocks_most_recent_first_and_limited() -> None:
    q = ReassemblyQueue()
    for start in (200, 400, 600, 800, 1000):
        q.insert(start, b"x" * 50)
    q.insert(400, b"x" * 60)  # touches the 400 block again: most recent
    assert q.sack_blocks(3) == [(400, 460), (1000, 1050), (800, 850)]
    assert len(q.sack_blocks(4)) == 4


@settings(max_examples=150, deadline=None)
@given(data=st.binary(min_size=1, max_size=3000), seed=st.data())
def test_any_permutation_with_overlaps_reassembles_exactly(data: bytes, seed: st.DataObject) -> None:
    """Segments of a byte string, overlapping, duplicated and in any order, give back the string."""
    n = len(data)
    cuts = seed.draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(1, 400)), min_size=1, max_size=40))
    pieces = [(s, min(n, s + ln)) for s, ln in cuts]
    pieces += [(i, min(n, i + 300)) for i in range(0, n, 300)]  # make sure everything is covered
    pieces = seed.draw(st.permutations(pieces))
    base = 1_000_000
    q = ReassemblyQueue()
    rcv_nxt = base
    out = bytearray()
    for s, e in pieces:
        seg_start, seg = base + s, data[s:e]
        if seg_start + len(seg) <= rcv_nxt:
            continue
        if seg_start < rcv_nxt:
            seg = seg[rcv_nxt - seg_start:]
            seg_start = rcv_nxt
        if seg_start == rcv_nxt:
            out += seg
            rcv_nxt += len(seg)
            ready = q.pop_ready(rcv_nxt)
            if ready is not None:
                out += ready
                rcv_nxt += len(ready)
        else:
            q.insert(seg_start, seg)
    assert bytes(out) == data
    assert not q


def test_retransmit_queue_sack_marks_merge_and_advance() -> None:
    q = RetransmitQueue()
    q.sent_new(100, 700, 0.0)
    assert q.sack(200, 300)[0] == 100
    assert q.sack(250, 400)[0] == 100
    assert q.sack(500, 600)[0] == 100
    assert q.sacked_ranges() == [(200, 400), (500, 600)]
    assert q.in_flight(600) == 300
    q.ack(250)
    assert q.sacked_ranges() == [(250, 400), (500, 600)] and q.sacked == 250
    assert [(r.start, r.end, r.sacked) for r in q.ranges] == [
        (250, 400, True), (400, 500, False), (500, 600, True), (600, 700, False)]


def test_retransmit_queue_islost_boundary_rfc6675() -> None:
    """IsLost(): more than (DupThresh-1)*SMSS SACKed above, or DupThresh SACKed segments above."""
    q = RetransmitQueue()
    q.sent_new(1000, 1700, 0.0)
    q.sack(1100, 1200)
    assert q.sacked_above_boundary(100, 3) == 0
    q.sack(1300, 1400)
    assert q.sacked_above_boundary(100, 3) == 0
    q.sack(1500, 1600)
    assert q.sacked_above_boundary(100, 3) == 1100  # three SACKed segments above 1000..1100


def test_sequence_comparisons_wrap() -> None:
    assert seq_lt(0xFFFFFFF0, 5) and seq_gt(5, 0xFFFFFFF0)
    assert seq_le(7, 7) and seq_ge(7, 7)
    assert seq_in_window(2, 0xFFFFFFFE, 10) and not seq_in_window(20, 0xFFFFFFFE, 10)
    assert unwrap(5, 0xFFFFFFF0) == 0x100000005
    assert unwrap(0xFFFFFFF0, 0x100000005) == 0xFFFFFFF0


def test_isn_rfc6528_clock_and_keyed_hash() -> None:
    """MUST-8 (clock-driven), SHLD-1/MUST-9 (keyed PRF)."""
    gen = IsnGenerator(b"k" * 16)
    t1 = FourTuple(b"\x0a\x00\x00\x01", 1000, b"\x0a\x00\x00\x02", 80)
    t2 = FourTuple(b"\x0a\x00\x00\x01", 1001, b"\x0a\x00\x00\x02", 80)
    assert (gen.isn(t1, 1.0) - gen.isn(t1, 0.0)) & 0xFFFFFFFF == 250_000
    assert gen.isn(t1, 0.0) != gen.isn(t2, 0.0)
    assert IsnGenerator(b"j" * 16).isn(t1, 0.0) != gen.isn(t1, 0.0)
    assert gen.isn(t1, 0.0) == 0x44DF8DC4 and gen.isn(t1, 2.0) == 0x44E72EE4  # F: BLAKE2s(key, addresses, ports)
    assert gen.isn(t1, 0.0) == gen.isn(t1, 0.0)  # the keyed state is copied for each ISN, never used up
