"""NewReno window arithmetic (RFC 5681 section 3.1, RFC 6582)."""
from __future__ import annotations

from toe_engine.tcp.congestion.base import CongestionControl


class NewReno(CongestionControl):
    """Additive increase by one SMSS per cwnd of ACKed data; halve on loss."""

    __slots__ = ()
    name = "newreno"

    def on_ack(self, acked: int, flight: int, now: float, srtt: float | None) -> None:
        if 2 * flight < self.cwnd:
            return  # application limited: do not grow a window that is not used (RFC 7661)
        if self.cwnd < self.ssthresh:
            acked = self.slow_start(acked)
            if not acked:
                return
        self._acked_in_ca += acked
        if self._acked_in_ca >= self.cwnd:
            self._acked_in_ca -= self.cwnd
            self.cwnd += self.mss

    def on_fast_retransmit(self, flight: int, now: float) -> None:
        self.ssthresh = max(flight // 2, 2 * self.mss)
        self.cwnd = self.ssthresh
        self._acked_in_ca = 0

    def on_rto(self, flight: int, now: float) -> None:
        self.ssthresh = max(flight // 2, 2 * self.mss)
        self.cwnd = self.mss
        self._acked_in_ca = 0
