"""ICMPv4 (RFC 792/1191) and ICMPv6 (RFC 4443): errors with the quoted datagram, and echo.

For error messages the quoted IP header and the first 8 bytes of its transport header are
parsed, so TCP can find the connection an error is about (RFC 5927 checks on the quoted seq).
"""
from __future__ import annotations

import struct
from typing import NamedTuple

from toe_engine.checksum import IPPROTO_ICMPV6, internet_checksum, ones_sum, pseudo_header_sum
from toe_engine.codec.drop import DropReason
from toe_engine.codec.ipv4 import parse_ipv4
from toe_engine.codec.ipv6 import parse_ipv6

ICMP_HLEN = 8

ICMP_ECHO_REPLY = 0
ICMP_DEST_UNREACH = 3
ICMP_ECHO_REQUEST = 8
ICMP_TIME_EXCEEDED = 11
ICMP_PARAM_PROBLEM = 12
ICMP_FRAG_NEEDED = 4  # code of ICMP_DEST_UNREACH
ICMPV4_ERRORS = frozenset({ICMP_DEST_UNREACH, 4, 5, ICMP_TIME_EXCEEDED, ICMP_PARAM_PROBLEM})

ICMPV6_DEST_UNREACH = 1
ICMPV6_PACKET_TOO_BIG = 2
ICMPV6_TIME_EXCEEDED = 3
ICMPV6_PARAM_PROBLEM = 4
ICMPV6_ECHO_REQUEST = 128
ICMPV6_ECHO_REPLY = 129
ICMPV6_ERRORS = frozenset({ICMPV6_DEST_UNREACH, ICMPV6_PACKET_TOO_BIG, ICMPV6_TIME_EXCEEDED, ICMPV6_PARAM_PROBLEM})

ICMPV4_MAX_QUOTE = 576 - 20 - ICMP_HLEN
ICMPV6_MAX_QUOTE = 1280 - 40 - ICMP_HLEN

_ICMP_HEADER = struct.Struct("!BBHI")
_PORTS_SEQ = struct.Struct("!HHI")
_PORTS = struct.Struct("!HH")


class QuotedDatagram(NamedTuple):
    """The offending datagram's header as quoted in an ICMP error."""

    ip_version: int
    src: bytes
    dst: bytes
    proto: int
    src_port: int | None
    dst_port: int | None
    tcp_seq: int | None


class IcmpMessage(NamedTuple):
    version: int  # 4 for ICMP, 6 for ICMPv6
    type: int
    code: int
    rest: int  # the 32-bit "rest of header" word
    mtu: int | None  # next-hop MTU of frag-needed, MTU of packet-too-big
    quoted: QuotedDatagram | None
    body: "memoryview"  # bytes after the 8-byte header (quoted, or mypyc looks the name up as a global)

    @property
    def echo_ident(self) -> int:
        return self.rest >> 16

    @property
    def echo_seq(self) -> int:
        return self.rest & 0xFFFF


def _quote(buf: memoryview, offset: int, version: int) -> QuotedDatagram | None:
    if version == 4:
        hdr4 = parse_ipv4(buf, offset, False, truncated_ok=True)
        if isinstance(hdr4, DropReason):
            return None
        src, dst, proto, l4 = hdr4.src, hdr4.dst, hdr4.proto, offset + hdr4.header_len
    else:
        hdr6 = parse_ipv6(buf, offset, truncated_ok=True)
        if isinstance(hdr6, DropReason):
            return None
        src, dst, proto = hdr6.src, hdr6.dst, hdr6.upper_proto
        l4 = offset + 40 + hdr6.ext_len
    remaining = len(buf) - l4
    if remaining >= 8:
        sport, dport, seq = _PORTS_SEQ.unpack_from(buf, l4)
        return QuotedDatagram(version, src, dst, proto, sport, dport, seq if proto == 6 else None)
    if remaining >= 4:
        sport, dport = _PORTS.unpack_from(buf, l4)
        return QuotedDatagram(version, src, dst, proto, sport, dport, None)
    return QuotedDatagram(version, src, dst, proto, None, None, None)


def parse_icmpv4(buf: memoryview, offset: int, length: int, verify_csum: bool) -> IcmpMessage | DropReason:
    """Parse an ICMP message of `length` bytes at `offset`."""
    if length < ICMP_HLEN:
        return DropReason.ICMP_TRUNCATED
    message = buf[offset:offset + length]
    if verify_csum and ones_sum(message) != 0xFFFF:
        return DropReason.ICMP_BAD_CHECKSUM
    icmp_type, code, _csum, rest = _ICMP_HEADER.unpack_from(message, 0)
    mtu = rest & 0xFFFF if icmp_type == ICMP_DEST_UNREACH and code == ICMP_FRAG_NEEDED else None
    quoted = _quote(message, ICMP_HLEN, 4) if icmp_type in ICMPV4_ERRORS else None
    return IcmpMessage(4, icmp_type, code, rest, mtu, quoted, message[ICMP_HLEN:])


def parse_icmpv6(
    buf: memoryview, offset: int, length: int, src: bytes, dst: bytes, verify_csum: bool
) -> IcmpMessage | DropReason:
    """Parse an ICMPv6 message; its checksum covers the IPv6 pseudo-header."""
    if length < ICMP_HLEN:
        return DropReason.ICMP_TRUNCATED
    message = buf[offset:offset + length]
    if verify_csum and ones_sum(message, pseudo_header_sum(src, dst, IPPROTO_ICMPV6, length)) != 0xFFFF:
        return DropReason.ICMP_BAD_CHECKSUM
    icmp_type, code, _csum, rest = _ICMP_HEADER.unpack_from(message, 0)
    mtu = rest if icmp_type == ICMPV6_PACKET_TOO_BIG else None
    quoted = _quote(message, ICMP_HLEN, 6) if icmp_type in ICMPV6_ERRORS else None
    return IcmpMessage(6, icmp_type, code, rest, mtu, quoted, message[ICMP_HLEN:])


def build_icmpv4(icmp_type: int, code: int, rest: int, body: bytes) -> bytes:
    """An ICMP message with its checksum."""
    message = bytearray(_ICMP_HEADER.pack(icmp_type, code, 0, rest) + body)
    struct.pack_into("!H", message, 2, internet_checksum(message))
    return bytes(message)


def build_icmpv6(src: bytes, dst: bytes, icmp_type: int, code: int, rest: int, body: bytes) -> bytes:
    """An ICMPv6 message with its pseudo-header checksum."""
    message = bytearray(_ICMP_HEADER.pack(icmp_type, code, 0, rest) + body)
    pseudo = pseudo_header_sum(src, dst, IPPROTO_ICMPV6, len(message))
    struct.pack_into("!H", message, 2, internet_checksum(message, pseudo))
    return bytes(message)


def build_frag_needed(next_hop_mtu: int, original: bytes) -> bytes:
    """ICMP destination unreachable / fragmentation needed (RFC 1191) quoting `original`."""
    return build_icmpv4(ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, next_hop_mtu & 0xFFFF, original[:ICMPV4_MAX_QUOTE])


def build_packet_too_big(src: bytes, dst: bytes, mtu: int, original: bytes) -> bytes:
    """ICMPv6 packet too big (RFC 4443 §3.2) quoting as much of `original` as fits 1280 bytes."""
    return build_icmpv6(src, dst, ICMPV6_PACKET_TOO_BIG, 0, mtu, original[:ICMPV6_MAX_QUOTE])


def build_time_exceeded(original: bytes) -> bytes:
    """ICMP time exceeded in transit (TTL reached zero)."""
    return build_icmpv4(ICMP_TIME_EXCEEDED, 0, 0, original[:ICMPV4_MAX_QUOTE])


def build_echo(ident: int, seq: int, data: bytes, *, reply: bool = False) -> bytes:
    """ICMP echo request or reply."""
    icmp_type = ICMP_ECHO_REPLY if reply else ICMP_ECHO_REQUEST
    return build_icmpv4(icmp_type, 0, (ident << 16) | seq, data)


def build_echo6(src: bytes, dst: bytes, ident: int, seq: int, data: bytes, *, reply: bool = False) -> bytes:
    """ICMPv6 echo request or reply."""
    icmp_type = ICMPV6_ECHO_REPLY if reply else ICMPV6_ECHO_REQUEST
    return build_icmpv6(src, dst, icmp_type, 0, (ident << 16) | seq, data)


ND_NEIGHBOR_SOLICIT = 135
ND_NEIGHBOR_ADVERT = 136
ND_OPT_SOURCE_LLADDR = 1
ND_OPT_TARGET_LLADDR = 2
ND_HOP_LIMIT = 255  # RFC 4861 7.1.1: anything else did not come from the link
_NA_SOLICITED = 0x40000000
_NA_OVERRIDE = 0x20000000


class NeighborDiscovery(NamedTuple):
    """A neighbour solicitation or advertisement (RFC 4861 4.3, 4.4)."""

    type: int
    target: bytes
    lladdr: bytes | None  # the source link-layer option of an NS, the target one of an NA
    solicited: bool
    override: bool


def parse_nd(icmp: IcmpMessage) -> NeighborDiscovery | None:
    """The NS/NA in an ICMPv6 message, or None if it is not one or is malformed (RFC 4861 7.1)."""
    if icmp.version != 6 or icmp.type not in (ND_NEIGHBOR_SOLICIT, ND_NEIGHBOR_ADVERT) or icmp.code != 0:
        return None
    body = icmp.body
    if len(body) < 16:
        return None
    wanted = ND_OPT_SOURCE_LLADDR if icmp.type == ND_NEIGHBOR_SOLICIT else ND_OPT_TARGET_LLADDR
    lladdr = None
    offset = 16
    while offset + 2 <= len(body):
        kind, units = body[offset], body[offset + 1]
        end = offset + 8 * units
        if units == 0 or end > len(body):
            return None  # a zero-length or overlong option invalidates the message
        if kind == wanted and units == 1:
            lladdr = bytes(body[offset + 2:offset + 8])
        offset = end
    return NeighborDiscovery(icmp.type, bytes(body[:16]), lladdr, bool(icmp.rest & _NA_SOLICITED),
                             bool(icmp.rest & _NA_OVERRIDE))
