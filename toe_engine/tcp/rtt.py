"""Retransmission timeout per RFC 6298: SRTT, RTTVAR, RTO, exponential backoff.

Karn's rule (MUST-18) lives with the caller, which only offers samples from segments that
were never retransmitted (or that carry an unambiguous timestamp echo, RFC 7323 section 4).
"""
from __future__ import annotations

from typing import Final

CLOCK_GRANULARITY: Final = 0.001
ALPHA: Final = 0.125
BETA: Final = 0.25
K: Final = 4


class RttEstimator:
    """Smoothed RTT and the RTO derived from it."""

    __slots__ = ("srtt", "rttvar", "_base_rto", "backoff", "samples", "rto_min", "rto_max")

    def __init__(self, rto_initial: float, rto_min: float, rto_max: float) -> None:
        self.srtt: float | None = None
        self.rttvar = 0.0
        self._base_rto = rto_initial
        self.backoff = 0
        self.samples = 0
        self.rto_min = rto_min
        self.rto_max = rto_max

    @property
    def rto(self) -> float:
        """The current timeout, doubled once per unanswered expiry and capped at rto_max."""
        return min(self._base_rto * (1 << self.backoff), self.rto_max)

    def sample(self, rtt: float) -> None:
        """Feed one measured round trip (rules 2.2 and 2.3); clears the backoff."""
        rtt = max(rtt, 0.0)
        if self.srtt is None:
            self.srtt = rtt
            self.rttvar = rtt / 2
        else:
            self.rttvar = (1 - BETA) * self.rttvar + BETA * abs(self.srtt - rtt)
            self.srtt = (1 - ALPHA) * self.srtt + ALPHA * rtt
        self._base_rto = min(max(self.srtt + max(CLOCK_GRANULARITY, K * self.rttvar), self.rto_min), self.rto_max)
        self.backoff = 0
        self.samples += 1

    def restart(self, rto: float) -> None:
        """Start over from `rto` with no backoff, as when no sample could be taken (RFC 6298 5.7)."""
        self._base_rto = min(max(rto, self.rto_min), self.rto_max)
        self.backoff = 0

    def on_timeout(self) -> None:
        """Rule 5.5: back the timer off; the cap keeps the shift from growing without bound."""
        if self._base_rto * (1 << self.backoff) < self.rto_max:
            self.backoff += 1
