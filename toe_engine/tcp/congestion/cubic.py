"""CUBIC (RFC 9438): a cubic window curve in time since the last reduction."""
from __future__ import annotations

from toe_engine.tcp.congestion.base import CongestionControl

C = 0.4
BETA = 0.7
ALPHA = 3 * (1 - BETA) / (1 + BETA)


class Cubic(CongestionControl):
    """Windows are tracked in segments as floats, as the RFC writes them; cwnd stays in bytes."""

    __slots__ = ("_w_max", "_k", "_epoch", "_w_est", "_cwnd_seg", "_cwnd_prior")
    name = "cubic"

    def __init__(self, mss: int, initial_window_segments: int) -> None:
        super().__init__(mss, initial_window_segments)
        self._w_max = 0.0
        self._k = 0.0
        self._epoch: float | None = None
        self._w_est = 0.0
        self._cwnd_seg = float(initial_window_segments)
        self._cwnd_prior = 0.0  # cwnd (segments) before the last reduction

    def on_ack(self, acked: int, flight: int, now: float, srtt: float | None) -> None:
        if 2 * flight < self.cwnd:
            return
        if self.cwnd < self.ssthresh:
            acked = self.slow_start(acked)
            self._cwnd_seg = self.cwnd / self.mss
            if not acked:
                return
        mss = self.mss
        cwnd_seg = self._cwnd_seg if int(self._cwnd_seg * mss) == self.cwnd else self.cwnd / mss
        if self._epoch is None:
            self._epoch = now
            self._w_est = cwnd_seg
            if self._w_max <= cwnd_seg:
                self._w_max = cwnd_seg
                self._k = 0.0
            else:
                self._k = ((self._w_max - cwnd_seg) / C) ** (1 / 3)
        segments_acked = acked / mss
        t = now - self._epoch + (srtt or 0.0)
        target = C * (t - self._k) ** 3 + self._w_max
        target = min(max(target, cwnd_seg), 1.5 * cwnd_seg)
        # RFC 9438 4.3: alpha_cubic until W_est reaches cwnd_prior, then Reno's 1 (the TCP-friendly rate)
        alpha = 1.0 if self._w_est >= self._cwnd_prior else ALPHA
        self._w_est += alpha * segments_acked / cwnd_seg
        if target < self._w_est:
            new_seg = self._w_est
        else:
            new_seg = cwnd_seg + (target - cwnd_seg) / cwnd_seg * segments_acked
        self._cwnd_seg = new_seg
        self.cwnd = max(int(new_seg * mss), self.cwnd)

    def _reduce(self) -> None:
        cwnd_seg = self.cwnd / self.mss
        self._cwnd_prior = cwnd_seg
        if cwnd_seg < self._w_max:
            self._w_max = cwnd_seg * (1 + BETA) / 2  # fast convergence (RFC 9438 4.7)
        else:
            self._w_max = cwnd_seg
        self.ssthresh = max(int(self.cwnd * BETA), 2 * self.mss)
        self._epoch = None

    def on_fast_retransmit(self, flight: int, now: float) -> None:
        self._reduce()
        self.cwnd = self.ssthresh
        self._cwnd_seg = self.cwnd / self.mss

    def on_rto(self, flight: int, now: float) -> None:
        self._reduce()
        self.cwnd = self.mss
        self._cwnd_seg = 1.0

    def on_idle(self, now: float) -> None:
        """After idle the cubic curve starts a new epoch from the restart window (RFC 9438 5.8)."""
        super().on_idle(now)
        self._cwnd_seg = self.cwnd / self.mss
        self._epoch = None
