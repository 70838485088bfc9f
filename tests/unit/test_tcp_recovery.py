"""Retransmission (RFC 6298), fast retransmit and recovery (RFC 5681/6582/6675), persist,
delayed ACKs, Nagle, keep-alive, ICMP and PMTU."""
from __future__ import annotations

from collections.abc import Callable

import pytest

from toe_engine.segment import ACK, SYN, Segment
from toe_engine.tcp import Error, IcmpError, State, TcpConfig
from toe_engine.tcp.congestion import ALGORITHMS, Cubic, NewReno, create
from toe_engine.tcp.testing import IP_A, IP_B, Harness


def data_segments(h: Harness, src: str = "a") -> list[tuple[float, Segment, bool]]:
    return [(s.time, s.seg, s.dropped) for s in h.trace if s.src == src and s.seg.payload]


def drop_first_copy_of(seqs: set[int]) -> Callable[[str, Segment], bool]:
    seen: set[int] = set()

    def rule(src: str, seg: Segment) -> bool:
        if src == "a" and seg.payload and seg.seq in seqs and seg.seq not in seen:
            seen.add(seg.seq)
            return True
        return False

    return rule


@pytest.mark.parametrize("loss_detection", ["dupack", "rack-tlp"])
def test_rto_doubles_under_repeated_loss(loss_detection: str) -> None:
    """MUST-19 exponential backoff (RFC 6298 5.5), capped at rto_max. With RACK-TLP one tail
    loss probe goes first, 2*SRTT + WCDelAckT (a lone segment) after the send (RFC 8985 7.2)."""
    h = Harness(TcpConfig(rto_max=16.0, retries2=8, loss_detection=loss_detection), TcpConfig())
    ca, cb = h.establish()
    h.drop_if = lambda src, seg: src == "a" and bool(seg.payload)
    h.a.send(ca, b"q" * 100, h.now)
    h.run(duration=200)
    times = [t for t, _, _ in data_segments(h)]
    gaps = [round(b - a, 3) for a, b in zip(times, times[1:])]
    probe = [0.24] if loss_detection == "rack-tlp" else []  # SRTT 20 ms on this harness
    assert gaps == probe + [1.0, 2.0, 4.0, 8.0, 16.0, 16.0, 16.0, 16.0]
    assert h.counters_a["rto_expired"] == 9 and h.counters_a["retransmits"] == 8 + len(probe)
    assert h.counters_a["tlp_probes"] == len(probe)
    assert h.a.state(ca) is State.CLOSED  # MUST-20: give up after R2
    assert Error(ca, "retransmission timeout", fatal=True) in h.events_a


def test_karn_no_rtt_sample_from_retransmitted_segment() -> None:
    """MUST-18: the ACK of a retransmitted segment gives no RTT sample (timestamps off). Duplicate-ACK
    loss detection, so that the retransmission is the RTO's (with RACK-TLP a probe would go first)."""
    cfg = TcpConfig(timestamps=False, loss_detection="dupack")
    h = Harness(cfg, cfg)
    ca, cb = h.establish()
    tcb = h.a.connection(ca)
    assert tcb is not None
    samples_before, srtt_before = tcb.rtt.samples, tcb.rtt.srtt
    h.drop_if = drop_first_copy_of({tcb.snd_nxt & 0xFFFFFFFF})
    h.a.send(ca, b"k" * 100)
    h.run(duration=5)
    assert h.b.recv(cb) == b"k" * 100
    assert h.counters_a["retransmits"] == 1
    assert tcb.rtt.samples == samples_before and tcb.rtt.srtt == srtt_before
    assert tcb.rtt.backoff == 1  # the backed-off RTO is kept until a valid sample
    h.a.send(ca, b"next")
    h.run(duration=1)
    assert tcb.rtt.samples == samples_before + 1 and tcb.rtt.backoff == 0


def test_fast_retransmit_newreno_three_dupacks() -> None:
    cfg = TcpConfig(sack=False, nodelay=True)
    h = Harness(cfg, cfg)
    ca, cb = h.establish()
    tcb = h.a.connection(ca)
    assert tcb is not None
    h.drop_if = drop_first_copy_of({(tcb.snd_nxt + 2 * tcb.snd_mss) & 0xFFFFFFFF})
    h.a.send(ca, b"n" * (8 * tcb.snd_mss))
    h.run(duration=2)
    assert h.b.recv(cb) == b"n" * (8 * tcb.snd_mss)
    assert h.counters_a["fast_retransmits"] == 1 and h.counters_a["retransmits"] == 1
    assert h.counters_a["rto_expired"] == 0
    assert h.counters_b["dup_acks_sent"] >= 3


def test_newreno_partial_ack_retransmits_next_hole() -> None:
    """RFC 6582: two losses in one window are repaired in one recovery, without a timeout."""
    cfg = TcpConfig(sack=False, nodelay=True)
    h = Harness(cfg, cfg)
    ca, cb = h.establish()
    tcb = h.a.connection(ca)
    assert tcb is not None
    mss = tcb.snd_mss
    h.drop_if = drop_first_copy_of({(tcb.snd_nxt + k * mss) & 0xFFFFFFFF for k in (1, 4)})
    h.a.send(ca, b"p" * (9 * mss))
    h.run(duration=2)
    assert h.b.recv(cb) == b"p" * (9 * mss)
    assert h.counters_a["fast_retransmits"] == 1 and h.counters_a["retransmits"] == 2
    assert h.counters_a["rto_expired"] == 0


def test_sack_recovery_repairs_several_holes_exactly() -> None:
    """RFC 6675: each lost segment is retransmitted once, nothing SACKed is resent."""
    cfg = TcpConfig(nodelay=True)
    h = Harness(cfg, cfg)
    ca, cb = h.establish()
    tcb = h.a.connection(ca)
    assert tcb is not None
    mss = tcb.snd_mss
    h.drop_if = drop_first_copy_of({(tcb.snd_nxt + k * mss) & 0xFFFFFFFF for k in (1, 3, 5)})
    h.a.send(ca, b"s" * (10 * mss))
    h.run(duration=2)
    assert h.b.recv(cb) == b"s" * (10 * mss)
    assert h.counters_a["fast_retransmits"] == 1 and h.counters_a["retransmits"] == 3
    assert h.counters_a["rto_expired"] == 0


@pytest.mark.parametrize("algorithm", [NewReno, Cubic])
def test_congestion_window_grows_and_reduces(algorithm: type) -> None:
    cc = algorithm(1000, 10)
    assert cc.cwnd == 10_000
    cc.on_ack(2000, 10_000, 0.0, 0.05)
    assert cc.cwnd == 12_000  # slow start, two segments per ACK at most
    cc.on_fast_retransmit(20_000, 1.0)
    expected = 10_000 if algorithm is NewReno else int(12_000 * 0.7)
    assert cc.ssthresh == expected and cc.cwnd == expected
    before = cc.cwnd
    for i in range(200):
        cc.on_ack(1000, cc.cwnd, 1.0 + i * 0.05, 0.05)
    assert cc.cwnd > before
    cc.on_rto(cc.cwnd, 20.0)
    assert cc.cwnd == 1000


def test_cubic_reaches_wmax_faster_than_newreno() -> None:
    """RFC 9438: the cubic curve returns to W_max quickly after a reduction."""
    cubic, reno = create("cubic", 1000, 100), create("newreno", 1000, 100)
    for cc in (cubic, reno):
        cc.ssthresh = 100_000
        cc.on_fast_retransmit(100_000, 0.0)
        now = 0.0
        for _ in range(400):  # 400 ACKs over 4 s at 10 ms RTT
            now += 0.01
            cc.on_ack(1000, cc.cwnd, now, 0.01)
    assert cubic.cwnd > reno.cwnd
    with pytest.raises(ValueError, match="known"):
        create("vegas", 1000, 10)


def test_zero_window_probing_with_backoff() -> None:
    """MUST-36 (probe), SHLD-29 (first after RTO), SHLD-30 (backoff), MUST-37 (indefinitely)."""
    h = Harness(TcpConfig(), TcpConfig(rcv_buf=8192, wscale=0))
    ca, cb = h.establish()
    h.a.send(ca, b"w" * 50_000)
    h.run(duration=600)
    assert h.a.state(ca) is State.ESTABLISHED and h.b.state(cb) is State.ESTABLISHED
    probes = h.counters_a["zero_window_probes"]
    assert 5 <= probes <= 20
    probe_times = [t for t, s, _ in data_segments(h) if len(s.payload) == 1]
    gaps = [b - a for a, b in zip(probe_times, probe_times[1:])]
    assert gaps[1] > gaps[0] and max(gaps) == pytest.approx(60.0)
    received = bytearray()
    while len(received) < 50_000:
        received += h.b.recv(cb)
        h.run(duration=0.5)
    assert bytes(received) == b"w" * 50_000


def test_nagle_coalesces_small_writes() -> None:
    """SHLD-7: with data unacknowledged, small writes wait and go out together."""
    h = Harness(TcpConfig(nodelay=False), TcpConfig())
    ca, cb = h.establish()
    for _ in range(10):
        h.a.send(ca, b"tiny")
    h.flush()
    h.run(duration=1)
    sizes = [len(s.payload) for _, s, _ in data_segments(h)]
    assert sizes == [4, 36]
    assert h.b.recv(cb) == b"tiny" * 10


def test_nodelay_sends_every_write() -> None:
    """MUST-17: the application can disable Nagle."""
    h = Harness(TcpConfig(nodelay=True), TcpConfig())
    ca, cb = h.establish()
    for _ in range(10):
        h.a.send(ca, b"tiny")
    h.run(duration=1)
    assert [len(s.payload) for _, s, _ in data_segments(h)] == [4] * 10


def test_nodelay_switch_at_runtime_flushes() -> None:
    h = Harness(TcpConfig(nodelay=False), TcpConfig())
    ca, cb = h.establish()
    h.a.send(ca, b"one")
    h.a.send(ca, b"two")
    h.flush()
    assert [len(s.payload) for _, s, _ in data_segments(h)] == [3]
    h.a.set_nodelay(ca, True)
    h.flush()
    assert [len(s.payload) for _, s, _ in data_segments(h)] == [3, 3]


def test_delayed_ack_bound_and_every_second_segment() -> None:
    """MUST-40 (delay under 0.5 s), SHLD-18, SHLD-19 (ACK every second full-sized segment)."""
    h = Harness(TcpConfig(nodelay=True), TcpConfig(delayed_ack=0.2))
    ca, cb = h.establish()
    h.trace.clear()
    h.a.send(ca, b"d" * 10)
    h.run(duration=1)
    (data,) = [s for s in h.trace if s.src == "a" and s.seg.payload]
    (ack,) = [s for s in h.trace if s.src == "b"]
    assert ack.time - (data.time + 0.01) == pytest.approx(0.2)
    h.trace.clear()
    mss = h.a.connection(ca).snd_mss  # type: ignore[union-attr]
    h.a.send(ca, b"f" * (6 * mss))
    h.run(duration=1)
    acks = [s for s in h.trace if s.src == "b"]
    assert len(acks) == 3
    with pytest.raises(ValueError, match="MUST-40"):
        TcpConfig(delayed_ack=0.5)


def test_out_of_order_data_is_acked_at_once() -> None:
    """MAY-13 / RFC 5681 4.2: out-of-order data and hole fills get an immediate ACK."""
    h = Harness(TcpConfig(nodelay=True), TcpConfig(delayed_ack=0.2))
    ca, cb = h.establish()
    tcb = h.a.connection(ca)
    assert tcb is not None
    h.drop_if = drop_first_copy_of({tcb.snd_nxt & 0xFFFFFFFF})
    h.trace.clear()
    sent_at = h.now
    h.a.send(ca, b"o" * (3 * tcb.snd_mss), h.now)
    h.run(duration=0.015)  # the two duplicate ACKs only (RACK resends the hole by 0.03 s)
    acks = [s for s in h.trace if s.src == "b"]
    assert len(acks) == 2 and all(a.time == pytest.approx(sent_at + 0.01) for a in acks)
    assert all(a.seg.options.sack_blocks for a in acks)
    h.run(duration=2)
    hole_fill_ack = [s for s in h.trace if s.src == "b"][2]
    retransmit = [s for s in h.trace if s.src == "a" and s.seg.payload][-1]
    assert hole_fill_ack.time == pytest.approx(retransmit.time + 0.01)  # not delayed by 0.2 s


def test_keepalive_probes_idle_connection_and_aborts_dead_peer() -> None:
    """MUST-24..MUST-29: off by default, only when idle, configurable, tolerant of lost ACKs."""
    assert TcpConfig().keepalive is False and TcpConfig().keepalive_idle >= 7200
    cfg = TcpConfig(keepalive=True, keepalive_idle=10.0, keepalive_interval=2.0, keepalive_probes=3)
    h = Harness(cfg, TcpConfig())
    ca, cb = h.establish()
    h.run(duration=35)
    assert h.counters_a["keepalives_sent"] == 3  # at 10, 20, 30 s; each answered
    assert h.a.state(ca) is State.ESTABLISHED
    probe = next(s.seg for s in h.trace if s.src == "a" and s.time > 5)
    assert probe.payload == b""
    h.drop_if = lambda src, seg: src == "b"
    h.run(duration=30)
    assert h.a.state(ca) is State.CLOSED
    assert Error(ca, "keepalive timeout", fatal=True) in h.events_a


def test_icmp_hard_error_aborts_only_in_syn_sent() -> None:
    """SHLD-26 in SYN-SENT; RFC 5927: soft in synchronized states; MUST-56 for codes 0, 1, 5."""
    h = Harness()
    h.drop_if = lambda src, seg: True
    ca = h.a.connect(IP_A, IP_B, 80, 0.0)
    h.a.on_icmp_error(ca, IcmpError.HOST_UNREACHABLE, 0.1)
    assert h.a.state(ca) is State.SYN_SENT
    h.a.on_icmp_error(ca, IcmpError.PORT_UNREACHABLE, 0.2)
    assert h.a.state(ca) is State.CLOSED
    assert Error(ca, "port unreachable", fatal=True) in h.a.poll_events()

    h2 = Harness()
    ca2, _ = h2.establish()
    for kind in (IcmpError.PORT_UNREACHABLE, IcmpError.NET_UNREACHABLE, IcmpError.TIME_EXCEEDED,
                 IcmpError.PARAMETER_PROBLEM, IcmpError.SOURCE_QUENCH):
        h2.a.on_icmp_error(ca2, kind, h2.now)
    assert h2.a.state(ca2) is State.ESTABLISHED
    errors = [e for e in h2.a.poll_events() if isinstance(e, Error)]
    assert len(errors) == 4 and not any(e.fatal for e in errors)  # MUST-55: source quench is silent


def test_icmp_with_sequence_outside_flight_is_ignored() -> None:
    h = Harness()
    ca, _ = h.establish()
    tcb = h.a.connection(ca)
    assert tcb is not None
    h.a.on_icmp_error(ca, IcmpError.FRAG_NEEDED, h.now, mtu=600, seq=(tcb.snd_nxt + 100000) & 0xFFFFFFFF)
    assert tcb.pmtu_mss == 1460


def test_frag_needed_lowers_mss_and_retransmits_smaller() -> None:
    h = Harness(TcpConfig(nodelay=True), TcpConfig())
    ca, cb = h.establish()
    h.drop_if = lambda src, seg: src == "a" and len(seg.payload) > 1000 - 40 - 12
    h.a.send(ca, b"m" * 5000)
    h.flush()
    h.a.on_icmp_error(ca, IcmpError.FRAG_NEEDED, h.now, mtu=1000)
    h.run(duration=1)
    assert h.b.recv(cb) == b"m" * 5000
    tcb = h.a.connection(ca)
    assert tcb is not None and tcb.snd_mss == 1000 - 40 - 12
    assert h.counters_a["rto_expired"] == 0


def test_syn_not_retransmitted_after_establishment() -> None:
    h = Harness()
    h.establish()
    h.run(duration=10)
    assert sum(1 for s in h.trace if s.seg.flags & SYN) == 2
    assert all(s.seg.flags & ACK for s in h.trace if not s.seg.flags == SYN)


def test_create_makes_each_algorithm_by_its_name_and_names_the_known_ones() -> None:
    for name, cls in ALGORITHMS.items():
        made = create(name, 1448, 10)
        assert type(made) is cls and made.mss == 1448 and made.initial_segments == 10
    with pytest.raises(ValueError, match="unknown congestion control 'vegas'; known: bbr, cubic, newreno$"):
        create("vegas", 1448, 10)
