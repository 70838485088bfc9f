"""Out-of-order receive queue (SHLD-31) and the SACK blocks it implies (RFC 2018).

Data is kept as disjoint, non-adjacent blocks sorted by start; an arriving segment is merged
with every block it overlaps or touches, the bytes already held winning. Each block remembers
when it last grew so SACK blocks can be reported most recent first (RFC 2018 section 4).
Sequence numbers are the connection's unwrapped integers.
"""
from __future__ import annotations

from bisect import bisect_right


class _Block:
    __slots__ = ("start", "data", "stamp")

    def __init__(self, start: int, data: bytearray, stamp: int) -> None:
        self.start = start
        self.data = data
        self.stamp = stamp

    @property
    def end(self) -> int:
        return self.start + len(self.data)


class ReassemblyQueue:
    """Holds received bytes above RCV.NXT until the hole below them is filled."""

    __slots__ = ("_starts", "_blocks", "_clock", "bytes_held")

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._blocks: list[_Block] = []
        self._clock = 0
        self.bytes_held = 0

    def __bool__(self) -> bool:
        return bool(self._blocks)

    def __len__(self) -> int:
        return len(self._blocks)

    def insert(self, seq: int, data: bytes | memoryview) -> bool:
        """Queue `data` at `seq`; True if any of its bytes were new."""
        n = len(data)
        if not n:
            return False
        self._clock += 1
        end = seq + n
        starts, blocks = self._starts, self._blocks
        first = bisect_right(starts, seq) - 1
        if first < 0 or blocks[first].end < seq:
            first += 1
        last = first
        while last < len(blocks) and blocks[last].start <= end:
            last += 1
        if first == last:
            starts.insert(first, seq)
            blocks.insert(first, _Block(seq, bytearray(data), self._clock))
            self.bytes_held += n
            return True
        head = blocks[first]
        if last - first == 1 and head.start <= seq and end <= head.end:
            head.stamp = self._clock
            return False
        new_start = min(seq, head.start)
        new_end = max(end, blocks[last - 1].end)
        held_before = sum(len(b.data) for b in blocks[first:last])
        if last - first == 1 and head.start <= seq:
            head.data += memoryview(data)[head.end - seq:]
            merged = head
        else:
            buf = bytearray(new_end - new_start)
            buf[seq - new_start:end - new_start] = data
            for b in blocks[first:last]:
                buf[b.start - new_start:b.end - new_start] = b.data
            merged = _Block(new_start, buf, 0)
        merged.stamp = self._clock
        starts[first:last] = [new_start]
        blocks[first:last] = [merged]
        self.bytes_held += len(merged.data) - held_before
        return True

    def pop_ready(self, rcv_nxt: int) -> bytearray | None:
        """Remove and return the bytes that continue the stream at `rcv_nxt`, if any."""
        starts, blocks = self._starts, self._blocks
        while blocks and blocks[0].start <= rcv_nxt:
            block = blocks.pop(0)
            starts.pop(0)
            self.bytes_held -= len(block.data)
            if block.end > rcv_nxt:
                data = block.data
                if block.start < rcv_nxt:
                    del data[:rcv_nxt - block.start]
                return data
        return None

    def held_below(self, seq: int) -> tuple[int, int] | None:
        """The first held range below `seq` (data that arrived again in order up to `seq`), or None."""
        blocks = self._blocks
        if not blocks or blocks[0].start >= seq:
            return None
        first = blocks[0]
        return first.start, min(first.end, seq)

    def sack_blocks(self, limit: int) -> list[tuple[int, int]]:
        """Up to `limit` (start, end) blocks, the most recently changed first."""
        if limit <= 0:
            return []
        ordered = sorted(self._blocks, key=lambda b: b.stamp, reverse=True)
        return [(b.start, b.end) for b in ordered[:limit]]

    def highest_end(self) -> int | None:
        return self._blocks[-1].end if self._blocks else None

    def clear(self) -> None:
        self._starts.clear()
        self._blocks.clear()
        self.bytes_held = 0
