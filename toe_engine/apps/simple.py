"""RFC 863 discard, RFC 862 echo and RFC 864 chargen, for bulk and byte-exact tests."""
from __future__ import annotations

from collections import deque

from .base import App, AppConnection


class Discard(App):
    """Reads and drops everything (RFC 863)."""


class Echo(App):
    """Returns every byte (RFC 862) as it arrives, with Nagle off (as the kernel targets' echo
    servers set TCP_NODELAY). What the send buffer does not take waits here, up to
    PENDING_LIMIT; beyond that it stops reading, so its receive window closes (as an echo
    server on a socket does when its peer stops reading)."""

    PENDING_LIMIT = 256 * 1024

    def __init__(self, conn: AppConnection) -> None:
        super().__init__(conn)
        self.pending: deque[bytes | bytearray] = deque()
        self.pending_bytes = 0
        self.peer_closed = False

    def on_connected(self) -> None:
        self.conn.set_nodelay(True)

    def receive_room(self) -> int:
        return max(0, self.PENDING_LIMIT - self.pending_bytes)

    def on_data(self, data: bytes | bytearray | memoryview) -> None:
        super().on_data(data)
        self.pending.append(data if isinstance(data, (bytes, bytearray)) else bytes(data))  # a view is copied
        self.pending_bytes += len(data)
        self.on_writable()

    def on_writable(self) -> None:
        while self.pending:
            head = self.pending[0]
            sent = self.send(head)
            self.pending_bytes -= sent
            if sent < len(head):
                self.pending[0] = head[sent:]
                return
            self.pending.popleft()
        if self.peer_closed and not self.closed:
            self.close()

    def on_peer_closed(self) -> None:
        self.peer_closed = True
        self.on_writable()

    def buffered_bytes(self) -> int:
        return self.pending_bytes


def chargen_pattern(length: int = 72 * 95) -> bytes:
    """RFC 864's rotating 72-character lines, repeated into one buffer."""
    printable = bytes(range(32, 127))
    lines = [(printable * 2)[i % 95: i % 95 + 72] + b"\r\n" for i in range(95)]
    return b"".join(lines)[:length] if length else b"".join(lines)


class Chargen(App):
    """Sends RFC 864's pattern as fast as the window allows until the peer closes.

    It writes whole pattern periods in blocks of about 64 KiB, as the kernel targets' chargen
    servers do, so its first flight is full-sized segments rather than one 7 KiB write. Each
    block is a view into two periods laid end to end, so a write copies nothing before the send
    buffer's own copy (where slicing and joining the pattern copied each block twice).
    """

    PATTERN = chargen_pattern(0) * 9
    _TWO_PERIODS = memoryview(PATTERN * 2)

    def __init__(self, conn: AppConnection) -> None:
        super().__init__(conn)
        self.offset = 0

    def on_connected(self) -> None:
        self.on_writable()

    def on_writable(self) -> None:
        size, periods = len(self.PATTERN), self._TWO_PERIODS
        while self.conn.send_space() > 0:
            sent = self.send(periods[self.offset:self.offset + size])
            self.offset = (self.offset + sent) % size
            if sent < size:
                return
