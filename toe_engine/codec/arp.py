"""ARP for IPv4 over Ethernet (RFC 826): request/reply parse and build."""
from __future__ import annotations

import struct
from typing import NamedTuple

ARP_REQUEST = 1
ARP_REPLY = 2
ARP_LEN = 28

_ARP = struct.Struct("!HHBBH6s4s6s4s")
_HTYPE_ETHERNET = 1
_PTYPE_IPV4 = 0x0800


class ArpPacket(NamedTuple):
    op: int
    sender_mac: bytes
    sender_ip: bytes
    target_mac: bytes
    target_ip: bytes


def parse_arp(buf: memoryview, offset: int) -> ArpPacket | None:
    """Parse an Ethernet/IPv4 ARP packet; None if truncated or of another hardware/protocol type."""
    if len(buf) - offset < ARP_LEN:
        return None
    htype, ptype, hlen, plen, op, sha, spa, tha, tpa = _ARP.unpack_from(buf, offset)
    if htype != _HTYPE_ETHERNET or ptype != _PTYPE_IPV4 or hlen != 6 or plen != 4:
        return None
    return ArpPacket(op, bytes(sha), bytes(spa), bytes(tha), bytes(tpa))


def build_arp(packet: ArpPacket) -> bytes:
    """The 28-byte ARP body (the caller adds the Ethernet header)."""
    return _ARP.pack(
        _HTYPE_ETHERNET, _PTYPE_IPV4, 6, 4, packet.op,
        packet.sender_mac, packet.sender_ip, packet.target_mac, packet.target_ip,
    )
