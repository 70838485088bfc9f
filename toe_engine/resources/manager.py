"""The resource manager: table, buffer pool and exhaustion policy behind one admission hook.

The TCP state machine asks `admit` on every new SYN and `release` when a connection's state
is gone; the manager decides from fixed resources alone and counts what it decided
(conn_offloaded, conn_fallback, conn_denied, table_high_water), as a TOE NIC's firmware would.
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final, Protocol

from ..counters import Counters
from ..segment import SYN, FourTuple, Segment
from .bufpool import DEFAULT_BUFFER_SIZE, BufferPool
from .memory import BufferMemory
from .policy import Admission, ExhaustionPolicy, PassedFlows, PortFilter
from .syncookie import SynCookies
from .table import DEFAULT_ENTRY_BYTES, ConnectionTable


DEFAULT_CONN_MEMORY = 1024 * 1024
#: Admission's answers, Final: C statics in the compiled build, where an Enum member is a class attribute lookup.
_ACCEPT: Final = Admission.ACCEPT
_PASS: Final = Admission.PASS
_DROP: Final = Admission.DROP
_RESET: Final = Admission.RESET
_COOKIE: Final = Admission.COOKIE


class CounterSink(Protocol):
    def inc(self, name: str, n: int = 1) -> None: ...

    def set_max(self, name: str, value: int) -> None: ...


@dataclass(frozen=True)
class ResourceConfig:
    """The engine's fixed resources; every figure is enforced exactly."""

    capacity: int = 1024
    entry_bytes: int = DEFAULT_ENTRY_BYTES
    embryonic_limit: int | None = None
    embryonic_timeout: float | None = 75.0  # like BSD's connection-establishment timer
    pool_bytes: int = 16 * 1024 * 1024
    buffer_size: int = DEFAULT_BUFFER_SIZE
    conn_buffer_bytes: int = 0  # reserved from the pool for each admitted connection
    conn_memory_bytes: int | None = None  # what one connection's buffers and application may hold;
    # None: twice its send and receive buffers (the endpoint fills it in from its TCP settings)
    buffer_memory_bytes: int = 128 * 1024 * 1024  # what all of them may hold together (like tcp_mem)
    policy: ExhaustionPolicy = field(default_factory=ExhaustionPolicy)
    offload_ports: frozenset[int] | None = None  # None: terminate every port
    passed_flows_limit: int = 65536
    passed_flow_idle: float = 300.0
    passed_flow_fin_linger: float = 30.0


class ResourceManager:
    """Admission control over a ConnectionTable and a BufferPool under an ExhaustionPolicy.

    `syncookies` is used by the TCP engine when `admit` answers COOKIE; it shares the
    manager's counters.
    """

    def __init__(
        self,
        config: ResourceConfig | None = None,
        counters: CounterSink | None = None,
        *,
        cookie_secret: bytes | None = None,
    ) -> None:
        config = config or ResourceConfig()
        self.counters: CounterSink = counters if counters is not None else Counters()
        self.table = ConnectionTable(
            config.capacity,
            embryonic_limit=config.embryonic_limit,
            embryonic_timeout=config.embryonic_timeout,
            entry_bytes=config.entry_bytes,
        )
        self.pool = BufferPool(config.pool_bytes, config.buffer_size)
        self.policy = config.policy
        self.port_filter = PortFilter(config.offload_ports)
        self.passed = PassedFlows(config.passed_flows_limit, config.passed_flow_idle, config.passed_flow_fin_linger)
        self.conn_buffer_bytes = config.conn_buffer_bytes
        self.memory = BufferMemory(config.conn_memory_bytes or DEFAULT_CONN_MEMORY, config.buffer_memory_bytes,
                                   self.counters)
        self.syncookies = SynCookies(cookie_secret or _default_secret(), self.counters)

    def admit(self, four_tuple: FourTuple, syn: Segment, now: float) -> Admission:
        """Decide what to do with a SYN for `four_tuple`; on ACCEPT the slot is already taken."""
        if self.passed.see(four_tuple, syn.flags, now):
            return _PASS
        if not self.port_filter.offloads(four_tuple.local_port):
            return _PASS
        if four_tuple in self.table:
            return _ACCEPT
        if self._take_slot(four_tuple, now, embryonic=True):
            self.counters.inc("conn_offloaded")
            return _ACCEPT
        return self._exhausted(four_tuple, self.policy.on_exhaustion(), now)

    def decide_syn(self, key: tuple[bytes, int, bytes, int], now: float) -> Admission | None:
        """What `admit` answers a SYN for `key` (local side first) when it needs no slot: PASS for a passed
        flow, or the policy's PASS, DROP or COOKIE, counted as `admit` counts them; None where only `admit`
        can say (the flow is in the table, its port is not offloaded, a slot is free, the policy resets)."""
        passed = self.passed
        if key in passed and passed.see(FourTuple(*key), SYN, now):
            return _PASS
        if key in self.table or not self.port_filter.offloads(key[1]):
            return None
        if self.table.has_room(embryonic=True) and self.pool.can_reserve(key, self.conn_buffer_bytes):
            return None
        decision = self.policy.on_exhaustion()
        if decision is _COOKIE:
            return decision
        if decision is _RESET:
            return None
        return self._exhausted(key, decision, now)

    def _exhausted(self, key: tuple[bytes, int, bytes, int], decision: Admission, now: float) -> Admission:
        """Count the policy's `decision` for a SYN that found no room; a passed flow is remembered."""
        if decision is _PASS:
            self.passed.add(FourTuple(*key), now)
            self.counters.inc("conn_fallback")
        elif decision is not _COOKIE:
            self.counters.inc("conn_denied")
        return decision

    def admit_cookie(self, four_tuple: FourTuple, now: float) -> Admission:
        """Take an established slot for a flow whose cookie ACK checked out: ACCEPT or DROP.

        DROP leaves the peer to retransmit, and the cookie stays valid for a while, so the
        flow gets in as soon as a slot frees.
        """
        if four_tuple in self.table:
            return _ACCEPT
        if self._take_slot(four_tuple, now, embryonic=False):
            self.counters.inc("conn_offloaded")
            return _ACCEPT
        self.counters.inc("conn_denied")
        return _DROP

    def bind(self, four_tuple: FourTuple, connection: object) -> None:
        """Store the TCP engine's connection object in the slot `admit` took."""
        self.table.update(four_tuple, connection)

    def lookup(self, four_tuple: FourTuple) -> object | None:
        return self.table.lookup(four_tuple)

    def established(self, four_tuple: FourTuple) -> None:
        """The connection left SYN-RECEIVED: it no longer counts as embryonic nor expires."""
        self.table.promote(four_tuple)

    def release(self, four_tuple: FourTuple) -> bool:
        """Free the slot and buffers of a connection whose state is gone; False if it held none."""
        if four_tuple not in self.table:
            return False
        self.table.remove(four_tuple)
        self.pool.release(four_tuple)
        return True

    def passes(self, four_tuple: FourTuple, flags: int, now: float) -> bool:
        """Whether a non-SYN frame belongs to a flow handed to the host (refreshing its memory)."""
        return self.passed.see(four_tuple, flags, now)

    def expire(self, now: float) -> list[FourTuple]:
        """Run the timers: release timed-out embryonic connections (returned, so the TCP
        engine drops their state) and forget idle passed flows."""
        expired = self.table.expire_embryonic(now)
        for four_tuple in expired:
            self.pool.release(four_tuple)
        self.passed.expire(now)
        return expired

    def next_deadline(self) -> float | None:
        """When `expire` next has embryonic work to do."""
        return self.table.next_embryonic_deadline()

    def set_capacity(self, capacity: int) -> None:
        """Resize the table at runtime; below occupancy nothing is evicted, nothing new admitted."""
        self.table.set_capacity(capacity)

    def set_policy(self, policy: ExhaustionPolicy | str) -> None:
        self.policy = ExhaustionPolicy.parse(policy) if isinstance(policy, str) else policy

    def set_offload_ports(self, ports: Iterable[int] | None) -> None:
        self.port_filter.set_ports(ports)

    def gauges(self) -> dict[str, int]:
        """Current levels, for `toe stats` next to the counters."""
        table, pool = self.table, self.pool
        return {
            "table_capacity": table.capacity,
            "table_occupancy": table.occupancy,
            "table_embryonic": table.embryonic_count,
            "table_high_water": table.high_water,
            "table_sram_bytes": table.sram_bytes(),
            "table_sram_used_bytes": table.sram_used_bytes(),
            "pool_buffers_total": pool.total_buffers,
            "pool_buffers_used": pool.used_buffers,
            "pool_buffers_high_water": pool.high_water,
            "passed_flows": len(self.passed),
            "passed_flows_evicted": self.passed.evicted,
            "buffer_memory_bytes": self.memory.total,
            "buffer_memory_limit": self.memory.total_limit,
            "buffer_memory_high_water": self.memory.peak,
        }

    def _take_slot(self, four_tuple: FourTuple, now: float, *, embryonic: bool) -> bool:
        if not self.table.has_room(embryonic=embryonic):
            return False
        if not self.pool.can_reserve(four_tuple, self.conn_buffer_bytes):
            return False
        self.table.insert(four_tuple, None, now, embryonic=embryonic)
        self.pool.reserve(four_tuple, self.conn_buffer_bytes)
        self.counters.set_max("table_high_water", self.table.high_water)
        return True


def _default_secret() -> bytes:
    """A fresh per-engine key: cookies only need to be valid within one engine's life."""
    return os.urandom(16)
