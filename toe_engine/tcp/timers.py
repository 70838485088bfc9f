"""A lazily-invalidated timer heap shared by every connection of a stack.

Each connection keeps its own deadlines and `scheduled`, the time of its earliest live heap
entry. A connection is pushed only when its deadline moves earlier than that; when a deadline
moves later the old entry stays and, once popped, the connection simply finds nothing due and
is scheduled again. Per-segment cost is therefore a comparison, not a heap operation, and no
call ever scans all connections.

The owners are the stack's connections (`Connection`, whose `deadline()` comes from
tcp.timeouts), so the compiled build reads their `scheduled` and calls `deadline()` directly.
"""
from __future__ import annotations

import heapq
from itertools import count
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from toe_engine.tcp.connection import Connection

INF: Final = float("inf")


class TimerQueue:
    """Min-heap of (when, tiebreak, owner) with stale entries skipped on pop."""

    __slots__ = ("_heap", "_tiebreak")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Connection]] = []
        self._tiebreak = count()

    def __len__(self) -> int:
        return len(self._heap)

    def schedule(self, owner: Connection) -> None:
        """Make sure `owner` is popped no later than its current deadline."""
        when = owner.deadline()
        if when < owner.scheduled:
            owner.scheduled = when
            heapq.heappush(self._heap, (when, next(self._tiebreak), owner))

    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap and heap[0][2].scheduled != heap[0][0]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def pop_due(self, now: float) -> list[Connection]:
        """Every owner whose live entry is due, each once; their `scheduled` is reset."""
        heap = self._heap
        due: list[Connection] = []
        while heap and heap[0][0] <= now:
            when, _, owner = heapq.heappop(heap)
            if owner.scheduled == when:
                owner.scheduled = INF
                due.append(owner)
        return due

    def compact(self, live: int) -> None:
        """Drop stale entries once they outnumber live ones, bounding memory."""
        if len(self._heap) > 2 * live + 1024:
            self._heap = [e for e in self._heap if e[2].scheduled == e[0]]
            heapq.heapify(self._heap)
