"""BBR (tcp/congestion/bbr.py): its filters, states and pacing, the delivery-rate samples it
reads, and what it does under loss, on the fake clock of the two-stack harness."""
from __future__ import annotations

import bisect
import random
from dataclasses import replace

import pytest

from toe_engine.loss_study import LAB_TCP, MIB, SETTINGS, download
from toe_engine.runtime.endpoint import DEFAULT_TCP, check_runtime_tcp
from toe_engine.segment import Segment
from toe_engine.tcp import State, TcpConfig, recovery
from toe_engine.tcp.congestion import bbr as bbr_module
from toe_engine.tcp.congestion import create
from toe_engine.tcp.congestion.bbr import CWND_MIN_SEGMENTS, DRAIN_GAIN, HIGH_GAIN, PACING_GAINS, Bbr, Mode, WindowedMax
from toe_engine.tcp.connection import Connection
from toe_engine.tcp.rtx_queue import RateSample, RetransmitQueue
from toe_engine.tcp.tcb import INF
from toe_engine.tcp.testing import BulkTransfer, Harness, Impairment, pumping

MSS = 1448
RTT = 0.02
BDP_RATE = 1_000_000.0  # octets per second at the harness bottleneck


# ---------------------------------------------------------------------- helpers


class Bottleneck:
    """A link of `rate` octets/s with an unbounded FIFO before it, for a's data segments: the
    harness's `delay_if` hook adds each segment's queueing and serialization delay."""

    def __init__(self, harness: Harness, rate: float) -> None:
        self.harness = harness
        self.rate = rate
        self.free_at = 0.0

    def __call__(self, src: str, seg: Segment) -> float:
        if src != "a" or not seg.payload:
            return 0.0
        now = self.harness.now
        self.free_at = max(now, self.free_at) + len(seg.payload) / self.rate
        return self.free_at - now

    def queue_delay(self) -> float:
        return max(0.0, self.free_at - self.harness.now)


def bulk_through_bottleneck(cc: str, seconds: float, *, trace: bool = False, loss: float = 0.0,
                            ) -> tuple[Harness, Connection, BulkTransfer, Bottleneck, list[tuple[float, float, int, int]]]:
    """a sends to b through a 1 MB/s bottleneck (10 ms each way) for `seconds`; returns the
    harness, a's connection, the transfer, the link and per-step (time, pacing rate, mode, cwnd)."""
    cfg = TcpConfig(congestion=cc, rcv_buf=4 * MIB, snd_buf=MIB, time_wait=1.0)
    h = Harness(cfg, cfg, a_to_b=Impairment(loss=loss), b_to_a=Impairment(loss=loss), seed=1)
    h.keep_trace = trace
    link = Bottleneck(h, BDP_RATE)
    h.delay_if = link
    ca, cb = h.establish()
    conn = h.a.connection(ca)
    assert conn is not None
    x = BulkTransfer(h.a, ca, h.b, cb, bytes(int(seconds * BDP_RATE * 2)), close_when_done=False)
    steps: list[tuple[float, float, int, int]] = []

    def step(harness: Harness) -> None:
        x.pump(harness.now)
        steps.append((harness.now, conn.cc.pacing_rate, int(getattr(conn.cc, "mode", -1)), conn.cc.cwnd))

    h.on_step = step
    h.run(duration=seconds)
    return h, conn, x, link, steps


class Rounds:
    """Feeds a Bbr synthetic rate samples, one per round trip, as the connection would."""

    def __init__(self, cc: Bbr) -> None:
        self.cc = cc
        self.q = RetransmitQueue()
        self.now = 0.0

    def sample(self, bw: float, *, rtt: float = RTT, in_flight: int | None = None, dt: float = RTT,
               recovery_state: int = recovery.OPEN, losses: int = 0) -> RateSample:
        """One ACK, `dt` after the last, that delivered a round trip's worth at `bw`."""
        q = self.q
        self.now += dt
        acked = max(int(bw * dt), MSS)
        rs = RateSample()
        rs.prior_delivered = q.delivered  # what was delivered when the newest range left
        q.delivered += acked
        q.delivered_time = self.now
        rs.delivered = acked
        rs.interval = dt
        rs.acked_sacked = acked
        rs.losses = losses
        rs.rtt = rtt
        rs.in_flight = in_flight if in_flight is not None else int(bw * rtt)
        rs.recovery = recovery_state
        rs.srtt = rtt
        self.cc.on_rate_sample(rs, q, self.now)
        return rs

    def to_probe_bw(self, bw: float = BDP_RATE) -> None:
        """STARTUP on a flat bandwidth: full after the plateau, then DRAIN, then PROBE_BW."""
        for _ in range(10):
            self.sample(bw)
            if self.cc.mode == Mode.PROBE_BW:
                return
        raise AssertionError(f"no PROBE_BW after 10 rounds: {self.cc.mode!r}")


def new_bbr(phase_seed: int = 3) -> Bbr:
    return Bbr(MSS, 10, rng=random.Random(phase_seed))


def in_probe_bw() -> tuple[Bbr, Rounds]:
    """A Bbr that went through STARTUP and DRAIN on a flat 1 MB/s, 20 ms path."""
    cc = new_bbr()
    r = Rounds(cc)
    r.to_probe_bw()
    return cc, r


# ---------------------------------------------------------------------- filters


def test_windowed_max_takes_a_new_max_at_once_and_drops_it_after_the_window() -> None:
    f = WindowedMax(10)
    assert f.update(0, 10.0) == 10.0
    assert f.update(1, 5.0) == 10.0
    assert f.update(3, 5.0) == 10.0
    assert f.update(6, 4.0) == 10.0
    assert f.update(10, 3.0) == 10.0  # the max of 0 is still in the window [0, 10]
    assert f.update(11, 1.0) == 5.0  # ... and not in [1, 11]: the second best takes over
    assert f.update(12, 7.0) == 7.0  # a new max at once
    assert f.update(30, 2.0) == 2.0  # nothing left in the window


def test_windowed_max_always_reports_a_sample_from_its_window() -> None:
    rng = random.Random(5)
    f = WindowedMax(10)
    samples: list[tuple[int, float]] = []
    t = 0
    for _ in range(3000):
        t += rng.choice((0, 1, 1, 1, 2, 5))
        v = rng.uniform(0, 100)
        samples.append((t, v))
        got = f.update(t, v)
        window = [value for when, value in samples if t - when <= 10]
        assert got in window
        assert got >= v
        assert got >= max(value for when, value in samples if when == t)


def test_rtprop_takes_a_lower_rtt_at_once_and_a_higher_one_only_after_ten_seconds() -> None:
    cc = new_bbr()
    r = Rounds(cc)
    r.sample(BDP_RATE, rtt=0.03)
    assert cc.min_rtt == 0.03
    r.sample(BDP_RATE, rtt=0.02)
    assert cc.min_rtt == 0.02
    stamp = cc.min_rtt_stamp
    while r.now + RTT <= stamp + 10.0:
        r.sample(BDP_RATE, rtt=0.025)
    assert cc.min_rtt == 0.02
    r.sample(BDP_RATE, rtt=0.025)  # 10 s on: the window expired, the higher RTT is RTprop now
    assert cc.min_rtt == 0.025 and cc.min_rtt_stamp == r.now


# ---------------------------------------------------------------------- delivery-rate samples


def test_rate_sample_of_a_flight_is_what_was_delivered_over_the_longer_of_send_and_ack_time() -> None:
    q = RetransmitQueue()
    for i in range(10):  # ten segments sent 1 ms apart from t = 0, first ACKed at 20 ms
        q.sent_new(i * MSS, (i + 1) * MSS, i * 0.001)
    newest = q.ack(MSS)
    rs = q.rate_sample(newest, 0.020, min_rtt=0.0)
    assert rs.delivered == MSS and rs.acked_sacked == MSS
    assert rs.interval == pytest.approx(0.020)  # ack elapsed 20 ms, send elapsed 0
    assert rs.rtt == pytest.approx(0.020)
    newest = q.ack(10 * MSS)  # the rest at 29 ms: 10 segments since the flight began
    rs = q.rate_sample(newest, 0.029, min_rtt=0.0)
    assert rs.prior_delivered == 0 and rs.delivered == 10 * MSS
    assert rs.interval == pytest.approx(0.029)
    assert rs.rate == pytest.approx(10 * MSS / 0.029)


def test_rate_sample_uses_the_send_interval_when_acks_come_compressed() -> None:
    q = RetransmitQueue()
    q.sent_new(0, 2 * MSS, 0.0)  # two segments at t = 0
    q.rate_sample(q.ack(MSS), 0.020, min_rtt=0.0)  # the first ACKed at 20 ms, the second still out
    for i in range(2, 12):
        q.sent_new(i * MSS, (i + 1) * MSS, 0.021 + (i - 2) * 0.0032)  # ten more, 21..50 ms
    rs = q.rate_sample(q.ack(12 * MSS), 0.052, min_rtt=0.0)  # all ACKed in one burst at 52 ms
    assert rs.delivered == 11 * MSS
    assert rs.interval == pytest.approx(0.0498)  # sent over 49.8 ms (from t = 0), ACKed over only 32
    q.sent_new(12 * MSS, 13 * MSS, 0.062)
    rs = q.rate_sample(q.ack(13 * MSS), 0.070, min_rtt=0.010)
    assert rs.interval == 0.0 and rs.rate == 0.0  # 8 ms < the 10 ms minimum RTT: not a valid sample


def test_rate_samples_are_app_limited_until_what_was_in_flight_is_delivered() -> None:
    q = RetransmitQueue()
    q.sent_new(0, MSS, 0.0)
    q.sent_new(MSS, 2 * MSS, 0.001)
    q.mark_app_limited(2 * MSS)
    q.sent_new(2 * MSS, 3 * MSS, 0.002)
    assert not q.rate_sample(q.ack(MSS), 0.02, 0.0).is_app_limited
    assert not q.rate_sample(q.ack(2 * MSS), 0.021, 0.0).is_app_limited
    assert q.rate_sample(q.ack(3 * MSS), 0.022, 0.0).is_app_limited  # sent after the mark
    q.sent_new(3 * MSS, 4 * MSS, 0.023)
    assert q.app_limited_until == 0 and not q.rate_sample(q.ack(4 * MSS), 0.043, 0.0).is_app_limited


def test_sacked_and_lost_octets_count_in_the_rate_sample() -> None:
    q = RetransmitQueue()
    for i in range(4):
        q.sent_new(i * MSS, (i + 1) * MSS, 0.0)
    added, newest = q.sack(2 * MSS, 4 * MSS)
    q.mark_range_lost(0, MSS, 1)
    rs = q.rate_sample(newest, 0.02, 0.0)
    assert added == 2 * MSS and rs.acked_sacked == 2 * MSS and rs.losses == MSS
    rs = q.rate_sample(q.ack(4 * MSS), 0.03, 0.0)  # the ACK covers the SACKed octets: only 2 new
    assert rs.acked_sacked == 2 * MSS and rs.losses == 0


# ---------------------------------------------------------------------- states


def test_startup_ends_after_three_rounds_without_25_percent_growth() -> None:
    cc = new_bbr()
    r = Rounds(cc)
    for k in range(5):
        bw = 100_000.0 * 2**k  # doubling each round
        r.sample(bw)
        assert cc.mode == Mode.STARTUP
    assert cc.pacing_gain == cc.cwnd_gain == HIGH_GAIN
    for n in range(1, 4):
        bw *= 1.05  # grows, but by less than 25 % over the three rounds
        r.sample(bw, in_flight=10 * int(bw * RTT))  # a queue: DRAIN must not end at once
        if n < 3:
            assert cc.mode == Mode.STARTUP and not cc.full_bw_reached
    assert cc.full_bw_reached and cc.mode == Mode.DRAIN
    assert cc.pacing_gain == pytest.approx(DRAIN_GAIN) and cc.cwnd_gain == pytest.approx(HIGH_GAIN)


def test_startup_goes_on_while_the_bandwidth_grows_by_a_quarter_a_round() -> None:
    cc = new_bbr()
    r = Rounds(cc)
    bw = 100_000.0
    for _ in range(12):
        r.sample(bw)
        bw *= 1.26
    assert cc.mode == Mode.STARTUP and not cc.full_bw_reached


def test_drain_lasts_until_in_flight_is_down_to_one_bdp() -> None:
    cc = new_bbr()
    r = Rounds(cc)
    for _ in range(4):
        r.sample(BDP_RATE, in_flight=200_000)
    assert cc.mode == Mode.DRAIN
    bdp = cc.inflight(cc.bw.get(), 1.0)
    for _ in range(3):
        r.sample(BDP_RATE, in_flight=bdp + MSS)
        assert cc.mode == Mode.DRAIN
    r.sample(BDP_RATE, in_flight=bdp)
    assert cc.mode == Mode.PROBE_BW
    assert cc.pacing_gain != 3 / 4 and cc.cwnd_gain == 2.0  # never the draining phase first


def test_probe_bw_cycles_through_its_eight_pacing_gains_one_rtprop_each() -> None:
    cc, r = in_probe_bw()
    bdp = int(BDP_RATE * RTT)
    seen = []
    for _ in range(40):  # in flight at 1.25 x BDP and more: the probe may end, the drain lasts its time
        r.sample(BDP_RATE, in_flight=2 * bdp, dt=RTT / 2 + 0.001)
        if not seen or seen[-1] != cc.cycle_idx:
            seen.append(cc.cycle_idx)
    start = seen.index(0)
    assert [PACING_GAINS[i] for i in seen[start:start + 8]] == list(PACING_GAINS)
    assert cc.bw.get() == pytest.approx(BDP_RATE)


def test_probe_rtt_after_ten_seconds_without_a_new_min_rtt_holds_four_segments_for_200_ms() -> None:
    cc, r = in_probe_bw()
    stamp = cc.min_rtt_stamp
    while r.now + RTT <= stamp + 10.0:
        r.sample(BDP_RATE, rtt=RTT + 0.001)  # never below RTprop
        assert cc.mode == Mode.PROBE_BW
    cwnd_before = cc.cwnd
    assert cwnd_before > 2 * CWND_MIN_SEGMENTS * MSS
    r.sample(BDP_RATE, rtt=RTT + 0.001, in_flight=40_000)
    assert cc.mode == Mode.PROBE_RTT and cc.cwnd == CWND_MIN_SEGMENTS * MSS
    assert cc.pacing_gain == cc.cwnd_gain == 1.0
    assert r.q.app_limited_until  # its samples do not count as bandwidth
    low_at = r.now + RTT
    r.sample(BDP_RATE, in_flight=CWND_MIN_SEGMENTS * MSS)  # in flight fell to 4 segments: 200 ms from now
    assert cc.probe_rtt_done == pytest.approx(low_at + 0.2)
    while r.now + RTT <= low_at + 0.2:
        r.sample(BDP_RATE, in_flight=CWND_MIN_SEGMENTS * MSS)
        assert cc.mode == Mode.PROBE_RTT and cc.cwnd == CWND_MIN_SEGMENTS * MSS
    r.sample(BDP_RATE, in_flight=CWND_MIN_SEGMENTS * MSS)
    assert cc.mode == Mode.PROBE_BW
    assert cc.cwnd >= min(cwnd_before, 2 * cc.bdp(cc.bw.get(), 1.0))  # back to its 2 x BDP
    assert cc.min_rtt_stamp == r.now  # and the next PROBE_RTT is 10 s away


def test_a_long_transfer_visits_probe_rtt_ten_seconds_in_for_200_ms_and_a_round_trip() -> None:
    _, conn, x, _, steps = bulk_through_bottleneck("bbr", 11.0)
    modes = [(t, mode, cwnd) for t, _, mode, cwnd in steps]
    begin = next(i for i, (_, mode, _) in enumerate(modes) if mode == Mode.PROBE_RTT)
    end = next(i for i in range(begin, len(modes)) if modes[i][1] != Mode.PROBE_RTT)
    start, stop = modes[begin][0], modes[end][0]
    assert 10.0 < start < 10.2  # RTprop (from the first round trips) expired
    assert 0.2 <= stop - start < 0.2 + 4 * RTT  # 200 ms once in flight is down, and a round trip
    assert max(cwnd for _, _, cwnd in modes[begin:end]) == CWND_MIN_SEGMENTS * MSS
    assert modes[end][1] == Mode.PROBE_BW and conn.cc.min_rtt_stamp >= stop
    assert len(x.received) > 0.9 * 10.5 * BDP_RATE  # the dip costs little


def test_fast_recovery_conserves_packets_for_a_round_then_restores_the_window() -> None:
    cc, r = in_probe_bw()
    before = cc.cwnd
    cc.on_fast_retransmit(before, r.now)
    assert cc.cwnd == before  # no multiplicative cut
    r.sample(BDP_RATE, in_flight=10 * MSS, recovery_state=recovery.FAST, losses=MSS)
    acked = max(int(BDP_RATE * RTT), MSS)
    assert cc.cwnd == 10 * MSS + acked  # packet conservation: in flight + what was delivered
    r.sample(BDP_RATE, in_flight=10 * MSS, recovery_state=recovery.OPEN)
    assert cc.cwnd >= before


def test_a_timeout_drops_cwnd_to_one_segment_and_the_window_comes_back_after_it() -> None:
    cc, r = in_probe_bw()
    before = cc.cwnd
    cc.on_rto(before, r.now)
    assert cc.cwnd == MSS
    r.sample(BDP_RATE, in_flight=MSS, recovery_state=recovery.LOSS)
    assert MSS < cc.cwnd < before
    r.sample(BDP_RATE, in_flight=MSS, recovery_state=recovery.OPEN)
    assert cc.cwnd >= before


def test_its_recovery_states_are_the_connections() -> None:
    assert (bbr_module.OPEN, bbr_module.FAST, bbr_module.LOSS) == (recovery.OPEN, recovery.FAST, recovery.LOSS)


# ---------------------------------------------------------------------- the connection, paced


def test_bbr_fills_a_bottleneck_with_little_queue_where_newreno_fills_the_buffer() -> None:
    h, conn, x, link, steps = bulk_through_bottleneck("bbr", 3.0)
    assert conn.cc.mode == Mode.PROBE_BW
    assert conn.cc.bw.get() == pytest.approx(BDP_RATE, rel=0.02)
    assert conn.cc.min_rtt == pytest.approx(RTT, abs=0.003)
    assert len(x.received) > 0.9 * 2.5 * BDP_RATE
    assert link.queue_delay() < 0.02
    h2, _, x2, link2, _ = bulk_through_bottleneck("newreno", 3.0)
    assert link2.queue_delay() > 0.2  # loss-based: the queue grows until the receive window stops it
    assert len(x.received) >= 0.95 * len(x2.received)


def test_pacing_holds_the_send_rate_to_the_pacing_rate() -> None:
    h, conn, x, link, steps = bulk_through_bottleneck("bbr", 3.0, trace=True)
    times = [s[0] for s in steps]
    sent = [(s.time, len(s.seg.payload)) for s in h.trace if s.src == "a" and s.seg.payload]
    quantum = conn.cc.send_quantum
    width = 0.05
    t0 = steps[0][0] + 1.0  # past STARTUP and DRAIN
    total_sent = total_paced = 0.0
    for k in range(30):
        lo, hi = t0 + k * width, t0 + (k + 1) * width
        n = sum(size for when, size in sent if lo <= when < hi)
        paced = 0.0  # the integral of the pacing rate over [lo, hi)
        i = bisect.bisect_right(times, lo) - 1
        t = lo
        while t < hi:
            nt = min(hi, times[i + 1]) if i + 1 < len(times) else hi
            paced += steps[i][1] * (nt - t)
            t = nt
            i += 1
        assert n <= paced + 2 * quantum, (lo, n, paced)
        total_sent += n
        total_paced += paced
    assert total_sent == pytest.approx(total_paced, rel=0.05)


def test_a_paced_connection_waits_on_its_own_timer() -> None:
    h, conn, x, link, steps = bulk_through_bottleneck("bbr", 1.0)
    assert conn.cc.mode == Mode.PROBE_BW
    assert conn.t_pace == conn.pace_next > h.now  # a quantum went; the next waits for the pacing timer
    assert conn.deadline() == conn.t_pace and h.a.next_timer() == conn.t_pace
    first = conn.snd_nxt
    h.a.on_timer(conn.t_pace - 1e-6)
    assert conn.snd_nxt == first
    h.a.on_timer(conn.t_pace)
    assert first < conn.snd_nxt <= first + conn.cc.send_quantum


def test_newreno_is_not_paced() -> None:
    h, conn, x, link, steps = bulk_through_bottleneck("newreno", 0.5)
    assert conn.t_pace == INF and conn.pace_next == 0.0
    assert conn.cc.pacing_rate == 0.0 and not conn.cc.rate_based


# ---------------------------------------------------------------------- loss


@pytest.mark.parametrize("seed", [1, 2])
def test_bbr_goodput_under_ten_percent_random_loss_is_far_above_newrenos(seed: int) -> None:
    spec = SETTINGS["loss=10%"]
    reno = download(spec, MIB, seed, replace(LAB_TCP, congestion="newreno"))
    model = download(spec, MIB, seed, replace(LAB_TCP, congestion="bbr"))
    assert reno.completed and model.completed
    assert model.seconds * 10 < reno.seconds, (model, reno)
    assert model.rtos <= 1


def test_bbr_keeps_most_of_a_bottleneck_under_ten_percent_loss() -> None:
    _, conn, x, _, _ = bulk_through_bottleneck("bbr", 3.0, loss=0.1)
    _, _, x2, _, _ = bulk_through_bottleneck("newreno", 3.0, loss=0.1)
    assert len(x.received) > 0.6 * 3.0 * BDP_RATE
    assert len(x.received) > 5 * len(x2.received)


def pattern(size: int, salt: int) -> bytes:
    block = bytes((i * 31 + salt) & 0xFF for i in range(65521))  # a prime length: no aligned repeats
    return (block * (size // len(block) + 1))[:size]


@pytest.mark.parametrize("imp", [Impairment(loss=0.05, reorder=0.1, duplicate=0.05), Impairment(loss=0.1)],
                         ids=["loss-reorder-duplicate", "loss10"])
def test_ten_megabytes_both_ways_byte_exact_under_loss_and_reordering(imp: Impairment) -> None:
    cfg = TcpConfig(congestion="bbr", time_wait=1.0)
    h = Harness(cfg, cfg, a_to_b=imp, b_to_a=imp, seed=11)
    h.keep_trace = False
    ca, cb = h.establish()
    size = 10 * MIB
    up, down = pattern(size, 1), pattern(size, 2)
    x = BulkTransfer(h.a, ca, h.b, cb, up)
    y = BulkTransfer(h.b, cb, h.a, ca, down)
    h.on_step = pumping(x, y)
    assert h.run(until=lambda: x.done and y.done, max_time=3000), "transfer stalled"
    assert bytes(x.received) == up and bytes(y.received) == down
    assert h.counters_a["retransmits"] > 0 and h.counters_b["retransmits"] > 0
    h.on_step = None
    h.a.close(ca)
    h.b.close(cb)
    h.run(duration=200)
    assert h.a.state(ca) is State.CLOSED and h.b.state(cb) is State.CLOSED


# ---------------------------------------------------------------------- selection


def test_bbr_is_selectable_by_name_and_not_the_default() -> None:
    assert TcpConfig().congestion == "newreno"
    assert isinstance(create("bbr", MSS, 10), Bbr)
    current = TcpConfig(mss=1460, tso_segments=1, **{k: v for k, v in DEFAULT_TCP.items() if k != "tso_segments"})
    assert check_runtime_tcp(current, {"congestion": "bbr"}) == {"congestion": "bbr"}
