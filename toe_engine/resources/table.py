"""The connection table: a fixed number of slots, like a TOE NIC's on-chip state memory.

Capacity is enforced exactly: an insert into a full table raises instead of growing. Entries
inserted in SYN-RECEIVED are *embryonic*; they are counted apart, may have their own limit,
and expire after `embryonic_timeout` seconds unless promoted, which is how a SYN flood is kept
from holding every slot. The table also models the state memory it would need in hardware
(`entry_bytes` per slot) so a configuration can be quoted like a NIC datasheet.
"""
from __future__ import annotations

from typing import Any, Final

from mypy_extensions import mypyc_attr

from ..segment import ByValue, FourTuple

DEFAULT_ENTRY_BYTES: Final = 256  # 64,000 connections -> 16 MB, the order hardware TOEs quote


class ResourceExhausted(Exception):
    """A fixed resource (table slots, embryonic slots, buffers) has nothing left to give."""


class TableFull(ResourceExhausted):
    """The table holds `capacity` entries already."""


class EmbryonicLimit(ResourceExhausted):
    """The table holds `embryonic_limit` SYN-RECEIVED entries already."""


class TableEntry(ByValue):
    """One slot: the caller's connection object, when it arrived, and whether it is embryonic.

    Written out, not a dataclass (segment.ByValue: equality and repr by its fields): one is made per
    connection, and the compiled build runs a dataclass's generated __init__ as Python."""

    __slots__ = ("value", "created", "embryonic")
    FIELDS = ("value", "created", "embryonic")

    def __init__(self, value: Any, created: float, embryonic: bool) -> None:
        self.value = value
        self.created = created
        self.embryonic = embryonic

    def _fields(self) -> tuple[object, ...]:
        return (self.value, self.created, self.embryonic)


@mypyc_attr(allow_interpreted_subclasses=True)  # runtime.shared_table's SharedTable extends it
class ConnectionTable:
    """FourTuple -> connection, with fixed capacity, a high-water mark and embryonic accounting."""

    def __init__(
        self,
        capacity: int,
        *,
        embryonic_limit: int | None = None,
        embryonic_timeout: float | None = None,
        entry_bytes: int = DEFAULT_ENTRY_BYTES,
    ) -> None:
        _check_capacity(capacity)
        if embryonic_limit is not None and embryonic_limit < 0:
            raise ValueError(f"embryonic_limit must be zero or more, got {embryonic_limit}")
        if embryonic_timeout is not None and embryonic_timeout <= 0:
            raise ValueError(f"embryonic_timeout must be a positive number of seconds, got {embryonic_timeout}")
        if entry_bytes <= 0:
            raise ValueError(f"entry_bytes must be positive, got {entry_bytes}")
        self._capacity = capacity
        self.embryonic_limit = embryonic_limit
        self.embryonic_timeout = embryonic_timeout
        self.entry_bytes = entry_bytes
        self._entries: dict[FourTuple, TableEntry] = {}
        # Insertion-ordered, so the oldest embryonic entry is always first.
        self._embryonic: dict[FourTuple, float] = {}
        self._high_water = 0

    @property
    def capacity(self) -> int:
        return self._capacity

    def set_capacity(self, capacity: int) -> None:
        """Change the slot count at runtime; shrinking below occupancy evicts nothing."""
        _check_capacity(capacity)
        self._capacity = capacity

    @property
    def occupancy(self) -> int:
        return len(self._entries)

    @property
    def embryonic_count(self) -> int:
        return len(self._embryonic)

    @property
    def high_water(self) -> int:
        """The most entries ever held at once."""
        return self._high_water

    def has_room(self, *, embryonic: bool = True) -> bool:
        """Whether an insert of that kind would succeed now."""
        if len(self._entries) >= self._capacity:
            return False
        limit = self.embryonic_limit
        return not (embryonic and limit is not None and len(self._embryonic) >= limit)

    def insert(self, four_tuple: FourTuple, value: Any, now: float, *, embryonic: bool = True) -> None:
        """Add a connection; raises TableFull or EmbryonicLimit, or KeyError if it is already there."""
        if four_tuple in self._entries:
            raise KeyError(f"{four_tuple} is already in the connection table")
        if len(self._entries) >= self._capacity:
            raise TableFull(f"connection table full ({self._capacity} entries)")
        if embryonic and self.embryonic_limit is not None and len(self._embryonic) >= self.embryonic_limit:
            raise EmbryonicLimit(f"embryonic limit reached ({self.embryonic_limit} entries)")
        self._entries[four_tuple] = TableEntry(value, now, embryonic)
        if embryonic:
            self._embryonic[four_tuple] = now
        if len(self._entries) > self._high_water:
            self._high_water = len(self._entries)

    def lookup(self, four_tuple: FourTuple) -> Any | None:
        """The connection stored for `four_tuple`, or None."""
        entry = self._entries.get(four_tuple)
        return None if entry is None else entry.value

    def update(self, four_tuple: FourTuple, value: Any) -> None:
        """Replace the connection stored for a present entry (KeyError if absent)."""
        self._entries[four_tuple].value = value

    def __contains__(self, four_tuple: object) -> bool:
        return four_tuple in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def is_embryonic(self, four_tuple: FourTuple) -> bool:
        return four_tuple in self._embryonic

    def promote(self, four_tuple: FourTuple) -> None:
        """Mark an embryonic entry established (it reached ESTABLISHED); it no longer expires."""
        entry = self._entries[four_tuple]
        entry.embryonic = False
        self._embryonic.pop(four_tuple, None)

    def remove(self, four_tuple: FourTuple) -> Any | None:
        """Free the slot; returns the stored connection, or None if there was none."""
        entry = self._entries.pop(four_tuple, None)
        if entry is None:
            return None
        self._embryonic.pop(four_tuple, None)
        return entry.value

    def expire_embryonic(self, now: float) -> list[FourTuple]:
        """Remove embryonic entries older than the timeout and return their tuples, oldest first."""
        timeout = self.embryonic_timeout
        if timeout is None:
            return []
        expired: list[FourTuple] = []
        for four_tuple, created in self._embryonic.items():
            if now - created < timeout:
                break
            expired.append(four_tuple)
        for four_tuple in expired:
            self.remove(four_tuple)
        return expired

    def next_embryonic_deadline(self) -> float | None:
        """When the oldest embryonic entry expires, or None if nothing can expire."""
        if self.embryonic_timeout is None or not self._embryonic:
            return None
        return next(iter(self._embryonic.values())) + self.embryonic_timeout

    def sram_bytes(self) -> int:
        """State memory this table would need in hardware: capacity x entry size."""
        return self._capacity * self.entry_bytes

    def sram_used_bytes(self) -> int:
        """State memory held by the entries present now."""
        return len(self._entries) * self.entry_bytes


def _check_capacity(capacity: int) -> None:
    if capacity < 0:
        raise ValueError(f"table capacity must be zero or more, got {capacity}")
