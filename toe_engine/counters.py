"""Named integer counters in the style of `ethtool -S`.

A plain dict behind a tiny API: increments are one dict lookup, snapshots are copies, and any
module may count something new without declaring it first. A per-packet path that keeps its
own running tallies (plain int attributes cost less than a dict update per frame) registers a
flush with `add_flush`: every read folds those tallies in first, so a read is always exact.
"""
from __future__ import annotations

from collections.abc import Callable

STANDARD_COUNTERS: tuple[str, ...] = (
    "rx_frames",
    "tx_frames",
    "rx_csum_errors",
    "rx_malformed",
    "tso_segments",
    "gro_merged",
    "gro_flushed",
    "lro_merged",
    "conn_offloaded",
    "conn_fallback",
    "conn_denied",
    "syncookies_sent",
    "syncookies_ok",
    "syncookies_failed",
    "table_high_water",
    "retransmits",
    "rto_expired",
    "fast_retransmits",
    "rack_retransmits",
    "tlp_probes",
    "tlp_recoveries",
    "spurious_rtos",
    "rto_repeated",  # a data RTO's cause (Timeouts._rto_cause): each data RTO counts under one of these five
    "rto_lost_retransmit",
    "rto_lost_probe",
    "rto_few_in_flight",
    "rto_other",
    "challenge_acks",
)


class Counters:
    """A set of named counters, all starting at zero."""

    __slots__ = ("_values", "_flushes")

    def __init__(self, names: tuple[str, ...] = STANDARD_COUNTERS) -> None:
        self._values: dict[str, int] = dict.fromkeys(names, 0)
        self._flushes: list[Callable[[], None]] = []

    def add_flush(self, flush: Callable[[], None]) -> None:
        """Have every read call `flush` first, which adds what its owner tallied since (with inc)."""
        self._flushes.append(flush)

    def flush(self) -> None:
        """Fold every owner's pending tallies in now."""
        for flush in self._flushes:
            flush()

    def inc(self, name: str, n: int = 1) -> None:
        """Add `n` to counter `name`, creating it if it is new."""
        values = self._values
        values[name] = values.get(name, 0) + n

    def set_max(self, name: str, value: int) -> None:
        """Raise a high-water-mark counter to `value` if it is higher."""
        if value > self._values.get(name, 0):
            self._values[name] = value

    def __getitem__(self, name: str) -> int:
        if self._flushes:
            self.flush()
        return self._values.get(name, 0)

    def snapshot(self) -> dict[str, int]:
        """A copy of every counter, for reports and for diffing before/after."""
        if self._flushes:
            self.flush()
        return dict(self._values)

    def reset(self) -> None:
        """Set every counter back to zero, keeping the names."""
        if self._flushes:
            self.flush()  # what was pending belongs to the counts being discarded
        for name in self._values:
            self._values[name] = 0
