"""One connection table for all of a node's queues, as a TOE NIC has one state memory for all
its rings.

Each queue process keeps the connections it serves in its own dict (a flow only ever reaches
the queue its hash picks), but the *slots* are counted once for the node in a page of shared
memory: capacity, embryonic limit, occupancy, embryonic count and high-water mark. Taking or
freeing a slot holds a process-shared lock for a few integer operations, once per connection
and never per frame. So `capacity: 8` means eight connections on the node whichever queues
they land on, the ninth meets the exhaustion policy on any queue, and `set capacity` on any
queue changes it for all. Why not split the capacity N ways: flows hash unevenly, so a split
table refuses a connection while slots sit free on another queue, which one table never does.
"""
from __future__ import annotations

import mmap
import multiprocessing
import struct
from typing import Any

from toe_engine.resources.table import DEFAULT_ENTRY_BYTES, ConnectionTable, EmbryonicLimit, TableFull
from toe_engine.segment import FourTuple

_FIELDS = struct.Struct("qqqqq")  # capacity, embryonic limit (-1: none), occupied, embryonic, high water
_UNLIMITED = 1 << 62


class SharedSlots:
    """The node-wide slot counts, in anonymous shared memory made before the queues fork."""

    def __init__(self, capacity: int, embryonic_limit: int | None) -> None:
        self._page = mmap.mmap(-1, mmap.PAGESIZE)  # MAP_SHARED | MAP_ANONYMOUS: children share it
        self.lock = multiprocessing.get_context("fork").Lock()
        _FIELDS.pack_into(self._page, 0, capacity, -1 if embryonic_limit is None else embryonic_limit, 0, 0, 0)

    def read(self) -> tuple[int, int, int, int, int]:
        fields: tuple[int, int, int, int, int] = _FIELDS.unpack_from(self._page, 0)
        return fields

    def write(self, capacity: int, limit: int, occupied: int, embryonic: int, high: int) -> None:
        _FIELDS.pack_into(self._page, 0, capacity, limit, occupied, embryonic, high)


class SharedTable(ConnectionTable):
    """A ConnectionTable whose capacity and limits are those of `slots`, shared by every queue."""

    def __init__(self, slots: SharedSlots, *, embryonic_timeout: float | None = None,
                 entry_bytes: int = DEFAULT_ENTRY_BYTES) -> None:
        super().__init__(_UNLIMITED, embryonic_limit=None, embryonic_timeout=embryonic_timeout,
                         entry_bytes=entry_bytes)
        self._slots = slots  # after the base's __init__, whose embryonic_limit=None must not reach it

    @classmethod
    def replacing(cls, table: ConnectionTable, slots: SharedSlots) -> SharedTable:
        """A shared table with `table`'s timeout and entry size (to take its place before any use)."""
        return cls(slots, embryonic_timeout=table.embryonic_timeout, entry_bytes=table.entry_bytes)

    # --- the node-wide figures ------------------------------------------------------------
    @property
    def capacity(self) -> int:
        return self._slots.read()[0]

    def set_capacity(self, capacity: int) -> None:
        if capacity < 0:
            raise ValueError(f"table capacity must be zero or more, got {capacity}")
        with self._slots.lock:
            _, limit, occupied, embryonic, high = self._slots.read()
            self._slots.write(capacity, limit, occupied, embryonic, high)

    @property  # type: ignore[override]
    def embryonic_limit(self) -> int | None:
        limit = self._slots.read()[1]
        return None if limit < 0 else limit

    @embryonic_limit.setter
    def embryonic_limit(self, value: int | None) -> None:
        if not hasattr(self, "_slots"):
            return
        with self._slots.lock:
            capacity, _, occupied, embryonic, high = self._slots.read()
            self._slots.write(capacity, -1 if value is None else value, occupied, embryonic, high)

    @property
    def occupancy(self) -> int:
        return self._slots.read()[2]

    @property
    def embryonic_count(self) -> int:
        return self._slots.read()[3]

    @property
    def high_water(self) -> int:
        return self._slots.read()[4]

    def sram_bytes(self) -> int:
        return self.capacity * self.entry_bytes

    def sram_used_bytes(self) -> int:
        return self.occupancy * self.entry_bytes

    # --- taking and freeing slots ---------------------------------------------------------
    def has_room(self, *, embryonic: bool = True) -> bool:
        capacity, limit, occupied, embryos, _ = self._slots.read()
        if occupied >= capacity:
            return False
        return not (embryonic and 0 <= limit <= embryos)

    def insert(self, four_tuple: FourTuple, value: Any, now: float, *, embryonic: bool = True) -> None:
        if four_tuple in self:
            raise KeyError(f"{four_tuple} is already in the connection table")
        slots = self._slots
        with slots.lock:
            capacity, limit, occupied, embryos, high = slots.read()
            if occupied >= capacity:
                raise TableFull(f"connection table full ({capacity} entries, all queues)")
            if embryonic and 0 <= limit <= embryos:
                raise EmbryonicLimit(f"embryonic limit reached ({limit} entries, all queues)")
            super().insert(four_tuple, value, now, embryonic=embryonic)
            occupied += 1
            slots.write(capacity, limit, occupied, embryos + embryonic, max(high, occupied))

    def remove(self, four_tuple: FourTuple) -> Any | None:
        was_embryonic = self.is_embryonic(four_tuple)
        if four_tuple not in self:
            return None
        slots = self._slots
        with slots.lock:
            value = super().remove(four_tuple)
            capacity, limit, occupied, embryos, high = slots.read()
            slots.write(capacity, limit, occupied - 1, embryos - was_embryonic, high)
        return value

    def promote(self, four_tuple: FourTuple) -> None:
        was_embryonic = self.is_embryonic(four_tuple)
        super().promote(four_tuple)
        if was_embryonic:
            slots = self._slots
            with slots.lock:
                capacity, limit, occupied, embryos, high = slots.read()
                slots.write(capacity, limit, occupied, embryos - 1, high)
