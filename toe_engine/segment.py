"""The TCP segment as the sans-IO core sees it.

This is the contract between the codec (which parses and builds wire bytes) and the
connection state machine (which never sees bytes on the wire). Sequence and
acknowledgment numbers are plain unsigned 32-bit ints; the window is the raw 16-bit
field (scaling is the connection's business, because it depends on negotiated state).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntFlag
from typing import NamedTuple


class Flags(IntFlag):
    FIN = 0x01
    SYN = 0x02
    RST = 0x04
    PSH = 0x08
    ACK = 0x10
    URG = 0x20
    ECE = 0x40
    CWR = 0x80


FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = (int(f) for f in Flags)


@dataclass(slots=True)
class TcpOptions:
    """Parsed TCP options; None/False/() means absent."""

    mss: int | None = None
    wscale: int | None = None
    sack_permitted: bool = False
    sack_blocks: tuple[tuple[int, int], ...] = ()
    timestamp: tuple[int, int] | None = None  # (TSval, TSecr)
    unknown: int = 0  # how many unknown options were skipped by length


@dataclass(slots=True)
class Segment:
    """One TCP segment: header fields, options and payload."""

    src_port: int
    dst_port: int
    seq: int
    ack: int
    flags: int
    window: int
    payload: bytes | memoryview = b""
    options: TcpOptions = field(default_factory=TcpOptions)
    urg_ptr: int = 0
    #: A coalesced (GRO) segment's wire MSS, as a device's gso_size says; 0: one wire segment or unknown.
    gso_size: int = 0

    @property
    def seg_len(self) -> int:
        """SEG.LEN of RFC 9293: payload plus one for each of SYN and FIN."""
        return len(self.payload) + (1 if self.flags & SYN else 0) + (1 if self.flags & FIN else 0)


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
