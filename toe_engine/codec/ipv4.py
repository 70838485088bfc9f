"""IPv4 header (RFC 791): parse with options skipped, build without options by default."""
from __future__ import annotations

import struct
from typing import Final, NamedTuple

from toe_engine.checksum import internet_checksum, ones_sum
from toe_engine.codec.drop import DropReason

IPV4_HLEN: Final = 20
IP_DF: Final = 0x4000
IP_MF: Final = 0x2000
IP_OFFMASK: Final = 0x1FFF

IPV4_HEADER: Final = struct.Struct("!BBHHHBBH4s4s")
IPV4_TOTAL_LEN_OFFSET: Final = 2
IPV4_ID_OFFSET: Final = 4
IPV4_CSUM_OFFSET: Final = 10
_U16: Final = struct.Struct("!H")


class Ipv4Header(NamedTuple):
    header_len: int
    tos: int
    total_len: int
    ident: int
    df: bool
    mf: bool
    frag_offset: int  # in bytes
    ttl: int
    proto: int
    checksum: int
    src: bytes
    dst: bytes

    @property
    def is_fragment(self) -> bool:
        return self.mf or self.frag_offset != 0


def parse_ipv4(
    buf: memoryview, offset: int, verify_csum: bool, truncated_ok: bool = False
) -> Ipv4Header | DropReason:
    """Parse the header at `offset`; lengths are checked against the bytes actually present.

    `truncated_ok` is for the copy of a datagram quoted inside an ICMP error, which is cut short
    on purpose: only the header itself must be whole.
    """
    if len(buf) - offset < IPV4_HLEN:
        return DropReason.IPV4_TRUNCATED
    ver_ihl, tos, total_len, ident, frag, ttl, proto, csum, src, dst = IPV4_HEADER.unpack_from(buf, offset)
    lengths = ipv4_lengths(buf, offset, ver_ihl, total_len, verify_csum, truncated_ok)
    if isinstance(lengths, DropReason):
        return lengths
    header_len, total_len = lengths
    return Ipv4Header(
        header_len, tos, total_len, ident, bool(frag & IP_DF), bool(frag & IP_MF),
        (frag & IP_OFFMASK) * 8, ttl, proto, csum, src, dst,
    )


def ipv4_lengths(
    buf: memoryview, offset: int, ver_ihl: int, total_len: int, verify_csum: bool, truncated_ok: bool = False
) -> tuple[int, int] | DropReason:
    """(header length, total length) of the unpacked header at `offset`, checked against the bytes
    present (and its checksum if asked), or why it is refused."""
    available = len(buf) - offset
    if ver_ihl >> 4 != 4:
        return DropReason.IPV4_BAD_VERSION
    header_len = (ver_ihl & 0x0F) * 4
    if header_len < IPV4_HLEN or header_len > available:
        return DropReason.IPV4_BAD_IHL
    if total_len == 0 and available > 0xFFFF:
        total_len = available  # a BIG TCP / TSO super-packet: the length field cannot hold it
    if total_len < header_len or (total_len > available and not truncated_ok):
        return DropReason.IPV4_BAD_TOTAL_LEN
    if verify_csum and ones_sum(buf[offset:offset + header_len]) != 0xFFFF:
        return DropReason.IPV4_BAD_CHECKSUM
    return header_len, total_len


def build_ipv4_header(
    src: bytes,
    dst: bytes,
    proto: int,
    payload_len: int,
    *,
    ttl: int = 64,
    tos: int = 0,
    ident: int = 0,
    df: bool = True,
    mf: bool = False,
    frag_offset: int = 0,
    options: bytes = b"",
) -> bytearray:
    """A complete header with its checksum; `options` must be padded to a multiple of 4.

    A datagram over 65535 bytes (a TSO super-packet) gets total length 0, as Linux BIG TCP does.
    """
    if len(options) % 4 or len(options) > 40:
        raise ValueError("IPv4 options must be padded to a multiple of 4 bytes, at most 40")
    header = bytearray(IPV4_HLEN + len(options))
    header[IPV4_HLEN:] = options
    put_ipv4_header(header, 0, src, dst, proto, payload_len, ttl, tos, ident, df, mf, frag_offset, len(header))
    return header


def put_ipv4_header(
    buf: bytearray, offset: int, src: bytes, dst: bytes, proto: int, payload_len: int,
    ttl: int = 64, tos: int = 0, ident: int = 0, df: bool = True, mf: bool = False, frag_offset: int = 0,
    header_len: int = IPV4_HLEN,
) -> None:
    """Write the header's fixed 20 bytes and its checksum at `offset` of a frame being built, so the
    frame needs no copy of a header made apart; options, if any, must already follow (`header_len`)."""
    frag = (IP_DF if df else 0) | (IP_MF if mf else 0) | (frag_offset // 8)
    total_len = header_len + payload_len
    if total_len > 0xFFFF:
        total_len = 0
    IPV4_HEADER.pack_into(
        buf, offset, 0x40 | header_len // 4, tos, total_len, ident & 0xFFFF,
        frag, ttl, proto, 0, src, dst,
    )
    _U16.pack_into(buf, offset + IPV4_CSUM_OFFSET, internet_checksum(buf[offset:offset + header_len]))


def set_ipv4_checksum(buf: bytearray | memoryview, offset: int, header_len: int) -> None:
    """Recompute the header checksum in place (after a length/ID/TTL rewrite)."""
    _U16.pack_into(buf, offset + IPV4_CSUM_OFFSET, 0)
    _U16.pack_into(buf, offset + IPV4_CSUM_OFFSET, internet_checksum(buf[offset:offset + header_len]))
