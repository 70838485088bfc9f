"""The contract between the engine and an application serving one connection."""
from __future__ import annotations

from typing import Protocol

from mypy_extensions import mypyc_attr


class AppConnection(Protocol):
    """What an application may do with its connection."""

    def send(self, data: bytes | bytearray | memoryview) -> int:
        """Queue bytes; returns how many fitted in the send buffer."""

    def send_space(self) -> int:
        """Free bytes in the send buffer."""

    def shutdown(self) -> None:
        """Half-close: send FIN after queued data."""

    def close(self) -> None:
        """Full close."""

    def set_nodelay(self, on: bool) -> None:
        """Turn Nagle's algorithm off (True) or back on for this connection, as TCP_NODELAY does."""


@mypyc_attr(allow_interpreted_subclasses=True)  # every service, and tests, subclass it in Python
class App:
    """One application instance per connection; override what you need."""

    def __init__(self, conn: AppConnection) -> None:
        self.conn = conn
        self.received = 0
        self.sent = 0
        self.closed = False  # this side closed: nothing more is sent

    def on_connected(self) -> None:
        """The handshake completed."""

    def receive_room(self) -> int:
        """How many more bytes the application takes now; 0 leaves them in the receive buffer."""
        return 1 << 30

    def on_data(self, data: bytes | bytearray | memoryview) -> None:
        """In-order bytes arrived. A bytes or bytearray is the application's to keep (the engine
        hands its receive buffer over uncopied); a memoryview is valid only during the call."""
        self.received += len(data)

    def on_writable(self) -> None:
        """Send-buffer space became free."""

    def on_peer_closed(self) -> None:
        """The peer sent FIN: by default close our side too."""
        self.close()

    def on_closed(self) -> None:
        """The connection is gone (closed or reset)."""

    def on_error(self, reason: str, fatal: bool) -> None:
        """The peer reset the connection ("reset", fatal) or an ICMP error came (fatal: it was aborted);
        a Closed follows a fatal one. A socket sets its errno here; by default nothing happens."""

    def buffered_bytes(self) -> int:
        """Bytes the application holds for its connection, counted in the engine's buffer memory."""
        return 0

    def close(self) -> None:
        """Close the connection; later sends take nothing (a closed socket would raise)."""
        self.closed = True
        self.conn.close()

    def send(self, data: bytes | bytearray | memoryview) -> int:
        if self.closed:
            return 0
        sent = self.conn.send(data)
        self.sent += sent
        return sent
