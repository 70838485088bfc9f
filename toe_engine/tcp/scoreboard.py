"""The sender's SACK scoreboard for loss recovery (RFC 6675).

SACKed ranges are kept disjoint and sorted. IsLost() is monotone in the sequence number (a
lower octet has at least as much SACKed data above it), so the whole rule collapses to one
boundary: every un-SACKed octet below `lost_boundary()` is presumed lost. That makes SetPipe()
and NextSeg() a walk over the few SACKed ranges rather than over every octet.
"""
from __future__ import annotations

from bisect import bisect_right


class Scoreboard:
    """SACKed sequence ranges above SND.UNA, in the connection's unwrapped numbers."""

    __slots__ = ("_starts", "_ends", "sacked_bytes")

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        self.sacked_bytes = 0

    def __bool__(self) -> bool:
        return bool(self._starts)

    def ranges(self) -> list[tuple[int, int]]:
        return list(zip(self._starts, self._ends))

    def add(self, start: int, end: int) -> int:
        """Record one SACK block; returns how many octets were newly SACKed."""
        if end <= start:
            return 0
        starts, ends = self._starts, self._ends
        i = bisect_right(starts, start) - 1
        if i < 0 or ends[i] < start:
            i += 1
        j = i
        covered = 0
        while j < len(starts) and starts[j] <= end:
            covered += ends[j] - starts[j]
            j += 1
        if i == j:
            starts.insert(i, start)
            ends.insert(i, end)
            self.sacked_bytes += end - start
            return end - start
        new_start = min(start, starts[i])
        new_end = max(end, ends[j - 1])
        starts[i:j] = [new_start]
        ends[i:j] = [new_end]
        added = (new_end - new_start) - covered
        self.sacked_bytes += added
        return added

    def advance(self, snd_una: int) -> None:
        """Forget everything below the new cumulative ACK point."""
        starts, ends = self._starts, self._ends
        while starts and starts[0] < snd_una:
            if ends[0] <= snd_una:
                self.sacked_bytes -= ends[0] - starts[0]
                del starts[0], ends[0]
            else:
                self.sacked_bytes -= snd_una - starts[0]
                starts[0] = snd_una
                break

    def clear(self) -> None:
        self._starts.clear()
        self._ends.clear()
        self.sacked_bytes = 0

    def highest_sacked(self) -> int | None:
        return self._ends[-1] if self._ends else None

    def sacked_end_at(self, seq: int) -> int | None:
        """If `seq` is SACKed, the end of its range."""
        i = bisect_right(self._starts, seq) - 1
        if i >= 0 and seq < self._ends[i]:
            return self._ends[i]
        return None

    def next_sacked_start(self, seq: int) -> int | None:
        """The start of the first SACKed range above `seq`."""
        i = bisect_right(self._starts, seq)
        return self._starts[i] if i < len(self._starts) else None

    def unsacked(self, start: int, end: int) -> int:
        """How many octets of [start, end) are not SACKed."""
        if end <= start:
            return 0
        total = end - start
        for s, e in zip(self._starts, self._ends):
            if e <= start:
                continue
            if s >= end:
                break
            total -= min(e, end) - max(s, start)
        return total

    def lost_boundary(self, mss: int, dupthresh: int) -> int:
        """The sequence below which un-SACKed octets satisfy RFC 6675 IsLost(); 0 if none."""
        above = 0
        threshold = (dupthresh - 1) * mss
        count = 0
        for k in range(len(self._starts) - 1, -1, -1):
            s, e = self._starts[k], self._ends[k]
            above += e - s
            count += max(1, (e - s) // mss)
            if above > threshold or count >= dupthresh:
                return s
        return 0
