"""Per-queue counters in `ethtool -S` names, and their sums for the node.

A queue's wire driver counts the frames and bytes it moved; the kernel counts, per packet
socket, the frames it dropped because the socket's ring or buffer was full. Every engine
reports them as `rx_queue_N_frames`, `rx_queue_N_bytes`, `tx_queue_N_frames`,
`tx_queue_N_bytes` and `rx_queue_N_missed`, and the node's `rx_missed_errors` is the sum of
the last (what a NIC reports when its rings overflow before the host sees the frames).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

from toe_engine.io.driver import DriverCounters

QUEUE_FIELDS = ("rx_queue_{}_frames", "rx_queue_{}_bytes", "tx_queue_{}_frames", "tx_queue_{}_bytes",
                "rx_queue_{}_missed")


def queue_counters(queue: int, wire: DriverCounters, missed: int) -> dict[str, int]:
    """The counters of queue `queue`, plus the node sums a one-queue engine reports as they are."""
    rx, rx_bytes, tx, tx_bytes, lost = (name.format(queue) for name in QUEUE_FIELDS)
    return {rx: wire.rx_frames, rx_bytes: wire.rx_bytes, tx: wire.tx_frames, tx_bytes: wire.tx_bytes,
            lost: missed, "rx_missed_errors": missed}


def sum_counters(per_queue: Iterable[Mapping[str, int]]) -> dict[str, int]:
    """Counters of several queues added name by name (a queue's own names stay apart); a
    high-water mark is the highest queue's, not a sum of peaks that never happened together."""
    total: dict[str, int] = {}
    for counters in per_queue:
        for name, value in counters.items():
            if isinstance(value, int) and not isinstance(value, bool):
                if name.endswith("_high_water"):
                    total[name] = max(total.get(name, 0), value)
                else:
                    total[name] = total.get(name, 0) + value
    return total
