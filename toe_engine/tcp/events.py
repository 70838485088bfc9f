"""What the TCP layer tells the application; collected with TcpStack.poll_events()."""
from __future__ import annotations

from dataclasses import dataclass

from toe_engine.segment import Endpoint, FourTuple


@dataclass(frozen=True, slots=True)
class Connected:
    """The connection reached ESTABLISHED (either side)."""

    conn: FourTuple


@dataclass(frozen=True, slots=True)
class Accepted:
    """A listener has a new ESTABLISHED connection; it is the application's from now on."""

    listener: Endpoint
    conn: FourTuple


@dataclass(frozen=True, slots=True)
class DataReceived:
    """`nbytes` more in-order bytes are waiting for recv()."""

    conn: FourTuple
    nbytes: int


@dataclass(frozen=True, slots=True)
class Writable:
    """Send-buffer space opened after a send() that was not taken whole."""

    conn: FourTuple


@dataclass(frozen=True, slots=True)
class PeerClosed:
    """The peer's FIN arrived: recv() returns what is left, then b""."""

    conn: FourTuple


@dataclass(frozen=True, slots=True)
class Reset:
    """The peer reset the connection (MUST-12); a Closed follows."""

    conn: FourTuple


@dataclass(frozen=True, slots=True)
class Error:
    """A soft error (ICMP) or, with fatal=True, why the connection was aborted (MUST-47)."""

    conn: FourTuple
    reason: str
    fatal: bool = False


@dataclass(frozen=True, slots=True)
class Closed:
    """The TCB is gone; the FourTuple may be reused."""

    conn: FourTuple


Event = Connected | Accepted | DataReceived | Writable | PeerClosed | Reset | Error | Closed
