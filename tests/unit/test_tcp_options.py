"""MSS, window scaling (RFC 7323 2), timestamps and PAWS (RFC 7323 5), SACK (RFC 2018)."""
from __future__ import annotations

from toe_engine.segment import ACK, SYN, FourTuple, Segment, TcpOptions
from toe_engine.tcp import State, TcpConfig, TcpStack
from toe_engine.tcp.isn import IsnGenerator
from toe_engine.tcp.testing import IP_A, IP_B, BulkTransfer, Harness, pumping


def test_mss_only_on_syn_and_clamped() -> None:
    """MUST-14, MUST-65, MUST-16: MSS sent in SYNs only; we send no more than the peer takes."""
    h = Harness(TcpConfig(mss=1460), TcpConfig(mss=1000))
    ca, cb = h.establish()
    h.a.send(ca, b"a" * 20000)
    h.b.send(cb, b"b" * 20000)
    h.run(duration=2)
    for sent in h.trace:
        if sent.seg.flags & SYN:
            assert sent.seg.options.mss is not None
        else:
            assert sent.seg.options.mss is None
    assert max(len(s.seg.payload) for s in h.trace if s.src == "a") == 1000 - 12
    assert max(len(s.seg.payload) for s in h.trace if s.src == "b") == 1000 - 12


def test_missing_mss_option_means_536() -> None:
    """MUST-15: IPv4 send-MSS default is 536."""
    stack = TcpStack(TcpConfig(timestamps=False))
    stack.listen(None, 80)
    stack.on_segment(IP_B, IP_A, Segment(4000, 80, 100, 0, SYN, 8000), 0.0)
    (conn,) = stack.connections()
    tcb = stack.connection(conn)
    assert tcb is not None and tcb.snd_mss == 536


def run_with_wscale(shift: int, rcv_buf: int) -> Harness:
    cfg = TcpConfig(wscale=shift, rcv_buf=rcv_buf, snd_buf=rcv_buf)
    h = Harness(cfg, cfg)
    ca, cb = h.establish()
    data = bytes(range(256)) * 2048
    x = BulkTransfer(h.a, ca, h.b, cb, data)
    h.on_step = pumping(x)
    assert h.run(until=lambda: x.done, max_time=60)
    assert bytes(x.received) == data
    return h


def test_window_scale_shift_zero() -> None:
    h = run_with_wscale(0, 65535)
    syn = h.segments("a")[0]
    assert syn.options.wscale == 0
    assert all(s.window <= 65535 for s in h.segments("b"))
    assert max(s.window for s in h.segments("b") if not s.flags & SYN) > 60000


def test_window_scale_shift_fourteen() -> None:
    """RFC 7323 2.2: the window in a SYN is never scaled; afterwards it is shifted by 14."""
    h = run_with_wscale(14, 4 << 20)
    syn, synack = h.segments("a")[0], h.segments("b")[0]
    assert syn.options.wscale == 14 and synack.options.wscale == 14
    assert synack.window == 65535  # unscaled, capped
    later = [s.window for s in h.segments("b")[1:]]
    assert max(later) == (4 << 20) >> 14
    tcb = h.a.connection(h.a.connections()[0])
    assert tcb is None or tcb.snd_wscale == 14


def test_window_scale_needs_both_sides() -> None:
    h = Harness(TcpConfig(wscale=7), TcpConfig(wscale=None, rcv_buf=65535))
    ca, cb = h.establish()
    synack = h.segments("b")[0]
    assert synack.options.wscale is None
    a, b = h.a.connection(ca), h.b.connection(cb)
    assert a is not None and b is not None
    assert (a.snd_wscale, a.rcv_wscale, b.snd_wscale, b.rcv_wscale) == (0, 0, 0, 0)


def test_wscale_above_14_is_clamped() -> None:
    stack = TcpStack()
    stack.listen(None, 80)
    stack.on_segment(IP_B, IP_A, Segment(4000, 80, 100, 0, SYN, 8000, options=TcpOptions(mss=1460, wscale=15)), 0.0)
    tcb = stack.connection(stack.connections()[0])
    assert tcb is not None and tcb.snd_wscale == 14


def test_paws_rejects_old_timestamp() -> None:
    h = Harness()
    ca, cb = h.establish()
    h.a.send(ca, b"first")
    h.run(duration=1)
    assert h.b.recv(cb) == b"first"
    old = h.forge("a", ca, ACK, payload=b"replayed", tsval_delta=-5000)
    replies = h.inject("b", old)
    assert [r.flags for r in replies] == [ACK]
    assert h.counters_b["paws_rejected"] == 1
    assert h.b.readable(cb) == 0
    fresh = h.forge("a", ca, ACK, payload=b"fresh")
    h.inject("b", fresh)
    assert h.b.recv(cb) == b"fresh"


def test_timestamps_negotiated_only_if_both_offer() -> None:
    h = Harness(TcpConfig(timestamps=True), TcpConfig(timestamps=False))
    ca, cb = h.establish()
    assert all(s.seg.options.timestamp is None for s in h.trace if s.src == "b")
    assert all(s.seg.options.timestamp is None for s in h.trace[1:] if s.src == "a")


def sack_run(timestamps: bool) -> Harness:
    cfg = TcpConfig(timestamps=timestamps, nodelay=True)
    h = Harness(cfg, cfg)
    ca, cb = h.establish()
    tcb = h.a.connection(ca)
    assert tcb is not None
    first = tcb.snd_nxt
    mss = tcb.snd_mss
    holes = {(first + k * mss) & 0xFFFFFFFF for k in (0, 2, 4, 6, 8)}
    dropped: set[int] = set()

    def drop_once(src: str, seg: Segment) -> bool:
        if src == "a" and seg.payload and seg.seq in holes and seg.seq not in dropped:
            dropped.add(seg.seq)
            return True
        return False

    h.drop_if = drop_once
    h.a.send(ca, b"z" * (10 * mss))
    h.run(duration=5)
    assert h.b.recv(cb) == b"z" * (10 * mss)
    return h


def test_sack_blocks_report_holes_most_recent_first_max_three_with_timestamps() -> None:
    h = sack_run(timestamps=True)
    acks = [s for s in h.segments("b") if s.options.sack_blocks]
    assert acks
    assert max(len(s.options.sack_blocks) for s in acks) == 3
    widest = next(s for s in acks if len(s.options.sack_blocks) == 3)
    starts = [b[0] for b in widest.options.sack_blocks]
    assert starts == sorted(starts, reverse=True)  # in-order arrival: the newest block is highest
    assert h.counters_b["sack_blocks_sent"] >= sum(len(s.options.sack_blocks) for s in acks)


def test_sack_blocks_up_to_four_without_timestamps() -> None:
    h = sack_run(timestamps=False)
    assert max(len(s.options.sack_blocks) for s in h.segments("b")) == 4


class WrapIsn(IsnGenerator):
    def isn(self, four_tuple: FourTuple, now: float) -> int:
        return 0xFFFFFFFF - 3000


def test_transfer_across_sequence_wrap() -> None:
    h = Harness()
    h.a = TcpStack(TcpConfig(), counters=h.counters_a, isn=WrapIsn())
    h.b = TcpStack(TcpConfig(), counters=h.counters_b, isn=WrapIsn())
    ca, cb = h.establish()
    data = bytes(range(251)) * 400
    x = BulkTransfer(h.a, ca, h.b, cb, data)
    y = BulkTransfer(h.b, cb, h.a, ca, data)
    h.on_step = pumping(x, y)
    assert h.run(until=lambda: x.done and y.done, max_time=60)
    assert bytes(x.received) == data and bytes(y.received) == data
    assert any(s.seg.seq < 1 << 20 for s in h.trace if s.src == "a")  # it did wrap
    h.run(duration=1)
    assert h.a.state(ca) is State.TIME_WAIT and h.b.state(cb) is State.TIME_WAIT
