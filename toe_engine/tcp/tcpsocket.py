"""A small socket-like face on TcpStack for scenario code.

Non-blocking in the sans-IO sense: recv() returns None when nothing is waiting and b"" at the
end of the stream; sendall() keeps what the send buffer did not take and flush() retries it.
"""
from __future__ import annotations

from toe_engine.segment import FourTuple
from toe_engine.tcp.connection import State
from toe_engine.tcp.stack import TcpStack


class TcpSocket:
    """One connection of a stack, addressed by its FourTuple."""

    __slots__ = ("stack", "conn", "_pending")

    def __init__(self, stack: TcpStack, conn: FourTuple) -> None:
        self.stack = stack
        self.conn = conn
        self._pending = bytearray()

    @classmethod
    def connect(cls, stack: TcpStack, local_ip: bytes, remote_ip: bytes, remote_port: int,
                now: float | None = None) -> TcpSocket:
        return cls(stack, stack.connect(local_ip, remote_ip, remote_port, now))

    @property
    def state(self) -> State:
        return self.stack.state(self.conn)

    def send(self, data: bytes, now: float | None = None) -> int:
        return self.stack.send(self.conn, data, now)

    def sendall(self, data: bytes, now: float | None = None) -> None:
        """Queue all of `data`; what does not fit now goes out on later flush() calls."""
        self._pending += data
        self.flush(now)

    def flush(self, now: float | None = None) -> int:
        """Push pending sendall() data into the stack; returns how many bytes are still pending."""
        if self._pending and self.state in (State.SYN_SENT, State.SYN_RECEIVED, State.ESTABLISHED,
                                            State.CLOSE_WAIT):
            taken = self.stack.send(self.conn, self._pending, now)
            del self._pending[:taken]
        return len(self._pending)

    def recv(self, max_bytes: int = 65536, now: float | None = None) -> bytes | None:
        if self.stack.connection(self.conn) is None:
            return b""
        data = self.stack.recv(self.conn, max_bytes, now)
        if data:
            return data
        return b"" if self.stack.at_eof(self.conn) else None

    def shutdown(self, now: float | None = None) -> None:
        self.stack.shutdown(self.conn, now)

    def close(self, now: float | None = None) -> None:
        self.stack.close(self.conn, now)

    def abort(self, now: float | None = None) -> None:
        self.stack.abort(self.conn, now)
