"""The buffer pool: a fixed byte budget cut into fixed-size buffers, like a NIC's packet SRAM.

Each connection holds a byte count; what it costs the pool is that count rounded up to whole
buffers. A reservation is all or nothing, so the pool never overcommits, and releases must
match what was reserved, so accounting stays exact and leaks show up as errors.
"""
from __future__ import annotations

from collections.abc import Hashable

DEFAULT_BUFFER_SIZE = 2048


class PoolExhausted(Exception):
    """A reservation needs more buffers than the pool has free."""


class BufferPool:
    """Fixed-size buffers handed out to connections by byte count."""

    def __init__(self, total_bytes: int, buffer_size: int = DEFAULT_BUFFER_SIZE) -> None:
        if buffer_size <= 0:
            raise ValueError(f"buffer_size must be positive, got {buffer_size}")
        if total_bytes < 0:
            raise ValueError(f"total_bytes must be zero or more, got {total_bytes}")
        self.buffer_size = buffer_size
        self.total_buffers = total_bytes // buffer_size
        self._held_bytes: dict[Hashable, int] = {}
        self._used_buffers = 0
        self._high_water = 0

    @property
    def total_bytes(self) -> int:
        """The usable budget: whole buffers only."""
        return self.total_buffers * self.buffer_size

    @property
    def used_buffers(self) -> int:
        return self._used_buffers

    @property
    def free_buffers(self) -> int:
        return self.total_buffers - self._used_buffers

    @property
    def high_water(self) -> int:
        """The most buffers ever in use at once."""
        return self._high_water

    def buffers_for(self, nbytes: int) -> int:
        """Whole buffers needed to hold `nbytes`."""
        return -(-nbytes // self.buffer_size)

    def held_bytes(self, conn: Hashable) -> int:
        return self._held_bytes.get(conn, 0)

    def held_buffers(self, conn: Hashable) -> int:
        return self.buffers_for(self._held_bytes.get(conn, 0))

    def can_reserve(self, conn: Hashable, nbytes: int) -> bool:
        """Whether `reserve(conn, nbytes)` would succeed now."""
        return self._extra_buffers(conn, nbytes) <= self.free_buffers

    def reserve(self, conn: Hashable, nbytes: int) -> int:
        """Add `nbytes` to what `conn` holds; returns the buffers newly taken, or raises PoolExhausted."""
        if nbytes < 0:
            raise ValueError(f"cannot reserve a negative byte count ({nbytes})")
        extra = self._extra_buffers(conn, nbytes)
        if extra > self.free_buffers:
            raise PoolExhausted(
                f"buffer pool exhausted: {extra} buffers needed, {self.free_buffers} of {self.total_buffers} free"
            )
        self._held_bytes[conn] = self._held_bytes.get(conn, 0) + nbytes
        self._used_buffers += extra
        if self._used_buffers > self._high_water:
            self._high_water = self._used_buffers
        return extra

    def release(self, conn: Hashable, nbytes: int | None = None) -> int:
        """Give back `nbytes` of what `conn` holds (all of it if None); returns the buffers freed."""
        held = self._held_bytes.get(conn, 0)
        if nbytes is None:
            nbytes = held
        if nbytes < 0 or nbytes > held:
            raise ValueError(f"cannot release {nbytes} bytes: the connection holds {held}")
        remaining = held - nbytes
        freed = self.buffers_for(held) - self.buffers_for(remaining)
        if remaining:
            self._held_bytes[conn] = remaining
        else:
            self._held_bytes.pop(conn, None)
        self._used_buffers -= freed
        return freed

    def _extra_buffers(self, conn: Hashable, nbytes: int) -> int:
        held = self._held_bytes.get(conn, 0)
        return self.buffers_for(held + nbytes) - self.buffers_for(held)
