"""The congestion control plug-in interface.

The connection owns loss detection and the recovery procedure (RFC 6582 / RFC 6675, with
pipe-based sending); an algorithm only decides how big cwnd and ssthresh are: how the window
grows on new ACKs, and how far it falls on a fast retransmit or a timeout.

A model-based algorithm (BBR) sets `rate_based`: it then gets a delivery-rate sample on every
ACK (`on_rate_sample`), sets cwnd itself in and out of recovery (the connection's PRR stands
aside, as Linux's does for a `cong_control` module), and paces: with `pacing_rate` non-zero
the send path sends at most `send_quantum` octets at a time, spaced at that rate.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar, Final

if TYPE_CHECKING:
    from toe_engine.tcp.rtx_queue import RateSample, RetransmitQueue

INFINITE_SSTHRESH: Final = 1 << 62


class CongestionControl(ABC):
    """cwnd and ssthresh in bytes; `mss` is the sender's current SMSS."""

    __slots__ = ("mss", "cwnd", "ssthresh", "_acked_in_ca", "initial_segments")
    name: ClassVar[str]
    rate_based: ClassVar[bool] = False
    pacing_rate: float = 0.0  # octets per second; 0: not paced

    def __init__(self, mss: int, initial_window_segments: int) -> None:
        self.mss = mss
        self.initial_segments = initial_window_segments
        self.cwnd = initial_window_segments * mss
        self.ssthresh = INFINITE_SSTHRESH
        self._acked_in_ca = 0

    @property
    def send_quantum(self) -> int:
        """Octets sent at once when paced; a property here so a rate-based algorithm's property
        overrides it in the compiled build too (there an attribute would shadow it)."""
        return 0

    def set_mss(self, mss: int) -> None:
        """Keep the window's segment count when the MSS changes (PMTU discovery)."""
        self.cwnd = max(mss, self.cwnd * mss // self.mss)
        self.mss = mss

    def slow_start(self, acked: int) -> int:
        """RFC 5681 slow start with RFC 3465 byte counting (L = 2*SMSS); returns unused bytes."""
        grow = min(acked, 2 * self.mss, max(self.ssthresh - self.cwnd, 0))
        self.cwnd += grow
        return acked - grow

    @abstractmethod
    def on_ack(self, acked: int, flight: int, now: float, srtt: float | None) -> None:
        """New data acknowledged outside loss recovery."""

    @abstractmethod
    def on_fast_retransmit(self, flight: int, now: float) -> None:
        """Loss detected by duplicate ACKs or SACK: set ssthresh, and cwnd to it."""

    @abstractmethod
    def on_rto(self, flight: int, now: float) -> None:
        """Retransmission timeout: set ssthresh, cwnd to the loss window (one segment)."""

    def on_idle(self, now: float) -> None:
        """Sending resumes after more than an RTO idle: RFC 5681 4.1's restart window,
        min(IW, cwnd); ssthresh keeps the memory of the window (3/4 of it, as RFC 7661 and Linux)."""
        restart = self.initial_segments * self.mss
        if self.cwnd > restart:
            self.ssthresh = max(self.ssthresh if self.ssthresh < INFINITE_SSTHRESH else 0, self.cwnd * 3 // 4)
            self.cwnd = restart

    def on_rate_sample(self, rs: RateSample, rates: RetransmitQueue, now: float) -> None:
        """A delivery-rate sample from an ACK (only for `rate_based` algorithms); `rates` takes
        `mark_app_limited()`."""

    def on_recovery_end(self, now: float) -> None:
        """Full ACK of the recovery point: deflate to ssthresh (RFC 6582 step 3)."""
        self.cwnd = max(self.ssthresh, self.mss)
