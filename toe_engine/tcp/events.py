"""What the TCP layer tells the application; collected with TcpStack.poll_events().

Plain classes with hand-written methods (segment.ByValue), not dataclasses: a DataReceived is
made for nearly every segment, and the compiled build compiles a hand-written __init__ but runs a
dataclass's generated one as Python. Each event compares and hashes by its fields, as a frozen
dataclass does, and is not changed after it is made.
"""
from __future__ import annotations

from typing import ClassVar

from toe_engine.segment import ByValue, Endpoint, FourTuple


class _Event(ByValue):
    """Compared and hashed by value, as a frozen dataclass is."""

    __slots__ = ()
    FIELDS: ClassVar[tuple[str, ...]] = ("conn",)

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._fields()))


class _ConnEvent(_Event):
    """An event that names only its connection."""

    __slots__ = ("conn",)

    def __init__(self, conn: FourTuple) -> None:
        self.conn = conn

    def _fields(self) -> tuple[object, ...]:
        return (self.conn,)


class Connected(_ConnEvent):
    """The connection reached ESTABLISHED (either side)."""

    __slots__ = ()


class Accepted(_Event):
    """A listener has a new ESTABLISHED connection; it is the application's from now on."""

    __slots__ = ("listener", "conn")
    FIELDS = ("listener", "conn")

    def __init__(self, listener: Endpoint, conn: FourTuple) -> None:
        self.listener = listener
        self.conn = conn

    def _fields(self) -> tuple[object, ...]:
        return (self.listener, self.conn)


class DataReceived(_Event):
    """`nbytes` more in-order bytes are waiting for recv()."""

    __slots__ = ("conn", "nbytes")
    FIELDS = ("conn", "nbytes")

    def __init__(self, conn: FourTuple, nbytes: int) -> None:
        self.conn = conn
        self.nbytes = nbytes

    def _fields(self) -> tuple[object, ...]:
        return (self.conn, self.nbytes)


class Writable(_ConnEvent):
    """Send-buffer space opened after a send() that was not taken whole."""

    __slots__ = ()


class PeerClosed(_ConnEvent):
    """The peer's FIN arrived: recv() returns what is left, then b""."""

    __slots__ = ()


class Reset(_ConnEvent):
    """The peer reset the connection (MUST-12); a Closed follows."""

    __slots__ = ()


class Error(_Event):
    """A soft error (ICMP) or, with fatal=True, why the connection was aborted (MUST-47)."""

    __slots__ = ("conn", "reason", "fatal")
    FIELDS = ("conn", "reason", "fatal")

    def __init__(self, conn: FourTuple, reason: str, fatal: bool = False) -> None:
        self.conn = conn
        self.reason = reason
        self.fatal = fatal

    def _fields(self) -> tuple[object, ...]:
        return (self.conn, self.reason, self.fatal)


class Closed(_ConnEvent):
    """The TCB is gone; the FourTuple may be reused."""

    __slots__ = ()


Event = Connected | Accepted | DataReceived | Writable | PeerClosed | Reset | Error | Closed
