"""The TCP segment as the sans-IO core sees it.

This is the contract between the codec (which parses and builds wire bytes) and the
connection state machine (which never sees bytes on the wire). Sequence and
acknowledgment numbers are plain unsigned 32-bit ints; the window is the raw 16-bit
field (scaling is the connection's business, because it depends on negotiated state).
"""
from __future__ import annotations

from enum import IntFlag
from typing import ClassVar, Final, NamedTuple


class Flags(IntFlag):
    FIN = 0x01
    SYN = 0x02
    RST = 0x04
    PSH = 0x08
    ACK = 0x10
    URG = 0x20
    ECE = 0x40
    CWR = 0x80


# Plain ints, Final: the compiled build inlines them (tests check they equal Flags).
FIN: Final = 0x01
SYN: Final = 0x02
RST: Final = 0x04
PSH: Final = 0x08
ACK: Final = 0x10
URG: Final = 0x20
ECE: Final = 0x40
CWR: Final = 0x80


class ByValue:
    """What a dataclass would generate, written out: equality by `_fields()` (same class only)
    and a repr naming them by `FIELDS`. The classes below are made per frame, and the compiled
    build compiles hand-written methods but runs a dataclass's generated ones as Python.
    Unhashable unless a subclass defines __hash__, as a dataclass with eq is."""

    __slots__ = ()
    FIELDS: ClassVar[tuple[str, ...]] = ()

    def _fields(self) -> tuple[object, ...]:
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ByValue):
            return NotImplemented
        return type(other) is type(self) and self._fields() == other._fields()

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={value!r}" for name, value in zip(self.FIELDS, self._fields()))
        return f"{type(self).__name__}({shown})"


class TcpOptions(ByValue):
    """Parsed TCP options; None/False/() means absent."""

    __slots__ = ("mss", "wscale", "sack_permitted", "sack_blocks", "timestamp", "unknown")
    FIELDS = ("mss", "wscale", "sack_permitted", "sack_blocks", "timestamp", "unknown")  # (compiled: no __slots__ to read)

    def __init__(self, mss: int | None = None, wscale: int | None = None, sack_permitted: bool = False,
                 sack_blocks: tuple[tuple[int, int], ...] = (), timestamp: tuple[int, int] | None = None,
                 unknown: int = 0) -> None:
        self.mss = mss
        self.wscale = wscale
        self.sack_permitted = sack_permitted
        self.sack_blocks = sack_blocks
        self.timestamp = timestamp  # (TSval, TSecr)
        self.unknown = unknown  # how many unknown options were skipped by length

    def _fields(self) -> tuple[object, ...]:
        return (self.mss, self.wscale, self.sack_permitted, self.sack_blocks, self.timestamp, self.unknown)


class Segment(ByValue):
    """One TCP segment: header fields, options and payload; `options` defaults to a fresh
    TcpOptions per segment (options are mutable)."""

    __slots__ = ("src_port", "dst_port", "seq", "ack", "flags", "window", "payload", "options", "urg_ptr",
                 "gso_size")
    FIELDS = ("src_port", "dst_port", "seq", "ack", "flags", "window", "payload", "options", "urg_ptr", "gso_size")

    def __init__(self, src_port: int, dst_port: int, seq: int, ack: int, flags: int, window: int,
                 payload: bytes | memoryview = b"", options: TcpOptions | None = None, urg_ptr: int = 0,
                 gso_size: int = 0) -> None:
        self.src_port = src_port
        self.dst_port = dst_port
        self.seq = seq
        self.ack = ack
        self.flags = flags
        self.window = window
        self.payload: bytes | memoryview = payload
        self.options: TcpOptions = TcpOptions() if options is None else options
        self.urg_ptr = urg_ptr
        #: A coalesced (GRO) segment's wire MSS, as a device's gso_size says; 0: one wire segment or unknown.
        self.gso_size = gso_size

    @property
    def seg_len(self) -> int:
        """SEG.LEN of RFC 9293: payload plus one for each of SYN and FIN."""
        return len(self.payload) + (1 if self.flags & SYN else 0) + (1 if self.flags & FIN else 0)

    def _fields(self) -> tuple[object, ...]:
        return (self.src_port, self.dst_port, self.seq, self.ack, self.flags, self.window, self.payload,
                self.options, self.urg_ptr, self.gso_size)


class Endpoint(NamedTuple):
    """An address and port; `ip` is the packed address (4 bytes IPv4, 16 bytes IPv6)."""

    ip: bytes
    port: int


class FourTuple(NamedTuple):
    """A connection's identity seen from this engine: local first."""

    local_ip: bytes
    local_port: int
    remote_ip: bytes
    remote_port: int
