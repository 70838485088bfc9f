"""Buffer memory: what connections hold in bytes, bounded per connection and for the engine.

The kernel bounds socket memory twice: each socket by its buffer sizes, all of TCP by `tcp_mem`;
past the hard limit it drops arriving data and makes senders wait. The engine does the same
with two settings: `conn_limit` and `total_limit`. The endpoint reports each connection's
current holding (send, receive and out-of-order queues plus what its application keeps)
after every event that can change it, and releases it at once when the connection dies.
"""
from __future__ import annotations

from collections.abc import Hashable
from typing import Protocol


class CounterSink(Protocol):
    def inc(self, name: str, n: int = 1) -> None: ...

    def set_max(self, name: str, value: int) -> None: ...


class BufferMemory:
    """Bytes held per connection against a per-connection and an engine-wide limit."""

    __slots__ = ("conn_limit", "total_limit", "total", "peak", "_held", "_counters")

    def __init__(self, conn_limit: int, total_limit: int, counters: CounterSink) -> None:
        if conn_limit <= 0 or total_limit <= 0:
            raise ValueError("buffer memory limits must be positive")
        self.conn_limit = conn_limit
        self.total_limit = total_limit
        self.total = 0
        self.peak = 0
        self._held: dict[Hashable, int] = {}
        self._counters = counters

    def held(self, conn: Hashable) -> int:
        return self._held.get(conn, 0)

    def __len__(self) -> int:
        return len(self._held)

    def set(self, conn: Hashable, nbytes: int) -> None:
        """Record what `conn` holds now."""
        held = self._held
        before = held.get(conn, 0)
        if nbytes == before:
            return
        if nbytes:
            held[conn] = nbytes
        else:
            held.pop(conn, None)
        self.total += nbytes - before
        if self.total > self.peak:
            self.peak = self.total
            self._counters.set_max("buffer_memory_high_water", self.peak)

    def release(self, conn: Hashable) -> None:
        """The connection is gone: everything it held is free again."""
        self.set(conn, 0)

    def room(self, conn: Hashable) -> int:
        """How many more bytes `conn` may take now under both limits."""
        return max(0, min(self.conn_limit - self._held.get(conn, 0), self.total_limit - self.total))

    def admits(self, conn: Hashable, nbytes: int) -> bool:
        """Whether `conn` may take `nbytes` more arriving bytes (counted as a drop when not)."""
        if nbytes <= self.room(conn):
            return True
        self._counters.inc("rx_mem_dropped")
        return False
