"""IPv6 header (RFC 8200) with the extension-header chain walked to the upper layer."""
from __future__ import annotations

import struct
from typing import NamedTuple

from toe_engine.codec.drop import DropReason

IPV6_HLEN = 40
NEXTHDR_HOP = 0
NEXTHDR_ROUTING = 43
NEXTHDR_FRAGMENT = 44
NEXTHDR_AUTH = 51
NEXTHDR_NONE = 59
NEXTHDR_DEST = 60
EXTENSION_HEADERS = frozenset({NEXTHDR_HOP, NEXTHDR_ROUTING, NEXTHDR_FRAGMENT, NEXTHDR_AUTH, NEXTHDR_DEST})

IPV6_HEADER = struct.Struct("!IHBB16s16s")
IPV6_PAYLOAD_LEN_OFFSET = 4
_FRAGMENT = struct.Struct("!BBHI")
_EXT_PREFIX = struct.Struct("!BB")


class Ipv6Fragment(NamedTuple):
    next_header: int
    offset: int  # in bytes
    more: bool
    ident: int


class Ipv6Header(NamedTuple):
    traffic_class: int
    flow_label: int
    payload_len: int
    upper_proto: int  # next header after the extension chain
    hop_limit: int
    src: bytes
    dst: bytes
    ext_headers: tuple[int, ...]  # header types in order, e.g. (0, 44)
    ext_len: int  # bytes of extension headers between the fixed header and the upper layer
    fragment: Ipv6Fragment | None

    @property
    def is_fragment(self) -> bool:
        frag = self.fragment
        return frag is not None and (frag.more or frag.offset != 0)


def parse_ipv6(buf: memoryview, offset: int, truncated_ok: bool = False) -> Ipv6Header | DropReason:
    """Parse the fixed header and walk hop-by-hop, routing, fragment, AH and destination options.

    A payload length of zero with more than 65535 bytes present (a jumbogram, or a GRO/BIG TCP
    super-packet) takes the length from the bytes present. `truncated_ok` accepts a datagram quoted (cut short) in ICMPv6.
    """
    available = len(buf) - offset
    if available < IPV6_HLEN:
        return DropReason.IPV6_TRUNCATED
    first_word, payload_len, next_header, hop_limit, src, dst = IPV6_HEADER.unpack_from(buf, offset)
    if first_word >> 28 != 6:
        return DropReason.IPV6_BAD_VERSION
    if payload_len == 0 and available - IPV6_HLEN > 0xFFFF:
        payload_len = available - IPV6_HLEN
    elif payload_len > available - IPV6_HLEN:
        if not truncated_ok:
            return DropReason.IPV6_BAD_PAYLOAD_LEN
        payload_len = available - IPV6_HLEN
    end = offset + IPV6_HLEN + payload_len
    cursor = offset + IPV6_HLEN
    ext_headers: list[int] = []
    fragment: Ipv6Fragment | None = None
    while next_header in EXTENSION_HEADERS:
        if end - cursor < 8:
            return DropReason.IPV6_BAD_EXT_HEADER
        if next_header == NEXTHDR_FRAGMENT:
            nxt, _, off_flags, ident = _FRAGMENT.unpack_from(buf, cursor)
            fragment = Ipv6Fragment(nxt, off_flags & 0xFFF8, bool(off_flags & 1), ident)
            length = 8
        else:
            nxt, hdr_len = _EXT_PREFIX.unpack_from(buf, cursor)
            length = (hdr_len + 2) * 4 if next_header == NEXTHDR_AUTH else (hdr_len + 1) * 8
            if cursor + length > end:
                return DropReason.IPV6_BAD_EXT_HEADER
        ext_headers.append(next_header)
        cursor += length
        next_header = nxt
        if fragment is not None and fragment.offset:
            break  # a non-first fragment: what follows is not a header
    return Ipv6Header(
        (first_word >> 20) & 0xFF, first_word & 0xFFFFF, payload_len, next_header, hop_limit,
        bytes(src), bytes(dst), tuple(ext_headers), cursor - offset - IPV6_HLEN, fragment,
    )


def build_ipv6_header(
    src: bytes,
    dst: bytes,
    next_header: int,
    payload_len: int,
    *,
    hop_limit: int = 64,
    traffic_class: int = 0,
    flow_label: int = 0,
) -> bytes:
    """The 40-byte fixed header; `payload_len` counts any extension headers the caller appends
    (over 65535 it is written as 0, the super-packet convention)."""
    if payload_len > 0xFFFF:
        payload_len = 0
    first_word = (6 << 28) | (traffic_class << 20) | flow_label
    return IPV6_HEADER.pack(first_word, payload_len, next_header, hop_limit, src, dst)
