"""BBR v1 (Linux tcp_bbr.c): congestion control from a model of the path, not from loss.

The model is two numbers: BtlBw, the bottleneck bandwidth, the windowed maximum of the
delivery rate over the last 10 round trips, and RTprop, the minimum RTT over the last 10 s.
BBR paces at pacing_gain x BtlBw and keeps at most cwnd_gain x BtlBw x RTprop in flight (the
BDP, plus quanta for TSO bursts, delayed ACKs and ACK aggregation). Its states set the gains:

- STARTUP: both gains 2/ln 2 (about 2.89), so the rate doubles every round trip, until three
  rounds in a row fail to grow the bandwidth by 25 % (the pipe is full);
- DRAIN: pacing gain 1/2.89 until what is in flight is down to one BDP (the queue STARTUP
  built is gone);
- PROBE_BW: cwnd gain 2 and an 8-phase pacing-gain cycle, 5/4, 3/4, then six of 1, each phase
  about one RTprop long: probe for more bandwidth, drain what the probe queued, cruise;
- PROBE_RTT: when no RTT as low as RTprop was seen for 10 s, cwnd falls to 4 segments for
  200 ms and a round trip, to measure the RTT without a queue.

Random loss does not shrink the model, so BBR keeps its rate where loss-based algorithms
halve theirs; in fast recovery it only conserves packets for one round trip and restores its
window after. Sizes are in octets and times in seconds where Linux counts packets and
microseconds. Not modelled: Linux's long-term bandwidth sampling for policers (lt_bw).
"""
from __future__ import annotations

import math
import random
from enum import IntEnum
from typing import TYPE_CHECKING

from toe_engine.tcp.congestion.base import CongestionControl

if TYPE_CHECKING:
    from toe_engine.tcp.rtx_queue import RateSample, RetransmitQueue

HIGH_GAIN = 2 / math.log(2)  # STARTUP: the smallest gain that doubles the sending rate each round
DRAIN_GAIN = 1 / HIGH_GAIN
CWND_GAIN = 2.0
PACING_GAINS = (5 / 4, 3 / 4, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)  # PROBE_BW's cycle, one phase per RTprop
CYCLE_RAND = 7  # PROBE_BW starts in a random phase, never the 3/4 one
BW_WINDOW_ROUNDS = len(PACING_GAINS) + 2  # BtlBw: the max over 10 round trips
MIN_RTT_WINDOW = 10.0  # RTprop: the min over 10 s ...
PROBE_RTT_TIME = 0.2  # ... refreshed by PROBE_RTT, which holds cwnd at 4 segments for 200 ms
CWND_MIN_SEGMENTS = 4
FULL_BW_THRESH = 1.25  # STARTUP ends when 3 rounds in a row grow BtlBw by less than 25 %
FULL_BW_COUNT = 3
PACING_MARGIN = 0.01  # pace 1 % below the estimate, so the bottleneck queue stays empty
PACING_SHIFT = 10  # a send quantum is about 1/1024 s of the pacing rate (Linux sk_pacing_shift)
MAX_QUANTUM = 65535 - 1 - 320  # GSO_LEGACY_MAX_SIZE - 1 - MAX_TCP_HEADER
MIN_TSO_RATE = 1_200_000 / 8  # below 1.2 Mbit/s a quantum is one segment, else at least two
EXTRA_ACKED_GAIN = 1.0
EXTRA_ACKED_WINDOW_ROUNDS = 5
EXTRA_ACKED_MAX_TIME = 0.1  # ACK aggregation may add at most 100 ms of BtlBw to cwnd
ACK_EPOCH_RESET_SEGMENTS = 1 << 20
NOMINAL_RTT = 0.001  # pacing before the first RTT sample assumes 1 ms
# the connection's recovery states (tcp.recovery OPEN, FAST, LOSS; not imported, to keep the plug-in a leaf)
OPEN, FAST, LOSS = 0, 1, 2

_PHASES = random.Random(0x62627231)  # PROBE_BW start phases: seeded, so runs repeat, but varied per flow


class Mode(IntEnum):
    STARTUP = 0
    DRAIN = 1
    PROBE_BW = 2
    PROBE_RTT = 3


class WindowedMax:
    """Kathleen Nichols' windowed max filter (Linux lib/minmax.c): the best, second-best and
    third-best samples of the last `window` time units, so the max of a window is known
    exactly at every step, in O(1), without storing the window."""

    __slots__ = ("window", "s")

    def __init__(self, window: float, t: float = 0, v: float = 0) -> None:
        self.window = window
        self.s = [(t, v)] * 3

    def get(self) -> float:
        return self.s[0][1]

    def reset(self, t: float, v: float) -> float:
        self.s = [(t, v)] * 3
        return v

    def update(self, t: float, v: float) -> float:
        """minmax_running_max(): take sample `v` at time `t` (never earlier than the last)."""
        s = self.s
        win = self.window
        if v >= s[0][1] or t - s[2][0] > win:
            return self.reset(t, v)  # a new max, or nothing left in the window
        val = (t, v)
        if v >= s[1][1]:
            s[2] = s[1] = val
        elif v >= s[2][1]:
            s[2] = val
        dt = t - s[0][0]
        if dt > win:  # the best expired: promote the others (twice if the second expired too)
            s[0], s[1], s[2] = s[1], s[2], val
            if t - s[0][0] > win:
                s[0], s[1], s[2] = s[1], s[2], val
        elif s[1][0] == s[0][0] and dt > win / 4:
            s[2] = s[1] = val  # a quarter window without a new second-best: take one from it
        elif s[2][0] == s[1][0] and dt > win / 2:
            s[2] = val  # half a window without a new third-best
        return s[0][1]


class Bbr(CongestionControl):
    """BBR v1; the connection calls `on_rate_sample` on every ACK and paces by `pacing_rate`."""

    __slots__ = ("pacing_rate", "mode", "bw", "min_rtt", "min_rtt_stamp", "round_count", "next_round_delivered",
                 "round_start", "full_bw", "full_bw_count", "full_bw_reached", "cycle_idx", "cycle_stamp",
                 "pacing_gain", "cwnd_gain", "prior_cwnd", "prev_state", "packet_conservation", "idle_restart",
                 "probe_rtt_done", "probe_rtt_round_done", "has_seen_rtt", "ack_epoch_stamp", "ack_epoch_acked",
                 "extra_acked", "extra_acked_idx", "extra_acked_rounds", "_rng")
    name = "bbr"
    rate_based = True

    def __init__(self, mss: int, initial_window_segments: int, rng: random.Random | None = None) -> None:
        super().__init__(mss, initial_window_segments)
        self._rng = rng if rng is not None else _PHASES
        self.mode = Mode.STARTUP
        self.bw = WindowedMax(BW_WINDOW_ROUNDS)  # BtlBw in octets/s, over round trips
        self.min_rtt = math.inf  # RTprop, seconds
        self.min_rtt_stamp = 0.0
        self.round_count = 0
        self.next_round_delivered = 0
        self.round_start = False
        self.full_bw = 0.0
        self.full_bw_count = 0
        self.full_bw_reached = False
        self.cycle_idx = 0
        self.cycle_stamp = 0.0
        self.pacing_gain = HIGH_GAIN
        self.cwnd_gain = HIGH_GAIN
        self.prior_cwnd = 0
        self.prev_state = OPEN
        self.packet_conservation = False
        self.idle_restart = False
        self.probe_rtt_done = 0.0  # when PROBE_RTT may end (0: its low inflight not reached yet)
        self.probe_rtt_round_done = False
        self.has_seen_rtt = False
        self.ack_epoch_stamp = 0.0
        self.ack_epoch_acked = 0
        self.extra_acked = [0, 0]
        self.extra_acked_idx = 0
        self.extra_acked_rounds = 0
        self.pacing_rate = 0.0
        self._init_pacing_rate(None)

    # ------------------------------------------------------------------ the plug-in interface

    @property
    def send_quantum(self) -> int:
        """bbr_tso_segs_goal(): about 1 ms of the pacing rate, whole segments, at least two."""
        mss = self.mss
        size = min(int(self.pacing_rate) >> PACING_SHIFT, MAX_QUANTUM)
        segments = max(size // mss, 1 if self.pacing_rate < MIN_TSO_RATE else 2)
        return min(segments, 0x7F) * mss

    def on_ack(self, acked: int, flight: int, now: float, srtt: float | None) -> None:
        """Nothing: BBR's window follows its model, in on_rate_sample."""

    def on_fast_retransmit(self, flight: int, now: float) -> None:
        """Linux's bbr_ssthresh(): no cut; the window before recovery is noted, for after it."""
        self._save_cwnd()

    def on_rto(self, flight: int, now: float) -> None:
        """A timeout: cwnd to one segment (tcp_enter_loss), prior window noted; the plateau
        search starts over and the timeout ends a round (bbr_set_state(TCP_CA_Loss))."""
        self._save_cwnd()
        self.cwnd = self.mss
        self.prev_state = LOSS
        self.full_bw = 0.0
        self.round_start = True

    def on_recovery_end(self, now: float) -> None:
        """Nothing here: the window is restored on the next ACK, when the state is back to OPEN."""

    def on_idle(self, now: float) -> None:
        """Sending restarts from idle (CA_EVENT_TX_START): no restart window (Linux skips it for
        BBR), but pace at BtlBw in PROBE_BW and let PROBE_RTT end if its time is up."""
        self.idle_restart = True
        self.ack_epoch_stamp = now
        self.ack_epoch_acked = 0
        if self.mode == Mode.PROBE_BW:
            self._set_pacing_rate(self.bw.get(), 1.0, None)
        elif self.mode == Mode.PROBE_RTT:
            self._check_probe_rtt_done(now)

    def on_rate_sample(self, rs: RateSample, rates: RetransmitQueue, now: float) -> None:
        """bbr_main(): update the model, then the pacing rate and cwnd from it."""
        self._update_bw(rs, rates)
        self._update_ack_aggregation(rs, rates)
        self._update_cycle_phase(rs, rates)
        self._check_full_bw_reached(rs)
        self._check_drain(rs, rates)
        self._update_min_rtt(rs, rates, now)
        self._update_gains()
        bw = self.bw.get()
        self._set_pacing_rate(bw, self.pacing_gain, rs.srtt)
        self._set_cwnd(rs, rates, bw)

    # ------------------------------------------------------------------ the model

    def bdp(self, bw: float, gain: float) -> int:
        """gain x BtlBw x RTprop in octets; the initial window until there is an RTT."""
        if self.min_rtt == math.inf:
            return self.initial_segments * self.mss
        return math.ceil(bw * self.min_rtt * gain)

    def inflight(self, bw: float, gain: float) -> int:
        """bbr_inflight(): the BDP with the quantization budget."""
        return self._quantization_budget(self.bdp(bw, gain))

    def _quantization_budget(self, cwnd: int) -> int:
        mss = self.mss
        segments = -(-cwnd // mss) + 3 * (self.send_quantum // mss)  # room for three TSO bursts ...
        segments = (segments + 1) & ~1  # ... an even number, for delayed ACKs ...
        if self.mode == Mode.PROBE_BW and self.cycle_idx == 0:
            segments += 2  # ... and the 5/4 probe gets above the BDP even when it is small
        return segments * mss

    def _update_bw(self, rs: RateSample, rates: RetransmitQueue) -> None:
        """Count round trips by delivery, and feed BtlBw (app-limited samples only if higher)."""
        self.round_start = False
        if rs.delivered < 0 or rs.interval <= 0:
            return
        if rs.prior_delivered >= self.next_round_delivered:
            self.next_round_delivered = rates.delivered
            self.round_count += 1
            self.round_start = True
            self.packet_conservation = False
        bw = rs.delivered / rs.interval
        if not rs.is_app_limited or bw >= self.bw.get():
            self.bw.update(self.round_count, bw)

    def _update_ack_aggregation(self, rs: RateSample, rates: RetransmitQueue) -> None:
        """Estimate how much more arrives in ACK bursts than BtlBw explains (extra_acked)."""
        if rs.acked_sacked <= 0 or rs.delivered < 0 or rs.interval <= 0:
            return
        if self.round_start:
            self.extra_acked_rounds = min(0x1F, self.extra_acked_rounds + 1)
            if self.extra_acked_rounds >= EXTRA_ACKED_WINDOW_ROUNDS:
                self.extra_acked_rounds = 0
                self.extra_acked_idx ^= 1
                self.extra_acked[self.extra_acked_idx] = 0
        delivered_time = rates.delivered_time
        expected = self.bw.get() * (delivered_time - self.ack_epoch_stamp)
        if (self.ack_epoch_acked <= expected
                or self.ack_epoch_acked + rs.acked_sacked >= ACK_EPOCH_RESET_SEGMENTS * self.mss):
            self.ack_epoch_acked = 0  # ACKs arrive no faster than BtlBw: a new epoch
            self.ack_epoch_stamp = delivered_time
            expected = 0.0
        self.ack_epoch_acked += rs.acked_sacked
        extra = min(int(self.ack_epoch_acked - expected), self.cwnd)
        if extra > self.extra_acked[self.extra_acked_idx]:
            self.extra_acked[self.extra_acked_idx] = extra

    def _ack_aggregation_cwnd(self) -> int:
        if not self.full_bw_reached:
            return 0
        extra = int(EXTRA_ACKED_GAIN * max(self.extra_acked))
        return min(extra, int(self.bw.get() * EXTRA_ACKED_MAX_TIME))

    def _update_cycle_phase(self, rs: RateSample, rates: RetransmitQueue) -> None:
        if self.mode == Mode.PROBE_BW and self._is_next_cycle_phase(rs, rates):
            self._advance_cycle_phase(rates.delivered_time)

    def _is_next_cycle_phase(self, rs: RateSample, rates: RetransmitQueue) -> bool:
        """A phase lasts an RTprop; the probe longer, until it lost or filled gain x BDP; the
        drain shorter, as soon as in flight is down to one BDP."""
        full_length = rates.delivered_time - self.cycle_stamp > self.min_rtt
        gain = self.pacing_gain
        if gain == 1.0:
            return full_length
        prior_in_flight = rs.in_flight + rs.acked_sacked + rs.losses  # the pipe before this ACK
        bw = self.bw.get()
        if gain > 1.0:
            return full_length and (rs.losses > 0 or prior_in_flight >= self.inflight(bw, gain))
        return full_length or prior_in_flight <= self.inflight(bw, 1.0)

    def _advance_cycle_phase(self, stamp: float) -> None:
        self.cycle_idx = (self.cycle_idx + 1) % len(PACING_GAINS)
        self.cycle_stamp = stamp

    def _check_full_bw_reached(self, rs: RateSample) -> None:
        """STARTUP's exit test, once per round: did BtlBw grow by 25 % in the last 3 rounds?"""
        if self.full_bw_reached or not self.round_start or rs.is_app_limited:
            return
        bw = self.bw.get()
        if bw >= self.full_bw * FULL_BW_THRESH:
            self.full_bw = bw
            self.full_bw_count = 0
            return
        self.full_bw_count += 1
        self.full_bw_reached = self.full_bw_count >= FULL_BW_COUNT

    def _check_drain(self, rs: RateSample, rates: RetransmitQueue) -> None:
        if self.mode == Mode.STARTUP and self.full_bw_reached:
            self.mode = Mode.DRAIN
            self.ssthresh = self.inflight(self.bw.get(), 1.0)
        if self.mode == Mode.DRAIN and rs.in_flight <= self.inflight(self.bw.get(), 1.0):
            self._reset_probe_bw_mode(rates.delivered_time)  # the queue is drained

    def _reset_probe_bw_mode(self, stamp: float) -> None:
        self.mode = Mode.PROBE_BW
        self.cycle_idx = len(PACING_GAINS) - 1 - self._rng.randrange(CYCLE_RAND)
        self._advance_cycle_phase(stamp)  # so never the 3/4 phase first

    def _update_min_rtt(self, rs: RateSample, rates: RetransmitQueue, now: float) -> None:
        """RTprop: the lowest RTT, or a new one once the old is 10 s old; an expired RTprop
        sends BBR to PROBE_RTT, which ends 200 ms and a round trip after in flight fell to 4 segments."""
        expired = now > self.min_rtt_stamp + MIN_RTT_WINDOW
        if rs.rtt >= 0 and (rs.rtt < self.min_rtt or expired):
            self.min_rtt = rs.rtt
            self.min_rtt_stamp = now
        if expired and not self.idle_restart and self.mode != Mode.PROBE_RTT:
            self.mode = Mode.PROBE_RTT
            self._save_cwnd()
            self.probe_rtt_done = 0.0
        if self.mode == Mode.PROBE_RTT:
            rates.mark_app_limited(rs.in_flight)  # its low rate is no bandwidth sample
            if not self.probe_rtt_done and rs.in_flight <= CWND_MIN_SEGMENTS * self.mss:
                self.probe_rtt_done = now + PROBE_RTT_TIME
                self.probe_rtt_round_done = False
                self.next_round_delivered = rates.delivered
            elif self.probe_rtt_done:
                if self.round_start:
                    self.probe_rtt_round_done = True
                if self.probe_rtt_round_done:
                    self._check_probe_rtt_done(now)
        if rs.delivered > 0:
            self.idle_restart = False

    def _check_probe_rtt_done(self, now: float) -> None:
        if not (self.probe_rtt_done and now > self.probe_rtt_done):
            return
        self.min_rtt_stamp = now  # RTprop counts as fresh: the next PROBE_RTT is 10 s away
        self.cwnd = max(self.cwnd, self.prior_cwnd)
        if self.full_bw_reached:
            self._reset_probe_bw_mode(now)
        else:
            self.mode = Mode.STARTUP

    def _update_gains(self) -> None:
        mode = self.mode
        if mode == Mode.STARTUP:
            self.pacing_gain = self.cwnd_gain = HIGH_GAIN
        elif mode == Mode.DRAIN:
            self.pacing_gain, self.cwnd_gain = DRAIN_GAIN, HIGH_GAIN
        elif mode == Mode.PROBE_BW:
            self.pacing_gain, self.cwnd_gain = PACING_GAINS[self.cycle_idx], CWND_GAIN
        else:
            self.pacing_gain = self.cwnd_gain = 1.0

    # ------------------------------------------------------------------ rate and window

    def _init_pacing_rate(self, srtt: float | None) -> None:
        """Before BtlBw is known: high_gain x cwnd / SRTT (1 ms before any RTT)."""
        if srtt:
            self.has_seen_rtt = True
        self.pacing_rate = HIGH_GAIN * self.cwnd / (srtt or NOMINAL_RTT) * (1 - PACING_MARGIN)

    def _set_pacing_rate(self, bw: float, gain: float, srtt: float | None) -> None:
        """In STARTUP the rate only rises (a low early sample must not slow the ramp)."""
        rate = bw * gain * (1 - PACING_MARGIN)
        if not self.has_seen_rtt and srtt:
            self._init_pacing_rate(srtt)
        if self.full_bw_reached or rate > self.pacing_rate:
            self.pacing_rate = rate

    def _save_cwnd(self) -> None:
        """The window to come back to after recovery or PROBE_RTT (bbr_save_cwnd)."""
        if self.prev_state == OPEN and self.mode != Mode.PROBE_RTT:
            self.prior_cwnd = self.cwnd
        else:
            self.prior_cwnd = max(self.prior_cwnd, self.cwnd)

    def _recover_or_restore(self, rs: RateSample, rates: RetransmitQueue, acked: int) -> tuple[int, bool]:
        """bbr_set_cwnd_to_recover_or_restore(): losses come off cwnd; the first round of fast
        recovery conserves packets (cwnd = in flight + delivered); leaving recovery (or the loss
        state after a timeout) restores the window from before. Returns cwnd and whether it is
        final for this ACK (packet conservation)."""
        cwnd = self.cwnd
        state, prev = rs.recovery, self.prev_state
        if rs.losses > 0:
            cwnd = max(cwnd - rs.losses, self.mss)
        if state == FAST and prev != FAST:
            self.packet_conservation = True
            self.next_round_delivered = rates.delivered  # the round starts now
            cwnd = rs.in_flight + acked
        elif prev != OPEN and state == OPEN:
            cwnd = max(cwnd, self.prior_cwnd)
            self.packet_conservation = False
        self.prev_state = state
        if self.packet_conservation:
            return max(cwnd, rs.in_flight + acked), True
        return cwnd, False

    def _set_cwnd(self, rs: RateSample, rates: RetransmitQueue, bw: float) -> None:
        """bbr_set_cwnd(): grow by what was delivered towards cwnd_gain x BDP (+ quanta)."""
        acked = rs.acked_sacked
        cwnd = self.cwnd
        if acked:
            cwnd, final = self._recover_or_restore(rs, rates, acked)
            if not final:
                target = self._quantization_budget(self.bdp(bw, self.cwnd_gain) + self._ack_aggregation_cwnd())
                if self.full_bw_reached:
                    cwnd = min(cwnd + acked, target)
                elif cwnd < target or rates.delivered < self.initial_segments * self.mss:
                    cwnd += acked
                cwnd = max(cwnd, CWND_MIN_SEGMENTS * self.mss)
        if self.mode == Mode.PROBE_RTT:
            cwnd = min(cwnd, CWND_MIN_SEGMENTS * self.mss)  # drain the queue to see RTprop
        self.cwnd = cwnd
