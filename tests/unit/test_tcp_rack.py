"""Loss recovery as modern stacks do it: RACK-TLP (RFC 8985), Limited Transmit (RFC 3042), the
RFC 6675 pipe out of recovery, RFC 6298 5.7, the restart window after idle (RFC 5681 4.1),
CUBIC's RFC 9438 4.3 rule, and the loss-detection setting that turns RACK-TLP off.

Each test loses chosen segments on the two-stack harness (10 ms each way, so SRTT = 20 ms)
and asserts on what went on the wire, when, and on the sender's counters.
"""
from __future__ import annotations

from collections.abc import Callable

import pytest

from toe_engine.counters import Counters
from toe_engine.impair import ImpairmentSpec
from toe_engine.loss_study import download
from toe_engine.runtime.endpoint import EndpointSettings, check_runtime_tcp
from toe_engine.segment import ACK, SYN, Segment
from toe_engine.tcp import State, TcpConfig
from toe_engine.tcp.congestion import Cubic
from toe_engine.tcp.testing import IP_A, IP_B, BulkTransfer, Harness, Impairment, drop_copies, pumping

ONE_WAY = 0.01


def data_sent(h: Harness, src: str = "a") -> list[tuple[float, Segment, bool]]:
    return [(s.time, s.seg, s.dropped) for s in h.trace if s.src == src and s.seg.payload]


def sender(cfg: TcpConfig, receiver: TcpConfig | None = None) -> tuple[Harness, object, object, int, int]:
    h = Harness(cfg, receiver or TcpConfig())
    ca, cb = h.establish()
    tcb = h.a.connection(ca)
    assert tcb is not None and tcb.rtt.srtt is not None
    return h, ca, cb, tcb.snd_nxt, tcb.snd_mss


def delivered(h: Harness, ca: object, cb: object, data: bytes, duration: float) -> Counters:
    """Send `data` from a, run `duration`, check b got it all; a's counters."""
    h.a.send(ca, data)
    h.run(duration=duration)
    assert h.b.recv(cb) == data
    return h.counters_a


def test_rack_repairs_a_loss_with_too_few_segments_for_three_duplicate_acks() -> None:
    """RFC 8985 6.2: two segments delivered after a lost one are enough. The retransmission leaves
    once RACK.rtt plus the reordering window (min_RTT / 4) passed since the original left."""
    h, ca, cb, base, mss = sender(TcpConfig(nodelay=True))
    h.drop_if = drop_copies({0: 1}, base)
    sent_at = h.now
    c = delivered(h, ca, cb, b"r" * (3 * mss), 1)
    assert c["rto_expired"] == 0 and c["rack_retransmits"] == 1 and c["retransmits"] == 1
    assert c["fast_retransmits"] == 1
    (retransmit,) = [t for t, seg, _ in data_sent(h) if seg.seq == base & 0xFFFFFFFF][1:]
    rtt = 2 * ONE_WAY
    assert sent_at + rtt + rtt / 4 <= retransmit + 1e-6 <= sent_at + 2 * rtt  # not at once, and not an RTO


def test_rack_detects_a_lost_retransmission() -> None:
    """RFC 8985 3.2: a retransmission that is lost again is found by the segments sent after it,
    without a timeout (the original hole and its first retransmission both dropped)."""
    h, ca, cb, base, mss = sender(TcpConfig(nodelay=True))
    h.drop_if = drop_copies({2 * mss: 2}, base)
    data = bytes(range(256)) * (200 * mss // 256)
    x = BulkTransfer(h.a, ca, h.b, cb, data, close_when_done=False)
    h.on_step = pumping(x)
    assert h.run(until=lambda: x.done, max_time=30)
    assert bytes(x.received) == data
    c = h.counters_a
    assert c["rto_expired"] == 0
    assert c["retransmits"] == 2 and c["rack_retransmits"] == 2


def test_tail_loss_probe_repairs_the_last_segment() -> None:
    """RFC 8985 7: the last segment of a flight is lost; a probe 2 * SRTT later resends it, the
    ACK shows the loss was repaired by it (cwnd reduced once), and no RTO fires."""
    h, ca, cb, base, mss = sender(TcpConfig(nodelay=True))
    h.drop_if = drop_copies({9 * mss: 1}, base)
    sent_at = h.now
    c = delivered(h, ca, cb, b"t" * (10 * mss), 2)
    assert c["rto_expired"] == 0 and c["tlp_probes"] == 1 and c["retransmits"] == 1
    assert c["tlp_recoveries"] == 1
    probe = data_sent(h)[-1]
    assert probe[1].seq == (base + 9 * mss) & 0xFFFFFFFF
    last_ack = max(s.time for s in h.trace if s.src == "b" and s.time < probe[0])
    srtt = 2 * ONE_WAY  # one segment left in flight: PTO = 2 * SRTT + WCDelAckT (200 ms)
    assert last_ack + 2 * srtt + 0.2 - 0.01 <= probe[0] <= last_ack + 4 * srtt + 0.2
    assert probe[0] - sent_at < 1.0  # well before the RTO
    tcb = h.a.connection(ca)
    assert tcb is not None and tcb.tlp_end is None


def test_limited_transmit_without_sack() -> None:
    """RFC 3042: each of the first two duplicate ACKs lets one new segment out beyond cwnd."""
    h, ca, cb, base, mss = sender(TcpConfig(nodelay=True, sack=False, initial_cwnd_segments=4), TcpConfig(sack=False))
    h.drop_if = drop_copies({0: 1}, base)
    h.a.send(ca, b"l" * (12 * mss))
    h.run(duration=2 * ONE_WAY + 0.001)  # the first flight's duplicate ACKs have just arrived
    sent = data_sent(h)
    assert len([1 for t, _, _ in sent if t == sent[0][0]]) == 4  # the initial window
    later = [seg.seq for t, seg, _ in sent if t > sent[0][0]]
    assert later[:2] == [(base + 4 * mss) & 0xFFFFFFFF, (base + 5 * mss) & 0xFFFFFFFF]
    h.run(duration=2)
    assert h.b.recv(cb) == b"l" * (12 * mss)
    assert h.counters_a["rto_expired"] == 0 and h.counters_a["fast_retransmits"] == 1


def test_sacked_bytes_leave_the_pipe_outside_recovery() -> None:
    """RFC 6675: SACKed octets are out of the pipe before recovery starts too, so each of the
    first two SACKs lets one new segment out (Limited Transmit, RFC 3042, with SACK)."""
    h, ca, cb, base, mss = sender(TcpConfig(nodelay=True, initial_cwnd_segments=4))
    h.drop_if = drop_copies({0: 1}, base)
    h.a.send(ca, b"p" * (12 * mss))
    h.run(duration=2 * ONE_WAY + 0.001)
    sent = data_sent(h)
    later = [seg.seq for t, seg, _ in sent if t > sent[0][0]]
    assert later[:2] == [(base + 4 * mss) & 0xFFFFFFFF, (base + 5 * mss) & 0xFFFFFFFF]
    h.run(duration=2)
    assert h.b.recv(cb) == b"p" * (12 * mss)


def test_dupack_setting_models_a_simple_toe() -> None:
    """loss_detection=dupack: no RACK, no TLP; two segments after a loss are not enough, the RTO repairs it."""
    h, ca, cb, base, mss = sender(TcpConfig(nodelay=True, loss_detection="dupack"))
    h.drop_if = drop_copies({0: 1}, base)
    c = delivered(h, ca, cb, b"d" * (3 * mss), 3)
    assert c["rto_expired"] == 1 and c["rack_retransmits"] == 0 and c["tlp_probes"] == 0


def test_loss_detection_is_a_validated_engine_setting() -> None:
    assert TcpConfig().loss_detection == "rack-tlp"
    with pytest.raises(ValueError, match="loss_detection 'fast'"):
        TcpConfig(loss_detection="fast")
    settings = EndpointSettings.parse({"addresses": ["10.0.0.1"], "tcp": {"loss_detection": "dupack"}})
    assert settings.tcp_config(1500).loss_detection == "dupack"
    assert check_runtime_tcp(TcpConfig(), {"loss_detection": "dupack"}) == {"loss_detection": "dupack"}  # `toe set`
    with pytest.raises(ValueError, match="tcp.loss_detection must be one of rack-tlp, dupack"):
        check_runtime_tcp(TcpConfig(), {"loss_detection": "rack"})
    cfg = TcpConfig()
    h = Harness(cfg, TcpConfig())
    ca, _ = h.establish()
    cfg.loss_detection = "dupack"  # as `set` applies it: connections opened from now on
    cd = h.a.connect(IP_A, IP_B, 80, h.now)
    h.run(duration=1)
    assert h.a.connection(ca).rack and not h.a.connection(cd).rack  # type: ignore[union-attr]


@pytest.mark.parametrize("loss_detection", ["dupack", "rack-tlp"])
def test_transfer_byte_exact_under_loss_reordering_and_duplication(loss_detection: str) -> None:
    imp = Impairment(loss=0.05, reorder=0.1, duplicate=0.05)
    cfg = TcpConfig(loss_detection=loss_detection)
    h = Harness(cfg, cfg, a_to_b=imp, b_to_a=imp, seed=3)
    h.keep_trace = False
    ca, cb = h.establish()
    up = bytes((i * 7 + 3) & 0xFF for i in range(65521)) * 8
    x = BulkTransfer(h.a, ca, h.b, cb, up)
    h.on_step = pumping(x)
    assert h.run(until=lambda: x.done, max_time=3000), "transfer stalled"
    assert bytes(x.received) == up


def test_data_after_a_timed_out_syn_starts_with_a_three_second_rto() -> None:
    """RFC 6298 5.7: the SYN timed out, so no RTT sample exists: data starts with RTO = 3 s,
    not the backed-off 2 s (and no probe: without SRTT there is no PTO)."""
    h = Harness(TcpConfig(), TcpConfig())
    first_syn = [True]

    def lose_first_syn(src: str, seg: Segment) -> bool:
        if src == "a" and seg.flags == SYN and first_syn[0]:
            first_syn[0] = False
            return True
        return False

    h.drop_if = lose_first_syn
    h.b.listen(None, 80)
    ca = h.a.connect(IP_A, IP_B, 80, 0.0)
    h.run(until=lambda: h.a.state(ca) is State.ESTABLISHED, max_time=10)
    tcb = h.a.connection(ca)
    assert tcb is not None and tcb.rtt.samples == 0
    assert tcb.rtt.rto == pytest.approx(3.0)
    h.drop_if = lambda src, seg: src == "a" and bool(seg.payload) and seg.seq == (tcb.snd_una & 0xFFFFFFFF)
    sent_at = h.now
    h.a.send(ca, b"x" * 100)
    h.run(duration=3.5)
    times = [t for t, _, _ in data_sent(h)]
    assert times[1] - sent_at == pytest.approx(3.0)


def test_cwnd_restarts_from_the_initial_window_after_idle() -> None:
    """RFC 5681 4.1: after more than an RTO without sending, at most IW segments leave at once."""
    h, ca, cb, base, mss = sender(TcpConfig(nodelay=True), TcpConfig(rcv_buf=4 << 20, wscale=8))
    x = BulkTransfer(h.a, ca, h.b, cb, bytes(2 << 20), close_when_done=False)
    h.on_step = pumping(x)
    assert h.run(until=lambda: x.done, max_time=60)
    h.on_step = None
    tcb = h.a.connection(ca)
    assert tcb is not None and tcb.cc.cwnd > 40 * mss
    h.run(duration=5)  # idle, far beyond the RTO
    h.trace.clear()
    h.a.send(ca, bytes(100 * mss))
    h.flush()
    burst = [s for s in h.trace if s.src == "a" and s.seg.payload]
    assert len(burst) == TcpConfig().initial_cwnd_segments
    assert tcb.cc.ssthresh >= 30 * mss  # the window's size is remembered


def test_cubic_alpha_becomes_one_once_w_est_reaches_cwnd_prior() -> None:
    """RFC 9438 4.3: the Reno-friendly estimate grows by alpha_cubic per window until it reaches
    cwnd_prior (the window before the reduction), then by one segment per window, as Reno does."""
    cc = Cubic(1000, 100)
    cc.ssthresh = 100_000  # in congestion avoidance at 100 segments
    cc.on_fast_retransmit(100_000, 0.0)  # cwnd_prior = 100 segments; cwnd = 70
    now = 0.0
    while cc._w_est < 100:  # tiny RTT: the Reno-friendly region, as on a LAN
        now += 0.0001
        cc.on_ack(1000, cc.cwnd, now, 0.0001)
    before, window = cc._w_est, cc.cwnd // 1000
    for _ in range(window):
        now += 0.0001
        cc.on_ack(1000, cc.cwnd, now, 0.0001)
    assert cc._w_est - before == pytest.approx(1.0, rel=0.05)


def test_engine_download_at_5_percent_loss_needs_at_most_one_rto_per_mib() -> None:
    """Two engine cores through seeded 5 % loss both ways (toe_engine.loss_study): the issue's target."""
    results = [download(ImpairmentSpec(delay_ms=1, loss=5), seed=seed) for seed in (1, 2, 3)]
    assert all(r.completed for r in results)
    assert sum(r.rtos for r in results) <= 3
    assert sum(r.rack_retransmits for r in results) > 0  # the losses were repaired by RACK instead


def hold_back_first_copy(base: int, offsets: set[int], extra: float) -> Callable[[str, Segment], float]:
    """Delay the first copy of each data segment at `base + offset` by `extra` seconds (reordering)."""
    held = {(base + off) & 0xFFFFFFFF for off in offsets}

    def rule(src: str, seg: Segment) -> float:
        if src == "a" and seg.payload and seg.seq in held:
            held.discard(seg.seq)
            return extra
        return 0.0

    return rule


@pytest.mark.parametrize("loss_detection, spurious", [("rack-tlp", 0), ("dupack", 1)])
def test_reordering_once_seen_widens_the_window(loss_detection: str, spurious: int) -> None:
    """RFC 8985 6.2 steps 3 and 4: a segment 3 ms late behind two others is waited for (min_RTT / 4
    = 5 ms) and, arriving below RACK.fack without a retransmission, shows reordering; then a segment
    3 ms late behind eight others is still not resent, where DupThresh fires a spurious retransmission."""
    h, ca, cb, base, mss = sender(TcpConfig(nodelay=True, loss_detection=loss_detection))
    h.delay_if = hold_back_first_copy(base, {0, 3 * mss}, 0.003)
    c = delivered(h, ca, cb, b"o" * (3 * mss), 1)
    assert c["retransmits"] == 0
    if loss_detection == "rack-tlp":
        assert h.a.connection(ca).rtxq.reordered  # type: ignore[union-attr]
    c = delivered(h, ca, cb, b"o" * (9 * mss), 1)
    assert c["retransmits"] == spurious and c["rto_expired"] == 0


def test_frto_detects_a_spurious_timeout_and_undoes_the_window_cut() -> None:
    """RFC 5682 (SACK-enhanced F-RTO) with RFC 4015's response: a flight held up past the RTO (a delay
    spike, nothing lost) is not resent go-back-N; two new segments go first, the ACK of data that
    was never retransmitted shows the timeout was spurious, and cwnd and ssthresh come back."""
    h, ca, cb, base, mss = sender(TcpConfig(nodelay=True))
    tcb = h.a.connection(ca)
    assert tcb is not None
    link_back = h.now + 1.3  # the path to b stalls until then, and then delivers in order

    def spike(src: str, seg: Segment) -> float:
        return max(0.0, link_back - (h.now + ONE_WAY)) if src == "a" else 0.0

    h.delay_if = spike
    before = (tcb.cc.cwnd, tcb.cc.ssthresh)
    c = delivered(h, ca, cb, bytes(8 * mss) + bytes(range(256)) * 40, 4)
    assert c["rto_expired"] == 1 and c["spurious_rtos"] == 1
    assert c["tlp_probes"] == 1 and c["retransmits"] == 1  # new data probed; one segment resent, no go-back-N
    assert tcb.recovery == 0 and (tcb.cc.cwnd, tcb.cc.ssthresh) >= before


def test_prr_keeps_sending_in_proportion_during_fast_recovery() -> None:
    """RFC 6937: entering fast recovery with 40 segments out and ssthresh 20, new data leaves for
    about every second segment the SACKs report delivered, from the start; RFC 6675's cwnd =
    ssthresh alone would send nothing until the pipe fell below 20 segments."""
    h, ca, cb, base, mss = sender(TcpConfig(nodelay=True, initial_cwnd_segments=40, rcv_buf=1 << 20, wscale=7))
    h.drop_if = lambda src, seg: src == "a"  # the flight goes nowhere: the SACKs below are crafted
    h.a.send(ca, bytes(120 * mss))
    h.flush()
    tcb = h.a.connection(ca)
    assert tcb is not None and tcb.snd_nxt - tcb.snd_una == 40 * mss
    new_after: list[int] = []
    for k in range(1, 40):
        ack = h.forge("b", cb, ACK, tsval_delta=k)
        ack.options.sack_blocks = (((base + mss) & 0xFFFFFFFF, (base + (k + 1) * mss) & 0xFFFFFFFF),)
        ack = Segment(ack.src_port, ack.dst_port, ack.seq, base & 0xFFFFFFFF, ACK, 0xFFFF, b"", ack.options)
        sent = [s for s in h.inject("a", ack) if s.payload]
        new_after += [k for s in sent if (s.seq - base) & 0xFFFFFFFF >= 40 * mss]
    assert h.counters_a["fast_retransmits"] == 1 and tcb.recovery == 1
    assert new_after and new_after[0] <= 6  # proportional sending from the first ACKs of recovery
    assert 15 <= len(new_after) <= 20  # about ssthresh / RecoverFS = 1/2 of the 36 delivered after entry


def test_dsack_widens_the_reordering_window_once_per_round() -> None:
    """RFC 8985 6.2 step 4 with RFC 2883: a D-SACK (a block below the cumulative ACK) shows a
    spurious retransmission: reo_wnd_mult grows by one, at most once per round trip of data."""
    h, ca, cb, base, mss = sender(TcpConfig(nodelay=True))
    h.a.send(ca, bytes(4 * mss))
    h.run(duration=1)
    tcb = h.a.connection(ca)
    assert tcb is not None and tcb.snd_una == tcb.snd_nxt and tcb.reo_wnd_mult == 1
    h.drop_if = lambda src, seg: src == "a"
    h.a.send(ca, bytes(2 * mss))
    h.flush()
    for k in (1, 2):
        dsack = h.forge("b", cb, ACK, tsval_delta=k)
        dsack.options.sack_blocks = (((base + mss) & 0xFFFFFFFF, (base + 2 * mss) & 0xFFFFFFFF),)
        h.inject("a", dsack)
    assert tcb.reo_wnd_mult == 2 and tcb.dsack_round == tcb.snd_nxt
    assert tcb.reo_wnd_persist == 16
    assert tcb._reo_wnd() == pytest.approx(min(2 * tcb.min_rtt / 4, tcb.rtt.srtt))  # type: ignore[operator]
